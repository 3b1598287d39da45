//! A million generated inputs through the SOCKS5 and header parsers: random
//! bytes, and valid messages truncated, mutated, extended. A fixed seed makes
//! any failure reproducible. No input may panic, allocate more than a small
//! bound, or make a parser read past the message it accepted.

use std::cell::Cell;

use blocking_proxy::error::Error;
use blocking_proxy::net::deadline::Buffered;
use blocking_proxy::proto::addr::{self, Target};
use blocking_proxy::proto::socks5;
use blocking_proxy::proto::users::User;
use blocking_proxy::proto::wire;

use crate::generated::{Rng, LARGEST};

use crate::input::Input;

const CASES: usize = 1_000_000;
const SEED: u64 = 0x5EED_B10C_u64;

fn random_target(r: &mut Rng) -> Target {
    match r.below(3) {
        0 => Target::Ip((std::net::Ipv4Addr::from(r.next() as u32), r.next() as u16).into()),
        1 => Target::Ip(
            (std::net::Ipv6Addr::from(u128::from(r.next()) << 64 | u128::from(r.next())), r.next() as u16)
                .into(),
        ),
        _ => {
            let len = 1 + r.below(255);
            let name: String = (0..len).map(|_| (b'a' + (r.byte() % 26)) as char).collect();
            Target::Domain(name, r.next() as u16)
        }
    }
}

/// A valid message of one of the five kinds the parsers take.
fn valid(r: &mut Rng, kind: usize) -> Vec<u8> {
    let t = random_target(r);
    let mut v = Vec::new();
    match kind {
        0 => wire::encode_seed(&t, &mut v),
        1 => wire::encode_trojan(&wire::trojan_hash("secret"), &t, &mut v),
        2 => {
            v.extend_from_slice(&[5, 1, 0, 5, 1, 0]);
            addr::write(&t, addr::Layout::Socks, &mut v);
        }
        _ => {
            v.extend_from_slice(&[5, 2, 0, 2, 1, 5]);
            v.extend_from_slice(b"alice");
            v.push(6);
            v.extend_from_slice(b"wonder");
            v.extend_from_slice(&[5, 1, 0]);
            addr::write(&t, addr::Layout::Socks, &mut v);
        }
    }
    v
}

/// Runs every parser on `data`; checks that an accepted message is exactly as
/// long as it says. Returns how many parsers accepted it.
fn check(data: &[u8], chunk: usize, users: &[User], known: &[wire::TrojanHash]) -> usize {
    let mut accepted = 0;
    let mut inp = Input::new(data, chunk);
    if let Ok(t) = wire::read_seed(&mut inp) {
        let mut enc = Vec::new();
        wire::encode_seed(&t, &mut enc);
        assert_eq!(inp.pos, enc.len(), "seed {data:?}");
        accepted += 1;
    }

    let mut inp = Input::new(data, chunk);
    if let Ok(t) = wire::read_trojan(&mut inp, known) {
        let mut enc = Vec::new();
        wire::encode_trojan(&known[0], &t, &mut enc);
        assert_eq!(inp.pos, enc.len(), "trojan {data:?}");
        accepted += 1;
    }

    for users in [&[][..], users] {
        let mut inp = Input::new(data, chunk);
        match socks5::accept(&mut inp, users) {
            Ok(t) => {
                let mut addr = Vec::new();
                addr::write(&t, addr::Layout::Socks, &mut addr);
                let greeting = 2 + usize::from(data[1]);
                let login = if users.is_empty() {
                    0
                } else {
                    let ulen = usize::from(data[greeting + 1]);
                    3 + ulen + usize::from(data[greeting + 2 + ulen])
                };
                assert_eq!(inp.pos, greeting + login + 3 + addr.len(), "socks5 {data:?}");
                accepted += 1;
            }
            Err(Error::Io(_) | Error::Protocol(_) | Error::Denied(_)) => {}
            Err(e) => panic!("unexpected error kind {e:?}"),
        }
        // Through the buffer the local reads it with: the same answer, and
        // every byte after the message either in the buffer or still unread.
        let mut plain = Input::new(data, chunk);
        let want = socks5::accept(&mut plain, users).ok();
        let mut inp = Input::new(data, chunk);
        let mut io = Buffered::new(&mut inp);
        let got = socks5::accept(&mut io, users).ok();
        let rest = io.rest();
        assert_eq!(got, want, "buffered socks5 {data:?}");
        if got.is_some() {
            assert_eq!(
                [&rest[..], &data[inp.pos..]].concat(),
                &data[plain.pos..],
                "buffered socks5 {data:?}"
            );
        }
    }
    accepted
}

#[test]
fn a_million_generated_inputs() {
    let users = [User { name: "alice".into(), password: "wonder".into() }];
    let known = [wire::trojan_hash("secret")];
    let mut r = Rng(SEED);
    LARGEST.with(|l| l.set(0));
    let accepted =
        crate::generated::run(&mut r, CASES, 8, valid, |data, chunk| check(data, chunk, &users, &known));
    assert!(accepted > CASES / 4, "the generator makes enough valid messages: {accepted}");
    let largest = LARGEST.with(Cell::get);
    assert!(largest <= 4096, "an allocation of {largest} bytes at once");
}
