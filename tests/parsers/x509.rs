//! Generated inputs through the certificate-expiry reader: the test CA and
//! server certificates, cut short, mutated, extended. A fixed seed makes any
//! failure reproducible. No input may panic or allocate; an untouched
//! certificate always has its end.

use std::cell::Cell;

use blocking_proxy::proto::x509::not_after;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::generated::{mutate, Rng, LARGEST};

const CASES: usize = 200_000;

fn certificates() -> Vec<Vec<u8>> {
    ["server.pem", "ca.pem"]
        .iter()
        .flat_map(|name| {
            let path = format!("{}/certs/{name}", env!("CARGO_MANIFEST_DIR"));
            CertificateDer::pem_file_iter(path).unwrap().map(|c| c.unwrap().to_vec()).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn generated_certificates() {
    let certs = certificates();
    assert!(certs.len() >= 2);
    let ends: Vec<_> = certs.iter().map(|c| not_after(c).expect("a real certificate has an end")).collect();
    let mut r = Rng(0x0509_0509);
    let mut read = 0usize;
    LARGEST.with(|l| l.set(0));
    for _ in 0..CASES {
        let which = r.below(certs.len());
        let untouched = r.below(8) == 0;
        let data = if untouched { certs[which].clone() } else { mutate(&mut r, certs[which].clone()) };
        let before = LARGEST.with(Cell::get);
        let end = not_after(&data);
        assert_eq!(LARGEST.with(Cell::get), before, "the reader allocates nothing");
        if untouched {
            assert_eq!(end, Some(ends[which]));
        }
        read += usize::from(end.is_some());
    }
    assert!(read > CASES / 4, "enough inputs still have an end: {read}");
}
