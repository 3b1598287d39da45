//! Several `--server`s in one local: a dead server costs one failed attempt,
//! not one per client; a client whose attempt fails is tried on the next
//! server; a server that comes back is used again; round-robin spreads new
//! clients; the pool never hands out a connection to a server marked down.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// A blocking-server with the test certificate, on `listen`: a process, so
/// that dropping it kills it and cuts every connection it holds.
fn server_on(listen: &str) -> Proc {
    server_with_certs().args(&["--listen", listen]).spawn()
}

/// A local for `servers`, in that order, with `extra` arguments, in this process.
fn local_with(servers: &[String], extra: &[&str]) -> Running {
    local_for(servers).args(extra).start()
}

/// One echo round trip through the local; returns how long it took.
fn round_trip(local: SocketAddr, echo: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut s = socks_connect(local, &echo.to_string());
    let sent = b"one request through the pair";
    s.write_all(sent).unwrap();
    let mut back = [0u8; 28];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, sent);
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// How many connections to `target` a server has served, once it has logged
/// the close lines of at least `n` of them (a close line comes just after
/// the client's round trip, so it may lag).
fn served(p: &Proc, target: SocketAddr, n: usize) -> usize {
    let to = format!("target={target} ");
    p.wait_lines(n, |l| l.contains(" closed ") && l.contains(&to)).len()
}

/// Lines of the local that record a client's failed attempt on `server`.
fn failed_attempts(local: &Running, server: &str) -> usize {
    local.lines().iter().filter(|l| l.contains(&format!("server {server}: "))).count()
}

#[test]
fn every_request_succeeds_when_the_first_server_is_never_up_and_the_second_dies() {
    let echo = echo("127.0.0.1:0");
    let never = format!("127.0.0.1:{}", free_port());
    let second = format!("127.0.0.1:{}", free_port());
    let mut s2 = server_on(&second);
    let s3 = server_on("127.0.0.1:0");
    // No pool: each attempt here is a client's.
    let local = local_with(&[never.clone(), second.clone(), s3.addr.to_string()], &["--pool", "0"]);

    let before: Vec<Duration> = (0..40).map(|_| round_trip(local.addr, echo)).collect();
    assert_eq!(served(&s2, echo, 40), 40, "the second server, the first that is up, served them all");
    local.wait_line(|l| l.contains(&format!("server {never} down: ")));

    drop(s2);
    let after: Vec<Duration> = (0..40).map(|_| round_trip(local.addr, echo)).collect();
    assert_eq!(served(&s3, echo, 40), 40, "the third server took over");
    local.wait_line(|l| l.contains(&format!("server {second} down: ")));

    // A dead server cost one client attempt, when it was found dead; the
    // background check, not the clients, tries it again.
    assert_eq!(failed_attempts(&local, &never), 1, "{:#?}", local.lines());
    assert_eq!(failed_attempts(&local, &second), 1, "{:#?}", local.lines());
    let (b, a) = (median(before), median(after));
    println!(
        "median round trip before the failover {b:?}, after {a:?} ({:.2}x)",
        a.as_secs_f64() / b.as_secs_f64()
    );

    // The second server comes back on its port: once its check passes, it is
    // the first server up again, and new clients go to it.
    s2 = server_on(&second);
    local.wait_line(|l| l.contains(&format!("server {second} up")));
    for _ in 0..5 {
        round_trip(local.addr, echo);
    }
    assert_eq!(served(&s2, echo, 5), 5, "the server that came back is used again");
    assert_eq!(served(&s3, echo, 40), 40);
    assert!(!local.lines().iter().any(|l| l.contains(&format!("server {never} up"))));
}

#[test]
fn round_robin_spreads_new_clients_over_the_servers_that_are_up() {
    let echo = echo("127.0.0.1:0");
    let a = server_on("127.0.0.1:0");
    let b = server_on("127.0.0.1:0");
    let c = server_on("127.0.0.1:0");
    let servers = [a.addr.to_string(), b.addr.to_string(), c.addr.to_string()];
    // No pool, whose fillers would take turns too.
    let local = local_with(&servers, &["--balance", "round-robin", "--pool", "0"]);
    for _ in 0..9 {
        round_trip(local.addr, echo);
    }
    assert_eq!([served(&a, echo, 3), served(&b, echo, 3), served(&c, echo, 3)], [3, 3, 3]);

    drop(b);
    for _ in 0..10 {
        round_trip(local.addr, echo);
    }
    local.wait_line(|l| l.contains(&format!("server {} down: ", servers[1])));
    let until = Instant::now() + TIMEOUT;
    while served(&a, echo, 0) + served(&c, echo, 0) < 16 {
        assert!(
            Instant::now() < until,
            "the 10 requests after the failure were not all served by the others"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(served(&a, echo, 0) + served(&c, echo, 0), 16);
    assert_eq!(failed_attempts(&local, &servers[1]), 1);
}

#[test]
fn a_pooled_local_never_hands_out_a_connection_to_a_server_that_is_down() {
    let echo = echo("127.0.0.1:0");
    let a = server_on("127.0.0.1:0");
    let b = server_on("127.0.0.1:0");
    let servers = [a.addr.to_string(), b.addr.to_string()];
    let local = local_with(&servers, &["--pool", "2"]);
    for _ in 0..10 {
        round_trip(local.addr, echo);
    }
    assert_eq!(served(&a, echo, 10), 10);

    drop(a);
    for _ in 0..10 {
        round_trip(local.addr, echo);
    }
    assert_eq!(served(&b, echo, 10), 10, "every request after the first server died went to the second");
    local.wait_line(|l| l.contains(&format!("server {} down: ", servers[0])));
}

#[test]
fn a_server_that_breaks_off_before_any_reply_is_marked_down() {
    // A target that accepts and says nothing, so the reply never starts. It
    // reads until its server goes: had it closed first, the server would
    // have passed that on as a clean end, and nothing would be cut.
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let silent = target("127.0.0.1:0", move |mut s| {
        let _ = tx.lock().unwrap().send(());
        let _ = s.read_to_end(&mut Vec::new());
    });
    let echo = echo("127.0.0.1:0");
    let a = server_on("127.0.0.1:0");
    let b = server_on("127.0.0.1:0");
    let servers = [a.addr.to_string(), b.addr.to_string()];
    // No pool, whose filler could find the server dead first, for another reason.
    let local = local_with(&servers, &["--pool", "0"]);

    let mut waiting = socks_connect(local.addr, &silent.to_string());
    waiting.write_all(b"hello?").unwrap();
    rx.recv_timeout(TIMEOUT).unwrap();
    drop(a);
    assert!(read_until_closed(&mut waiting).map_or(true, |got| got.is_empty()));
    // The application closes at the end it was given, and the relay is over.
    drop(waiting);
    local.wait_line(|l| {
        l.contains(&format!("server {} down: a connection was cut before any reply byte (", servers[0]))
    });
    round_trip(local.addr, echo);
    assert_eq!(served(&b, echo, 1), 1);
}

#[test]
fn a_target_that_cannot_be_reached_leaves_its_server_up() {
    let echo = echo("127.0.0.1:0");
    let closed = format!("127.0.0.1:{}", free_port());
    let a = server_on("127.0.0.1:0");
    let b = server_on("127.0.0.1:0");
    let local = local_with(&[a.addr.to_string(), b.addr.to_string()], &[]);

    // The local replies once the server is reached; the server then finds
    // the target refusing and ends the tunnel with close_notify.
    let mut s = socks_connect(local.addr, &closed);
    s.write_all(b"anyone?").unwrap();
    assert_eq!(read_until_closed(&mut s).unwrap(), b"");
    drop(s);
    a.wait_line(|l| l.contains(&format!("target={closed} ")) && l.contains("end=target: "));
    local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={closed} ")));

    round_trip(local.addr, echo);
    assert_eq!(served(&a, echo, 1), 1, "the first server is still the one in use");
    let mine = |l: &str| [a.addr, b.addr].iter().any(|s| l.contains(&format!("server {s} down: ")));
    assert!(!local.lines().iter().any(|l| mine(l)), "{:#?}", local.lines());
}

#[test]
fn sni_is_given_once_for_all_or_once_per_server() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_blocking-local"))
        .args(["--server", "127.0.0.1:1", "--server", "127.0.0.1:2", "--server", "127.0.0.1:3"])
        .args(["--sni", "a.example", "--sni", "b.example"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        "blocking-local: --sni is given 2 times for 3 servers: give it once for all, or once per --server (try --help)"
    );

    // Once per server: each server is verified against its own name.
    let echo = echo("127.0.0.1:0");
    let a = server_on("127.0.0.1:0");
    let b = server_on("127.0.0.1:0");
    let servers = [a.addr.to_string(), b.addr.to_string()];
    let local = local_with(&servers, &["--sni", "wrong.example", "--sni", "localhost"]);
    round_trip(local.addr, echo);
    assert_eq!(served(&b, echo, 1), 1, "the first server's certificate is not for wrong.example");
    let down = local.wait_line(|l| l.contains(&format!("server {} down: ", servers[0])));
    assert!(down.contains("certificate"), "{down}");
}

#[test]
fn a_clients_bad_socks4a_name_is_refused_at_the_local_and_marks_no_server_down() {
    let echo = echo("127.0.0.1:0");
    let a = server_on("127.0.0.1:0");
    let b = server_on("127.0.0.1:0");
    let local = local_with(&[a.addr.to_string(), b.addr.to_string()], &["--pool", "0"]);
    let mut replies = Vec::new();
    for name in ["bad\u{1}name", "tab\there", "del\u{7f}", "nl\nx.example"] {
        // SOCKS4a: 0.0.0.1, an empty USERID, then the name.
        let mut req = vec![4, 1];
        req.extend(echo.port().to_be_bytes());
        req.extend([0, 0, 0, 1, 0]);
        req.extend(name.as_bytes());
        req.push(0);
        let mut s = connect(local.addr);
        s.write_all(&req).unwrap();
        let mut reply = [0u8; 8];
        s.read_exact(&mut reply).unwrap();
        let _ = read_until_closed(&mut s);
        replies.push(reply[1]);
        round_trip(local.addr, echo);
    }
    // Down lines are the process's: other tests' servers go down too.
    let ours = |l: &str| [a.addr, b.addr].iter().any(|s| l.contains(&format!("server {s} down: ")));
    let down: Vec<String> = local.lines().into_iter().filter(|l| ours(l)).collect();
    assert!(down.is_empty(), "{down:#?}");
    assert_eq!(replies, [91; 4], "rejected, as SOCKS5 refuses the same names");
    assert_eq!(served(&a, echo, 4), 4, "every ordinary request went to the first server");
    assert!(!a.lines().iter().any(|l| l.contains("bad header")), "no bad name reached a server");
}

#[test]
fn a_pool_facing_a_server_that_fails_every_handshake_follows_the_servers_back_off() {
    // One server, whose certificate the local cannot verify (no test CA):
    // every handshake fails, on both sides.
    let server = server_with_certs().spawn();
    let local = local(server.addr).public_roots().args(&["--pool", "2"]).spawn();
    let addr = server.addr.to_string();
    // The check's second failure doubles the back-off from 2 s to 4 s.
    local.wait_line(|l| l.contains(&format!("server {addr} still down: ")) && l.contains("next check in 4s"));
    // By then the server has seen the pool's first tries (one per filler)
    // and two checks, not a try every half second.
    let failed = server.lines().iter().filter(|l| l.contains("tls handshake failed")).count();
    assert!((2..=4).contains(&failed), "{failed} failed handshakes at the server");
    let lines = local.lines();
    let down: Vec<&String> = lines.iter().filter(|l| l.contains(&format!("server {addr} down: "))).collect();
    assert_eq!(down.len(), 1, "{down:#?}");
    let warned: Vec<&String> = lines.iter().filter(|l| l.contains("WARN") && l.contains("pool")).collect();
    assert!(warned.is_empty(), "{warned:#?}");
}

/// A middlebox in front of `server` that, once `dropping` is set, lets the
/// TLS handshake through and then drops everything the client sends (a
/// familiar censor move): each client record is passed on up to and
/// including its first encrypted one (TLS 1.3's Finished); after that,
/// nothing more reaches the server. Before, it passes everything.
fn dropping_after_handshake(server: SocketAddr, dropping: Arc<AtomicBool>) -> SocketAddr {
    target("127.0.0.1:0", move |mut client| {
        let drops = dropping.load(Ordering::SeqCst);
        let Ok(mut up) = std::net::TcpStream::connect_timeout(&server, TIMEOUT) else { return };
        timeouts(&up);
        let (mut down_from, mut down_to) = (up.try_clone().unwrap(), client.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut down_from, &mut down_to);
        });
        let mut passing = true;
        loop {
            let mut head = [0u8; 5];
            if client.read_exact(&mut head).is_err() {
                return;
            }
            let mut body = vec![0u8; u16::from_be_bytes([head[3], head[4]]) as usize];
            if client.read_exact(&mut body).is_err() {
                return;
            }
            if passing && (up.write_all(&head).is_err() || up.write_all(&body).is_err()) {
                return;
            }
            // Application data (23): the handshake's last client record.
            passing &= !drops || head[0] != 23;
        }
    })
}

#[test]
fn a_server_that_goes_silent_after_the_handshake_is_routed_around_within_the_connect_timeout() {
    let web = http("127.0.0.1:0");
    let a = server_on("127.0.0.1:0");
    let b = server_on("127.0.0.1:0");
    let dropping = Arc::new(AtomicBool::new(false));
    let silent = dropping_after_handshake(a.addr, Arc::clone(&dropping));
    let servers = [silent.to_string(), b.addr.to_string()];
    let local = local_with(&servers, &["--pool", "0", "--connect-timeout", "1"]);
    let (proxy, url) = (format!("http://{}", local.addr), format!("http://{web}/"));
    // The server works at first, and shows the local that it answers at once.
    assert_eq!(curl(&["--max-time", "8", "-x", &proxy, &url]), PAGE);
    assert_eq!(served(&a, web, 1), 1);
    // Then the path goes silent after each handshake: a 504 once the
    // connect timeout has passed with no answer, not a hang.
    dropping.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let first = curl(&["--max-time", "8", "-w", " %{http_code}", "-x", &proxy, &url]);
    println!("through the silent server: {first:?} after {:?}", start.elapsed());
    assert!(first.ends_with(" 504"), "{first:?}");
    local.wait_line(|l| {
        l.contains(&format!("server {silent} down: no answer to a key update within the connect timeout"))
    });
    // The next goes to the second server at once.
    let start = Instant::now();
    assert_eq!(curl(&["--max-time", "8", "-x", &proxy, &url]), PAGE);
    println!("through the second server: {:?}", start.elapsed());
    assert_eq!(served(&b, web, 1), 1);
}

#[test]
fn a_server_whose_target_is_slower_than_the_connect_timeout_stays_up() {
    // The target answers 2.5 s after the request, the connect timeout is 1 s.
    let slow = target("127.0.0.1:0", |mut s| {
        let mut request = [0u8; 5];
        if s.read_exact(&mut request).is_ok() {
            std::thread::sleep(Duration::from_millis(2500));
            let _ = s.write_all(b"late!");
        }
    });
    let a = server_on("127.0.0.1:0");
    let b = server_on("127.0.0.1:0");
    let servers = [a.addr.to_string(), b.addr.to_string()];
    let local = local_with(&servers, &["--pool", "0", "--connect-timeout", "1"]);
    let start = Instant::now();
    let mut s = socks_connect(local.addr, &slow.to_string());
    s.write_all(b"hello").unwrap();
    let mut answer = [0u8; 5];
    s.read_exact(&mut answer).unwrap();
    println!("a slow target answered through the first server after {:?}", start.elapsed());
    assert_eq!(&answer, b"late!");
    drop(s);
    let ours = |l: &String| servers.iter().any(|s| l.contains(&format!("server {s} down: ")));
    assert!(!local.lines().iter().any(ours), "{:#?}", local.lines());
    assert_eq!(served(&a, slow, 1), 1);
}
