//! Fuzzes `http::Body`, the HTTP proxy's request body framing in blocking-local.
//!
//! Input: one flag byte, then the bytes a client sends after its request
//! head. Flag bits 0 and 1: the framing (0 none, 1 `Content-Length` of the
//! next byte, else chunked); bits 2 to 7: how many bytes each pass gets,
//! less one.
//! Checks: no panic; the same bytes pass and the same error stops the body
//! whether it is passed in pieces or at once; what passes is never more
//! than was given, and a `Content-Length` body is exactly its first bytes;
//! a body that ended passes whole, and alone, through a fresh `Body`: no
//! trailer field and nothing after the body ever passes.
#![no_main]

use blocking_proxy::proto::http::{Body, Framing};
use libfuzzer_sys::fuzz_target;

/// The bytes kept, whether the body ended, and the error that stopped it.
fn pass(framing: Framing, input: &[u8], split: usize) -> (Vec<u8>, bool, Option<String>) {
    let mut body = Body::new(framing);
    let mut kept = Vec::new();
    for part in input.chunks(split) {
        let mut piece = part.to_vec();
        match body.pass(&mut piece) {
            Ok(n) => {
                assert!(n <= part.len());
                kept.extend_from_slice(&piece[..n]);
            }
            Err(e) => return (kept, body.ended(), Some(e.to_string())),
        }
    }
    (kept, body.ended(), None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let (framing, input) = match (flags & 3, rest.split_first()) {
        (0, _) => (Framing::None, rest),
        (1, Some((&len, input))) => (Framing::Length(u64::from(len)), input),
        (1, None) => return,
        _ => (Framing::Chunked, rest),
    };
    let split = 1 + usize::from(flags >> 2);
    let (kept, ended, err) = pass(framing, input, split);
    let whole = pass(framing, input, usize::MAX);
    assert_eq!(err, whole.2, "the same error however the bytes are split");
    if err.is_none() {
        assert_eq!((&kept, ended), (&whole.0, whole.1), "the same bytes however they are split");
    }
    if let Framing::Length(len) = framing {
        let n = (len as usize).min(input.len());
        assert_eq!(kept, input[..n]);
    }
    if ended {
        let again = pass(framing, &[&kept[..], b"GET / HTTP/1.1\r\n\r\n"].concat(), 1);
        assert_eq!(again, (kept, true, None), "what passed is one whole body, and all of it passes again");
    }
});
