//! Generated inputs through the two UDP parsers: trojan's UDP frames
//! (`wire::read_udp`) and the SOCKS5 UDP request header
//! (`socks5::read_udp_header`): valid messages, truncated, mutated,
//! extended, in reads of any size. A fixed seed makes any failure
//! reproducible. No input may panic, allocate more than one frame's payload,
//! or make a parser take more than the message it accepted.

use std::cell::Cell;

use blocking_proxy::error::Error;
use blocking_proxy::proto::addr::Target;
use blocking_proxy::proto::socks5;
use blocking_proxy::proto::wire;

use crate::generated::{mutate, Rng, LARGEST};

use crate::input::Input;

const CASES: usize = 200_000;

fn random_target(r: &mut Rng) -> Target {
    match r.below(3) {
        0 => Target::Ip((std::net::Ipv4Addr::from(r.next() as u32), r.next() as u16).into()),
        1 => Target::Ip((std::net::Ipv6Addr::from(u128::from(r.next()) << 64), r.next() as u16).into()),
        _ => {
            let len = 1 + r.below(255);
            let name: String = (0..len).map(|_| (b'a' + (r.byte() % 26)) as char).collect();
            Target::Domain(name, r.next() as u16)
        }
    }
}

#[test]
fn generated_frames_and_datagram_headers() {
    let mut r = Rng(0x0DD_F00D);
    let mut accepted = 0usize;
    let mut payload = Vec::new();
    for case in 0..CASES {
        let t = random_target(&mut r);
        let len = if r.below(100) == 0 { r.below(wire::UDP_PAYLOAD_MAX + 1) } else { r.below(600) };
        let body = r.bytes(len);

        // A trojan UDP frame, read in chunks of any size.
        let mut frame = Vec::new();
        wire::encode_udp(&t, &body, &mut frame);
        let data = if r.below(4) == 0 { frame } else { mutate(&mut r, frame) };
        let chunk = if case % 8 == 0 { 1 } else { 1 + r.below(700) };
        let mut inp = Input::new(&data, chunk);
        match wire::read_udp(&mut inp, &mut payload) {
            Ok(Some(got)) => {
                let mut enc = Vec::new();
                wire::encode_udp(&got, &payload, &mut enc);
                assert_eq!(inp.pos, enc.len(), "frame {data:02x?}");
                assert_eq!(&data[..enc.len()], &enc[..], "the frame re-encodes to the bytes read");
                accepted += 1;
            }
            Ok(None) => assert!(data.is_empty()),
            Err(Error::Io(_) | Error::Protocol(_)) => {}
            Err(e) => panic!("unexpected error kind {e:?}"),
        }

        // A SOCKS5 UDP datagram, which arrives whole.
        let mut datagram = Vec::new();
        socks5::write_udp_header(&t, &mut datagram);
        let header = datagram.len();
        datagram.extend_from_slice(&body[..len.min(64)]);
        let datagram = if r.below(4) == 0 { datagram } else { mutate(&mut r, datagram) };
        if let Ok((got, at)) = socks5::read_udp_header(&datagram) {
            let mut enc = Vec::new();
            socks5::write_udp_header(&got, &mut enc);
            assert_eq!(at, enc.len(), "datagram {datagram:02x?}");
            assert!(at <= datagram.len());
            if datagram.len() >= header {
                accepted += 1;
            }
        }
    }
    assert!(accepted > CASES / 4, "the generator makes enough valid messages: {accepted}");
    let largest = LARGEST.with(Cell::get);
    assert!(largest <= 2 * (wire::UDP_PAYLOAD_MAX + 1024), "an allocation of {largest} bytes at once");
}
