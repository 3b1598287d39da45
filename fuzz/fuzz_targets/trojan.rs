//! Fuzzes `wire::read_trojan`, the trojan header blocking-server reads first, with one known password.
//!
//! Input: one flag byte (bit 0 set: hand the parser one byte per read), then
//! the bytes on the wire. The only known hash is that of "secret". Checks: no
//! panic; on success the parser consumed exactly the header `encode_trojan`
//! writes for that hash and the returned target (never a byte of the payload
//! after it), byte for byte.
#![no_main]

use std::sync::OnceLock;

use blocking_proxy::proto::wire::{encode_trojan, read_trojan, trojan_hash, TrojanHash};
use libfuzzer_sys::fuzz_target;

mod common;
use common::Input;

fn known() -> &'static [TrojanHash; 1] {
    static KNOWN: OnceLock<[TrojanHash; 1]> = OnceLock::new();
    KNOWN.get_or_init(|| [trojan_hash("secret")])
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, wire)) = data.split_first() else { return };
    let known = known();
    let mut input = Input::new(wire, if flags & 1 != 0 { 1 } else { usize::MAX });
    let Ok(target) = read_trojan(&mut input, known) else { return };

    let consumed = &wire[..input.pos];
    let mut enc = Vec::new();
    encode_trojan(&known[0], &target, &mut enc);
    assert_eq!(consumed.len(), enc.len(), "read {consumed:02x?}, header for {target:?} is {enc:02x?}");
    assert_eq!(consumed, &enc[..], "the header re-encodes to the bytes read");
});
