//! Fuzzes the UDP parsers: `wire::read_udp`, the trojan frames a server and
//! a local read from each other, and `socks5::read_udp_header`, the header
//! of every datagram an application sends the local.
//!
//! Input: one flag byte (bit 0 set: hand the frame parser one byte per
//! read), then the bytes, taken both as a stream of frames and as one
//! datagram. Checks: no panic; an accepted frame consumed exactly what it
//! re-encodes to; an accepted datagram header is as long as it re-encodes.
#![no_main]

use blocking_proxy::proto::{socks5, wire};
use libfuzzer_sys::fuzz_target;

mod common;
use common::Input;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else { return };
    let mut input = Input::new(bytes, if flags & 1 != 0 { 1 } else { usize::MAX });
    let mut payload = Vec::new();
    while let Ok(Some(target)) = wire::read_udp(&mut input, &mut payload) {
        let mut enc = Vec::new();
        wire::encode_udp(&target, &payload, &mut enc);
        let end = input.pos;
        assert_eq!(&bytes[end - enc.len()..end], &enc[..], "the frame re-encodes to the bytes read");
    }
    if let Ok((target, at)) = socks5::read_udp_header(bytes) {
        let mut enc = Vec::new();
        socks5::write_udp_header(&target, &mut enc);
        assert_eq!(at, enc.len());
        assert_eq!(&bytes[3..at], &enc[3..], "the address re-encodes to the bytes read");
    }
});
