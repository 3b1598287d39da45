//! Fuzzes `wire::read_seed`, the seed-format header blocking-server reads first.
//!
//! Input: one flag byte (bit 0 set: hand the parser one byte per read), then
//! the bytes on the wire. Checks: no panic; on success the parser consumed
//! exactly the header `encode_seed` writes for the target it returned (never a
//! byte of the payload after it), and those bytes re-encode to what was read
//! (all but LEN for an IP address, which the format says the reader ignores).
#![no_main]


use blocking_proxy::proto::addr::Target;
use blocking_proxy::proto::wire::{encode_seed, read_seed};
use libfuzzer_sys::fuzz_target;

mod common;
use common::Input;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, wire)) = data.split_first() else { return };
    let mut input = Input::new(wire, if flags & 1 != 0 { 1 } else { usize::MAX });
    let Ok(target) = read_seed(&mut input) else { return };

    let consumed = &wire[..input.pos];
    let mut enc = Vec::new();
    encode_seed(&target, &mut enc);
    assert_eq!(consumed.len(), enc.len(), "read {consumed:02x?}, header for {target:?} is {enc:02x?}");
    match target {
        // LEN is written as 0 and ignored on read for addresses.
        Target::Ip(_) => {
            assert!(enc[0] == consumed[0] && enc[2..] == consumed[2..], "{consumed:02x?} vs {enc:02x?}")
        }
        Target::Domain(..) => assert_eq!(consumed, &enc[..]),
    }
    assert_eq!(read_seed(&mut &enc[..]).ok(), Some(target), "the re-encoded header reads back");
});
