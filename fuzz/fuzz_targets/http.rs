//! Fuzzes `http::accept`, the HTTP proxy request parser of blocking-local.
//!
//! Input: one flag byte, then what the client sends. Bit 0 of the flag byte:
//! with no users or with the one user alice / wonder; bit 1: hand the parser
//! one byte per read. Replies are discarded.
//! Checks: no panic; on success the parser consumed exactly the request head
//! (up to and including its empty line, never a byte of the body after it);
//! with users, the head carried alice's credentials; a forwarded head is in
//! origin form, ends with `Connection: close`, has no Proxy-Authorization,
//! and says the body's framing once, as decided.
#![no_main]

use blocking_proxy::proto::http::{accept, Framing, Request};
use blocking_proxy::proto::users::User;
use libfuzzer_sys::fuzz_target;

mod common;
use common::Input;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, wire)) = data.split_first() else { return };
    let with_users = flags & 1 != 0;
    let users =
        if with_users { vec![User { name: "alice".into(), password: "wonder".into() }] } else { Vec::new() };
    let mut conn = Input::new(wire, if flags & 2 != 0 { 1 } else { usize::MAX });
    let Ok(req) = accept(&mut conn, &users) else { return };
    let consumed = &wire[..conn.pos];
    assert!(consumed.ends_with(b"\n\n") || consumed.ends_with(b"\n\r\n"), "the head ends with an empty line");
    let before_end = &consumed[..consumed.len() - 1];
    assert!(
        !before_end.windows(2).any(|w| w == b"\n\n") && !before_end.windows(3).any(|w| w == b"\n\r\n"),
        "read past the first empty line: {consumed:?}"
    );
    if with_users {
        // base64("alice:wonder"), with or without padding.
        let text = String::from_utf8_lossy(consumed);
        assert!(text.contains("YWxpY2U6d29uZGVy"), "accepted without alice's credentials: {text:?}");
    }
    if let Request::Forward { head, framing, .. } = req {
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(text.split(' ').nth(1).is_some_and(|p| p.starts_with('/')), "origin form: {text:?}");
        assert!(text.ends_with("\r\nconnection: close\r\n\r\n"), "{text:?}");
        assert!(!text.contains("\r\nproxy-authorization:"), "{text:?}");
        // The framing decided, said once, and no other.
        let said = |h: &str| text.matches(h).count();
        let (length, chunked) = (said("\r\ncontent-length: "), said("\r\ntransfer-encoding: "));
        let want = match framing {
            Framing::None => (0, 0),
            Framing::Length(n) => {
                assert!(text.contains(&format!("\r\ncontent-length: {n}\r\n")), "{text:?}");
                (1, 0)
            }
            Framing::Chunked => (0, 1),
        };
        assert_eq!((length, chunked), want, "{text:?}");
    }
});
