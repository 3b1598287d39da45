//! Half a million generated request bodies through the HTTP proxy's body
//! framing (`http::Body`): chunked bodies with extensions, trailers and
//! bytes after them, `Content-Length` bodies, truncated, mutated, extended,
//! passed in pieces of every size. A fixed seed makes any failure
//! reproducible. No input may panic or allocate; however the bytes are
//! split, the same bytes pass and the same framing breaks; what passes is
//! a prefix of the input (less a chunked body's trailer fields), and a body
//! that ended passes whole through a fresh `Body` and through an independent
//! chunked decoder, which end exactly where it ends.

use std::cell::Cell;

use blocking_proxy::proto::http::{Body, Framing, BODY_LENGTH_MAX};

use crate::generated::{Rng, LARGEST};

const CASES: usize = 500_000;
const SEED: u64 = 0xB0D1_F7A3;

/// The framing an input's first two bytes name, as the fuzz target reads
/// them: none, a `Content-Length` of the second byte, or chunked.
fn framing_of(data: &[u8]) -> Option<(Framing, &[u8])> {
    let (&kind, rest) = data.split_first()?;
    let (&len, rest) = rest.split_first()?;
    Some((
        match kind % 3 {
            0 => Framing::None,
            1 => Framing::Length(u64::from(len)),
            _ => Framing::Chunked,
        },
        rest,
    ))
}

/// A valid body of one of four kinds, with what a client might send after it.
fn valid(r: &mut Rng, kind: usize) -> Vec<u8> {
    let tail = match r.below(3) {
        0 => {
            b"GET http://h.example/ HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6d29uZGVy\r\n\r\n".to_vec()
        }
        1 => {
            let n = r.below(40);
            r.bytes(n)
        }
        _ => Vec::new(),
    };
    let mut v = match kind {
        0 | 1 => {
            let mut v = vec![2, 0];
            for _ in 0..r.below(5) {
                let n = 1 + r.below(300);
                let size = format!("{}{n:x}", "0".repeat(r.below(3)));
                let size = if r.below(2) == 0 { size.to_ascii_uppercase() } else { size };
                v.extend_from_slice(size.as_bytes());
                match r.below(4) {
                    0 => v.extend_from_slice(b";ext"),
                    1 => v.extend_from_slice(format!(" ; {}=\"a b\"", r.name()).as_bytes()),
                    _ => {}
                }
                v.extend_from_slice(b"\r\n");
                v.extend(r.bytes(n));
                v.extend_from_slice(b"\r\n");
            }
            v.extend_from_slice(b"0\r\n");
            for _ in 0..r.below(3) {
                v.extend_from_slice(format!("{}: {}\r\n", r.name(), r.name()).as_bytes());
            }
            v.extend_from_slice(b"\r\n");
            v
        }
        2 => {
            let n = r.below(256);
            let mut v = vec![1, n as u8];
            v.extend(r.bytes(n));
            v
        }
        _ => vec![0, 0],
    };
    v.extend(tail);
    v
}

/// What passing `input` in pieces of `split` bytes gives: the bytes
/// kept, whether the body ended, and the error that stopped it.
fn pass(framing: Framing, input: &[u8], split: usize) -> (Vec<u8>, bool, Option<String>) {
    let mut body = Body::new(framing);
    let mut kept = Vec::with_capacity(input.len());
    let mut piece = Vec::with_capacity(split.min(input.len()));
    for part in input.chunks(split) {
        piece.clear();
        piece.extend_from_slice(part);
        LARGEST.with(|l| l.set(0));
        let passed = body.pass(&mut piece);
        assert_eq!(LARGEST.with(Cell::get), 0, "Body::pass allocated");
        match passed {
            Ok(n) => {
                assert!(n <= part.len());
                kept.extend_from_slice(&piece[..n]);
            }
            Err(e) => return (kept, body.ended(), Some(e.to_string())),
        }
    }
    (kept, body.ended(), None)
}

/// An independent chunked decoder: where a well-formed chunked body with
/// no trailer fields, at the start of `b`, ends; None when it is not one.
fn chunked_end(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + b[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = &b[at..line_end];
        let digits = line.iter().position(|c| matches!(c, b';' | b' ' | b'\t')).unwrap_or(line.len());
        let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            return (b.get(at..at + 2)? == b"\r\n").then_some(at + 2);
        }
        at = at.checked_add(usize::try_from(size).ok()?)?;
        if b.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        at += 2;
    }
}

fn check(data: &[u8], split: usize) -> usize {
    let Some((framing, input)) = framing_of(data) else { return 0 };
    let (kept, ended, err) = pass(framing, input, split);
    let (whole, whole_ended, whole_err) = pass(framing, input, usize::MAX);
    assert_eq!(err, whole_err, "split {split}: {data:?}");
    if err.is_none() {
        assert_eq!((&kept, ended), (&whole, whole_ended), "split {split}: {data:?}");
    }
    match framing {
        Framing::None => assert!(kept.is_empty() && ended),
        Framing::Length(len) => {
            let n = (len as usize).min(input.len());
            assert_eq!(kept, input[..n]);
            assert_eq!(ended, n as u64 == len);
        }
        Framing::Chunked => {
            // A prefix of the input, less trailer fields: up to the size line of the last chunk, the same.
            let last = kept.windows(3).rposition(|w| w == b"0\r\n").unwrap_or(0);
            assert_eq!(kept[..last], input[..last], "{data:?}");
        }
    }
    if !ended {
        return 0;
    }
    // What passed is a whole body on its own, and all of it passes again.
    let (again, again_ended, again_err) = pass(framing, &[&kept[..], b"extra"].concat(), 1);
    assert_eq!((&again, again_ended, again_err), (&kept, true, None), "{data:?}");
    if framing == Framing::Chunked {
        assert_eq!(chunked_end(&kept), Some(kept.len()), "{:?}", String::from_utf8_lossy(&kept));
    }
    1
}

#[test]
fn half_a_million_generated_bodies() {
    let mut r = Rng(SEED);
    let ended = crate::generated::run(&mut r, CASES, 8, valid, check);
    assert!(ended > CASES / 4, "the generator makes enough whole bodies: {ended}");
}

#[test]
fn the_largest_sizes_pass_and_one_more_breaks() {
    let max = format!("{BODY_LENGTH_MAX:x}\r\nabc");
    assert_eq!(pass(Framing::Chunked, max.as_bytes(), 1), (max.clone().into_bytes(), false, None));
    let over = format!("{:x}\r\n", BODY_LENGTH_MAX as u128 + 1);
    let (_, ended, err) = pass(Framing::Chunked, over.as_bytes(), 3);
    assert_eq!((ended, err.as_deref()), (false, Some("protocol: chunk size overflows")));
    assert_eq!(pass(Framing::Length(BODY_LENGTH_MAX), b"abc", 2), (b"abc".to_vec(), false, None));
}
