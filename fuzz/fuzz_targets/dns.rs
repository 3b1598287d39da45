//! Fuzzes `proto::dns`, the DNS messages blocking-local's forwarder reads
//! from its clients and upstream servers and edits for its cache.
//!
//! Input: one flag byte (bit 0 set: hand `read_tcp` one byte per read; the
//! next two bits pick the UDP limit), then the bytes, taken as one message
//! and as a TCP stream of messages. Checks: no panic; both readers give the
//! same answer twice; a query read builds back into the same question; an
//! error answer to a query reads as an answer; `truncate_for_udp` fits its
//! limit and keeps an answer readable; `age` changes a message whole or not
//! at all, never raises a TTL, and keeps an answer readable; `read_tcp`
//! takes exactly the message each length names.
#![no_main]

use blocking_proxy::proto::dns::{self, DnsError, HEADER_LEN, RCODE_REFUSED, UDP_MAX_CLASSIC};
use libfuzzer_sys::fuzz_target;

mod common;
use common::Input;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, msg)) = data.split_first() else { return };

    let query = dns::parse_query(msg);
    assert_eq!(query, dns::parse_query(msg));
    if let Ok(q) = &query {
        let built = dns::query(q.id, &q.question, q.recursion_desired).expect("a name read is a name");
        assert_eq!(dns::parse_query(&built).map(|b| b.question).as_ref(), Ok(&q.question));
        let _ = dns::cache_key(&q.question);
    }
    let rcode = query.as_ref().err().map_or(RCODE_REFUSED, DnsError::rcode);
    if let Some(reply) = dns::error_response(msg, rcode) {
        assert!(msg.len() >= HEADER_LEN && msg[2] & 0x80 == 0, "only a query is answered");
        if msg[2] & 0x78 == 0 {
            assert!(dns::parse_answer(&reply).is_ok(), "{reply:02x?}");
        }
    }

    let answer = dns::parse_answer(msg);
    assert_eq!(answer, dns::parse_answer(msg));
    let limit = [UDP_MAX_CLASSIC, 1232, 4096, 100][usize::from(flags >> 1 & 3)];
    let fitted = dns::truncate_for_udp(msg, limit);
    assert!(fitted.len() <= limit.max(UDP_MAX_CLASSIC));
    if let Ok(a) = &answer {
        let f = dns::parse_answer(&fitted).expect("a truncated answer reads");
        assert_eq!((f.id, f.rcode, &f.question), (a.id, a.rcode, &a.question));
    }

    let mut aged = msg.to_vec();
    match dns::age(&mut aged, 3600) {
        Ok(()) => {
            if let Ok(a) = &answer {
                let after = dns::parse_answer(&aged).expect("an aged answer reads");
                assert!(after.ttl <= a.ttl && a.ttl.map(|t| t.saturating_sub(3600)) <= after.ttl);
            }
        }
        Err(_) => assert_eq!(aged, msg, "refused, and left as it was"),
    }

    let mut input = Input::new(msg, if flags & 1 != 0 { 1 } else { usize::MAX });
    loop {
        let start = input.pos;
        let claimed = match msg.get(start..start + 2) {
            Some(&[hi, lo]) => start + 2 + usize::from(u16::from_be_bytes([hi, lo])),
            _ => usize::MAX,
        };
        match dns::read_tcp(&mut input) {
            Ok(Some(m)) => {
                assert_eq!(input.pos, claimed, "exactly the message, nothing after it");
                assert_eq!(&msg[start + 2..claimed], &m[..]);
            }
            Ok(None) => {
                assert_eq!(start, msg.len());
                break;
            }
            Err(_) => {
                assert!(claimed == start + 2 || claimed > msg.len(), "only a cut or empty message fails");
                break;
            }
        }
    }
});
