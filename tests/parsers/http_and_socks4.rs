//! Half a million generated inputs through the SOCKS4 and HTTP proxy request
//! parsers: random bytes, and valid requests truncated, mutated, extended. A
//! fixed seed makes any failure reproducible. No input may panic, allocate
//! more than a small bound, make a parser read past the request it accepted,
//! or get an answer that is not its protocol's.

use std::cell::Cell;
use std::io::{self, Read, Write};

use blocking_proxy::error::Error;
use blocking_proxy::proto::addr::Target;
use blocking_proxy::proto::http::{self, Request};
use blocking_proxy::proto::socks4;
use blocking_proxy::proto::users::User;

use crate::generated::{Rng, LARGEST};

const CASES: usize = 500_000;
const SEED: u64 = 0x5EED_4177;

/// The input, served in reads of at most `chunk` bytes; writes are kept.
struct Input<'a> {
    data: &'a [u8],
    chunk: usize,
    out: Vec<u8>,
}

impl Read for Input<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

impl http::Peek for Input<'_> {
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        Ok(n)
    }
}

impl Write for Input<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A valid request of one of the four kinds the parsers take.
fn valid(r: &mut Rng, kind: usize) -> Vec<u8> {
    let port = 1 + r.below(65535);
    match kind {
        0 => {
            let mut v = vec![4, 1];
            v.extend_from_slice(&(port as u16).to_be_bytes());
            v.extend_from_slice(&r.bytes(4));
            v.extend(r.name().bytes());
            v.push(0);
            v
        }
        1 => {
            let mut v = vec![4, 1];
            v.extend_from_slice(&(port as u16).to_be_bytes());
            v.extend_from_slice(&[0, 0, 0, 1 + r.byte() % 255]);
            v.push(0);
            v.extend(r.name().bytes());
            v.push(0);
            v
        }
        2 => {
            let framing = match r.below(4) {
                0 => "Content-Length: 3\r\n",
                1 => "Transfer-Encoding: gzip, chunked\r\n",
                2 => "Content-Length: 3, 3\r\nContent-Length: 3\r\n",
                _ => "",
            };
            format!(
                "POST http://{}.example:{port}/{}?q=1 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic YWxpY2U6d29uZGVy\r\n\
Connection: keep-alive, X-A\r\nX-A: 1\r\n{framing}\r\nabc",
                r.name(),
                r.name()
            )
            .into_bytes()
        }
        _ => format!(
            "CONNECT {}.example:{port} HTTP/1.1\r\nProxy-Authorization: basic YWxpY2U6d29uZGVy\r\n\r\n\x16\x03",
            r.name()
        )
        .into_bytes(),
    }
}

/// Runs both parsers on `data`, with and without users; checks that an
/// accepted request is exactly as long as it says and that every answer is
/// the protocol's own. Returns how many accepted it.
fn check(data: &[u8], chunk: usize, users: &[User]) -> usize {
    let mut accepted = 0;
    for login in [false, true] {
        let mut inp = Input { data, chunk, out: Vec::new() };
        match socks4::accept(&mut inp, login) {
            Ok(t) => {
                assert!(!login, "socks4 accepted with users configured: {data:?}");
                let consumed = data.len() - inp.data.len();
                let userid_end = 8 + data[8..].iter().position(|&b| b == 0).unwrap();
                let want = match t {
                    Target::Domain(..) => {
                        userid_end + 2 + data[userid_end + 1..].iter().position(|&b| b == 0).unwrap()
                    }
                    Target::Ip(_) => userid_end + 1,
                };
                assert_eq!(consumed, want, "socks4 {data:?}");
                assert!(inp.out.is_empty());
                accepted += 1;
            }
            Err(Error::Io(_)) => {}
            Err(Error::Protocol(_) | Error::Denied(_)) => {
                assert!(inp.out.is_empty() || inp.out == [0, 91, 0, 0, 0, 0, 0, 0], "socks4 {:?}", inp.out);
            }
            Err(e) => panic!("unexpected error kind {e:?}"),
        }
    }
    for users in [&[][..], users] {
        let mut inp = Input { data, chunk, out: Vec::new() };
        match http::accept(&mut inp, users) {
            Ok(req) => {
                let consumed = &data[..data.len() - inp.data.len()];
                assert!(consumed.ends_with(b"\n\n") || consumed.ends_with(b"\n\r\n"), "http {data:?}");
                let body = &consumed[..consumed.len() - 1];
                assert_eq!(
                    body.windows(2).filter(|w| w == b"\n\n").count(),
                    0,
                    "read past the head: {data:?}"
                );
                assert!(inp.out.is_empty());
                if let Request::Forward { head, framing, .. } = req {
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    assert!(text.ends_with("\r\nconnection: close\r\n\r\n"), "{text}");
                    assert!(!text.contains("\r\nproxy-authorization:"), "{text}");
                    assert_eq!(text.matches("\r\nhost: ").count(), 1, "{text}");
                    // The framing decided, said once, and no other.
                    let (length, chunked) = (
                        text.matches("\r\ncontent-length: ").count(),
                        text.matches("\r\ntransfer-encoding: ").count(),
                    );
                    match framing {
                        http::Framing::None => assert_eq!((length, chunked), (0, 0), "{text}"),
                        http::Framing::Length(n) => {
                            assert_eq!((length, chunked), (1, 0), "{text}");
                            assert!(text.contains(&format!("\r\ncontent-length: {n}\r\n")), "{text}");
                        }
                        http::Framing::Chunked => {
                            assert_eq!((length, chunked), (0, 1), "{text}");
                            assert!(text.contains("chunked\r\n"), "{text}");
                        }
                    }
                }
                accepted += 1;
            }
            Err(Error::Io(_)) => assert!(inp.out.is_empty()),
            Err(Error::Protocol(_) | Error::Denied(_)) => {
                let out = String::from_utf8_lossy(&inp.out);
                assert!(out.starts_with("HTTP/1.1 4") && out.contains("\r\nConnection: close\r\n"), "{out}");
            }
            Err(e) => panic!("unexpected error kind {e:?}"),
        }
    }
    accepted
}

#[test]
fn half_a_million_generated_inputs() {
    let users = [User { name: "alice".into(), password: "wonder".into() }];
    let mut r = Rng(SEED);
    LARGEST.with(|l| l.set(0));
    let accepted = crate::generated::run(&mut r, CASES, 6, valid, |data, chunk| check(data, chunk, &users));
    assert!(accepted > CASES / 4, "the generator makes enough valid requests: {accepted}");
    let largest = LARGEST.with(Cell::get);
    assert!(largest <= 32 * 1024, "an allocation of {largest} bytes at once");
}

#[test]
fn oversized_requests_stop_at_their_bounds() {
    // A line, headers and a SOCKS4 USERID that never end: each parser stops at its limit.
    // Each under the other test's allocation bound, which this one shares.
    const LONG: usize = 24 * 1024;
    let mut endless = vec![b'a'; LONG];
    endless[..13].copy_from_slice(b"GET http://h/");
    let mut inp = Input { data: &endless, chunk: 4096, out: Vec::new() };
    assert!(http::accept(&mut inp, &[]).is_err());
    assert_eq!(endless.len() - inp.data.len(), http::REQUEST_LINE_MAX);
    assert!(String::from_utf8_lossy(&inp.out).starts_with("HTTP/1.1 414 "));

    let mut headers = vec![b'v'; LONG];
    headers[..27].copy_from_slice(b"GET http://h/ HTTP/1.1\r\nX: ");
    let mut inp = Input { data: &headers, chunk: 1, out: Vec::new() };
    assert!(http::accept(&mut inp, &[]).is_err());
    assert!(headers.len() - inp.data.len() <= 24 + http::HEADERS_MAX);
    assert!(String::from_utf8_lossy(&inp.out).starts_with("HTTP/1.1 431 "));

    let mut userid = vec![b'u'; LONG];
    userid[..8].copy_from_slice(&[4, 1, 0, 80, 1, 2, 3, 4]);
    let mut inp = Input { data: &userid, chunk: 1, out: Vec::new() };
    assert!(socks4::accept(&mut inp, false).is_err());
    assert_eq!(userid.len() - inp.data.len(), 8 + socks4::FIELD_MAX + 1);
    assert_eq!(inp.out, [0, 91, 0, 0, 0, 0, 0, 0]);
}
