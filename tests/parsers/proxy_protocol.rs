//! Generated inputs through the PROXY protocol parser: valid version 1 and
//! version 2 headers (with TLVs), truncated, mutated, extended, in reads of
//! any size. A fixed seed makes any failure reproducible. No input may
//! panic, allocate more than a small bound, or make the parser take more
//! than the header it accepted.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use blocking_proxy::error::Error;
use blocking_proxy::proto::proxy_protocol::{self, Header, V2_MAX_LEN};

use crate::generated::{mutate, Rng, LARGEST};

use crate::input::Input;

const CASES: usize = 200_000;

fn address(r: &mut Rng, v6: bool) -> SocketAddr {
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::from(u128::from(r.next()) << 64 | u128::from(r.next())))
    } else {
        IpAddr::V4(Ipv4Addr::from(r.next() as u32))
    };
    SocketAddr::new(ip, r.next() as u16)
}

/// A valid header and what it says.
fn valid(r: &mut Rng) -> (Vec<u8>, Header) {
    let v6 = r.below(2) == 0;
    let (source, destination) = (address(r, v6), address(r, v6));
    let said = Header::Proxied { source, destination };
    if r.below(2) == 0 {
        let family = if v6 { "TCP6" } else { "TCP4" };
        let line = format!(
            "PROXY {family} {} {} {} {}\r\n",
            source.ip(),
            destination.ip(),
            source.port(),
            destination.port()
        );
        return (line.into_bytes(), said);
    }
    let mut h = Vec::new();
    proxy_protocol::write_v2(source, destination, &mut h);
    let tlvs = r.below(3);
    for _ in 0..tlvs {
        let n = r.below(40);
        let mut tlv = vec![0x04, 0, n as u8];
        tlv.extend(r.bytes(n));
        let len = u16::from_be_bytes([h[14], h[15]]) + tlv.len() as u16;
        h[14..16].copy_from_slice(&len.to_be_bytes());
        h.extend(tlv);
    }
    (h, said)
}

#[test]
fn generated_proxy_protocol_headers() {
    let mut r = Rng(0x9E0_C0DE);
    let mut accepted = 0usize;
    LARGEST.with(|l| l.set(0));
    for case in 0..CASES {
        let (header, said) = valid(&mut r);
        let untouched = r.below(4) == 0;
        let data = if untouched { header.clone() } else { mutate(&mut r, header.clone()) };
        let chunk = if case % 8 == 0 { 1 } else { 1 + r.below(700) };
        let mut inp = Input::new(&data, chunk);
        match proxy_protocol::read(&mut inp) {
            Ok(got) => {
                accepted += 1;
                if untouched {
                    assert_eq!(got, said, "{data:02x?}");
                    assert_eq!(inp.pos, header.len(), "the whole header and nothing more");
                }
                assert!(inp.pos <= 16 + V2_MAX_LEN, "{data:02x?}");
            }
            Err(Error::Io(_) | Error::Protocol(_)) => {
                assert!(!untouched, "a valid header refused: {data:02x?}")
            }
            Err(e) => panic!("unexpected error kind {e:?}"),
        }
    }
    assert!(accepted > CASES / 4, "the generator makes enough valid headers: {accepted}");
    let largest = LARGEST.with(Cell::get);
    assert!(largest <= 4096, "an allocation of {largest} bytes at once");
}
