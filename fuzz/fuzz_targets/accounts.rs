//! Fuzzes `accounts::parse`, the reader of the server's users file
//! (`--users`), which the server runs at start and on every SIGHUP.
//!
//! Input: the file's bytes (read as UTF-8, invalid sequences replaced).
//! Checks: no panic; a refused file names one of its lines; a file that
//! reads holds bounded names and no user twice, by name or by password.
#![no_main]

use blocking_proxy::proto::accounts::{parse, NAME_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse(&text) {
        Ok(users) => {
            for (i, u) in users.iter().enumerate() {
                assert!(!u.name.is_empty() && u.name.len() <= NAME_MAX);
                assert!(users[..i].iter().all(|o| o.name != u.name && o.hash != u.hash));
            }
        }
        Err(e) => assert!(e.line >= 1 && e.line <= text.split('\n').count(), "{e}"),
    }
});
