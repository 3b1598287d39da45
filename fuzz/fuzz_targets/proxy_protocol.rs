//! Fuzzes `proxy_protocol::read`, the PROXY protocol header (versions 1 and
//! 2) a server behind a load balancer reads first.
//!
//! Input: one flag byte (bit 0 set: hand the parser one byte per read), then
//! the bytes on the wire. Checks: no panic; an accepted header never takes
//! more than its version's limit, and a version 2 header takes exactly the
//! length it declares.
#![no_main]

use blocking_proxy::proto::proxy_protocol::{read, V1_MAX, V2_MAX_LEN, V2_SIGNATURE};
use libfuzzer_sys::fuzz_target;

mod common;
use common::Input;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, wire)) = data.split_first() else { return };
    let mut input = Input::new(wire, if flags & 1 != 0 { 1 } else { usize::MAX });
    if read(&mut input).is_err() {
        return;
    }
    if wire.starts_with(&V2_SIGNATURE) {
        let len = usize::from(u16::from_be_bytes([wire[14], wire[15]]));
        assert!(len <= V2_MAX_LEN);
        assert_eq!(input.pos, 16 + len, "a version 2 header takes exactly its length");
    } else {
        assert!(input.pos <= V1_MAX && wire[..input.pos].ends_with(b"\r\n"), "a version 1 line ends at its CRLF");
    }
});
