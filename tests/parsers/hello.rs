//! Generated inputs through the ClientHello version reader: the starts of
//! real clients' hellos (TLS 1.0 to 1.3), cut short, mutated, extended, and
//! random bytes. A fixed seed makes any failure reproducible. No input may
//! panic or allocate; an untouched hello always has its version.

use std::cell::Cell;

use blocking_proxy::proto::hello::{legacy_version, START};

use crate::generated::{mutate, Rng, LARGEST};

const CASES: usize = 200_000;

/// The start of a ClientHello of `len` bytes asking for `version`, then a
/// little of its random.
fn hello(version: u16, len: u16) -> Vec<u8> {
    let [vh, vl] = version.to_be_bytes();
    let [rh, rl] = (len + 4).to_be_bytes();
    let [lh, ll] = len.to_be_bytes();
    vec![22, 3, 1, rh, rl, 1, 0, lh, ll, vh, vl, 0x11, 0x22, 0x33, 0x44]
}

#[test]
fn generated_client_hello_starts() {
    let hellos: Vec<(u16, Vec<u8>)> = [(0x0301, 0x63), (0x0302, 0x63), (0x0303, 0xfc), (0x0303, 0x200)]
        .map(|(v, l)| (v, hello(v, l)))
        .into();
    let mut r = Rng(0x1e11_0303);
    let mut read = 0usize;
    LARGEST.with(|l| l.set(0));
    for _ in 0..CASES {
        let (version, start) = &hellos[r.below(hellos.len())];
        let input = match r.below(8) {
            0 => start.clone(),
            1 => {
                let n = r.below(2 * START);
                r.bytes(n)
            }
            _ => mutate(&mut r, start.clone()),
        };
        let before = LARGEST.with(Cell::get);
        let got = legacy_version(&input);
        assert_eq!(LARGEST.with(Cell::get), before, "the reader allocates nothing");
        if input == *start {
            assert_eq!(got, Some(*version));
        }
        if input.len() < START {
            assert_eq!(got, None, "{input:?}: too short to hold a version");
        }
        read += usize::from(got.is_some());
    }
    assert!(read > CASES / 4, "enough inputs still have a version: {read}");
}
