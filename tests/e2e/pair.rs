//! The pair end to end with curl and raw sockets: names, IPv4 and IPv6,
//! bulk both ways, half-close, server-first protocols, early data, many
//! connections at once, bad SOCKS input, an untrusted server, every
//! timeout, threads and descriptors, the pool.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use crate::support::*;

#[test]
fn curl_fetches_a_page_by_name_by_ipv4_and_by_ipv6() {
    let pair = Pair::start();
    let web4 = http("127.0.0.1:0");
    let web6 = http("[::1]:0");
    let proxy = pair.local.addr.to_string();

    let by_name = curl(&["--socks5-hostname", &proxy, &format!("http://localhost:{}/", web4.port())]);
    assert_eq!(by_name, PAGE);
    // The name crossed the tunnel unresolved: the server is the one that saw it.
    pair.server.wait_line(|l| l.contains(&format!("target=localhost:{} ", web4.port())));

    let by_ipv4 = curl(&["--socks5", &proxy, &format!("http://127.0.0.1:{}/", web4.port())]);
    assert_eq!(by_ipv4, PAGE);
    let by_ipv6 = curl(&["--socks5", &proxy, &format!("http://[::1]:{}/", web6.port())]);
    assert_eq!(by_ipv6, PAGE);
    pair.server.wait_line(|l| l.contains(&format!("target=[::1]:{} ", web6.port())));
}

#[test]
fn the_pair_also_runs_over_ipv6_loopback() {
    let server = server_with_certs().args(&["--listen", "[::1]:0"]).start();
    let local = local(server.addr).args(&["--listen", "[::1]:0"]).start();
    let web = http("127.0.0.1:0");
    let body =
        curl(&["--socks5-hostname", &local.addr.to_string(), &format!("http://127.0.0.1:{}/", web.port())]);
    assert_eq!(body, PAGE);
}

#[test]
fn sixteen_mib_each_way_at_the_same_time_arrive_byte_exact() {
    const LEN: usize = 16 << 20;
    let pair = Pair::start();
    let (tx, rx) = mpsc::channel();
    // The target sends its own 16 MiB while it reads the client's.
    let tgt = target("127.0.0.1:0", move |s| {
        let mut w = s.try_clone().unwrap();
        let sender = thread::spawn(move || {
            let d = send_pattern(&mut w, 2, LEN);
            w.shutdown(Shutdown::Write).unwrap();
            d
        });
        let received = recv_digest(&mut &s);
        tx.send((received, sender.join().unwrap())).unwrap();
    });
    let s = socks_connect(pair.local.addr, &tgt.to_string());
    let mut w = s.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let d = send_pattern(&mut w, 1, LEN);
        w.shutdown(Shutdown::Write).unwrap();
        d
    });
    let (down_len, down_digest) = recv_digest(&mut &s);
    let up_digest = sender.join().unwrap();
    let ((up_len, up_seen), down_sent) = rx.recv_timeout(TIMEOUT).unwrap();
    assert_eq!((up_len, &up_seen), (LEN, &up_digest), "client → target");
    assert_eq!((down_len, &down_digest), (LEN, &down_sent), "target → client");
    let line = pair.local.wait_line(|l| l.contains(&format!("target={tgt} ")));
    assert!(
        line.contains(&format!("up={LEN} down={LEN} ")) && line.ends_with("end=eof proto=socks5 route=proxy"),
        "{line}"
    );
}

#[test]
fn half_close_the_reply_after_eof_still_arrives() {
    let pair = Pair::start();
    // The target answers only once it has seen EOF, as HTTP/1.0 and `nc -N` peers do.
    let tgt = target("127.0.0.1:0", |mut s| {
        let (n, digest) = recv_digest(&mut s);
        s.write_all(format!("got {n} bytes {digest}\n").as_bytes()).unwrap();
        send_pattern(&mut s, 9, 1 << 20);
        s.shutdown(Shutdown::Write).unwrap();
    });
    let mut s = socks_connect(pair.local.addr, &tgt.to_string());
    let sent = send_pattern(&mut s, 3, 300_000);
    s.shutdown(Shutdown::Write).unwrap();
    let reply = read_all(&mut s);
    let head = format!("got 300000 bytes {sent}\n");
    assert!(
        reply.starts_with(head.as_bytes()),
        "{:?}",
        String::from_utf8_lossy(&reply[..80.min(reply.len())])
    );
    assert_eq!(reply.len(), head.len() + (1 << 20));
}

#[test]
fn server_first_the_banner_arrives_before_the_client_writes() {
    let pair = Pair::start();
    let tgt = target("127.0.0.1:0", |mut s| {
        s.write_all(b"220 mail.example ESMTP ready\r\n").unwrap();
        let mut line = [0u8; 6];
        s.read_exact(&mut line).unwrap();
        s.write_all(b"221 bye\r\n").unwrap();
    });
    let mut s = socks_connect(pair.local.addr, &tgt.to_string());
    let mut banner = [0u8; 30];
    s.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"220 mail.example ESMTP ready\r\n");
    s.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_all(&mut s), b"221 bye\r\n");
}

#[test]
fn bytes_sent_with_the_request_are_not_lost() {
    let pair = Pair::start();
    let tgt = echo("127.0.0.1:0");
    let mut s = connect(pair.local.addr);
    // Greeting, request and payload in one write, before any reply.
    let mut all = vec![5, 1, 0, 5, 1, 0];
    all.extend(socks_addr(&tgt.to_string()));
    all.extend_from_slice(b"early bytes");
    s.write_all(&all).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let got = read_all(&mut s);
    assert_eq!(&got[..12], [5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&got[12..], b"early bytes");
}

#[test]
fn two_hundred_concurrent_connections_each_get_their_own_data_back() {
    const N: usize = 200;
    let pair = Pair::start();
    let tgt = echo("127.0.0.1:0");
    let all_open = Arc::new(Latch::new(N));
    let clients: Vec<_> = (0..N)
        .map(|i| {
            let (proxy, all_open) = (pair.local.addr, Arc::clone(&all_open));
            thread::spawn(move || {
                let s = socks_connect(proxy, &tgt.to_string());
                all_open.wait();
                let mut w = s.try_clone().unwrap();
                let sent = thread::spawn(move || {
                    let d = send_pattern(&mut w, 1000 + i as u64, 64 * 1024 + i);
                    w.shutdown(Shutdown::Write).unwrap();
                    d
                });
                let (n, got) = recv_digest(&mut &s);
                assert_eq!(n, 64 * 1024 + i);
                assert_eq!(got, sent.join().unwrap(), "connection {i}");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn bad_socks_input_gets_the_rfc_reply_then_a_close() {
    let pair = Pair::start();
    let exchange = |bytes: &[u8]| {
        let mut s = connect(pair.local.addr);
        s.write_all(bytes).unwrap();
        read_until_closed(&mut s).expect("a clean close, not a reset")
    };
    let refused = |rep: u8| vec![5, 0, 5, rep, 0, 1, 0, 0, 0, 0, 0, 0];
    assert_eq!(exchange(&[5, 1, 2]), [5, 0xFF], "only username/password offered");
    assert_eq!(exchange(&[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80]), refused(7), "BIND");
    assert_eq!(exchange(&[5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]), refused(7), "UDP ASSOCIATE");
    assert_eq!(exchange(&[5, 1, 0, 5, 1, 0, 7, 1, 2, 3, 4, 0, 80]), refused(8), "unknown ATYP");
    assert_eq!(exchange(&[4, 2, 0, 80, 127, 0, 0, 1, 0]), [0, 91, 0, 0, 0, 0, 0, 0], "SOCKS4 BIND");
    assert!(exchange(b"GET / HTTP/1.1\r\n\r\n").starts_with(b"HTTP/1.1 400 "), "HTTP, not absolute form");
    assert_eq!(exchange(&[0x16, 3, 1, 0, 1]), b"", "no protocol starts so: closed without reply");
}

#[test]
fn an_untrusted_server_is_refused_and_its_target_sees_nothing() {
    let server = server().start(); // the built-in test certificate
    let (tx, rx) = mpsc::channel();
    let tgt = target("127.0.0.1:0", move |_| tx.send(()).unwrap());

    // Verified against the public roots, the test certificate is refused.
    let local = local(server.addr).public_roots().start();
    let (mut s, rep) = socks_request(local.addr, &tgt.to_string());
    assert_eq!(rep, 1, "general failure");
    read_until_closed(&mut s).unwrap();
    server.wait_line(|l| l.contains(" closed ") && l.contains("end=tls handshake"));
    assert!(rx.try_recv().is_err(), "nothing reached the target");

    // Trusting the test CA, it works.
    let local = crate::support::local(server.addr).args(&["--ca", CA]).start();
    let _s = socks_connect(local.addr, &tgt.to_string());
    rx.recv_timeout(TIMEOUT).expect("the target is reached");
}

#[test]
fn a_refused_target_is_closed_and_a_dead_server_is_a_refusal_reply() {
    let pair = Pair::start();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut s = socks_connect(pair.local.addr, &closed.to_string());
    let _ = read_until_closed(&mut s); // EOF or reset: either way closed, and not a hang
    pair.server.wait_line(|l| l.contains(&format!("target={closed} ")) && l.contains("end=target:"));

    let local = local(closed).start();
    let (mut s, rep) = socks_request(local.addr, "127.0.0.1:80");
    assert_eq!(rep, 5, "connection refused");
    read_until_closed(&mut s).unwrap();
}

#[test]
fn silent_clients_are_closed_at_the_handshake_deadline() {
    let pair = Pair::with_args(&["--handshake-timeout", "0.3"], &["--handshake-timeout", "0.3"]);
    // Nothing at all, then a greeting with no request.
    let mut s = connect(pair.local.addr);
    assert_eq!(read_until_closed(&mut s).unwrap(), b"");
    let mut s = connect(pair.local.addr);
    s.write_all(&[5, 1, 0]).unwrap();
    assert_eq!(read_until_closed(&mut s).unwrap(), [5, 0]);
    // Silent before its first byte, the client has no protocol yet.
    pair.local.wait_line(|l| l.contains("end=client: deadline passed"));
    pair.local.wait_line(|l| l.contains("end=socks5: deadline passed proto=socks5"));
    // The server: TCP without a TLS handshake.
    let mut s = connect(pair.server.addr);
    let _ = read_until_closed(&mut s);
    pair.server.wait_line(|l| l.contains("end=tls handshake") && l.contains("deadline passed"));
}

#[test]
fn threads_return_to_idle_once_connections_close() {
    let pair = Pair::spawn(&[], &["--pool", "0"]);
    let (server_idle, local_idle) = (pair.server.threads(), pair.local.threads());
    let tgt = echo("127.0.0.1:0");
    let open: Vec<TcpStream> = (0..20).map(|_| socks_connect(pair.local.addr, &tgt.to_string())).collect();
    for mut s in open.iter() {
        s.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
    }
    assert!(pair.local.threads() >= local_idle + 40, "two threads per open connection");
    assert!(pair.server.threads() >= server_idle + 40);
    for s in &open {
        s.shutdown(Shutdown::Write).unwrap();
    }
    for mut s in open {
        assert_eq!(read_all(&mut s), b"");
    }
    // Failed connections leave nothing behind either.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut s = socks_connect(pair.local.addr, &closed.to_string());
    let _ = read_until_closed(&mut s);
    drop(s);
    let mut s = connect(pair.local.addr);
    s.write_all(&[5, 1, 9]).unwrap();
    let _ = read_until_closed(&mut s);

    pair.local.wait_threads(local_idle);
    pair.server.wait_threads(server_idle);
}

#[test]
fn an_idle_connection_is_closed_at_the_idle_timeout() {
    let pair = Pair::with_args(&["--idle-timeout", "0.4"], &["--idle-timeout", "60"]);
    let tgt = echo("127.0.0.1:0");
    let mut s = socks_connect(pair.local.addr, &tgt.to_string());
    s.write_all(b"one").unwrap();
    let mut b = [0u8; 3];
    s.read_exact(&mut b).unwrap();
    // Nothing more either way: the server's idle timeout ends it, and the close reaches the app.
    let _ = read_until_closed(&mut s);
    pair.server.wait_line(|l| l.contains(&format!("target={tgt} ")) && l.ends_with("end=idle timeout"));
}

#[test]
fn activity_in_one_direction_keeps_the_other_open() {
    let pair = Pair::with_args(&["--idle-timeout", "0.5"], &[]);
    // The target streams for longer than the idle timeout and never reads.
    let tgt = target("127.0.0.1:0", |mut s| {
        for _ in 0..15 {
            s.write_all(&[7u8; 1000]).unwrap();
            thread::sleep(std::time::Duration::from_millis(100)); // the traffic pattern, not a wait
        }
    });
    let mut s = socks_connect(pair.local.addr, &tgt.to_string());
    let got = read_all(&mut s);
    assert_eq!(got.len(), 15_000);
    drop(s);
    pair.server.wait_line(|l| l.contains(&format!("target={tgt} ")) && l.ends_with("end=eof"));
}

#[test]
fn after_a_half_close_a_silent_peer_is_closed_at_the_linger_timeout() {
    let pair = Pair::with_args(&["--linger", "0.3"], &[]);
    let (tx, rx) = mpsc::channel();
    // The target reads to EOF and then neither answers nor closes: the test keeps its socket.
    let tx = std::sync::Mutex::new(tx);
    let tgt = target("127.0.0.1:0", move |mut s| {
        let _ = recv_digest(&mut s);
        let _ = tx.lock().unwrap().send(s);
    });
    let mut s = socks_connect(pair.local.addr, &tgt.to_string());
    s.write_all(b"request").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let _held = rx.recv_timeout(TIMEOUT).unwrap();
    // The proxy, not the target, ended that direction: the app sees a reset, not an EOF.
    let end = read_until_closed(&mut s);
    assert!(matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset), "{end:?}");
    pair.server.wait_line(|l| l.contains(&format!("target={tgt} ")) && l.ends_with("end=linger timeout"));
}

#[test]
fn out_of_descriptors_the_local_backs_off_and_recovers() {
    let pair = Pair::spawn(&[], &[]);
    let web = http("127.0.0.1:0");
    let pid = pair.local.pid().to_string();
    // Only the soft limit moves; the hard one stays, so it can be raised again.
    let limit = |n: &str| {
        let ok = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={n}:")])
            .status()
            .expect("prlimit (util-linux)");
        assert!(ok.success());
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    limit(&(fds + 4).to_string());
    // Silent clients take the few descriptors left; the rest wait in the backlog.
    let idle: Vec<TcpStream> = (0..12).map(|_| connect(pair.local.addr)).collect();
    pair.local.wait_line(|l| l.contains("accept failed") && l.contains("backing off"));
    // Out of descriptors, accept fails at once every time: the loop must rest, not spin.
    let before = pair.local.cpu_ticks();
    thread::sleep(std::time::Duration::from_secs(1)); // a measurement window, not a wait for anything
    let used = pair.local.cpu_ticks() - before;
    assert!(used < 30, "the threads accepting used {used} ticks of 10 ms in one second");
    drop(idle);
    limit("4096");
    let body = curl(&["--socks5-hostname", &pair.local.addr.to_string(), &format!("http://{web}/")]);
    assert_eq!(body, PAGE);
}

#[test]
fn the_pool_serves_clients_and_replaces_stale_connections() {
    let pair = Pair::with_args(&[], &["--pool", "2", "--pool-age", "0.3"]);
    let web = http("127.0.0.1:0");
    let proxy = pair.local.addr.to_string();
    for _ in 0..5 {
        assert_eq!(curl(&["--socks5-hostname", &proxy, &format!("http://localhost:{}/", web.port())]), PAGE);
    }
    // Ready connections that aged out unused were closed and replaced.
    pair.server.wait_lines(2, |l| l.contains(" closed ") && l.contains("target=- "));
    assert_eq!(curl(&["--socks5", &proxy, &format!("http://{web}/")]), PAGE);
    pair.server.wait_lines(6, |l| {
        l.contains(&format!("target=localhost:{} ", web.port())) || l.contains(&format!("target={web} "))
    });
}

#[test]
fn ready_connections_the_server_closed_are_not_used() {
    let mut server = server_with_certs().spawn();
    let idle = server.fds();
    let addr = server.addr.to_string();
    let local = local(server.addr).args(&["--pool", "2", "--pool-age", "60"]).spawn();
    // Both ready connections wait on the server, each accepted.
    let until = std::time::Instant::now() + TIMEOUT;
    while server.fds() < idle + 2 {
        assert!(std::time::Instant::now() < until, "the pool did not fill");
        thread::sleep(std::time::Duration::from_millis(10));
    }
    // The server restarts: the ready connections are dead, with session tickets unread before the end.
    drop(server);
    server = server_with_certs().args(&["--listen", &addr]).spawn();
    let web = http("127.0.0.1:0");
    assert_eq!(curl(&["--socks5", &local.addr.to_string(), &format!("http://{web}/")]), PAGE);
    server.wait_line(|l| l.contains(&format!("target={web} ")));
}

/// A direction that goes quiet frees its buffers and waits for the next byte
/// without them; the bytes after each pause, large or small, and the final
/// EOF after one, must all come through.
#[test]
fn bursts_after_quiet_pauses_arrive_whole_both_ways() {
    let pause = blocking_proxy::conn::relay::QUIET * 3;
    let pair = Pair::start();
    let tgt = echo("127.0.0.1:0");
    let mut s = socks_connect(pair.local.addr, &tgt.to_string());
    let mut pattern = Pattern::new(11);
    for len in [1, 100_000, 7, 300_000, 16 * 1024 + 1] {
        thread::sleep(pause); // the traffic pattern under test, not a wait for an event
        let mut chunk = vec![0u8; len];
        pattern.fill(&mut chunk);
        s.write_all(&chunk).unwrap();
        let mut back = vec![0u8; len];
        s.read_exact(&mut back).unwrap();
        assert!(back == chunk, "a {len}-byte burst came back changed");
    }
    thread::sleep(pause);
    s.shutdown(Shutdown::Write).unwrap();
    assert!(read_all(&mut s).is_empty());
    pair.server.wait_line(|l| l.contains(&format!("target={tgt} ")) && l.ends_with("end=eof"));
}
