//! Fixed forwards (`--forward LISTEN=HOST:PORT`): curl through a port that
//! leads to one web server, connections open at once, dig through one that
//! leads to dnsmasq (UDP and TCP on the same port), a flow per UDP client
//! that ends when quiet, the local's one cap shared by every port and every
//! flow, a stop, Debian's trojan as the server, and the start-up line.

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::thread;

use crate::support::*;
use crate::trojan::Trojan;

/// dnsmasq on 127.0.0.1, UDP and TCP, answering `fwd.test` with 192.0.2.7
/// and nothing else.
struct Dnsmasq {
    _proc: Proc,
    addr: SocketAddr,
}

fn dnsmasq() -> Dnsmasq {
    let port = free_port();
    let args = [
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--listen-address=127.0.0.1",
        &format!("--port={port}"),
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        // No pid file: each test runs its own, and they start side by side.
        "--pid-file=",
        "--address=/fwd.test/192.0.2.7",
        "--log-facility=-",
    ];
    let proc = Proc::start_waiting("dnsmasq", &args, |l| l.contains("started, version"));
    Dnsmasq { _proc: proc, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
}

/// What `dig @ADDR fwd.test +short` prints (with `extra`), under dig's own
/// timeout; fails the test if dig fails.
fn dig(at: SocketAddr, extra: &[&str]) -> String {
    let out = Command::new("dig")
        .args([
            &format!("@{}", at.ip()),
            "-p",
            &at.port().to_string(),
            "fwd.test",
            "+short",
            "+time=5",
            "+tries=1",
        ])
        .args(extra)
        .output()
        .expect("dig is installed (make deps)");
    assert!(out.status.success(), "dig {extra:?}: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stdout).unwrap()
}

/// A DNS query for `fwd.test`'s A record, with `id`.
fn query(id: u16) -> Vec<u8> {
    let [hi, lo] = id.to_be_bytes();
    [&[hi, lo, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0][..], b"\x03fwd\x04test\x00", &[0, 1, 0, 1]].concat()
}

/// A UDP socket of a client on loopback, with the tests' timeout.
fn udp_client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Asks `forward` for `fwd.test` from `sock` and checks the answer: the
/// query's id, 192.0.2.7, from the forward's own address.
fn ask(sock: &UdpSocket, forward: SocketAddr, id: u16) {
    sock.send_to(&query(id), forward).unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(from, forward, "a plain datagram from the forward's address");
    assert_eq!(buf[..2], id.to_be_bytes());
    assert!(buf[..n].windows(4).any(|w| w == [192, 0, 2, 7]), "{:?}", &buf[..n]);
}

#[test]
fn curl_through_a_forward_reaches_its_one_target_and_both_sides_log_it() {
    let server = server_with_certs().start();
    let web = http("127.0.0.1:0");
    let echo = echo("127.0.0.1:0");
    let local = local(server.addr)
        .args(&["--forward", &format!("127.0.0.1:0={web}"), "--forward", &format!("127.0.0.1:0={echo}")])
        .start();
    let url = format!("http://{}/", local.forwards[0]);
    assert_eq!(curl(&[&url]), PAGE);
    let line = local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={web} ")));
    assert!(line.contains(" end=eof proto=forward route=proxy"), "{line}");
    server.wait_line(|l| {
        l.contains(" closed ") && l.contains(&format!("target={web} ")) && l.ends_with("end=eof")
    });

    // Several at once: eight connections open together, each echoed on its own.
    let mut open: Vec<_> = (0..8).map(|_| connect(local.forwards[1])).collect();
    for (i, s) in open.iter_mut().enumerate() {
        s.write_all(format!("ping {i}").as_bytes()).unwrap();
    }
    for (i, mut s) in open.into_iter().enumerate() {
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut s), format!("ping {i}").as_bytes());
    }
    let lines =
        local.wait_lines(8, |l| l.contains(&format!("target={echo} ")) && l.contains(" up=6 down=6 "));
    assert!(lines.iter().all(|l| l.contains(" proto=forward route=proxy")), "{lines:#?}");
    server.wait_lines(8, |l| l.contains(&format!("target={echo} ")) && l.contains(" up=6 down=6 "));
    // And curls side by side.
    let curls: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || curl(&[&url]))
        })
        .collect();
    for c in curls {
        assert_eq!(c.join().unwrap(), PAGE);
    }
}

#[test]
fn dns_through_a_forward_over_udp_and_tcp_with_a_flow_per_client_that_ends_when_quiet() {
    let dns = dnsmasq();
    let server = server_with_certs().args(&["--password", "pw"]).start();
    let forward = format!("127.0.0.1:0={}", dns.addr);
    let local =
        local(server.addr).args(&["--password", "pw", "--udp-timeout", "1", "--forward", &forward]).start();
    let at = local.forwards[0];
    assert_eq!(dig(at, &[]), "192.0.2.7\n");
    assert_eq!(dig(at, &["+tcp"]), "192.0.2.7\n", "TCP on the same port");
    let tcp = local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={} ", dns.addr)));
    assert!(tcp.ends_with(" proto=forward route=proxy"), "{tcp}");

    // Two client addresses, two flows; the same address twice, one.
    let (a, b) = (udp_client(), udp_client());
    ask(&a, at, 1);
    ask(&b, at, 2);
    ask(&a, at, 3);
    for (sock, n) in [(&a, 2), (&b, 1)] {
        let client = sock.local_addr().unwrap();
        let line = local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("client={client} ")));
        assert!(line.contains(&format!(" target=udp/{} up={} ", dns.addr, n * query(0).len())), "{line}");
        assert!(
            line.contains(&format!(" end=udp timeout datagrams={n}/{n} dropped=0 proto=forward route=proxy")),
            "quiet for --udp-timeout: {line}"
        );
    }
    // dig's own flow ended the same way, and each flow's association on
    // the server ended with it.
    local
        .wait_lines(3, |l| l.contains(&format!("target=udp/{} ", dns.addr)) && l.contains("end=udp timeout"));
    server.wait_lines(3, |l| l.contains(" closed ") && l.contains(" target=udp ") && l.contains(" end=eof "));
    // A client that asks again after its flow ended gets a new one.
    ask(&a, at, 4);
}

#[test]
fn forwards_share_the_locals_cap_and_stop_with_it() {
    let server = server_with_certs().start();
    let echo = echo("127.0.0.1:0");
    let web = http("127.0.0.1:0");
    let local = local(server.addr)
        .args(&["--max-conns", "1", "--pool", "0"])
        .args(&["--forward", &format!("127.0.0.1:0={echo}"), "--forward", &format!("127.0.0.1:0={web}")])
        .start();
    // A forward's connection takes the one place...
    let mut held = connect(local.forwards[0]);
    held.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    held.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    // ...so the proxy port and the other forward are turned away.
    let mut socks = connect(local.addr);
    socks.write_all(&[&[5, 1, 0, 5, 1, 0][..], &socks_addr(&web.to_string())].concat()).unwrap();
    let answer = read_answer(&mut socks);
    assert!(answer.is_empty() || answer == [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0], "{answer:?}");
    let mut other = connect(local.forwards[1]);
    let _ = other.write_all(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(read_answer(&mut other), b"", "closed unanswered");
    // A stop closes every listener; the open connection drains.
    local.stop();
    for addr in [local.addr, local.forwards[0], local.forwards[1]] {
        assert!(std::net::TcpStream::connect_timeout(&addr, TIMEOUT).is_err(), "{addr} still listens");
    }
    held.write_all(b"pong").unwrap();
    held.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"pong", "still relayed while draining");
    drop(held);
    let line = local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={echo} ")));
    assert!(line.contains(" up=8 down=8 ") && line.contains(" proto=forward"), "{line}");
}

#[test]
fn a_udp_flow_is_a_connection_under_the_cap_and_a_stop_ends_it() {
    let dns = dnsmasq();
    let server = server_with_certs().args(&["--password", "pw"]).start();
    let echo = echo("127.0.0.1:0");
    let local = local(server.addr)
        .args(&["--password", "pw", "--max-conns", "1", "--pool", "0"])
        .args(&[
            "--forward",
            &format!("127.0.0.1:0={}", dns.addr),
            "--forward",
            &format!("127.0.0.1:0={echo}"),
        ])
        .start();
    // A UDP client's flow takes the one place...
    let a = udp_client();
    ask(&a, local.forwards[0], 1);
    // ...so the proxy port, the other forward and another UDP client are turned away.
    let mut socks = connect(local.addr);
    socks.write_all(&[&[5, 1, 0, 5, 1, 0][..], &socks_addr(&echo.to_string())].concat()).unwrap();
    let answer = read_answer(&mut socks);
    assert!(answer.is_empty() || answer == [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0], "{answer:?}");
    let mut tcp = connect(local.forwards[1]);
    let _ = tcp.write_all(b"ping");
    assert_eq!(read_answer(&mut tcp), b"", "closed, nothing echoed");
    let b = udp_client();
    b.send_to(&query(2), local.forwards[0]).unwrap();
    let from = b.local_addr().unwrap();
    local.wait_line(|l| {
        l.contains("at capacity (1 connections): dropping a datagram from ") && l.ends_with(&from.to_string())
    });
    // A stop ends the flow at once, with its close line.
    local.stop();
    let line = local
        .wait_line(|l| l.contains(" closed ") && l.contains(&format!("client={} ", a.local_addr().unwrap())));
    assert!(line.contains(" end=stopped datagrams=1/1 dropped=0 proto=forward"), "{line}");
    let mut buf = [0u8; 1];
    assert!(
        std::net::TcpStream::connect(local.forwards[1]).map(|mut s| s.read(&mut buf)).is_err(),
        "not listening"
    );
}

#[test]
fn a_forward_through_the_trojan_server_carries_tcp_and_udp() {
    let dir = scratch("forward-trojan");
    let dns = dnsmasq();
    let web = http("127.0.0.1:0");
    let fallback = http_page("127.0.0.1:0", "fallback\n");
    let port = free_port();
    let config = trojan::server_config(port, fallback.port(), "pw", &cert("server.pem"), &cert("server.key"));
    let server = Trojan::start(&dir, "server", config, port);
    let local = local(server.addr)
        .args(&["--password", "pw", "--sni", "localhost"])
        .args(&[
            "--forward",
            &format!("127.0.0.1:0={web}"),
            "--forward",
            &format!("127.0.0.1:0={}", dns.addr),
        ])
        .start();
    assert_eq!(curl(&[&format!("http://{}/", local.forwards[0])]), PAGE);
    assert_eq!(dig(local.forwards[1], &[]), "192.0.2.7\n");
    assert_eq!(dig(local.forwards[1], &["+tcp"]), "192.0.2.7\n");
    let udp = udp_client();
    ask(&udp, local.forwards[1], 7);
    local.wait_line(|l| {
        l.contains(" closed ")
            && l.contains(&format!("target={web} "))
            && l.contains(" end=eof proto=forward")
    });
}

#[test]
fn without_a_password_a_forward_serves_tcp_only_says_so_and_stops_on_sigterm() {
    let web = http("127.0.0.1:0");
    let mut pair = Pair::spawn(&[], &["--forward", &format!("127.0.0.1:0={web}")]);
    let start = pair.local.wait_line(|l| l.contains("listening on "));
    let at = start
        .split(", forwarding ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{start}"));
    assert!(start.contains(&format!("forwarding {at} to {web} (tcp only), ")), "{start}");
    pair.local.wait_line(|l| l.contains("--forward without a password serves TCP only"));
    assert_eq!(curl(&[&format!("http://{at}/")]), PAGE);
    pair.local.wait_line(|l| l.contains(" closed ") && l.contains(" proto=forward route=proxy"));
    // Nothing listens for UDP there: the port is unreachable.
    let no_udp = udp_client();
    no_udp.connect(at).unwrap();
    no_udp.send(&query(1)).unwrap();
    let refused = no_udp.recv(&mut [0u8; 64]).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");
    let stop = Command::new("kill").args(["-TERM", &pair.local.pid().to_string()]).status().unwrap();
    assert!(stop.success());
    assert_eq!(pair.local.wait_exit(), Some(0));
}
