//! What an active prober sees: a trojan-mode blocking-server with a fallback
//! must answer every probe exactly as the web site behind it does.
//!
//! The reference is nginx (Debian's nginx-light, installed by `make deps`)
//! serving HTTPS itself with the test certificate, TLS 1.2 and 1.3
//! ([`crate::support::nginx`]). The subject is
//! blocking-server with `--fallback` to the same nginx's plain HTTP port. Each
//! probe is sent to both at once; the decrypted bytes (Date removed), whether
//! the end was a reset, and the time from the end of the handshake to the end
//! of the connection (within a second) must be the same.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::support::nginx::{Nginx, HEADER_TIMEOUT_SECS};
use crate::support::*;

/// One step of a probe, after the TLS handshake.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Send these bytes (one TLS record per 16 KiB).
    Send(&'static [u8]),
    /// Send close_notify.
    CloseNotify,
    /// Shut the TCP connection down for writing, without close_notify.
    Fin,
}

/// What a prober saw.
#[derive(Debug)]
struct Seen {
    /// The prober's own address.
    from: SocketAddr,
    bytes: Vec<u8>,
    reset: bool,
    /// From the end of the handshake to the end of the connection.
    time: Duration,
    alpn: Option<Vec<u8>>,
}

fn client_config(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let trust = blocking_proxy::tls::config::Trust::CaFile(CA.into());
    let alpn: Vec<Vec<u8>> = alpn.iter().map(|a| a.to_vec()).collect();
    blocking_proxy::tls::config::client_config(&trust, &alpn).unwrap()
}

/// Runs `steps` against `addr` and reads until the connection ends.
fn probe(addr: SocketAddr, steps: &[Step], alpn: &[&[u8]]) -> Seen {
    probe_after(b"", addr, steps, alpn)
}

/// Like [`probe`], with `first` written before TLS begins (a PROXY protocol header).
fn probe_after(first: &[u8], addr: SocketAddr, steps: &[Step], alpn: &[&[u8]]) -> Seen {
    let mut sock = connect(addr);
    sock.write_all(first).unwrap();
    let from = sock.local_addr().unwrap();
    let mut conn =
        ClientConnection::new(client_config(alpn), ServerName::try_from("localhost").unwrap()).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    let start = Instant::now();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    for step in steps {
        // The server may have answered and closed already: a failed write is part of what is seen.
        let _ = match step {
            Step::Send(bytes) => conn.writer().write_all(bytes).and_then(|()| flush(&mut conn, &mut sock)),
            Step::CloseNotify => {
                conn.send_close_notify();
                flush(&mut conn, &mut sock)
            }
            Step::Fin => sock.shutdown(Shutdown::Write),
        };
    }
    let mut bytes = Vec::new();
    let reset = loop {
        match conn.reader().read_to_end(&mut bytes) {
            Ok(_) => break false, // close_notify
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{addr}: {e}"),
        }
        match conn.read_tls(&mut sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break true,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                panic!("{addr}: not closed within {TIMEOUT:?}")
            }
            Err(e) => panic!("{addr}: {e}"),
        }
        if let Err(e) = conn.process_new_packets() {
            panic!("{addr}: tls: {e}");
        }
    };
    Seen { from, bytes: without_date(&bytes), reset, time: start.elapsed(), alpn }
}

fn flush(conn: &mut ClientConnection, sock: &mut TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(sock)?;
    }
    Ok(())
}

/// The response with its `Date:` header lines taken out.
fn without_date(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    text.split_inclusive("\r\n").filter(|l| !l.starts_with("Date: ")).collect::<String>().into_bytes()
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: probe\r\nAccept: */*\r\n\r\n";
/// The hash of a password the server does not know.
const WRONG_HASH: &[u8] = b"d63dc919e201d7bc4c825630d2cf25fdc93d4b2f0d46706d29038d01";
const WRONG_HASH_CRLF: &[u8] = b"d63dc919e201d7bc4c825630d2cf25fdc93d4b2f0d46706d29038d01\r\n";
/// A whole trojan request for example.com:80 with a wrong password, and its payload.
const WRONG_REQUEST: &[u8] = b"d63dc919e201d7bc4c825630d2cf25fdc93d4b2f0d46706d29038d01\r\n\
    \x01\x03\x0bexample.com\x00\x50\r\nGET / HTTP/1.1\r\nHost: example.com\r\n\r\n";

#[test]
fn every_probe_sees_what_the_web_site_itself_shows() {
    let nginx = Nginx::start();
    let fallback = nginx.plain.to_string();
    let server = Pair::with_args(&["--password", "secret", "--fallback", &fallback], &[]).server;
    let garbage: &'static [u8] = Box::leak(vec![b'x'; 20 * 1024].into_boxed_slice());

    let probes: Vec<(&str, Vec<Step>)> = vec![
        ("a full GET", vec![Step::Send(GET)]),
        ("one uppercase byte, then silence", vec![Step::Send(b"G")]),
        ("one lowercase hex byte, then silence", vec![Step::Send(b"a")]),
        ("a wrong hash with CRLF", vec![Step::Send(WRONG_HASH_CRLF)]),
        ("a wrong hash without CRLF", vec![Step::Send(WRONG_HASH)]),
        ("a wrong full trojan request", vec![Step::Send(WRONG_REQUEST)]),
        ("garbage, then close_notify", vec![Step::Send(b"abc"), Step::CloseNotify]),
        ("garbage, then FIN", vec![Step::Send(b"abc"), Step::Fin]),
        ("close_notify alone", vec![Step::CloseNotify]),
        ("20 KB of garbage", vec![Step::Send(garbage)]),
        ("silence", vec![]),
    ];
    // Every probe against both at once: the slow ones wait for nginx's header timeout.
    let (site, ours) = (nginx.tls, server.addr);
    let runs: Vec<_> = probes
        .into_iter()
        .map(|(name, steps)| {
            let both = [site, ours].map(|addr| {
                let steps = steps.clone();
                thread::spawn(move || probe(addr, &steps, &[b"http/1.1"]))
            });
            (name, both)
        })
        .collect();
    for (name, [site, ours]) in runs {
        let (site, ours) = (site.join().unwrap(), ours.join().unwrap());
        assert_eq!(
            String::from_utf8_lossy(&ours.bytes),
            String::from_utf8_lossy(&site.bytes),
            "{name}: the same bytes"
        );
        assert_eq!(ours.reset, site.reset, "{name}: a reset for one is a reset for the other");
        let gap = ours.time.abs_diff(site.time);
        assert!(
            gap <= Duration::from_secs(1),
            "{name}: ended after {:?} here, {:?} at the site",
            ours.time,
            site.time
        );
        eprintln!(
            "{name}: {} bytes, reset {}, {:?} vs {:?}",
            site.bytes.len(),
            site.reset,
            ours.time,
            site.time
        );
    }
    // Nothing reached a target: every one of them went to the fallback, or closed.
    let closes: Vec<String> = server.lines().into_iter().filter(|l| l.contains(" closed client=")).collect();
    assert!(!closes.is_empty());
    assert!(
        closes.iter().all(|l| l.contains(" target=fallback/") || l.contains(" target=- ")),
        "{closes:#?}"
    );
}

#[test]
fn alpn_is_what_a_web_server_selects() {
    let nginx = Nginx::start();
    let fallback = nginx.plain.to_string();
    let server = Pair::with_args(&["--password", "secret", "--fallback", &fallback], &[]).server;
    for offered in [&[&b"h2"[..], b"http/1.1"][..], &[b"http/1.1"], &[]] {
        let site = probe(nginx.tls, &[Step::CloseNotify], offered);
        let ours = probe(server.addr, &[Step::CloseNotify], offered);
        assert_eq!(ours.alpn, site.alpn, "offered {offered:?}");
    }
    let ours = probe(server.addr, &[Step::CloseNotify], &[b"h2", b"http/1.1"]);
    assert_eq!(ours.alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[test]
fn a_valid_client_is_served_while_a_fallback_waits_in_vain() {
    // The fallback connection opened for a client that turns out valid is
    // closed without a byte, and the client reaches its target.
    let nginx = Nginx::start();
    let fallback = nginx.plain.to_string();
    let pair = Pair::with_args(&["--password", "secret", "--fallback", &fallback], &["--password", "secret"]);
    let web = http("127.0.0.1:0");
    assert_eq!(curl(&["--socks5", &pair.local.addr.to_string(), &format!("http://{web}/")]), PAGE);
    pair.server.wait_line(|l| l.contains(&format!("target={web} ")) && l.ends_with("end=eof"));
}

#[test]
fn pooled_connections_younger_than_the_sites_header_timeout_keep_working() {
    // nginx closes a silent connection after HEADER_TIMEOUT_SECS, and the
    // server with it; a pool that replaces its connections sooner never
    // hands one of those to a client.
    let nginx = Nginx::start();
    let fallback = nginx.plain.to_string();
    let pair = Pair::with_args(
        &["--password", "secret", "--fallback", &fallback],
        &["--password", "secret", "--pool", "2", "--pool-age", "1"],
    );
    let web = http("127.0.0.1:0");
    let url = format!("http://{web}/");
    let proxy = pair.local.addr.to_string();
    for round in 0..3 {
        // Longer than the header timeout: every ready connection has been replaced meanwhile.
        thread::sleep(Duration::from_millis(HEADER_TIMEOUT_SECS * 1000 + 500));
        assert_eq!(curl(&["--socks5", &proxy, &url]), PAGE, "round {round}");
    }
    pair.server.wait_lines(3, |l| l.contains(&format!("target={web} ")) && l.ends_with("end=eof"));
    // The replaced ones were closed by the local or handed to the site, never served.
    let server = pair.server.addr.to_string();
    let warned = |l: &String| l.contains("WARN") && l.contains(&server);
    assert!(!pair.local.lines().iter().any(warned), "{:#?}", pair.local.lines());
}

#[test]
fn with_fallback_proxy_protocol_the_site_logs_the_real_client_and_serves_the_same_page() {
    let nginx = Nginx::start();
    let fallback = nginx.proxied.to_string();
    let site = probe(nginx.tls, &[Step::Send(GET)], &[b"http/1.1"]);
    let args = ["--password", "secret", "--fallback", &fallback, "--fallback-proxy-protocol"];

    // A prober straight to the server: the site logs the prober, and the server's own address.
    let direct = Pair::with_args(&args, &[]).server;
    let ours = probe(direct.addr, &[Step::Send(GET)], &[b"http/1.1"]);
    assert_eq!(String::from_utf8_lossy(&ours.bytes), String::from_utf8_lossy(&site.bytes), "the same page");
    let line = nginx.wait_proxied_log(&format!("{} to {} ", ours.from, direct.addr));
    println!("{line}");
    assert!(line.ends_with("via 127.0.0.1 \"GET / HTTP/1.1\" 200"), "{line}");

    // Behind a balancer: the client and the address its header names.
    let mut balanced = args.to_vec();
    balanced.extend_from_slice(&["--proxy-protocol", "--proxy-from", "127.0.0.1/32"]);
    let behind = Pair::with_args(&balanced, &[]).server;
    let header = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n";
    let ours = probe_after(header, behind.addr, &[Step::Send(GET)], &[b"http/1.1"]);
    assert_eq!(String::from_utf8_lossy(&ours.bytes), String::from_utf8_lossy(&site.bytes), "the same page");
    let line = nginx.wait_proxied_log("192.0.2.1:56324 to 198.51.100.1:443 ");
    println!("{line}");
    behind.wait_line(|l| l.contains("client=192.0.2.1:56324 target=fallback/"));
}
