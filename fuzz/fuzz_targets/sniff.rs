//! Fuzzes `proto::sniff`, which blocking-local runs on the first bytes of a
//! redirected connection to find the name it is for.
//!
//! Input: the first bytes a client sends. Checks: no panic; the same answer
//! twice; a name is a lowercase DNS host name; a prefix of the input gives
//! the same answer or asks for more; more bytes are never asked for once
//! `SNIFF_MAX` are there.
#![no_main]

use blocking_proxy::proto::sniff::{sniff, Sniffed, SNIFF_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let got = sniff(data);
    assert_eq!(got, sniff(data));
    match &got {
        Sniffed::Name(name) => assert!(
            !name.is_empty()
                && name.len() <= 253
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)),
            "{name:?}"
        ),
        Sniffed::NeedMore => assert!(data.len() < SNIFF_MAX),
        Sniffed::None => {}
    }
    if let Some(&cut) = data.first() {
        let prefix = &data[..usize::from(cut).min(data.len())];
        let early = sniff(prefix);
        assert!(early == got || early == Sniffed::NeedMore, "{early:?}, then {got:?}");
    }
});
