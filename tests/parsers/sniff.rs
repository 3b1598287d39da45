//! Generated first bytes through `proto::sniff`: ClientHellos with random
//! names among other extensions, in records of random sizes, and HTTP
//! request heads with random Host values (ports, IP literals, other
//! headers), then cut short, mutated, extended, and random bytes. A fixed
//! seed makes any failure reproducible.
//!
//! No input may panic or allocate more than a small bound. The answer is
//! deterministic; an untouched hello or head has the name it was built
//! with; a name is a lowercase DNS host name; more bytes never change an
//! answer once it is given (only [`Sniffed::NeedMore`] may change), and
//! [`Sniffed::NeedMore`] is never the answer for [`SNIFF_MAX`] bytes.

use std::cell::Cell;

use blocking_proxy::proto::sniff::{sniff, Sniffed, SNIFF_MAX};

use crate::generated::{mutate, Rng, LARGEST};

const CASES: usize = 200_000;
/// The most one allocation may take: the reassembled hello, which holds
/// at most [`SNIFF_MAX`] bytes and may grow once past them.
const ALLOCATION_MAX: usize = 2 * SNIFF_MAX;

fn len16(n: usize) -> [u8; 2] {
    (n as u16).to_be_bytes()
}

/// A host name of one to four labels, in mixed case.
fn host(r: &mut Rng) -> String {
    let labels = 1 + r.below(4);
    let mut name = (0..labels).map(|_| r.name()).collect::<Vec<_>>().join(".");
    if r.below(3) == 0 {
        name = name.to_uppercase();
    }
    name
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut e = kind.to_be_bytes().to_vec();
    e.extend_from_slice(&len16(data.len()));
    e.extend_from_slice(data);
    e
}

/// A ClientHello for `name` (or without a server_name), in records of random sizes.
fn hello(r: &mut Rng, name: Option<&str>) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend(r.bytes(32));
    let session = [0, 32][r.below(2)];
    body.push(session as u8);
    body.extend(r.bytes(session));
    let suites = 1 + r.below(20);
    body.extend_from_slice(&len16(2 * suites));
    body.extend(r.bytes(2 * suites));
    body.extend_from_slice(&[1, 0]);
    let mut exts = Vec::new();
    for _ in 0..r.below(6) {
        let n = [0, 2, 4, 32, 300][r.below(5)];
        let kind = 1 + r.below(0xfff0) as u16;
        let data = r.bytes(n);
        exts.push(extension(kind, &data));
    }
    if let Some(name) = name {
        let mut list = len16(name.len() + 3).to_vec();
        list.push(0);
        list.extend_from_slice(&len16(name.len()));
        list.extend_from_slice(name.as_bytes());
        let at = r.below(exts.len() + 1);
        exts.insert(at, extension(0, &list));
    }
    let exts = exts.concat();
    body.extend_from_slice(&len16(exts.len()));
    body.extend(exts);
    let mut message = vec![1];
    message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    message.extend(body);
    let size = [message.len(), 1 + r.below(message.len()), 1 + r.below(40)][r.below(3)];
    let mut out = Vec::new();
    for chunk in message.chunks(size) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&len16(chunk.len()));
        out.extend_from_slice(chunk);
    }
    out
}

/// An HTTP request head whose Host is `value` (or none), among other headers.
fn head(r: &mut Rng, value: Option<&str>) -> Vec<u8> {
    let method = ["GET", "POST", "HEAD", "OPTIONS", "PUT"][r.below(5)];
    let mut h = format!("{method} /{} HTTP/1.1\r\n", r.name());
    let others = r.below(4);
    let at = r.below(others + 1);
    for i in 0..=others {
        if i == at {
            if let Some(v) = value {
                let field = ["Host", "host", "HOST"][r.below(3)];
                let space = [" ", "", "\t "][r.below(3)];
                h.push_str(&format!("{field}:{space}{v}\r\n"));
            }
        }
        if i < others {
            h.push_str(&format!("X-{}: {}\r\n", r.name(), r.name()));
        }
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// A valid input and the answer it has untouched.
fn valid(r: &mut Rng) -> (Vec<u8>, Sniffed) {
    let name = host(r);
    let lower = Sniffed::Name(name.to_lowercase());
    match r.below(6) {
        0 => (hello(r, Some(&name)), lower),
        1 => (hello(r, None), Sniffed::None),
        2 => (head(r, Some(&name)), lower),
        3 => {
            let port = r.below(65536);
            (head(r, Some(&format!("{name}:{port}"))), lower)
        }
        4 => {
            let literal = ["[::1]:8080", "[2001:db8::1]", "192.0.2.7", "10.0.0.1:80"][r.below(4)];
            (head(r, Some(literal)), Sniffed::None)
        }
        _ => (head(r, None), Sniffed::None),
    }
}

fn is_lowercase_host(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

#[test]
fn generated_first_bytes() {
    let mut r = Rng(0x5a1f_f00d);
    let mut named = 0usize;
    LARGEST.with(|l| l.set(0));
    for _ in 0..CASES {
        let (built, want) = valid(&mut r);
        let input = match r.below(10) {
            0 => {
                let n = r.below(600);
                r.bytes(n)
            }
            1 | 2 => built.clone(),
            _ => mutate(&mut r, built.clone()),
        };
        let got = sniff(&input);
        assert_eq!(got, sniff(&input), "{input:02x?}: twice alike");
        if input == built {
            assert_eq!(got, want, "{input:02x?}");
        }
        match &got {
            Sniffed::Name(name) => {
                assert!(is_lowercase_host(name), "{name:?} from {input:02x?}");
                named += 1;
            }
            Sniffed::NeedMore => assert!(input.len() < SNIFF_MAX),
            Sniffed::None => {}
        }
        // A prefix gives the same answer or asks for more.
        let cut = &input[..r.below(input.len() + 1)];
        let early = sniff(cut);
        assert!(early == got || early == Sniffed::NeedMore, "{cut:02x?}: {early:?}, then {got:?}");
        // Bytes after an answer change nothing.
        if got != Sniffed::NeedMore {
            let mut longer = input.clone();
            let n = r.below(64);
            longer.extend(r.bytes(n));
            assert_eq!(sniff(&longer), got, "{longer:02x?}");
        }
    }
    // Whole-sized inputs: a head that never ends, records that keep coming.
    let mut endless = b"GET / HTTP/1.1\r\nHost: a.test\r\nX: ".to_vec();
    endless.resize(SNIFF_MAX + 100, b'x');
    assert_eq!(sniff(&endless), Sniffed::None);
    let mut records = vec![22, 3, 1, 0, 4, 1, 0, 0x3f, 0xf0];
    while records.len() < SNIFF_MAX + 100 {
        records.extend_from_slice(&[22, 3, 1, 0, 4, 0, 0, 0, 0]);
    }
    assert_eq!(sniff(&records), Sniffed::None);
    let largest = LARGEST.with(Cell::get);
    assert!(largest <= ALLOCATION_MAX, "largest allocation {largest} bytes");
    assert!(named > CASES / 4, "enough inputs still have a name: {named}");
}

#[test]
fn the_fuzz_seeds_name_their_hosts() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/sniff");
    for (file, want) in [
        ("http-host-port", "www.example.com"),
        ("tls-one-record", "example.com"),
        ("tls-two-records", "example.com"),
    ] {
        let bytes = std::fs::read(format!("{dir}/{file}")).unwrap();
        assert_eq!(sniff(&bytes), Sniffed::Name(want.into()), "{file}");
    }
}
