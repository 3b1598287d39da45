//! Floods: a thousand connections against a lowered descriptor limit, a
//! thousand slow or silent clients, and the deepest call path on the
//! connection threads' small stacks.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use crate::support::*;

const FLOOD: usize = 1000;

/// A pair whose processes start with a descriptor limit of 256 (soft and hard).
fn limited_pair() -> Pair<Proc> {
    let server_bin = env!("CARGO_BIN_EXE_blocking-server");
    let local_bin = env!("CARGO_BIN_EXE_blocking-local");
    let (c, k) = (cert("server.pem"), cert("server.key"));
    let server = Proc::start(
        "prlimit",
        &[
            "--nofile=256:256",
            "--",
            server_bin,
            "--listen",
            "127.0.0.1:0",
            "--allow-private",
            "--cert",
            &c,
            "--key",
            &k,
            "--handshake-timeout",
            "2",
        ],
    );
    let srv = server.addr.to_string();
    let local = Proc::start(
        "prlimit",
        &["--nofile=256:256", "--", local_bin, "--listen", "127.0.0.1:0", "--server", &srv, "--ca", CA],
    );
    Pair { server, local }
}

/// What a flooding SOCKS5 client got.
enum Got {
    Admitted(TcpStream),
    Refused,
    Closed,
}

fn flood_client(proxy: SocketAddr, target: &str) -> Got {
    let Ok(mut s) = TcpStream::connect_timeout(&proxy, TIMEOUT) else { return Got::Closed };
    timeouts(&s);
    let mut req = vec![5, 1, 0, 5, 1, 0];
    req.extend(socks_addr(target));
    if s.write_all(&req).is_err() {
        return Got::Closed;
    }
    let mut reply = [0u8; 12];
    match s.read_exact(&mut reply) {
        Ok(()) if reply[3] == 0 => Got::Admitted(s),
        Ok(()) if reply[3] == 1 => Got::Refused,
        Ok(()) => panic!("unexpected reply {reply:?}"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("no answer: hang")
        }
        Err(_) => Got::Closed,
    }
}

#[test]
fn a_flood_over_a_low_descriptor_limit_is_refused_cleanly_and_service_resumes() {
    let pair = limited_pair();
    // (256 - 64) / 2 = 96 on the server; the local sets aside 18 more for
    // its pool (16 ready connections, 2 fillers): (256 - 64 - 18) / 2 = 87.
    pair.local.wait_line(|l| l.contains("up to 87 connections"));
    let echo = echo("127.0.0.1:0").to_string();
    let web = http("127.0.0.1:0");

    // 1,000 SOCKS5 clients against the local, from 8 threads at once.
    let socks: Vec<_> = (0..8)
        .map(|_| {
            let (proxy, echo) = (pair.local.addr, echo.clone());
            thread::spawn(move || (0..FLOOD / 8).map(|_| flood_client(proxy, &echo)).collect::<Vec<_>>())
        })
        .collect();
    let got: Vec<Got> = socks.into_iter().flat_map(|t| t.join().unwrap()).collect();
    // Then 1,000 bare TCP clients against the server, whose slots the admitted tunnels hold.
    let mut bare: Vec<TcpStream> =
        (0..FLOOD).filter_map(|_| TcpStream::connect_timeout(&pair.server.addr, TIMEOUT).ok()).collect();
    // Hold the flood for a moment: an accept loop that spins would burn this time.
    let cpu_before = (pair.local.cpu_ticks(), pair.server.cpu_ticks());
    thread::sleep(Duration::from_secs(1)); // a measurement window, not a wait for anything

    let admitted = got.iter().filter(|g| matches!(g, Got::Admitted(_))).count();
    let refused = got.iter().filter(|g| matches!(g, Got::Refused)).count();
    assert!(admitted > 0 && admitted <= 87, "admitted {admitted}");
    assert!(refused > 0, "over-cap clients get REP 0x01 (or a close)");
    assert_eq!(got.len(), FLOOD);
    for p in [&pair.local, &pair.server] {
        assert!(p.threads() > 0, "alive");
    }
    let cpu = (pair.local.cpu_ticks() - cpu_before.0, pair.server.cpu_ticks() - cpu_before.1);
    assert!(cpu.0 < 50 && cpu.1 < 50, "the processes used {cpu:?} ticks of 10 ms holding the flood");
    pair.local.wait_line(|l| l.contains("at capacity (87 connections)"));
    // Every bare client is closed: at once over the cap, at the handshake deadline otherwise.
    for s in &mut bare {
        timeouts(s);
        let _ = read_until_closed(s);
    }
    pair.server.wait_line(|l| l.contains("at capacity (96 connections)"));

    // The admitted connections work; then the flood ends and a normal request is served.
    for g in &got {
        if let Got::Admitted(s) = g {
            let mut s = s;
            s.write_all(b"ok?").unwrap();
            let mut b = [0u8; 3];
            s.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"ok?");
        }
    }
    drop(got);
    drop(bare);
    let body = curl(&[
        "--socks5-hostname",
        &pair.local.addr.to_string(),
        &format!("http://localhost:{}/", web.port()),
    ]);
    assert_eq!(body, PAGE);
}

#[test]
fn slow_and_silent_clients_are_closed_at_the_deadline_while_others_are_served() {
    let pair = Pair::with_args(&["--handshake-timeout", "1"], &["--handshake-timeout", "1"]);
    let web = http("127.0.0.1:0");
    // 500 silent clients of the local, 250 that trickle its greeting, 250 that trickle a TLS hello.
    let mut silent: Vec<TcpStream> = (0..500).map(|_| connect(pair.local.addr)).collect();
    let mut slow: Vec<(TcpStream, &[u8])> =
        (0..250).map(|_| (connect(pair.local.addr), &[5u8, 1, 0, 5, 1][..])).collect();
    slow.extend((0..250).map(|_| (connect(pair.server.addr), &[0x16u8, 3, 1, 0, 200, 1, 0][..])));

    // One byte per client per round, while the deadline runs.
    let trickle = thread::spawn(move || {
        for round in 0..5 {
            for (s, bytes) in &mut slow {
                let _ = s.write_all(&bytes[round..=round]);
            }
            thread::sleep(Duration::from_millis(300)); // the trickle's pace
        }
        slow
    });
    // Meanwhile a real client is served.
    let body = curl(&[
        "--socks5-hostname",
        &pair.local.addr.to_string(),
        &format!("http://localhost:{}/", web.port()),
    ]);
    assert_eq!(body, PAGE);

    let slow = trickle.join().unwrap();
    for s in silent.iter_mut().chain(slow.into_iter().map(|(s, _)| s).collect::<Vec<_>>().iter_mut()) {
        let _ = read_until_closed(s); // closed (EOF or reset), never a timeout
    }
    // Silent before its first byte, a client has no protocol yet: end=client.
    pair.local.wait_lines(750, |l| {
        l.contains("end=socks5: deadline passed") || l.contains("end=client: deadline passed")
    });
    pair.server.wait_lines(250, |l| l.contains("end=tls handshake") && l.contains("deadline passed"));
}

/// Name resolution, both TLS handshakes, the trojan header, SOCKS5 login,
/// the egress check and error logging at trace level all run on the
/// connection threads' 128 KiB stacks; a stack overflow would abort a process.
#[test]
fn the_deepest_path_fits_the_thread_stack() {
    let (c, k) = (cert("server.pem"), cert("server.key"));
    let server_bin = env!("CARGO_BIN_EXE_blocking-server");
    let trace = [("RUST_LOG", "trace")];
    let server = Proc::start_with_env(
        server_bin,
        &["--listen", "127.0.0.1:0", "--cert", &c, "--key", &k, "--password", "pw", "--allow-private"],
        &trace,
    );
    let local_bin = env!("CARGO_BIN_EXE_blocking-local");
    let srv = format!("localhost:{}", server.addr.port());
    let local = Proc::start_with_env(
        local_bin,
        &["--listen", "127.0.0.1:0", "--server", &srv, "--ca", CA, "--password", "pw", "--user", "u:p"],
        &trace,
    );
    let web = http("127.0.0.1:0");
    let proxy = format!("socks5h://u:p@{}", local.addr);
    assert_eq!(curl(&["-x", &proxy, &format!("http://localhost:{}/", web.port())]), PAGE);
    let closed = free_port();
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20", "-x", &proxy, &format!("http://localhost:{closed}/")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "nothing listens there");
    server.wait_line(|l| l.contains(&format!("target=localhost:{closed} ")) && l.contains("end=target:"));
    for p in [&server, &local] {
        assert!(p.lines().iter().all(|l| !l.contains("overflow")), "{:?}", p.lines());
        assert!(p.threads() > 0);
    }
}
