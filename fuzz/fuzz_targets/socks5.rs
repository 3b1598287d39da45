//! Fuzzes `socks5::accept`, the SOCKS5 greeting, RFC 1929 login and request parser of blocking-local.
//!
//! Input: one flag byte, then what the application sends. Bit 0 of the flag
//! byte: with no users (no authentication) or with the one user alice /
//! wonder; bit 1: hand the parser one byte per read. Replies are discarded.
//! Checks: no panic; on success the parser consumed exactly the greeting, the
//! login (with users: alice's, and no other) and a CONNECT request whose
//! address re-encodes to the bytes read (never a byte of the payload after it).
//! Then the same through `net::deadline::Buffered`, as blocking-local reads
//! it: the same result, and every byte after the message kept (in the buffer
//! or unread).
#![no_main]


use blocking_proxy::net::deadline::Buffered;
use blocking_proxy::proto::socks5::{accept, CMD_CONNECT, SOCKS_VERSION};
use blocking_proxy::proto::users::User;
use blocking_proxy::proto::addr::{self, Layout};
use libfuzzer_sys::fuzz_target;

mod common;
use common::Input;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, wire)) = data.split_first() else { return };
    let with_users = flags & 1 != 0;
    let users =
        if with_users { vec![User { name: "alice".into(), password: "wonder".into() }] } else { Vec::new() };
    let chunk = if flags & 2 != 0 { 1 } else { usize::MAX };
    let mut conn = Input::new(wire, chunk);
    let plain = accept(&mut conn, &users);
    let mut through = Input::new(wire, chunk);
    let mut buffered = Buffered::new(&mut through);
    let got = accept(&mut buffered, &users);
    let rest = buffered.rest();
    assert_eq!(got.as_ref().ok(), plain.as_ref().ok(), "the buffer changes nothing");
    let Ok(target) = plain else { return };
    assert_eq!([&rest[..], &wire[through.pos..]].concat(), &wire[conn.pos..], "bytes after the message are kept");

    let consumed = &wire[..conn.pos];
    // Greeting: VER NMETHODS METHODS...
    let mut at = 2 + usize::from(consumed[1]);
    if with_users {
        // Login: VER ULEN UNAME PLEN PASSWD, which must be alice's.
        let ulen = usize::from(consumed[at + 1]);
        let name = &consumed[at + 2..at + 2 + ulen];
        let plen = usize::from(consumed[at + 2 + ulen]);
        let password = &consumed[at + 3 + ulen..at + 3 + ulen + plen];
        assert_eq!((name, password), (&b"alice"[..], &b"wonder"[..]), "accepted a wrong login");
        at += 3 + ulen + plen;
    }
    // Request: VER CMD RSV, then the address as SOCKS5 encodes it.
    let mut addr = Vec::new();
    addr::write(&target, Layout::Socks, &mut addr);
    let want = at + 3 + addr.len();
    assert_eq!(consumed.len(), want, "read {consumed:02x?}, greeting and request for {target:?} are {want}");
    assert_eq!(consumed[at..at + 2], [SOCKS_VERSION, CMD_CONNECT]);
    assert_eq!(consumed[at + 3..], addr[..], "the address re-encodes to the bytes read");
});
