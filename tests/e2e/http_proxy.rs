//! What a site behind the HTTP proxy receives, byte for byte, recorded by a
//! loopback site of the test's own: one request per client connection,
//! rewritten, with its body framed as RFC 9112 section 6.3 says and
//! forwarded exactly; never a pipelined request, never the proxy's login;
//! ambiguous framing refused with 400 before anything reaches the site.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;

use crate::support::*;

/// alice:wonder, as `Proxy-Authorization: Basic` carries it.
const LOGIN: &str = "YWxpY2U6d29uZGVy";

/// What a recording site saw.
struct Site {
    addr: SocketAddr,
    /// Each connection's request head, as soon as it has been read.
    heads: Receiver<String>,
    /// Each connection's every byte, once it has ended.
    received: Receiver<Vec<u8>>,
}

/// A site that reads a request head, reports it, answers `200` with the
/// path as its body and `Connection: close`, half-closes, then keeps reading
/// until the connection ends and reports every byte it received.
fn recording_site() -> Site {
    let (head_tx, heads) = mpsc::channel();
    let (all_tx, received) = mpsc::channel();
    let (head_tx, all_tx) = (Mutex::new(head_tx), Mutex::new(all_tx));
    let addr = target("127.0.0.1:0", move |mut s| {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
        let _ = head_tx.lock().unwrap().send(head.clone());
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        let resp =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{path}", path.len());
        let _ = s.write_all(resp.as_bytes());
        let _ = s.shutdown(Shutdown::Write);
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = all_tx.lock().unwrap().send(got);
    });
    Site { addr, heads, received }
}

/// Sends `input` (at once, or one byte per write), then reads what the
/// local answers until it closes; the connection is closed on return.
fn exchange(local: SocketAddr, input: &[u8], one_byte: bool) -> Vec<u8> {
    let mut s = connect(local);
    s.set_nodelay(true).unwrap();
    let _ = if one_byte { input.chunks(1).try_for_each(|b| s.write_all(b)) } else { s.write_all(input) };
    read_answer(&mut s)
}

/// What the site received on its next connection, once it has ended.
fn next_received(site: &Site) -> String {
    String::from_utf8_lossy(&site.received.recv_timeout(TIMEOUT).expect("the site saw a connection end"))
        .into_owned()
}

#[test]
fn a_pipelined_request_and_its_proxy_credentials_never_reach_the_site() {
    let pair = Pair::with_args(&[], &["--user", "alice:wonder"]);
    let (site, other) = (recording_site(), recording_site());
    let login = format!("Proxy-Authorization: Basic {LOGIN}\r\n");
    let first = format!("GET http://{}/one HTTP/1.1\r\nHost: {}\r\n{login}\r\n", site.addr, site.addr);
    for (second_to, one_byte) in [(site.addr, false), (site.addr, true), (other.addr, false)] {
        let second = format!("GET http://{second_to}/two HTTP/1.1\r\nHost: {second_to}\r\n{login}\r\n");
        let resp = exchange(pair.local.addr, format!("{first}{second}").as_bytes(), one_byte);
        let text = String::from_utf8_lossy(&resp);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("\r\n\r\n/one"), "{text:?}");
        let all = next_received(&site);
        assert!(!all.to_ascii_lowercase().contains("proxy-authorization"), "the site received: {all:?}");
        assert!(!all.contains(LOGIN), "the site received: {all:?}");
        assert!(!all.contains("/two"), "the site received the second request: {all:?}");
        assert_eq!(all.matches(" HTTP/1.1\r\n").count(), 1, "{all:?}");
    }
    assert!(other.heads.try_recv().is_err(), "the second host was never reached");
    assert!(site.heads.iter().take(3).all(|h| h.starts_with("GET /one HTTP/1.1\r\n")));
}

#[test]
fn ambiguous_request_framing_gets_400_and_nothing_reaches_the_site() {
    let pair = Pair::start();
    let site = recording_site();
    let post = |headers: &str, body: &str| {
        format!("POST http://{}/x HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}", site.addr).into_bytes()
    };
    let overflow = "1".repeat(17);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Content-Length and Transfer-Encoding",
            post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
        ),
        (
            "Transfer-Encoding and Content-Length",
            post("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n", "0\r\n\r\n"),
        ),
        ("two Content-Lengths that differ", post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!")),
        ("a Content-Length list that differs", post("Content-Length: 5, 6\r\n", "hello!")),
        ("a negative Content-Length", post("Content-Length: -1\r\n", "")),
        ("a signed Content-Length", post("Content-Length: +5\r\n", "hello")),
        ("a hex Content-Length", post("Content-Length: 0x5\r\n", "hello")),
        ("an empty Content-Length", post("Content-Length:\r\n", "")),
        ("a Content-Length with a space in it", post("Content-Length: 1 0\r\n", "0123456789")),
        ("an overflowing Content-Length", post("Content-Length: 99999999999999999999999\r\n", "")),
        ("Transfer-Encoding gzip alone", post("Transfer-Encoding: gzip\r\n", "")),
        ("chunked then gzip", post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n")),
        (
            "chunked then identity in two headers",
            post("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", "0\r\n\r\n"),
        ),
        ("chunked twice", post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n")),
        ("a Transfer-Encoding that only looks chunked", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n")),
        (
            "an overflowing chunk size",
            post("Transfer-Encoding: chunked\r\n", &format!("{overflow}\r\nx\r\n0\r\n\r\n")),
        ),
        (
            "a chunk size past 2^63",
            post("Transfer-Encoding: chunked\r\n", "8000000000000000\r\nx\r\n0\r\n\r\n"),
        ),
        (
            "a chunk size line ending in a bare LF",
            post("Transfer-Encoding: chunked\r\n", "5\nhello\r\n0\r\n\r\n"),
        ),
        (
            "a chunk size that is no number",
            post("Transfer-Encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n"),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!("POST http://{}/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", site.addr)
                .into_bytes(),
        ),
    ];
    for (what, input) in &cases {
        let resp = exchange(pair.local.addr, input, false);
        let text = String::from_utf8_lossy(&resp);
        assert_eq!(status_line(&resp), "HTTP/1.1 400 Bad Request", "{what}: answered {text:?}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{what}: {text:?}");
        if let Ok(head) = site.heads.try_recv() {
            panic!("{what}: the site received {head:?}");
        }
    }
    // The head-level cases are refused however the head arrives.
    for (what, input) in &cases[..15] {
        assert_eq!(
            status_line(&exchange(pair.local.addr, input, true)),
            "HTTP/1.1 400 Bad Request",
            "{what}"
        );
    }
    // The site is there: a valid request after them is the first it sees.
    let resp = exchange(pair.local.addr, &post("Content-Length: 5\r\n", "hello"), false);
    assert_eq!(status_line(&resp), "HTTP/1.1 200 OK");
    let head = site.heads.recv_timeout(TIMEOUT).unwrap();
    assert!(head.starts_with("POST /x HTTP/1.1\r\n"), "{head:?}");
    assert!(site.heads.try_recv().is_err(), "nothing else reached the site");
}

#[test]
fn a_body_is_forwarded_exactly_and_nothing_after_it() {
    let pair = Pair::start();
    let site = recording_site();
    let host = site.addr;
    // Content-Length: the five bytes, not the request pipelined after them.
    let after = format!("GET http://{host}/two HTTP/1.1\r\nProxy-Authorization: Basic {LOGIN}\r\n\r\n");
    let input = format!("PUT http://{host}/one HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello{after}");
    for one_byte in [false, true] {
        let resp = exchange(pair.local.addr, input.as_bytes(), one_byte);
        assert!(String::from_utf8_lossy(&resp).ends_with("\r\n\r\n/one"));
        assert_eq!(
            next_received(&site),
            format!(
                "PUT /one HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
            )
        );
    }
    // Chunked: sizes, extensions and data as sent; the trailer fields (one of
    // them the proxy's login) and what follows the body are not forwarded.
    let body = "5;name=\"v\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n";
    let input = format!(
        "POST http://{host}/up HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
{body}X-Sum: 1\r\nProxy-Authorization: Basic {LOGIN}\r\n\r\n{after}"
    );
    for one_byte in [false, true] {
        let resp = exchange(pair.local.addr, input.as_bytes(), one_byte);
        assert!(String::from_utf8_lossy(&resp).ends_with("\r\n\r\n/up"));
        assert_eq!(
            next_received(&site),
            format!(
                "POST /up HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\
Connection: close\r\n\r\n{body}\r\n"
            )
        );
    }
}

#[test]
fn a_connect_tunnel_still_carries_the_bytes_sent_right_after_its_head() {
    let pair = Pair::start();
    let echo = echo("127.0.0.1:0");
    let mut s = connect(pair.local.addr);
    s.write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n\x16\x03\x01early").as_bytes())
        .unwrap();
    let want = b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01early";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    s.write_all(b" and later").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_answer(&mut s), b" and later");
}

#[test]
fn a_body_whose_framing_breaks_after_the_head_went_upstream_goes_no_further() {
    let pair = Pair::start();
    let site = recording_site();
    let host = site.addr;
    let mut s = connect(pair.local.addr);
    let head = format!("POST http://{host}/up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    s.write_all(format!("{head}5\r\nhello\r\n").as_bytes()).unwrap();
    // The site has the head: the relay is up. Then a chunk size that overflows, and a request after it.
    site.heads.recv_timeout(TIMEOUT).unwrap();
    let after = format!("GET http://{host}/two HTTP/1.1\r\nProxy-Authorization: Basic {LOGIN}\r\n\r\n");
    let _ = s.write_all(format!("{}\r\nsmuggled\r\n0\r\n\r\n{after}", "f".repeat(17)).as_bytes());
    let _ = read_answer(&mut s);
    let all = next_received(&site);
    assert_eq!(
        all,
        format!(
            "POST /up HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\
Connection: close\r\n\r\n5\r\nhello\r\n"
        )
    );
    let line = pair.local.wait_line(|l| l.contains(&format!("target={host} ")));
    assert!(line.contains(" end=client: request body: chunk size overflows "), "{line}");
}
