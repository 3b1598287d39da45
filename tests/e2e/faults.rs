//! Faults and shutdown: a peer killed mid-transfer, a target that resets, a
//! tampered TLS byte, SIGTERM draining and a second signal.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use crate::support::*;

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &p.pid().to_string()]).status().unwrap();
    assert!(ok.success());
}

/// A target that sends `chunk` bytes, reports the connection, then streams until the client goes.
fn streaming_target() -> (SocketAddr, mpsc::Receiver<TcpStream>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let addr = target("127.0.0.1:0", move |mut s| {
        s.write_all(&[1u8; 64 * 1024]).unwrap();
        let _ = tx.lock().unwrap().send(s.try_clone().unwrap());
        let buf = [2u8; 16 * 1024];
        while s.write_all(&buf).is_ok() {}
    });
    (addr, rx)
}

#[test]
fn server_killed_mid_transfer_ends_the_app_connection_after_every_byte_it_sent() {
    let mut pair = Pair::spawn(&[], &["--pool", "0"]);
    let (local_threads, local_fds) = (pair.local.threads(), pair.local.fds());
    let (tgt, started) = streaming_target();
    let mut s = socks_connect(pair.local.addr, &tgt.to_string());
    let mut first = [0u8; 1024];
    s.read_exact(&mut first).unwrap();
    let _target_side = started.recv_timeout(TIMEOUT).unwrap();
    signal(&pair.server, "KILL");
    pair.server.wait_exit();
    // The app gets what the server sent before it died, then an EOF (a
    // reset would drop what it had not read yet); the log says how it ended.
    let end = read_until_closed(&mut s);
    assert!(end.is_ok(), "{end:?}");
    drop(s);
    pair.local.wait_line(|l| {
        l.contains(&format!("target={tgt} ")) && l.contains("end=server closed without close_notify")
    });
    pair.local.wait_threads(local_threads);
    pair.local.wait_fds(local_fds);
}

#[test]
fn local_killed_mid_transfer_releases_the_server_side() {
    let mut pair = Pair::spawn(&[], &["--pool", "0"]);
    let (server_threads, server_fds) = (pair.server.threads(), pair.server.fds());
    // The target sends a burst, then only reads, and reports how its read ended.
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let tgt = target("127.0.0.1:0", move |mut s| {
        s.write_all(&[1u8; 64 * 1024]).unwrap();
        let end = read_until_closed(&mut s).map(|v| v.len());
        let _ = tx.lock().unwrap().send(end);
    });
    let mut s = socks_connect(pair.local.addr, &tgt.to_string());
    // The whole burst, so that the local has nothing unread from the server
    // when it dies: a socket closed with bytes unread sends a reset, not a FIN.
    let mut burst = vec![0u8; 64 * 1024];
    s.read_exact(&mut burst).unwrap();
    signal(&pair.local, "KILL");
    pair.local.wait_exit();
    pair.server.wait_line(|l| l.contains(&format!("target={tgt} ")) && l.contains("end=client"));
    pair.server.wait_threads(server_threads);
    pair.server.wait_fds(server_fds);
    // The target's connection ended with an EOF after every byte the client
    // sent; the server's line says the client closed without close_notify.
    let end = rx.recv_timeout(TIMEOUT).unwrap();
    assert!(end.is_ok(), "{end:?}");
    pair.server.wait_line(|l| {
        l.contains(&format!("target={tgt} ")) && l.contains("end=client closed without close_notify")
    });
}

#[test]
fn an_app_reset_frees_a_connection_whose_target_stopped_reading_at_once() {
    // Both copy threads of each process are busy elsewhere: one blocked
    // writing (the target stopped reading, and every buffer on the way is
    // full), the other waiting on the quiet way back. The idle timeout is far
    // beyond the test's patience: only a reset seen by the waiting thread,
    // passed on at once, and a blocked writer woken, release the connection.
    let pair = Pair::spawn(&["--idle-timeout", "120"], &["--idle-timeout", "120", "--pool", "0"]);
    let (server_threads, server_fds) = (pair.server.threads(), pair.server.fds());
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    // The target never reads; it holds its socket until the server resets it.
    let tgt = target("127.0.0.1:0", move |s| {
        let _ = tx.lock().unwrap().send(());
        thread::sleep(3 * TIMEOUT);
        drop(s);
    });
    let mut app = socks_connect(pair.local.addr, &tgt.to_string());
    rx.recv_timeout(TIMEOUT).unwrap();
    // Write until every buffer on the way is full and a write stalls.
    app.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let chunk = [7u8; 64 * 1024];
    let mut sent = 0usize;
    while let Ok(n) = app.write(&chunk) {
        sent += n;
        assert!(sent < 1 << 30, "the target's window never filled");
    }
    socket2::SockRef::from(&app).set_linger(Some(Duration::ZERO)).unwrap();
    drop(app);
    let line = pair.local.wait_line(|l| l.contains(&format!("target={tgt} ")) && l.contains(" closed "));
    assert!(line.contains("end=client reset"), "{line}");
    let line = pair.server.wait_line(|l| l.contains(&format!("target={tgt} ")) && l.contains(" closed "));
    assert!(line.contains("end=client reset"), "{line}");
    pair.server.wait_threads(server_threads);
    pair.server.wait_fds(server_fds);
}

#[test]
fn a_target_reset_reaches_the_app_as_a_reset_in_both_directions() {
    let pair = Pair::spawn(&[], &["--pool", "0"]);
    let (local_threads, server_threads) = (pair.local.threads(), pair.server.threads());
    let tgt = target("127.0.0.1:0", |mut s| {
        let mut b = [0u8; 5];
        s.read_exact(&mut b).unwrap();
        // SO_LINGER 0: close() sends RST.
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
    });
    let mut s = socks_connect(pair.local.addr, &tgt.to_string());
    s.write_all(b"hello").unwrap();
    let end = read_until_closed(&mut s);
    assert!(matches!(&end, Err(e) if e.kind() == io::ErrorKind::ConnectionReset), "{end:?}");
    pair.server.wait_line(|l| l.contains(&format!("target={tgt} ")) && l.contains("end=target reset"));
    // The app's own direction is closed as well: writing fails once the close arrives.
    let mut wrote = 0;
    while wrote < 64 << 20 {
        match s.write(&[0u8; 64 * 1024]) {
            Ok(n) => wrote += n,
            Err(e) => {
                assert!(
                    matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset),
                    "{e}"
                );
                break;
            }
        }
    }
    assert!(wrote < 64 << 20, "the app's direction was left open");
    pair.local.wait_threads(local_threads);
    pair.server.wait_threads(server_threads);
}

/// A relay between local and server that flips one byte of the local's TLS
/// stream at `offset`.
fn tampering_relay(server: SocketAddr, offset: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        let (client, _) = l.accept().unwrap();
        timeouts(&client);
        let upstream = connect(server);
        let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        thread::spawn(move || {
            let _ = io::copy(&mut u2, &mut c2);
            let _ = c2.shutdown(Shutdown::Write);
        });
        let (mut client, mut upstream) = (client, upstream);
        let mut seen = 0usize;
        let mut buf = [0u8; 4096];
        loop {
            let n = match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if (seen..seen + n).contains(&offset) {
                buf[offset - seen] ^= 0x01;
            }
            seen += n;
            if upstream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = upstream.shutdown(Shutdown::Write);
    });
    addr
}

#[test]
fn a_flipped_tls_byte_closes_the_connection_and_nothing_after_it_reaches_the_target() {
    const LEN: usize = 1 << 20;
    let server = server_with_certs().start();
    // Well past the handshake: inside the application data.
    let relay = tampering_relay(server.addr, 300_000);
    let local = local(relay).args(&["--pool", "0"]).start();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let tgt = target("127.0.0.1:0", move |mut s| {
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        tx.lock().unwrap().send(got).unwrap();
    });
    let mut s = socks_connect(local.addr, &tgt.to_string());
    let mut sent = vec![0u8; LEN];
    Pattern::new(5).fill(&mut sent);
    let _ = s.write_all(&sent); // may fail once the tunnel is torn down
    let _ = s.shutdown(Shutdown::Write);
    let got = rx.recv_timeout(TIMEOUT).unwrap();
    assert!(got.len() < 300_000, "only what came before the tampered record: {}", got.len());
    assert_eq!(got, sent[..got.len()], "and that intact");
    let line = server.wait_line(|l| l.contains(&format!("target={tgt} ")));
    assert!(line.contains("end=client") && line.to_lowercase().contains("decrypt"), "{line}");
    let _ = read_until_closed(&mut s);
}

#[test]
fn sigterm_drains_a_transfer_in_progress_and_refuses_new_connections() {
    let mut pair = Pair::spawn(&["--drain-timeout", "20"], &["--drain-timeout", "20", "--pool", "0"]);
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Mutex::new(go_rx);
    // The target sends half, waits for the test's word, then sends the rest.
    let tgt = target("127.0.0.1:0", move |mut s| {
        send_pattern(&mut s, 1, 1 << 20);
        go_rx.lock().unwrap().recv_timeout(TIMEOUT).unwrap();
        send_pattern(&mut s, 2, 1 << 20);
    });
    let mut s = socks_connect(pair.local.addr, &tgt.to_string());
    let mut half = vec![0u8; 1 << 20];
    s.read_exact(&mut half).unwrap();

    signal(&pair.local, "TERM");
    signal(&pair.server, "TERM");
    pair.local.wait_line(|l| l.contains("listener closed"));
    pair.server.wait_line(|l| l.contains("listener closed"));
    for addr in [pair.local.addr, pair.server.addr] {
        let err = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{addr}");
    }
    go_tx.send(()).unwrap();
    let (n, _) = recv_digest(&mut s);
    assert_eq!(n, 1 << 20, "the second half arrived");
    drop(s); // the client's side ends too: nothing is left to drain
    assert_eq!(pair.local.wait_exit(), Some(0));
    assert_eq!(pair.server.wait_exit(), Some(0));
}

#[test]
fn a_draining_server_closes_ready_connections_and_serves_nothing_new_on_them() {
    for password in [Some("pw"), None] {
        let creds: Vec<&str> = password.map(|p| vec!["--password", p]).unwrap_or_default();
        let mut server = server_with_certs().args(&creds).args(&["--drain-timeout", "20"]).spawn();
        let before = server.fds();
        let local = local(server.addr).args(&creds).args(&["--pool", "2", "--pool-age", "60"]).spawn();
        // The local's two ready connections are open at the server, waiting for a header.
        server.wait_fds(before + 2);
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let tgt = target("127.0.0.1:0", move |_| {
            let _ = tx.lock().unwrap().send(());
        });
        signal(&server, "TERM");
        // Both are closed at once with close_notify, not at their deadline.
        let closed = server.wait_lines(2, |l| l.ends_with("end=draining: closed before its header"));
        assert_eq!(closed.len(), 2, "{closed:#?}");
        assert_eq!(server.wait_exit(), Some(0), "nothing was left to drain");
        // A new client is not served on them: the local finds them closed,
        // and the server takes no new connection.
        let (_s, reply) = socks_request(local.addr, &tgt.to_string());
        assert_ne!(reply, 0, "{password:?}: the request was served");
        assert!(rx.try_recv().is_err(), "{password:?}: the target was reached");
        let cut = |l: &String| l.contains("without close_notify");
        assert!(!local.lines().iter().any(cut), "{:#?}", local.lines());
    }
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut server = server().args(&["--drain-timeout", "600"]).spawn();
    let idle = server.fds();
    let _held = connect(server.addr); // keeps the drain waiting, once accepted
    let until = std::time::Instant::now() + TIMEOUT;
    while server.fds() <= idle {
        assert!(std::time::Instant::now() < until, "the connection was not accepted");
        thread::sleep(Duration::from_millis(5));
    }
    signal(&server, "INT");
    server.wait_line(|l| l.contains("listener closed"));
    signal(&server, "TERM");
    assert_eq!(server.wait_exit(), Some(128 + 15));
}
