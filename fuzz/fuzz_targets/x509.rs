//! Fuzzes `x509::not_after`, the certificate-expiry reader the server runs
//! on its own certificate at start and on each reload.
//!
//! Input: the DER bytes. Checks: no panic, whatever the lengths say.
#![no_main]

use blocking_proxy::proto::x509::not_after;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = not_after(data);
});
