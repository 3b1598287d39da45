//! Fuzzes `socks4::accept`, the SOCKS4 and SOCKS4a request parser of blocking-local.
//!
//! Input: one flag byte, then what the application sends. Bit 0 of the flag
//! byte: users configured (every request must be refused); bit 1: hand the
//! parser one byte per read. Replies are discarded.
//! Checks: no panic; nothing accepted with users; on success the parser
//! consumed exactly the fixed part, the USERID and its NUL, and (4a) the
//! domain and its NUL, never a byte of the payload after them.
#![no_main]

use blocking_proxy::proto::addr::Target;
use blocking_proxy::proto::socks4::{accept, CMD_CONNECT, SOCKS4_VERSION};
use libfuzzer_sys::fuzz_target;

mod common;
use common::Input;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, wire)) = data.split_first() else { return };
    let login_required = flags & 1 != 0;
    let mut conn = Input::new(wire, if flags & 2 != 0 { 1 } else { usize::MAX });
    let Ok(target) = accept(&mut conn, login_required) else { return };
    assert!(!login_required, "accepted a SOCKS4 request with users configured");
    let consumed = &wire[..conn.pos];
    assert_eq!(consumed[..2], [SOCKS4_VERSION, CMD_CONNECT]);
    let userid_end = 8 + consumed[8..].iter().position(|&b| b == 0).expect("a NUL after the USERID");
    assert!(userid_end - 8 <= 255);
    let want = match &target {
        Target::Domain(name, _) => userid_end + 1 + name.len() + 1,
        Target::Ip(_) => userid_end + 1,
    };
    assert_eq!(consumed.len(), want, "read {consumed:02x?} for {target:?}");
    assert_eq!(target.port(), u16::from_be_bytes([consumed[2], consumed[3]]));
});
