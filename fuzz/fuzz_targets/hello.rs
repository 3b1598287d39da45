//! Fuzzes `hello::legacy_version`, which the server runs on the first bytes
//! of every connection whose ClientHello rustls refuses.
//!
//! Input: the first bytes a client sends. Checks: no panic, and no version
//! from fewer bytes than hold one.
#![no_main]

use blocking_proxy::proto::hello::{legacy_version, START};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let version = legacy_version(data);
    assert!(data.len() >= START || version.is_none());
});
