//! Generated DNS messages through `proto::dns`: queries (with and without
//! EDNS, of every EDNS version) and answers (A, AAAA, CNAME, NS, MX, TXT,
//! SOA, records of unknown types, OPT; names compressed by pointers to the
//! names before them; NOERROR, NXDOMAIN, failures, truncated ones) built
//! from random names and records, then cut short, mutated, extended, and
//! random bytes. A fixed seed makes any failure reproducible.
//!
//! No input may panic or allocate more than a small bound. Both readers are
//! deterministic and read an untouched message as it was built (an answer's
//! TTL by RFC 2308's rules); a query read writes back to the same question;
//! an error answer to anything with a header reads as an answer;
//! `truncate_for_udp` fits its limit and keeps what reads readable; `age`
//! changes a message whole or not at all and never raises a TTL;
//! `read_tcp` takes exactly the message its length names, or fails only
//! when that message is cut short or empty.

use std::cell::Cell;

use blocking_proxy::proto::dns::{
    self, AnswerInfo, DnsError, Query, Question, CLASS_IN, EDNS_UDP_SIZE, HEADER_LEN, NAME_MAX,
    RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_REFUSED, RCODE_SERVFAIL, TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS,
    TYPE_OPT, TYPE_SOA, TYPE_TXT, UDP_MAX_CLASSIC,
};

use crate::generated::{mutate, Rng, LARGEST};
use crate::input::Input;

const CASES: usize = 200_000;
const TYPE_MX: u16 = 15;
/// The most one allocation may take: messages are built under 1,600 bytes,
/// and a copy of one, a buffer that grows to hold one, or a name's text
/// stays within this.
const ALLOCATION_MAX: usize = 4096;
/// An answer gets no more records once it is this long: the longest record
/// (an SOA of long names) and an OPT record still keep it under 1,600 bytes
/// with what the spoilers add.
const ANSWER_BUDGET: usize = 900;

/// A TTL: mostly plain, sometimes 0, sometimes with its top bit set (which counts as 0).
fn ttl(r: &mut Rng) -> u32 {
    match r.below(20) {
        0 => 0x8000_0000 | r.next() as u32,
        1 => 0,
        _ => r.below(200_000) as u32,
    }
}

fn ttl_value(raw: u32) -> u32 {
    if raw > i32::MAX as u32 {
        0
    } else {
        raw
    }
}

/// One label's bytes: mostly a hostname's, sometimes any byte, now and then 63 long.
fn label(r: &mut Rng) -> Vec<u8> {
    let len = if r.below(30) == 0 { 63 } else { 1 + r.below(12) };
    let any = r.below(10) == 0;
    (0..len)
        .map(|_| {
            if any {
                r.byte()
            } else {
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"[r.below(63)]
            }
        })
        .collect()
}

/// A label in the presentation form `proto::dns` gives a name.
fn presentation(label: &[u8]) -> String {
    let mut s = String::new();
    for &b in label {
        match b {
            b'.' | b'\\' => {
                s.push('\\');
                s.push(char::from(b));
            }
            0x21..=0x7e => s.push(char::from(b)),
            _ => s.push_str(&format!("\\{b:03}")),
        }
    }
    s
}

/// A question of 0 to 4 labels (at most 255 bytes), of a common type or any.
fn random_question(r: &mut Rng) -> Question {
    let mut labels = Vec::new();
    let mut wire_len = 1;
    for _ in 0..r.below(5) {
        let l = label(r);
        if wire_len + 1 + l.len() > NAME_MAX {
            break;
        }
        wire_len += 1 + l.len();
        labels.push(presentation(&l));
    }
    let qtype = match r.below(8) {
        0 => r.next() as u16,
        k => [TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS, TYPE_TXT, TYPE_SOA, TYPE_MX][k - 1],
    };
    let qclass = if r.below(20) == 0 { r.next() as u16 } else { CLASS_IN };
    Question { name: labels.join("."), qtype, qclass }
}

/// OPT record: `payload`, `ttl` and a few options of random bytes.
fn opt(r: &mut Rng, payload: u16, ttl: u32) -> Vec<u8> {
    let mut options = Vec::new();
    for _ in 0..r.below(3) {
        let len = r.below(24);
        options.extend((r.next() as u16).to_be_bytes());
        options.extend((len as u16).to_be_bytes());
        options.extend(r.bytes(len));
    }
    let mut v = vec![0];
    v.extend(TYPE_OPT.to_be_bytes());
    v.extend(payload.to_be_bytes());
    v.extend(ttl.to_be_bytes());
    v.extend((options.len() as u16).to_be_bytes());
    v.extend(options);
    v
}

/// A query as a client sends it, and what `parse_query` should make of it.
fn valid_query(r: &mut Rng) -> (Vec<u8>, Result<Query, DnsError>) {
    let question = random_question(r);
    let id = r.next() as u16;
    let rd = r.below(4) != 0;
    let Ok(mut m) = dns::query(id, &question, rd) else { panic!("{question:?} is a name") };
    let cd = r.below(8) == 0;
    if cd {
        m[3] |= 0x10;
    }
    let mut expected = Query {
        id,
        question,
        recursion_desired: rd,
        checking_disabled: cd,
        udp_limit: UDP_MAX_CLASSIC,
        edns: false,
        dnssec_ok: false,
    };
    if r.below(2) == 0 {
        let payload = match r.below(4) {
            0 => r.below(512) as u16,
            1 => EDNS_UDP_SIZE,
            _ => r.next() as u16,
        };
        let version = if r.below(10) == 0 { 1 + r.below(255) as u8 } else { 0 };
        let dnssec_ok = r.below(2) == 0;
        let ttl = u32::from(version) << 16 | if dnssec_ok { 0x8000 } else { 0 };
        m.extend(opt(r, payload, ttl));
        m[11] = 1;
        if version != 0 {
            return (m, Err(DnsError::BadVersion(version)));
        }
        expected.udp_limit = usize::from(payload).max(UDP_MAX_CLASSIC);
        expected.edns = true;
        expected.dnssec_ok = dnssec_ok;
    }
    (m, Ok(expected))
}

/// An answer being written, with the names in it so far: where each
/// starts and how long it is uncompressed, for later names to point at.
struct Answer {
    m: Vec<u8>,
    names: Vec<(usize, usize)>,
}

impl Answer {
    /// A name: a few fresh labels, then a pointer to a name written before,
    /// or the root.
    fn name(&mut self, r: &mut Rng) {
        let start = self.m.len();
        let suffix = if !self.names.is_empty() && r.below(3) != 0 {
            Some(self.names[r.below(self.names.len())])
        } else {
            None
        };
        let mut wire_len = suffix.map_or(1, |(_, len)| len);
        for _ in 0..r.below(3) {
            let l = label(r);
            if wire_len + 1 + l.len() > NAME_MAX {
                break;
            }
            wire_len += 1 + l.len();
            self.m.push(l.len() as u8);
            self.m.extend(l);
        }
        match suffix {
            Some((at, _)) => self.m.extend([0xc0 | (at >> 8) as u8, at as u8]),
            None => self.m.push(0),
        }
        self.names.push((start, wire_len));
    }

    /// A record of `rtype` with the `raw` TTL and data made by `rdata`.
    fn record(&mut self, r: &mut Rng, rtype: u16, raw: u32, rdata: impl FnOnce(&mut Answer, &mut Rng)) {
        self.name(r);
        self.m.extend(rtype.to_be_bytes());
        self.m.extend(CLASS_IN.to_be_bytes());
        self.m.extend(raw.to_be_bytes());
        let len_at = self.m.len();
        self.m.extend([0, 0]);
        rdata(self, r);
        let len = (self.m.len() - len_at - 2) as u16;
        self.m[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    }

    /// A record of any kind but SOA and OPT, and its TTL.
    fn any_record(&mut self, r: &mut Rng) -> u32 {
        let raw = ttl(r);
        match r.below(7) {
            0 => self.record(r, TYPE_A, raw, |a, r| a.m.extend(r.bytes(4))),
            1 => self.record(r, TYPE_AAAA, raw, |a, r| a.m.extend(r.bytes(16))),
            2 => self.record(r, TYPE_CNAME, raw, |a, r| a.name(r)),
            3 => self.record(r, TYPE_NS, raw, |a, r| a.name(r)),
            4 => self.record(r, TYPE_MX, raw, |a, r| {
                a.m.extend(r.bytes(2));
                a.name(r);
            }),
            5 => self.record(r, TYPE_TXT, raw, |a, r| {
                for _ in 0..1 + r.below(3) {
                    let len = r.below(60);
                    a.m.push(len as u8);
                    a.m.extend(r.bytes(len));
                }
            }),
            _ => {
                let rtype = 0xff00 | r.next() as u16;
                self.record(r, rtype, raw, |a, r| {
                    let len = r.below(30);
                    a.m.extend(r.bytes(len))
                })
            }
        }
        ttl_value(raw)
    }
}

/// An upstream's answer, and what `parse_answer` should make of it.
fn valid_answer(r: &mut Rng) -> (Vec<u8>, AnswerInfo) {
    let question = (r.below(20) != 0).then(|| random_question(r));
    let rcode = [RCODE_NOERROR, RCODE_NOERROR, RCODE_NOERROR, RCODE_NXDOMAIN, RCODE_SERVFAIL, RCODE_REFUSED]
        [r.below(6)];
    let truncated = r.below(20) == 0;
    let id = r.next() as u16;
    let mut a = Answer { m: Vec::new(), names: Vec::new() };
    a.m.extend(id.to_be_bytes());
    a.m.push(0x80 | if truncated { 0x02 } else { 0 } | if r.below(2) == 0 { 0x01 } else { 0 });
    a.m.push(0x80 | rcode);
    a.m.extend([0; 8]);
    if let Some(q) = &question {
        let Ok(query) = dns::query(0, q, false) else { panic!("{q:?} is a name") };
        a.m.extend(&query[HEADER_LEN..]);
        a.m[5] = 1;
        a.names.push((HEADER_LEN, query.len() - HEADER_LEN - 4));
    }
    let question_end = a.m.len();
    let (mut answers, mut negative): (Option<u32>, Option<u32>) = (None, None);
    let mut an = 0;
    for _ in 0..if rcode == RCODE_NOERROR || r.below(3) == 0 { r.below(16) } else { 0 } {
        if a.m.len() > ANSWER_BUDGET {
            break;
        }
        let t = a.any_record(r);
        answers = Some(answers.map_or(t, |m| m.min(t)));
        an += 1;
    }
    let mut ns = 0;
    if r.below(3) != 0 && a.m.len() <= ANSWER_BUDGET {
        let raw = ttl(r);
        let minimum = ttl(r);
        a.record(r, TYPE_SOA, raw, |a, r| {
            a.name(r);
            a.name(r);
            a.m.extend(r.bytes(16));
            a.m.extend(minimum.to_be_bytes());
        });
        negative = Some(ttl_value(raw).min(ttl_value(minimum)));
        ns += 1;
    }
    for _ in 0..r.below(3) {
        if a.m.len() > ANSWER_BUDGET {
            break;
        }
        a.any_record(r);
        ns += 1;
    }
    let ar = if a.m.len() > ANSWER_BUDGET { 0 } else { r.below(4) };
    let opt_at = (r.below(2) == 0).then(|| r.below(ar + 1));
    let mut extended = 0;
    for i in 0..=ar {
        if opt_at == Some(i) {
            extended = if r.below(20) == 0 { 1 + r.below(255) as u32 } else { 0 };
            let flags = extended << 24 | r.next() as u32 & 0xffff;
            let payload = r.next() as u16;
            let record = opt(r, payload, flags);
            a.m.extend(record);
        }
        if i < ar {
            a.any_record(r);
        }
    }
    let counts = [an, ns, ar + usize::from(opt_at.is_some())];
    for (i, count) in counts.into_iter().enumerate() {
        a.m[6 + 2 * i..8 + 2 * i].copy_from_slice(&(count as u16).to_be_bytes());
    }
    if truncated {
        // Cut anywhere after the question, with the counts of the whole.
        let keep = question_end + r.below(a.m.len() - question_end + 1);
        a.m.truncate(keep);
    }
    let ttl = match (truncated, &question, extended, rcode) {
        (false, Some(_), 0, RCODE_NOERROR) if answers.is_some() => {
            answers.map(|t| negative.map_or(t, |n| t.min(n)))
        }
        (false, Some(_), 0, RCODE_NOERROR | RCODE_NXDOMAIN) => {
            negative.map(|n| answers.map_or(n, |t| t.min(n)))
        }
        _ => None,
    };
    (a.m, AnswerInfo { id, rcode, truncated, question, ttl })
}

/// What a case was built as, if it is left untouched.
enum Built {
    Query(Result<Query, DnsError>),
    Answer(AnswerInfo),
    Nothing,
}

#[test]
fn generated_dns_messages() {
    let mut r = Rng(0xD45_0053);
    let (mut queries, mut answers, mut cached, mut cut) = (0usize, 0usize, 0usize, 0usize);
    let mut last_query = dns::query(1, &Question { name: "a".into(), qtype: TYPE_A, qclass: CLASS_IN }, true)
        .unwrap_or_default();
    let mut largest = 0;
    for case in 0..CASES {
        let (data, built) = match r.below(16) {
            0 => {
                let n = r.below(600);
                (r.bytes(n), Built::Nothing)
            }
            k => {
                let (bytes, built) = if k % 2 == 0 {
                    let (m, q) = valid_query(&mut r);
                    (m, Built::Query(q))
                } else {
                    let (m, a) = valid_answer(&mut r);
                    (m, Built::Answer(a))
                };
                if r.below(4) == 0 {
                    (bytes, built)
                } else {
                    (mutate(&mut r, bytes), Built::Nothing)
                }
            }
        };
        assert!(data.len() < 1600, "the generator's messages stay small: {}", data.len());
        LARGEST.with(|l| l.set(0));

        // Queries: read alike twice, as built, and written back to the same question.
        let query = dns::parse_query(&data);
        assert_eq!(query, dns::parse_query(&data), "{data:02x?}");
        if let Built::Query(expected) = &built {
            assert_eq!(&query, expected, "{data:02x?}");
        }
        if let Ok(q) = &query {
            queries += 1;
            let again = dns::query(q.id, &q.question, q.recursion_desired).map(|m| dns::parse_query(&m));
            assert_eq!(again.ok().and_then(Result::ok).map(|a| a.question), Some(q.question.clone()));
            let (key, qtype, qclass) = dns::cache_key(&q.question);
            assert_eq!(key, q.question.name.to_ascii_lowercase());
            assert_eq!((qtype, qclass), (q.question.qtype, q.question.qclass));
            last_query = data.clone();
        }

        // Error answers: to anything with a header that is not itself a response.
        let rcode = query.as_ref().err().map_or(RCODE_REFUSED, DnsError::rcode);
        match dns::error_response(&data, rcode) {
            Some(reply) => {
                assert!(data.len() >= HEADER_LEN && data[2] & 0x80 == 0);
                assert_eq!(reply[..2], data[..2]);
                if data[2] & 0x78 == 0 {
                    let read = dns::parse_answer(&reply);
                    let Ok(read) = read else { panic!("{read:?}: {reply:02x?} for {data:02x?}") };
                    if let Ok(q) = &query {
                        assert_eq!(read.question.as_ref(), Some(&q.question));
                    }
                    assert_eq!(read.ttl, None);
                }
            }
            None => assert!(data.len() < HEADER_LEN || data[2] & 0x80 != 0),
        }

        // Answers: read alike twice, and as built.
        let answer = dns::parse_answer(&data);
        assert_eq!(answer, dns::parse_answer(&data), "{data:02x?}");
        if let Built::Answer(expected) = &built {
            assert_eq!(answer.as_ref(), Ok(expected), "{data:02x?}");
        }
        if let Ok(a) = &answer {
            answers += 1;
            cached += usize::from(a.ttl.is_some_and(|t| t > 0));
        }

        // Truncation: within the limit, and what read still reads.
        let limit = match r.below(4) {
            0 => r.below(2000),
            1 => UDP_MAX_CLASSIC,
            2 => usize::from(EDNS_UDP_SIZE),
            _ => 65535,
        };
        let fitted = dns::truncate_for_udp(&data, limit);
        assert!(fitted.len() <= limit.max(UDP_MAX_CLASSIC), "{} over {limit}", fitted.len());
        if fitted != data {
            cut += 1;
            assert!(data.len() > limit.max(UDP_MAX_CLASSIC));
        }
        if let Ok(a) = &answer {
            let f = dns::parse_answer(&fitted);
            let Ok(f) = f else { panic!("{f:?}: {fitted:02x?} from {data:02x?}") };
            assert_eq!((f.id, f.rcode, &f.question), (a.id, a.rcode, &a.question));
            assert_eq!(f.truncated, a.truncated || fitted != data);
        }

        // Aging: whole or not at all, never a TTL raised.
        let elapsed = if r.below(2) == 0 { r.below(600) as u32 } else { r.next() as u32 };
        let mut aged = data.clone();
        match dns::age(&mut aged, elapsed) {
            Ok(()) => {
                if let Ok(a) = &answer {
                    let after = dns::parse_answer(&aged);
                    let Ok(after) = after else { panic!("{after:?} after aging {data:02x?}") };
                    // Each TTL falls by the time at most; an SOA's MINIMUM stays.
                    let least = a.ttl.map(|t| t.saturating_sub(elapsed));
                    assert!(least <= after.ttl && after.ttl <= a.ttl, "{:?} after {:?}", after.ttl, a.ttl);
                }
            }
            Err(_) => {
                assert_eq!(aged, data, "refused, and left as it was");
                assert!(!matches!(&answer, Ok(a) if !a.truncated), "what reads whole can be aged");
            }
        }

        // A cached answer fitted to the last query: never a panic, and the query's ID when it fits.
        let mut fitted = data.clone();
        if dns::fit_to_query(&mut fitted, &last_query).is_ok() {
            assert_eq!(fitted[..2], last_query[..2]);
            assert_eq!(fitted.len(), data.len());
        } else {
            assert_eq!(fitted, data);
        }

        // TCP: the length, the message and what follows, in reads of any size.
        if !data.is_empty() && data.len() <= 65535 {
            let mut framed = Vec::new();
            dns::write_tcp(&mut framed, &data).unwrap_or_default();
            let framed = match r.below(3) {
                0 => mutate(&mut r, framed),
                1 => {
                    let n = r.below(64);
                    framed.extend(r.bytes(n));
                    framed
                }
                _ => framed,
            };
            let chunk = if case % 8 == 0 { 1 } else { 1 + r.below(700) };
            let mut input = Input::new(&framed, chunk);
            let claimed = match framed[..] {
                [hi, lo, ..] => 2 + usize::from(u16::from_be_bytes([hi, lo])),
                _ => usize::MAX,
            };
            match dns::read_tcp(&mut input) {
                Ok(Some(m)) => {
                    assert_eq!(input.pos, claimed, "exactly the message, nothing after it");
                    assert_eq!(m[..], framed[2..claimed]);
                }
                Ok(None) => assert!(framed.is_empty()),
                Err(_) => assert!(framed.len() < claimed || claimed == 2, "{framed:02x?}"),
            }
            assert!(claimed == usize::MAX || input.pos <= claimed);
        }

        let most = LARGEST.with(Cell::get);
        assert!(most <= ALLOCATION_MAX, "{most} bytes at once for {data:02x?}");
        largest = largest.max(most);
    }
    println!(
        "{queries} queries read, {answers} answers ({cached} cacheable), {cut} cut for UDP; \
         largest allocation {largest} bytes"
    );
    assert!(queries > CASES / 10 && answers > CASES / 10, "both kinds are exercised: {queries}, {answers}");
    assert!(cached > CASES / 20 && cut > CASES / 50, "cached {cached}, cut {cut}");
}
