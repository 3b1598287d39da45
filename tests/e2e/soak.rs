//! A bounded soak: 32 bulk transfers both ways at once and a stream of short
//! request/response connections through the pair, every byte checked by
//! digest; afterwards both processes are back to their idle threads and
//! descriptors.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;

use crate::support::*;

const BULK: usize = 32;
const BULK_BYTES: usize = 2 << 20;
const SHORT_THREADS: usize = 8;
const SHORT_EACH: usize = 150;

#[test]
fn bulk_and_short_connections_lose_nothing_and_leak_nothing() {
    let pair = Pair::spawn(&[], &["--pool", "0"]);
    let idle = [(pair.local.threads(), pair.local.fds()), (pair.server.threads(), pair.server.fds())];

    // The bulk target sends its own stream while it digests the client's, then reports.
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let bulk_target = target("127.0.0.1:0", move |s| {
        let mut first = [0u8; 8];
        (&s).read_exact(&mut first).unwrap();
        let seed = u64::from_be_bytes(first);
        let mut w = s.try_clone().unwrap();
        let sender = thread::spawn(move || {
            let d = send_pattern(&mut w, seed + 1, BULK_BYTES);
            w.shutdown(Shutdown::Write).unwrap();
            d
        });
        let got = recv_digest(&mut &s);
        tx.lock().unwrap().send((seed, got, sender.join().unwrap())).unwrap();
    });
    let echo = echo("127.0.0.1:0");

    let bulk: Vec<_> = (0..BULK as u64)
        .map(|i| {
            let proxy = pair.local.addr;
            thread::spawn(move || {
                let s = socks_connect(proxy, &bulk_target.to_string());
                let seed = 100 + 2 * i;
                (&s).write_all(&seed.to_be_bytes()).unwrap();
                let mut w = s.try_clone().unwrap();
                let sender = thread::spawn(move || {
                    let d = send_pattern(&mut w, seed, BULK_BYTES);
                    w.shutdown(Shutdown::Write).unwrap();
                    d
                });
                let down = recv_digest(&mut &s);
                (seed, sender.join().unwrap(), down)
            })
        })
        .collect();
    let short: Vec<_> = (0..SHORT_THREADS)
        .map(|t| {
            let proxy = pair.local.addr;
            thread::spawn(move || {
                for i in 0..SHORT_EACH {
                    let mut s = socks_connect(proxy, &echo.to_string());
                    let mut msg = [0u8; 64];
                    Pattern::new((t * 10_000 + i) as u64).fill(&mut msg);
                    s.write_all(&msg).unwrap();
                    let mut back = [0u8; 64];
                    s.read_exact(&mut back).unwrap();
                    assert_eq!(back, msg);
                }
            })
        })
        .collect();

    // Client and target reports, matched by the seed of each connection.
    let mut clients: HashMap<u64, (String, (usize, String))> = HashMap::new();
    for b in bulk {
        let (seed, up_sent, down_got) = b.join().unwrap();
        clients.insert(seed, (up_sent, down_got));
    }
    for _ in 0..BULK {
        let (seed, (up_len, up_got), down_sent) = rx.recv_timeout(TIMEOUT).unwrap();
        let (up_sent, (down_len, down_got)) = clients.remove(&seed).expect("a client with this seed");
        assert_eq!((up_len, up_got), (BULK_BYTES, up_sent), "connection {seed}: client → target");
        assert_eq!((down_len, down_got), (BULK_BYTES, down_sent), "connection {seed}: target → client");
    }
    assert!(clients.is_empty());
    for s in short {
        s.join().unwrap();
    }
    for (p, (threads, fds)) in [&pair.local, &pair.server].into_iter().zip(idle) {
        p.wait_threads(threads);
        p.wait_fds(fds);
    }
}
