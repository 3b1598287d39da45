//! Nothing a client does holds more of the machine than the caps allow:
//! name lookups that never return keep their places under the cap, one
//! source cannot take every place with connections that never authenticate,
//! and the cap follows the thread limits as well as the descriptor limit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use socket2::{Domain, Socket, Type};

use crate::support::*;

/// A TLS connection to `server` from `source`, trusting the test CA.
fn tls_from(source: &str, server: SocketAddr) -> StreamOwned<ClientConnection, TcpStream> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&source.parse::<SocketAddr>().unwrap().into()).unwrap();
    sock.connect_timeout(&server.into(), TIMEOUT).unwrap();
    let sock: TcpStream = sock.into();
    timeouts(&sock);
    let trust = blocking_proxy::tls::config::Trust::CaFile(CA.into());
    let tls = blocking_proxy::tls::config::client_config(&trust, &[]).unwrap();
    let conn = ClientConnection::new(tls, ServerName::try_from("localhost").unwrap()).unwrap();
    StreamOwned::new(conn, sock)
}

/// The seed header for `name:port`.
fn seed_header(name: &str, port: u16) -> Vec<u8> {
    let mut h = vec![3, name.len() as u8];
    h.extend_from_slice(name.as_bytes());
    h.extend_from_slice(&port.to_be_bytes());
    h
}

/// Whether the peer has closed `s` (an EOF is waiting), without blocking.
fn closed_now(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let closed = matches!(s.peek(&mut [0u8]), Ok(0));
    s.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn one_source_cannot_take_every_place_with_connections_that_say_nothing() {
    let server = server().args(&["--max-conns", "20", "--max-pending-per-ip", "8"]).start();
    let echo = echo("127.0.0.1:0");
    // 127.0.0.1 opens twenty connections and never starts TLS.
    let flood: Vec<TcpStream> = (0..20).map(|_| connect(server.addr)).collect();
    server.wait_line(|l| l.contains("10 connections from 127.0.0.1 already pending: refusing"));
    // Ten get in while half the places are free; then the per-source limit
    // holds, and the other ten are closed at once.
    let until = Instant::now() + TIMEOUT;
    loop {
        let closed = flood.iter().filter(|s| closed_now(s)).count();
        if closed == 10 {
            break;
        }
        assert!(closed < 10 && Instant::now() < until, "{closed} of the flood closed, want 10");
        thread::sleep(Duration::from_millis(10));
    }
    // Another address is still served, and once past its header no longer counts as pending.
    for _ in 0..10 {
        let mut tls = tls_from("127.0.0.2:0", server.addr);
        let mut first = seed_header("127.0.0.1", echo.port());
        first.extend_from_slice(b"ping");
        tls.write_all(&first).unwrap();
        let mut back = [0u8; 4];
        tls.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping");
    }
    drop(flood);
}

#[test]
fn the_cap_follows_the_thread_limit_and_the_start_line_says_so() {
    // prlimit sets RLIMIT_NPROC for the server alone: (1000 - 144) / 4 = 214.
    let bin = env!("CARGO_BIN_EXE_blocking-server");
    let server = Proc::start("prlimit", &["--nproc=1000:1000", "--", bin, "--listen", "127.0.0.1:0"]);
    let line = server.wait_line(|l| l.contains("listening on"));
    assert!(line.contains("up to 214 connections (RLIMIT_NPROC 1000, 4 threads per connection;"), "{line}");
}

#[test]
fn name_lookups_that_never_return_keep_their_places_under_the_cap() {
    // A network namespace of our own, so that the resolver can be one that never answers.
    let dir = scratch("netns");
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\noptions timeout:3 attempts:1\n").unwrap();
    let setup = "mount --bind \"$1\" /etc/resolv.conf &&";
    let test = "limits::in_a_namespace_with_a_silent_resolver";
    if !in_namespace(&["-m", "-n"], setup, test, &[&resolv]) {
        eprintln!(
            "skipped: `unshare -m -n` is not allowed here (it needs root); no namespace, no silent resolver"
        );
    }
}

#[test]
#[ignore = "run by name_lookups_that_never_return_keep_their_places_under_the_cap, inside its namespace"]
fn in_a_namespace_with_a_silent_resolver() {
    if !inside_namespace() {
        return;
    }
    // The resolver: takes every query, answers none.
    let _silent = UdpSocket::bind("127.0.0.1:53").unwrap();
    const CAP: usize = 20;
    let server = server().args(&["--max-conns", "20", "--connect-timeout", "1"]).spawn();
    let idle = server.threads();
    let most = Arc::new(AtomicUsize::new(idle));
    let done = Arc::new(AtomicBool::new(false));
    let watch = {
        let (most, done, pid) = (Arc::clone(&most), Arc::clone(&done), server.pid());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let threads = status.lines().find_map(|l| l.strip_prefix("Threads:")).map(str::trim);
                if let Some(n) = threads.and_then(|n| n.parse().ok()) {
                    most.fetch_max(n, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let start = Instant::now();
    for round in 0..6 {
        let clients: Vec<_> = (0..CAP)
            .map(|i| {
                let addr = server.addr;
                thread::spawn(move || {
                    // Over the cap the server closes at once: the write or the read fails.
                    let mut tls = tls_from("127.0.0.1:0", addr);
                    let _ = tls.write_all(&seed_header(&format!("host{round}-{i}.invalid"), 80));
                    let _ = tls.read_to_end(&mut Vec::new());
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
    }
    done.store(true, Ordering::Relaxed);
    watch.join().unwrap();
    let most = most.load(Ordering::Relaxed);
    eprintln!("threads: {idle} idle, at most {most} during six rounds of {CAP} ({:?})", start.elapsed());
    assert!(most <= idle + 2 * CAP + 8, "{most} threads for a cap of {CAP} ({idle} idle)");
    server.wait_line(|l| l.contains("end=target: name resolution timed out"));
}

/// A UDP ASSOCIATE on a control connection of its own: the reply code, or
/// None when the local closed without one.
fn ask_udp(local: SocketAddr) -> (TcpStream, Option<u8>) {
    let mut c = connect(local);
    c.write_all(&[5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
    let mut head = [0u8; 2 + 4];
    if c.read_exact(&mut head).is_err() {
        return (c, None);
    }
    let mut rest = [0u8; 6];
    let code = c.read_exact(&mut rest).ok().map(|_| head[3]);
    (c, code)
}

#[test]
fn udp_associations_past_the_descriptor_limit_are_refused_cleanly_and_never_mark_the_server_down() {
    let server = server().args(&["--password", "pw"]).spawn();
    // An association holds three descriptors at the local: its control
    // connection, its UDP socket and its TLS connection.
    let local = local(server.addr).args(&["--password", "pw", "--pool", "0"]).nofile(600).spawn();
    let mut held = Vec::new();
    let (mut granted, mut refused, mut closed) = (0, 0, 0);
    for i in 0..300 {
        let (c, code) = ask_udp(local.addr);
        match code {
            Some(0) => granted += 1,
            Some(1) => refused += 1,
            // Refused as it was accepted, before its first byte had arrived.
            None => closed += 1,
            other => panic!("association {i}: {other:?}; {:#?}", local.lines()),
        }
        held.push(c);
    }
    println!("600 descriptors: {granted} associations granted, {refused} refused with reply 1, {closed} closed at accept");
    let refused = refused + closed;
    let lines = local.lines();
    let blamed: Vec<&String> = lines.iter().filter(|l| l.contains(" down: ")).collect();
    assert!(blamed.is_empty(), "the local's own limit blamed the server: {blamed:#?}");
    let exhausted: Vec<&String> = lines.iter().filter(|l| l.contains("Too many open files")).collect();
    assert!(exhausted.is_empty(), "the local ran out of descriptors: {exhausted:#?}");
    assert!(refused > 0 && granted >= 150, "{granted} granted, {refused} refused");

    // Once they close, a new association is served, through the same server.
    drop(held);
    local.wait_lines(granted, |l| l.contains("target=udp ") && l.contains("end=client closed the control"));
    let (echo, _seen) = udp_echo();
    let (control, relay) = associate(local.addr, 0);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    udp.send_to(&datagram(0, echo, b"after"), relay).unwrap();
    let mut back = [0u8; 64];
    let (n, _) = udp.recv_from(&mut back).unwrap();
    assert!(back[..n].ends_with(b"after"));
    drop(control);
}

#[test]
fn out_of_descriptors_at_the_local_is_its_own_problem_and_no_server_is_marked_down() {
    let pair = Pair::spawn(&[], &["--pool", "0"]);
    let web = http("127.0.0.1:0");
    let pid = pair.local.pid().to_string();
    let limit = |n: &str| {
        let ok = Command::new("prlimit").args(["--pid", &pid, &format!("--nofile={n}:")]).status().unwrap();
        assert!(ok.success());
    };
    // Room for one client and its TLS connection, and for one client more:
    // the second client's TLS connection is one descriptor too many. The
    // limit bounds descriptor numbers, so it goes where three are free below it.
    let open: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap().parse().unwrap())
        .collect();
    let room = (0u64..).find(|&n| n - open.iter().filter(|&&fd| fd < n).count() as u64 == 3).unwrap();
    limit(&room.to_string());
    let (first, rep) = socks_request(pair.local.addr, &web.to_string());
    assert_eq!(rep, 0);
    let (_second, rep) = socks_request(pair.local.addr, &web.to_string());
    assert_eq!(rep, 1, "general failure: the local could not open its side");
    let line = pair.local.wait_line(|l| l.contains("out of resources here"));
    assert!(line.contains("not at server") && line.contains("Too many open files"), "{line}");
    pair.local.wait_line(|l| l.contains("end=local: Too many open files"));
    let blamed: Vec<String> = pair.local.lines().into_iter().filter(|l| l.contains(" down: ")).collect();
    assert!(blamed.is_empty(), "the local's own limit blamed the server: {blamed:#?}");
    drop(first);
    limit("4096");
    let body = curl(&["--socks5-hostname", &pair.local.addr.to_string(), &format!("http://{web}/")]);
    assert_eq!(body, PAGE);
}
