//! blocking-server behind a load balancer (`--proxy-protocol`): the client a
//! PROXY protocol header names is the client in the close line and in the
//! per-source limit; a header from outside `--proxy-from`, or none at all,
//! closes the connection; a health check keeps the connection's own address.
//! The balancer here is the test itself, writing the header by hand.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use blocking_proxy::proto::addr::Target;
use blocking_proxy::proto::proxy_protocol::{write_v2, V2_SIGNATURE};
use blocking_proxy::proto::wire::encode_seed;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use socket2::{Domain, Socket, Type};

use crate::support::*;

/// A TCP connection to `server` from `source` (a loopback address, port 0 for any).
fn from(source: &str, server: SocketAddr) -> TcpStream {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&source.parse::<SocketAddr>().unwrap().into()).unwrap();
    sock.connect_timeout(&server.into(), TIMEOUT).unwrap();
    let sock: TcpStream = sock.into();
    timeouts(&sock);
    sock
}

/// TLS over `sock`, trusting the test CA; the handshake runs on first use.
fn tls(sock: TcpStream) -> StreamOwned<ClientConnection, TcpStream> {
    let trust = blocking_proxy::tls::config::Trust::CaFile(CA.into());
    let config = blocking_proxy::tls::config::client_config(&trust, &[]).unwrap();
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    StreamOwned::new(conn, sock)
}

/// Over `sock`, whose PROXY header (if any) is written: TLS, the seed
/// header for the echo target `echo` and a ping, which must come back.
fn ping_through(sock: TcpStream, echo: SocketAddr) {
    let mut tls = tls(sock);
    let mut first = Vec::new();
    encode_seed(&Target::Ip(echo), &mut first);
    first.extend_from_slice(b"ping");
    tls.write_all(&first).unwrap();
    let mut back = [0u8; 4];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
}

/// Writes `header` on a connection from `source`, then pings the echo target through it.
fn ping_after(header: &[u8], source: &str, server: SocketAddr, echo: SocketAddr) -> SocketAddr {
    let mut sock = from(source, server);
    sock.write_all(header).unwrap();
    let own = sock.local_addr().unwrap();
    ping_through(sock, echo);
    own
}

/// Whether the server has closed `sock` (an EOF or a reset), waiting up to TIMEOUT.
fn closed(mut sock: TcpStream) -> bool {
    read_until_closed(&mut sock).map_or(true, |rest| rest.is_empty())
}

fn v1(source: &str, destination: &str) -> Vec<u8> {
    let (s, d): (SocketAddr, SocketAddr) = (source.parse().unwrap(), destination.parse().unwrap());
    let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {family} {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port()).into_bytes()
}

/// A version 2 `LOCAL` header: the balancer's own connection, a health check.
fn v2_local() -> Vec<u8> {
    [&V2_SIGNATURE[..], &[0x20, 0x00, 0, 0]].concat()
}

fn v2(source: &str, destination: &str) -> Vec<u8> {
    let mut h = Vec::new();
    write_v2(source.parse().unwrap(), destination.parse().unwrap(), &mut h);
    h
}

#[test]
fn the_client_a_header_names_is_the_client_in_the_close_line() {
    let server = server().args(&["--proxy-protocol", "--proxy-from", "127.0.0.1/32"]).start();
    let echo = echo("127.0.0.1:0");
    let headers = [
        ("192.0.2.1:56324", v1("192.0.2.1:56324", "198.51.100.1:443")),
        ("[2001:db8::1]:40000", v1("[2001:db8::1]:40000", "[2001:db8::2]:443")),
        ("192.0.2.2:1", v2("192.0.2.2:1", "198.51.100.1:443")),
        ("[2001:db8::3]:65535", v2("[2001:db8::3]:65535", "[2001:db8::2]:443")),
    ];
    for (client, header) in &headers {
        ping_after(header, "127.0.0.1:0", server.addr, echo);
        let line = server.wait_line(|l| l.contains(&format!("client={client} target={echo} ")));
        println!("{line}");
    }
    let closes: Vec<String> = server.lines().into_iter().filter(|l| l.contains(" closed client=")).collect();
    assert!(closes.iter().all(|l| !l.contains("client=127.0.0.1:")), "{closes:#?}");
}

#[test]
fn a_client_outside_proxy_from_cannot_claim_another_address() {
    let server = server().args(&["--proxy-protocol", "--proxy-from", "127.0.0.3/32"]).start();
    let echo = echo("127.0.0.1:0");
    // A client on 127.0.0.1 tries to pass for 203.0.113.9: closed before its header is read.
    let mut spoof = from("127.0.0.1:0", server.addr);
    let own = spoof.local_addr().unwrap();
    spoof.write_all(&v1("203.0.113.9:4444", "127.0.0.1:443")).unwrap();
    assert!(closed(spoof), "the spoofing client is closed");
    let line = server.wait_line(|l| l.contains(&format!("client={own} ")));
    println!("{line}");
    assert!(line.ends_with("end=proxy protocol: 127.0.0.1 is not in --proxy-from"), "{line}");
    assert!(server.lines().iter().all(|l| !l.contains("203.0.113.9")), "the forged address is never logged");
    // The same header from the balancer's address is taken.
    ping_after(&v1("203.0.113.9:4444", "127.0.0.1:443"), "127.0.0.3:0", server.addr, echo);
    server.wait_line(|l| l.contains(&format!("client=203.0.113.9:4444 target={echo} ")));
}

#[test]
fn a_connection_without_a_valid_header_is_closed() {
    let server = server()
        .args(&["--proxy-protocol", "--proxy-from", "127.0.0.1", "--handshake-timeout", "0.5"])
        .start();
    let echo = echo("127.0.0.1:0");
    // TLS straight away: its first byte is no header.
    let sock = from("127.0.0.1:0", server.addr);
    let own = sock.local_addr().unwrap();
    let mut direct = tls(sock);
    assert!(direct.write_all(b"x").and_then(|()| direct.flush()).is_err(), "no TLS without a header");
    let line = server.wait_line(|l| l.contains(&format!("client={own} ")));
    assert!(line.ends_with("end=proxy protocol: protocol: no PROXY protocol header"), "{line}");
    // A header of the wrong family, and silence, are closed too.
    for (bytes, end) in [
        (
            &b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n"[..],
            "protocol: address of the wrong family in PROXY v1 header",
        ),
        (&b"PROXY TCP4 192.0.2.1"[..], "deadline passed"),
        (&b""[..], "deadline passed"),
    ] {
        let mut sock = from("127.0.0.1:0", server.addr);
        let own = sock.local_addr().unwrap();
        sock.write_all(bytes).unwrap();
        assert!(closed(sock));
        let line = server.wait_line(|l| l.contains(&format!("client={own} ")));
        println!("{line}");
        assert!(line.ends_with(&format!("end=proxy protocol: {end}")), "{line}");
    }
    // The server itself is fine.
    ping_after(&v1("192.0.2.1:1", "192.0.2.2:2"), "127.0.0.1:0", server.addr, echo);
}

#[test]
fn a_health_check_keeps_the_connections_own_address() {
    let server = server().args(&["--proxy-protocol", "--proxy-from", "127.0.0.1/32"]).start();
    let echo = echo("127.0.0.1:0");
    // A LOCAL header, then a close: the balancer's health check.
    let mut check = from("127.0.0.1:0", server.addr);
    let own = check.local_addr().unwrap();
    check.write_all(&v2_local()).unwrap();
    drop(check);
    let line = server.wait_line(|l| l.contains(&format!("client={own} ")));
    println!("{line}");
    assert!(line.ends_with("end=health check"), "{line}");
    // LOCAL or UNKNOWN, then a client: served, under the connection's own address.
    for header in [&v2_local()[..], b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2\r\n"] {
        let own = ping_after(header, "127.0.0.1:0", server.addr, echo);
        server.wait_line(|l| l.contains(&format!("client={own} target={echo} ")));
    }
}

#[test]
fn the_pending_limit_counts_the_client_a_header_names_not_the_balancer() {
    let server = server()
        .args(&[
            "--proxy-protocol",
            "--proxy-from",
            "127.0.0.1",
            "--max-conns",
            "20",
            "--max-pending-per-ip",
            "2",
        ])
        .spawn();
    let echo = echo("127.0.0.1:0");
    // Half the places, all from the balancer (127.0.0.1), for ten clients that then say nothing.
    let mut held: Vec<TcpStream> = (1..=10)
        .map(|i| {
            let mut s = from("127.0.0.1:0", server.addr);
            s.write_all(&v1(&format!("198.51.100.{i}:1000"), "192.0.2.100:443")).unwrap();
            s
        })
        .collect();
    server.wait_lines(10, |l| l.contains("PROXY header from 127.0.0.1:"));
    // Three more for one client: two may be pending, the third is closed.
    for _ in 0..3 {
        let mut s = from("127.0.0.1:0", server.addr);
        s.write_all(&v1("192.0.2.7:2000", "192.0.2.100:443")).unwrap();
        held.push(s);
    }
    let line = server.wait_line(|l| l.contains("client=192.0.2.7:2000 ") && l.contains("end=refused"));
    println!("{line}");
    assert!(line.ends_with("end=refused: 2 connections from 192.0.2.7 already pending"), "{line}");
    // Another client is served, from the same balancer with fourteen connections pending.
    ping_after(&v1("192.0.2.8:3000", "192.0.2.100:443"), "127.0.0.1:0", server.addr, echo);
    server.wait_line(|l| l.contains(&format!("client=192.0.2.8:3000 target={echo} ")));
    let lines = server.lines();
    let refused: Vec<&String> =
        lines.iter().filter(|l| l.contains(" closed client=") && l.contains("refus")).collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(
        lines.iter().all(|l| !l.contains("from 127.0.0.1 already pending")),
        "the balancer is never counted"
    );
    drop(held);
}

/// A version 2 `PROXY` header of address family and protocol `family` with
/// `len` bytes of zeros for its addresses: `0x31` is AF_UNIX over a stream
/// (216 bytes of two paths), `0x00` AF_UNSPEC (no addresses).
fn v2_family(family: u8, len: u16) -> Vec<u8> {
    let [hi, lo] = len.to_be_bytes();
    [&V2_SIGNATURE[..], &[0x21, family, hi, lo], &vec![0u8; usize::from(len)]].concat()
}

/// Headers from a balancer that name no client this server can use: an
/// unspecified, broadcast or multicast source, or an AF_UNIX or AF_UNSPEC one.
fn unusable_claims() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("v1 0.0.0.0", v1("0.0.0.0:1001", "192.0.2.100:443")),
        ("v1 ::", v1("[::]:1002", "[2001:db8::2]:443")),
        ("v1 255.255.255.255", v1("255.255.255.255:1003", "192.0.2.100:443")),
        ("v1 224.0.0.1", v1("224.0.0.1:1004", "192.0.2.100:443")),
        ("v1 ff02::1", v1("[ff02::1]:1005", "[2001:db8::2]:443")),
        ("v2 0.0.0.0", v2("0.0.0.0:1006", "192.0.2.100:443")),
        ("v2 ::ffff:255.255.255.255", v2("[::ffff:255.255.255.255]:1007", "[2001:db8::2]:443")),
        ("v2 AF_UNIX", v2_family(0x31, 216)),
        ("v2 AF_UNSPEC", v2_family(0x00, 0)),
    ]
}

#[test]
fn a_proxy_header_claiming_an_unusable_address_counts_as_the_balancers_own() {
    let server = server().args(&["--proxy-protocol", "--proxy-from", "127.0.0.1/32"]).start();
    let echo = echo("127.0.0.1:0");
    // Each claim, then a ping: the close line names the connection's own address.
    for (i, (what, header)) in unusable_claims().iter().enumerate() {
        let own = ping_after(header, "127.0.0.1:0", server.addr, echo);
        let closes = server.wait_lines(i + 1, |l| l.contains(&format!("target={echo} ")));
        let line = closes.iter().find(|l| l.contains(&format!("client={own} "))).unwrap_or_else(|| {
            panic!("{what}: no close line names the balancer's {own}; got {:#?}", closes.last())
        });
        println!("{what}: {line}");
        let why =
            server.wait_line(|l| l.contains("[DEBUG]") && l.contains(&format!("PROXY header from {own}")));
        println!("{what}: {why}");
        assert!(why.contains(&format!("counts as from {own}")), "{what}: {why}");
    }
    let lines = server.lines();
    for forged in
        ["client=0.0.0.0:", "client=[::]:", "client=255.255.255.255:", "client=224.", "client=[ff02"]
    {
        assert!(lines.iter().all(|l| !l.contains(forged)), "{forged} in {lines:#?}");
    }
}

#[test]
fn connections_claiming_unusable_addresses_are_limited_as_the_balancers_own() {
    let server = server()
        .args(&[
            "--proxy-protocol",
            "--proxy-from",
            "127.0.0.1/32",
            "--max-conns",
            "20",
            "--max-pending-per-ip",
            "2",
        ])
        .start();
    // Half the places, from the balancer (127.0.0.1), for ten real clients that then say nothing.
    let mut held: Vec<TcpStream> = (1..=10)
        .map(|i| {
            let mut s = from("127.0.0.1:0", server.addr);
            s.write_all(&v1(&format!("198.51.100.{i}:1000"), "192.0.2.100:443")).unwrap();
            s
        })
        .collect();
    server.wait_lines(10, |l| l.contains("PROXY header from 127.0.0.1:") && l.contains("client 198.51.100."));
    // Three connections that claim three different unusable addresses count
    // as one source, the balancer: two may be pending, the third is refused.
    let claims = unusable_claims();
    let mut refused = None;
    for (what, header) in [&claims[0], &claims[2], &claims[7]] {
        let mut s = from("127.0.0.1:0", server.addr);
        let own = s.local_addr().unwrap();
        s.write_all(header).unwrap();
        server.wait_line(|l| l.contains(&format!("PROXY header from {own}")));
        println!("{what}: from {own}");
        held.push(s);
        refused = Some(own);
    }
    let own = refused.unwrap();
    let line = server.wait_line(|l| l.contains(" closed client=") && l.contains("end=refused"));
    println!("{line}");
    assert!(line.contains(&format!("client={own} ")), "the third, under its own address: {line}");
    assert!(line.ends_with("end=refused: 2 connections from 127.0.0.1 already pending"), "{line}");
    drop(held);
}

#[test]
fn proxy_protocol_without_proxy_from_refuses_to_start_and_proxy_from_any_warns() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    // Started, it would serve anyone's header: it must exit with a usage error instead.
    let mut child = Command::new(env!("CARGO_BIN_EXE_blocking-server"))
        .args(["--listen", "127.0.0.1:0", "--proxy-protocol"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("listening on") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("it started: {line}\n{lines:#?}");
        }
        lines.push(line);
    }
    let status = child.wait().unwrap();
    println!("exit {:?}: {lines:?}", status.code());
    assert_eq!(status.code(), Some(2), "{lines:#?}");
    assert_eq!(lines.len(), 1, "one line: {lines:#?}");
    assert!(lines[0].contains("--proxy-protocol needs --proxy-from"), "{}", lines[0]);
    // `--proxy-from any` is the explicit choice: it starts, with the warning.
    let server = server().args(&["--proxy-protocol", "--proxy-from", "any"]).spawn();
    let warning = server.wait_line(|l| l.contains("WARN") && l.contains("--proxy-from any"));
    println!("{warning}");
    assert!(warning.contains("any client can claim any address"), "{warning}");
    let start = server.wait_line(|l| l.contains("listening on"));
    assert!(start.contains("PROXY protocol from 0.0.0.0/0 ::/0"), "{start}");
}
