//! Memory over time: cycles of mixed load through the pair, each followed by
//! a return to idle, must not make the processes' resident memory keep
//! growing. A thread-per-connection program is where an allocator that keeps
//! per-thread arenas shows up as slow, steady growth, so this is the test
//! that catches it.
//!
//! Each cycle: 2,000 new connections at concurrency 32, 500 connections held
//! for 3 s, and a 128 MiB download; then both processes are waited back to
//! their idle thread counts and their VmRSS is read. The RSS after the last
//! cycle must be within [`GROWTH`] of the RSS after the second cycle, plus
//! [`SLACK`]. The first cycle is the warm-up (TLS state, thread stacks, the
//! allocator's first arenas), so the second is the baseline.
//!
//! `SOAK_CYCLES` sets the cycle count: [`DEFAULT_CYCLES`] in `make test`, 14
//! in `make soak`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// Cycles when `SOAK_CYCLES` is not set: short enough for `make test` (about
/// 65 s on 2 cores, some 7 to 10 s a cycle), long enough to fail clearly with
/// glibc's default arenas, which grow 4 to 7 MiB a cycle and pass the bound
/// by cycle 6 (by 16 MiB at cycle 8).
const DEFAULT_CYCLES: usize = 8;
/// New connections per cycle, each a few bytes echoed.
const NEW_CONNS: usize = 2000;
/// Client threads opening those connections at once.
const CONCURRENCY: usize = 32;
/// Connections opened and then held open at once.
const HELD: usize = 500;
/// How long the held connections stay open: the load's shape, not a wait for an event.
const HOLD: Duration = Duration::from_secs(3);
/// Bytes of the download through the pair.
const DOWNLOAD: usize = 128 << 20;
/// Allowed growth of RSS from the second cycle to the last, as a factor.
const GROWTH: f64 = 1.10;
/// Allowed growth on top of that, in bytes: with 2 arenas per process, each
/// arena of each process settles at its own high-water mark in one step,
/// some by the second cycle and some as late as the fourth, up to about
/// 10 MiB above the second cycle's sum in all (docs/PERFORMANCE.md, "Memory
/// over time"). Growth that goes on, cycle after cycle, passes it.
const SLACK: u64 = 12 << 20;

/// Resident memory of a process, in bytes, from /proc/PID/status.
fn rss(p: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line[6..].trim().trim_end_matches("kB").trim().parse().unwrap();
    kib * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// One short connection: a few bytes there and back.
fn short(proxy: SocketAddr, echo: &str, n: usize) {
    let mut s = socks_connect(proxy, echo);
    let msg = (n as u64).to_be_bytes();
    s.write_all(&msg).unwrap();
    let mut back = [0u8; 8];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

/// `NEW_CONNS` short connections from `CONCURRENCY` threads.
fn new_connections(proxy: SocketAddr, echo: &str) {
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, echo) = (Arc::clone(&next), echo.to_owned());
            thread::spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= NEW_CONNS {
                    break;
                }
                short(proxy, &echo, n);
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

/// `HELD` connections open at once for `HOLD`, each used once at the start and once at the end.
fn held_connections(proxy: SocketAddr, echo: &str) {
    let mut held = Vec::with_capacity(HELD);
    for n in 0..HELD {
        let mut s = socks_connect(proxy, echo);
        s.write_all(&(n as u64).to_be_bytes()).unwrap();
        let mut back = [0u8; 8];
        s.read_exact(&mut back).unwrap();
        held.push(s);
    }
    thread::sleep(HOLD);
    for (n, s) in held.iter_mut().enumerate() {
        s.write_all(&(n as u64).to_be_bytes()).unwrap();
        let mut back = [0u8; 8];
        s.read_exact(&mut back).unwrap();
        assert_eq!(u64::from_be_bytes(back), n as u64);
    }
}

/// Reads `DOWNLOAD` bytes from the source target through the pair.
fn download(proxy: SocketAddr, source: &str) {
    let mut s = socks_connect(proxy, source);
    s.shutdown(Shutdown::Write).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, DOWNLOAD, "download length");
}

#[test]
fn resident_memory_stays_flat_over_cycles_of_load() {
    let cycles: usize = std::env::var("SOAK_CYCLES")
        .map(|v| v.parse().expect("SOAK_CYCLES is a number"))
        .unwrap_or(DEFAULT_CYCLES);
    assert!(cycles >= 3, "SOAK_CYCLES must be at least 3: a warm-up, a baseline and one to compare");
    let pair = Pair::spawn(&[], &["--pool", "0"]);
    let idle = [pair.local.threads(), pair.server.threads()];
    let echo = echo("127.0.0.1:0").to_string();
    let source = target("127.0.0.1:0", |mut s| {
        let buf = vec![0x5a; 64 * 1024];
        let mut left = DOWNLOAD;
        while left > 0 {
            let n = left.min(buf.len());
            if s.write_all(&buf[..n]).is_err() {
                return;
            }
            left -= n;
        }
        let _ = s.shutdown(Shutdown::Write);
    })
    .to_string();
    let proxy = pair.local.addr;
    eprintln!(
        "cycle  0: local {:6.1} MiB  server {:6.1} MiB  (idle, {} + {} threads)",
        mib(rss(&pair.local)),
        mib(rss(&pair.server)),
        idle[0],
        idle[1]
    );

    let started = Instant::now();
    let mut totals = Vec::with_capacity(cycles);
    for cycle in 1..=cycles {
        new_connections(proxy, &echo);
        held_connections(proxy, &echo);
        download(proxy, &source);
        pair.local.wait_threads(idle[0]);
        pair.server.wait_threads(idle[1]);
        let (local, server) = (rss(&pair.local), rss(&pair.server));
        totals.push(local + server);
        eprintln!(
            "cycle {cycle:2}: local {:6.1} MiB  server {:6.1} MiB  total {:6.1} MiB  ({:.1} s)",
            mib(local),
            mib(server),
            mib(local + server),
            started.elapsed().as_secs_f64()
        );
    }

    let (baseline, last) = (totals[1], totals[cycles - 1]);
    let bound = (baseline as f64 * GROWTH) as u64 + SLACK;
    assert!(
        last <= bound,
        "resident memory grew: {:.1} MiB after cycle {cycles}, {:.1} MiB after cycle 2, bound {:.1} MiB",
        mib(last),
        mib(baseline),
        mib(bound)
    );
}
