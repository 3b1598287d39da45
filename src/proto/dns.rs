//! DNS messages as a caching forwarder handles them (RFC 1035, with RFC
//! 2308's negative caching and RFC 6891's EDNS(0)): the queries clients send,
//! the answers upstream servers return, and the few changes a cache makes to
//! an answer before it serves it again.
//!
//! blocking-local answers DNS queries from a cache, keyed by the question,
//! and forwards the others to an upstream server. That needs a reader for
//! queries that trusts nothing, a reader for answers that says how long one
//! may be kept, and the edits a cache makes: a new ID, TTLs aged by the time
//! spent in the cache, an answer cut down to fit a UDP client. They are here
//! as pure code over byte slices (and, for TCP's length prefix, over `Read`
//! and `Write`), with no sockets, clocks or threads: the caller says how many
//! seconds have passed.
//!
//! ```text
//! header:    ID(2) | QR OPCODE(4) AA TC RD | RA Z AD CD RCODE(4) | QDCOUNT ANCOUNT NSCOUNT ARCOUNT (2 each)
//! question:  NAME | TYPE(2) | CLASS(2)
//! record:    NAME | TYPE(2) | CLASS(2) | TTL(4) | RDLENGTH(2) | RDATA
//! name:      LEN(1, 1..=63) LABEL … then LEN 0, or a pointer 0b11 + OFFSET(14) to the rest of the name
//! OPT:       root NAME | 41 | UDP payload size | extended RCODE(1) VERSION(1) DO Z(15) | RDLENGTH | options
//! ```
//!
//! Every record of every section is walked, and the message must end where
//! its last record ends: bytes after it make it malformed. Name compression
//! is followed without recursion and without a loop: a pointer must point
//! before the labels that led to it, so the offsets fall with each hop, and
//! at a label, root label or pointer of a name read before it ("a prior
//! occurrence of the same name", RFC 1035 section 4.1.4), never into a
//! header, a record's TTL or an address; no name follows more than
//! [`POINTER_HOPS_MAX`] pointers or grows past 255 bytes. Names are read,
//! and may be pointed at, wherever RFC 3597 section 4 says a record's data
//! holds them (NS, CNAME, SOA, MX, SRV and the others). So each name is read
//! in bounded time, a cache's edits (TTLs, the question's case) change no
//! other name, and no count from a header is trusted further than the bytes
//! behind it: the work is linear in the message's length, and nothing is
//! allocated by a count.
//!
//! A name is kept in presentation form, as sent (its case kept, for RFC
//! 4343's case-insensitive but case-preserving names and the resolvers that
//! mix case to spot forged answers), without the trailing dot: the root is
//! the empty string. A `.` or `\` inside a label is written `\.` and `\\`,
//! and a byte outside printable ASCII `\DDD`, its value in three decimal
//! digits (RFC 1035 section 5.1), so the text always reads back to the same
//! bytes and is safe in a log line.

use std::fmt;
use std::io::{self, Read, Write};
use std::ops::Range;

/// The length of the header that starts every message.
pub const HEADER_LEN: usize = 12;
/// The largest message every UDP client takes, without EDNS (RFC 1035 section 4.2.1).
pub const UDP_MAX_CLASSIC: usize = 512;
/// The UDP payload size this side says it takes, in the OPT record of the
/// answers it writes itself: the DNS flag day 2020 value, which fits one
/// packet on every common path.
pub const EDNS_UDP_SIZE: u16 = 1232;
/// The longest name in wire form, its length bytes and root label included (RFC 1035 section 2.3.4).
pub const NAME_MAX: usize = 255;
/// The longest label (RFC 1035 section 2.3.4).
pub const LABEL_MAX: usize = 63;
/// The most compression pointers one name may follow. A name of 255 bytes
/// has at most 127 labels, so a pointer before each of them and before its
/// root is 128 hops; a name that needs more is pointers to pointers.
pub const POINTER_HOPS_MAX: usize = 128;

/// OPCODE: a standard query, the only one served.
pub const OPCODE_QUERY: u8 = 0;

/// RCODE: no error.
pub const RCODE_NOERROR: u8 = 0;
/// RCODE: format error, the query could not be read.
pub const RCODE_FORMERR: u8 = 1;
/// RCODE: server failure.
pub const RCODE_SERVFAIL: u8 = 2;
/// RCODE: the name does not exist.
pub const RCODE_NXDOMAIN: u8 = 3;
/// RCODE: the kind of query is not implemented.
pub const RCODE_NOTIMP: u8 = 4;
/// RCODE: refused by policy.
pub const RCODE_REFUSED: u8 = 5;
/// Extended RCODE: the query's EDNS version is not implemented (RFC 6891
/// section 6.1.3). Above 15, so its upper bits go in the OPT record.
pub const RCODE_BADVERS: u8 = 16;

/// TYPE: an IPv4 address.
pub const TYPE_A: u16 = 1;
/// TYPE: an authoritative name server.
pub const TYPE_NS: u16 = 2;
/// TYPE: the canonical name for an alias.
pub const TYPE_CNAME: u16 = 5;
/// TYPE: the start of a zone of authority.
pub const TYPE_SOA: u16 = 6;
/// TYPE: a domain name pointer.
pub const TYPE_PTR: u16 = 12;
/// TYPE: mail exchange.
pub const TYPE_MX: u16 = 15;
/// TYPE: text strings.
pub const TYPE_TXT: u16 = 16;
/// TYPE: an IPv6 address (RFC 3596).
pub const TYPE_AAAA: u16 = 28;
/// TYPE: a service's server (RFC 2782).
pub const TYPE_SRV: u16 = 33;
/// TYPE: EDNS(0)'s pseudo-record (RFC 6891).
pub const TYPE_OPT: u16 = 41;
/// CLASS: the Internet.
pub const CLASS_IN: u16 = 1;

/// The other types whose data holds names (RFC 3597 section 4): obsolete
/// mail types (RFC 1035), RP, AFSDB (RFC 1183), RT (RFC 1183), PX (RFC
/// 2163), NAPTR (RFC 3403), KX (RFC 2230) and DNAME (RFC 6672).
const TYPE_MD: u16 = 3;
const TYPE_MF: u16 = 4;
const TYPE_MB: u16 = 7;
const TYPE_MG: u16 = 8;
const TYPE_MR: u16 = 9;
const TYPE_MINFO: u16 = 14;
const TYPE_RP: u16 = 17;
const TYPE_AFSDB: u16 = 18;
const TYPE_RT: u16 = 21;
const TYPE_PX: u16 = 26;
const TYPE_NAPTR: u16 = 35;
const TYPE_KX: u16 = 36;
const TYPE_DNAME: u16 = 39;

/// Header flags, in the 16-bit word after the ID.
const FLAG_QR: u16 = 0x8000;
const OPCODE_SHIFT: u16 = 11;
const OPCODE_MASK: u16 = 0x7800;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const FLAG_CD: u16 = 0x0010;
const RCODE_MASK: u16 = 0x000f;
/// OPT's TTL field: the DNSSEC OK bit (RFC 3225).
const EDNS_DO: u32 = 0x8000;
/// The fixed fields after a record's name: TYPE, CLASS, TTL, RDLENGTH.
const RR_FIXED: usize = 10;
/// A TTL with its top bit set counts as zero (RFC 2181 section 8).
const TTL_MAX: u32 = i32::MAX as u32;
/// The first step by which [`read_tcp`] grows its buffer.
const TCP_READ_STEP: usize = 512;

/// Why a message was refused, and the RCODE its sender gets for it ([`DnsError::rcode`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsError {
    /// The message cannot be read: cut short, bad names, counts that do not
    /// match its bytes, bytes after its last record, a query with no
    /// question or several, a response where a query belongs or the other
    /// way round. A query gets FORMERR.
    Malformed(&'static str),
    /// A well-formed query of a kind not served: an OPCODE other than
    /// QUERY. It gets NOTIMP.
    NotImplemented(&'static str),
    /// A query whose OPT record asks for an EDNS version above 0 (the
    /// version): it gets BADVERS, in an OPT record of version 0.
    BadVersion(u8),
}

impl DnsError {
    /// The RCODE the sender of the refused query gets: FORMERR, NOTIMP or BADVERS.
    pub fn rcode(&self) -> u8 {
        match self {
            DnsError::Malformed(_) => RCODE_FORMERR,
            DnsError::NotImplemented(_) => RCODE_NOTIMP,
            DnsError::BadVersion(_) => RCODE_BADVERS,
        }
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::Malformed(why) => write!(f, "malformed DNS message: {why}"),
            DnsError::NotImplemented(what) => write!(f, "DNS {what} not implemented"),
            DnsError::BadVersion(v) => write!(f, "EDNS version {v} not implemented"),
        }
    }
}

impl std::error::Error for DnsError {}

fn bad(why: &'static str) -> DnsError {
    DnsError::Malformed(why)
}

/// What a query asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// The name in presentation form as sent, its case kept, without the
    /// trailing dot; the root is `""`. `\.`, `\\` and `\DDD` stand for a dot
    /// or backslash inside a label and for a byte outside printable ASCII.
    pub name: String,
    /// The record type asked for ([`TYPE_A`], …).
    pub qtype: u16,
    /// The class, almost always [`CLASS_IN`].
    pub qclass: u16,
}

/// A client's query, as [`parse_query`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The ID its answer must carry.
    pub id: u16,
    /// Its one question.
    pub question: Question,
    /// RD: the client asks for recursion. An answer copies it.
    pub recursion_desired: bool,
    /// CD: the client checks DNSSEC itself and wants data a validating
    /// upstream would refuse (RFC 4035 section 3.2.2). An answer copies it.
    pub checking_disabled: bool,
    /// The largest UDP answer the client takes: its OPT record's payload
    /// size, raised to 512 if lower (RFC 6891 section 6.2.5); 512 without OPT.
    pub udp_limit: usize,
    /// Whether the query has an OPT record. Without, an answer must not
    /// have one either (RFC 6891 section 7).
    pub edns: bool,
    /// DO, in the OPT record: the client wants DNSSEC records (RFC 3225).
    pub dnssec_ok: bool,
}

/// What [`parse_answer`] reads in an upstream's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerInfo {
    /// The ID, to match the query it answers.
    pub id: u16,
    /// The header's RCODE (its four bits: an extended RCODE in an OPT
    /// record makes the answer not cacheable, and is not shown here).
    pub rcode: u8,
    /// TC: the answer did not fit and is cut short; ask again over TCP.
    pub truncated: bool,
    /// The question it answers; `None` when it has none (some error answers).
    pub question: Option<Question>,
    /// How many seconds the answer may be cached; `None` when it may not be.
    /// `Some(0)` is a TTL of zero: use once, keep not.
    pub ttl: Option<u32>,
}

/// The header's fields.
#[derive(Clone, Copy)]
struct Header {
    id: u16,
    flags: u16,
    qd: u16,
    an: u16,
    ns: u16,
    ar: u16,
}

impl Header {
    fn read(msg: &[u8]) -> Result<Header, DnsError> {
        let Some(&[i0, i1, f0, f1, q0, q1, a0, a1, n0, n1, r0, r1]) = msg.get(..HEADER_LEN) else {
            return Err(bad("shorter than a header"));
        };
        Ok(Header {
            id: u16::from_be_bytes([i0, i1]),
            flags: u16::from_be_bytes([f0, f1]),
            qd: u16::from_be_bytes([q0, q1]),
            an: u16::from_be_bytes([a0, a1]),
            ns: u16::from_be_bytes([n0, n1]),
            ar: u16::from_be_bytes([r0, r1]),
        })
    }

    fn opcode(&self) -> u8 {
        ((self.flags & OPCODE_MASK) >> OPCODE_SHIFT) as u8
    }

    fn write(&self, out: &mut Vec<u8>) {
        for field in [self.id, self.flags, self.qd, self.an, self.ns, self.ar] {
            out.extend_from_slice(&field.to_be_bytes());
        }
    }
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    match msg.get(at..at.checked_add(2)?)? {
        &[a, b] => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

fn u32_at(msg: &[u8], at: usize) -> Option<u32> {
    match msg.get(at..at.checked_add(4)?)? {
        &[a, b, c, d] => Some(u32::from_be_bytes([a, b, c, d])),
        _ => None,
    }
}

/// A received TTL as a count of seconds: one with its top bit set is zero
/// (RFC 2181 section 8).
fn ttl_value(raw: u32) -> u32 {
    if raw > TTL_MAX {
        0
    } else {
        raw
    }
}

/// Appends one label in presentation form.
fn push_label(text: &mut String, label: &[u8]) {
    for &b in label {
        match b {
            b'.' | b'\\' => {
                text.push('\\');
                text.push(char::from(b));
            }
            0x21..=0x7e => text.push(char::from(b)),
            _ => {
                text.push('\\');
                for digit in [b / 100, b / 10 % 10, b % 10] {
                    text.push(char::from(b'0' + digit));
                }
            }
        }
    }
}

/// Where the names read so far in a message lie: one bit per byte, set
/// where a label, a root label or a pointer was read, for a pointer to be
/// checked against.
struct Seen(Vec<u64>);

impl Seen {
    /// For a message of `len` bytes.
    fn new(len: usize) -> Seen {
        Seen(vec![0; len / 64 + 1])
    }

    /// For a name read on its own, which no pointer may leave: the first
    /// name after the header, or one in a buffer of its own.
    fn nothing() -> Seen {
        Seen(Vec::new())
    }

    fn mark(&mut self, pos: usize) {
        if let Some(word) = self.0.get_mut(pos / 64) {
            *word |= 1 << (pos % 64);
        }
    }

    fn has(&self, pos: usize) -> bool {
        self.0.get(pos / 64).is_some_and(|word| word & 1 << (pos % 64) != 0)
    }
}

/// Reads the name that starts at `at`, following compression pointers, and
/// returns where it ends in the message: after its root label, or after the
/// first pointer. With `text`, appends the name in presentation form. What
/// it reads is marked in `seen`.
///
/// A pointer must point before the start of the labels that led to it (the
/// name's start, or the previous pointer's target), so the hops go strictly
/// backward and cannot loop, and at a place of a name read before (`seen`);
/// at most [`POINTER_HOPS_MAX`] of them, and at most [`NAME_MAX`] bytes of
/// name.
fn read_name(
    msg: &[u8],
    at: usize,
    mut text: Option<&mut String>,
    seen: &mut Seen,
) -> Result<usize, DnsError> {
    let mut pos = at;
    let mut run_start = at;
    let mut end = None;
    let mut wire_len = 0usize;
    let mut hops = 0usize;
    loop {
        let &len = msg.get(pos).ok_or(bad("name cut short"))?;
        seen.mark(pos);
        match len & 0xc0 {
            0x00 => {
                let len = usize::from(len);
                wire_len += 1 + len;
                if wire_len > NAME_MAX {
                    return Err(bad("name longer than 255 bytes"));
                }
                if len == 0 {
                    return Ok(end.unwrap_or(pos + 1));
                }
                let label = msg.get(pos + 1..pos + 1 + len).ok_or(bad("name cut short"))?;
                if let Some(text) = text.as_deref_mut() {
                    if wire_len > 1 + len {
                        text.push('.');
                    }
                    push_label(text, label);
                }
                pos += 1 + len;
            }
            0xc0 => {
                let &low = msg.get(pos + 1).ok_or(bad("name cut short"))?;
                let target = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                if target >= run_start {
                    return Err(bad("compression pointer not strictly backward"));
                }
                if target < HEADER_LEN {
                    return Err(bad("compression pointer into the header"));
                }
                if !seen.has(target) {
                    return Err(bad("compression pointer to no earlier name"));
                }
                hops += 1;
                if hops > POINTER_HOPS_MAX {
                    return Err(bad("too many compression pointers"));
                }
                end.get_or_insert(pos + 2);
                pos = target;
                run_start = target;
            }
            // 0b01 (EDNS's extended labels, RFC 6891 section 5) and 0b10: none defined.
            _ => return Err(bad("unknown label type")),
        }
    }
}

/// Appends `text`, a name in presentation form ([`Question::name`]; a
/// trailing dot allowed), in uncompressed wire form.
fn encode_name(text: &str, out: &mut Vec<u8>) -> Result<(), DnsError> {
    let start = out.len();
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes == b"." {
        out.push(0);
        return Ok(());
    }
    // Where the length byte of the label being written is; None after a dot.
    let mut label: Option<usize> = None;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        if b == b'.' {
            let at = label.take().ok_or(bad("empty label in a name"))?;
            close_label(out, at)?;
            continue;
        }
        let at = *label.get_or_insert_with(|| {
            out.push(0);
            out.len() - 1
        });
        let byte = if b != b'\\' {
            b
        } else {
            match bytes.get(i..i + 3) {
                Some(&[d0, d1, d2]) if [d0, d1, d2].iter().all(u8::is_ascii_digit) => {
                    i += 3;
                    let value = [d0, d1, d2].iter().fold(0u16, |v, d| v * 10 + u16::from(d - b'0'));
                    u8::try_from(value).map_err(|_| bad("escape \\DDD above 255 in a name"))?
                }
                _ => {
                    let &next = bytes.get(i).ok_or(bad("escape at the end of a name"))?;
                    i += 1;
                    next
                }
            }
        };
        out.push(byte);
        if out.len() - at - 1 > LABEL_MAX {
            return Err(bad("label longer than 63 bytes"));
        }
    }
    if let Some(at) = label {
        close_label(out, at)?;
    }
    out.push(0);
    if out.len() - start > NAME_MAX {
        return Err(bad("name longer than 255 bytes"));
    }
    Ok(())
}

/// Writes the length of the label whose length byte is at `at`.
fn close_label(out: &mut [u8], at: usize) -> Result<(), DnsError> {
    let len = out.len() - at - 1;
    let byte = out.get_mut(at).ok_or(bad("empty label in a name"))?;
    *byte = u8::try_from(len).map_err(|_| bad("label longer than 63 bytes"))?;
    Ok(())
}

/// Reads the question at `at` and returns it with where it ends.
fn read_question(msg: &[u8], at: usize, seen: &mut Seen) -> Result<(Question, usize), DnsError> {
    let mut name = String::new();
    let end = read_name(msg, at, Some(&mut name), seen)?;
    let (Some(qtype), Some(qclass)) = (u16_at(msg, end), u16_at(msg, end + 2)) else {
        return Err(bad("question cut short"));
    };
    Ok((Question { name, qtype, qclass }, end + 4))
}

/// The three sections that hold records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

/// One resource record, by where its parts are in the message.
struct Record {
    section: Section,
    rtype: u16,
    class: u16,
    /// Where its TTL is, and what it says.
    ttl_at: usize,
    ttl: u32,
    rdata: Range<usize>,
}

/// A walk over a message's records, one at a time and without allocating.
/// The questions are checked when the walk starts; the last record, when it
/// ends: the message must end with it, and may hold one OPT record at most,
/// in its additional section, owned by the root.
struct Walker {
    /// Where the next record starts.
    pos: usize,
    /// Where the question section ends.
    questions_end: usize,
    /// Records left in the answer, authority and additional sections.
    left: [u16; 3],
    opt_seen: bool,
    /// The names read so far.
    seen: Seen,
}

impl Walker {
    fn new(msg: &[u8]) -> Result<Walker, DnsError> {
        let h = Header::read(msg)?;
        let mut seen = Seen::new(msg.len());
        let mut pos = HEADER_LEN;
        // Each question takes at least five bytes, so this ends by the message's end.
        for _ in 0..h.qd {
            pos = read_name(msg, pos, None, &mut seen)? + 4;
            if pos > msg.len() {
                return Err(bad("question cut short"));
            }
        }
        Ok(Walker { pos, questions_end: pos, left: [h.an, h.ns, h.ar], opt_seen: false, seen })
    }

    fn next(&mut self, msg: &[u8]) -> Result<Option<Record>, DnsError> {
        let Some(i) = self.left.iter().position(|&n| n > 0) else {
            if self.pos != msg.len() {
                return Err(bad("bytes after the last record"));
            }
            return Ok(None);
        };
        self.left[i] -= 1;
        let section = [Section::Answer, Section::Authority, Section::Additional][i];
        let owner = self.pos;
        let at = read_name(msg, owner, None, &mut self.seen)?;
        let (Some(rtype), Some(class), Some(ttl), Some(rdlength)) =
            (u16_at(msg, at), u16_at(msg, at + 2), u32_at(msg, at + 4), u16_at(msg, at + 8))
        else {
            return Err(bad("record cut short"));
        };
        let rdata = at + RR_FIXED..at + RR_FIXED + usize::from(rdlength);
        if rdata.end > msg.len() {
            return Err(bad("record data cut short"));
        }
        if rtype == TYPE_OPT {
            if section != Section::Additional {
                return Err(bad("OPT record outside the additional section"));
            }
            if self.opt_seen {
                return Err(bad("more than one OPT record"));
            }
            if msg.get(owner) != Some(&0) {
                return Err(bad("OPT record not owned by the root"));
            }
            self.opt_seen = true;
        }
        check_rdata(msg, rtype, class, &rdata, &mut self.seen)?;
        self.pos = rdata.end;
        Ok(Some(Record { section, rtype, class, ttl_at: at + 4, ttl, rdata }))
    }
}

/// Where names lie in a record's data, for the types RFC 3597 section 4
/// names as holding them: fixed bytes before them, character-strings
/// (a length byte and that many bytes) before them, how many names, fixed
/// bytes after them.
struct Layout {
    fixed: usize,
    strings: usize,
    names: usize,
    after: usize,
}

const fn layout(fixed: usize, strings: usize, names: usize, after: usize) -> Option<Layout> {
    Some(Layout { fixed, strings, names, after })
}

fn names_in(rtype: u16) -> Option<Layout> {
    match rtype {
        TYPE_NS | TYPE_MD | TYPE_MF | TYPE_CNAME | TYPE_MB | TYPE_MG | TYPE_MR | TYPE_PTR | TYPE_DNAME => {
            layout(0, 0, 1, 0)
        }
        // MNAME RNAME, then SERIAL REFRESH RETRY EXPIRE MINIMUM.
        TYPE_SOA => layout(0, 0, 2, 20),
        TYPE_MINFO | TYPE_RP => layout(0, 0, 2, 0),
        // A preference or subtype, then a name.
        TYPE_MX | TYPE_AFSDB | TYPE_RT | TYPE_KX => layout(2, 0, 1, 0),
        TYPE_PX => layout(2, 0, 2, 0),
        // PRIORITY WEIGHT PORT TARGET.
        TYPE_SRV => layout(6, 0, 1, 0),
        // ORDER PREFERENCE, FLAGS SERVICES REGEXP, REPLACEMENT.
        TYPE_NAPTR => layout(4, 3, 1, 0),
        _ => None,
    }
}

/// Checks the data of the record types this module knows: the length of an
/// address, names (marked in `seen`) and the fields around them filling the
/// data exactly, TXT strings and OPT options that end where the data ends.
fn check_rdata(
    msg: &[u8],
    rtype: u16,
    class: u16,
    rdata: &Range<usize>,
    seen: &mut Seen,
) -> Result<(), DnsError> {
    let wrong = || bad("record data of the wrong length");
    let len = rdata.len();
    if let Some(layout) = names_in(rtype) {
        let mut pos = rdata.start + layout.fixed;
        for _ in 0..layout.strings {
            pos += 1 + usize::from(*msg.get(pos).filter(|_| pos < rdata.end).ok_or_else(wrong)?);
        }
        for _ in 0..layout.names {
            if pos >= rdata.end {
                return Err(wrong());
            }
            pos = read_name(msg, pos, None, seen)?;
        }
        return if pos + layout.after == rdata.end { Ok(()) } else { Err(wrong()) };
    }
    match rtype {
        TYPE_A if class == CLASS_IN && len != 4 => Err(wrong()),
        TYPE_AAAA if class == CLASS_IN && len != 16 => Err(wrong()),
        TYPE_TXT | TYPE_OPT => {
            // TXT: one or more <character-string>s. OPT: zero or more
            // options, each CODE(2) LENGTH(2) and that many bytes.
            if rtype == TYPE_TXT && len == 0 {
                return Err(wrong());
            }
            let mut pos = rdata.start;
            while pos < rdata.end {
                pos += if rtype == TYPE_TXT {
                    1 + usize::from(msg[pos])
                } else {
                    4 + usize::from(u16_at(msg, pos + 2).ok_or_else(wrong)?)
                };
            }
            if pos == rdata.end {
                Ok(())
            } else {
                Err(wrong())
            }
        }
        _ => Ok(()),
    }
}

/// Reads a client's query: one question, QR clear, OPCODE QUERY, an OPT
/// record of EDNS version 0 or none, every record well formed and nothing
/// after the last one. A query has no compressed names as a rule, but
/// pointers to names before them are followed.
///
/// Refused: a response (`Malformed`: answering one could make two servers
/// answer each other forever, so [`error_response`] gives it nothing), an
/// OPCODE other than QUERY (`NotImplemented`), anything malformed, no
/// question or more than one (`Malformed`, FORMERR, as BIND and Unbound
/// answer it), an EDNS version above 0 (`BadVersion`).
pub fn parse_query(msg: &[u8]) -> Result<Query, DnsError> {
    let h = Header::read(msg)?;
    if h.flags & FLAG_QR != 0 {
        return Err(bad("a response where a query belongs"));
    }
    if h.opcode() != OPCODE_QUERY {
        return Err(DnsError::NotImplemented("OPCODE other than QUERY"));
    }
    let (query, version) = read_query(msg)?;
    if version != 0 {
        return Err(DnsError::BadVersion(version));
    }
    Ok(query)
}

/// A query's sections, whatever its QR and OPCODE say, and its EDNS version (0 without OPT).
fn read_query(msg: &[u8]) -> Result<(Query, u8), DnsError> {
    let h = Header::read(msg)?;
    match h.qd {
        0 => return Err(bad("a query without a question")),
        1 => {}
        _ => return Err(bad("a query with more than one question")),
    }
    let (question, _) = read_question(msg, HEADER_LEN, &mut Seen::nothing())?;
    let mut walk = Walker::new(msg)?;
    let mut opt = None;
    while let Some(record) = walk.next(msg)? {
        if record.rtype == TYPE_OPT {
            opt = Some((record.class, record.ttl));
        }
    }
    let (payload, opt_ttl) = opt.unwrap_or((0, 0));
    let query = Query {
        id: h.id,
        question,
        recursion_desired: h.flags & FLAG_RD != 0,
        checking_disabled: h.flags & FLAG_CD != 0,
        udp_limit: usize::from(payload).max(UDP_MAX_CLASSIC),
        edns: opt.is_some(),
        dnssec_ok: opt_ttl & EDNS_DO != 0,
    };
    Ok((query, (opt_ttl >> 16) as u8))
}

/// Appends an OPT record (RFC 6891 section 6.1.2), owned by the root:
/// `payload` in its CLASS, `ttl` (extended RCODE, version, flags) in its
/// TTL, then `options`, which callers take from another OPT record's data,
/// so they fit its 16-bit length (longer ones are left out).
fn push_opt(out: &mut Vec<u8>, payload: u16, ttl: u32, options: &[u8]) {
    let options = if options.len() <= usize::from(u16::MAX) { options } else { &[] };
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(options.len() as u16).to_be_bytes());
    out.extend_from_slice(options);
}

/// The answer a query gets when it is malformed or refused: its ID, OPCODE,
/// RD and CD, QR and RA set (this side offers recursion), `rcode`, and no
/// records. The question is copied when the query has exactly one and it
/// reads; an OPT record of our own ([`EDNS_UDP_SIZE`], version 0, the DO bit
/// copied) is added when the whole query reads and had one.
///
/// An extended RCODE ([`RCODE_BADVERS`]) has its upper bits in that OPT
/// record, so it needs a query with one: without, the answer says SERVFAIL.
///
/// `None` when there is no header to answer, or the message is itself a
/// response (QR set): the caller drops it.
pub fn error_response(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let h = Header::read(query).ok()?;
    if h.flags & FLAG_QR != 0 {
        return None;
    }
    let edns = read_query(query).ok().map(|(q, _)| q).filter(|q| q.edns);
    let rcode = if rcode > 0x0f && edns.is_none() { RCODE_SERVFAIL } else { rcode };
    let question = match h.qd {
        1 => read_name(query, HEADER_LEN, None, &mut Seen::nothing())
            .ok()
            .and_then(|end| query.get(HEADER_LEN..end + 4)),
        _ => None,
    };
    let header = Header {
        id: h.id,
        flags: FLAG_QR
            | h.flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)
            | FLAG_RA
            | u16::from(rcode) & RCODE_MASK,
        qd: u16::from(question.is_some()),
        an: 0,
        ns: 0,
        ar: u16::from(edns.is_some()),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + question.map_or(0, <[u8]>::len) + 11);
    header.write(&mut out);
    out.extend_from_slice(question.unwrap_or_default());
    if let Some(q) = edns {
        let ttl = u32::from(rcode >> 4) << 24 | if q.dnssec_ok { EDNS_DO } else { 0 };
        push_opt(&mut out, EDNS_UDP_SIZE, ttl, &[]);
    }
    Some(out)
}

/// Reads an upstream's answer and says how long it may be cached.
///
/// The answer must have QR set, OPCODE QUERY and at most one question. A
/// truncated one (TC) is read up to its question only, as the rest may be
/// cut anywhere, and is never cached. Otherwise every record of every section
/// is walked, and bytes after the last make it malformed.
///
/// How long it may be cached (`ttl`), when it has its question and its
/// RCODE is NOERROR or NXDOMAIN, with no extended RCODE:
/// - NOERROR with records in the answer section: the least TTL among
///   them (a CNAME chain's included), and the negative TTL below too if the
///   authority section has an SOA record (a chain that ends in no data);
/// - NXDOMAIN, or NOERROR with no answer (NODATA): the negative TTL of RFC
///   2308 section 5, the least of the authority section's SOA record's TTL
///   and its MINIMUM field, and of any CNAME in the answer section; no SOA
///   record, no caching.
///
/// An OPT record's TTL field holds flags, not a time, and never counts. A
/// TTL with its top bit set counts as 0 (RFC 2181 section 8).
pub fn parse_answer(msg: &[u8]) -> Result<AnswerInfo, DnsError> {
    let h = Header::read(msg)?;
    if h.flags & FLAG_QR == 0 {
        return Err(bad("a query where an answer belongs"));
    }
    if h.opcode() != OPCODE_QUERY {
        return Err(bad("an answer of an OPCODE other than QUERY"));
    }
    let question = match h.qd {
        0 => None,
        1 => Some(read_question(msg, HEADER_LEN, &mut Seen::nothing())?.0),
        _ => return Err(bad("an answer with more than one question")),
    };
    let mut info = AnswerInfo {
        id: h.id,
        rcode: (h.flags & RCODE_MASK) as u8,
        truncated: h.flags & FLAG_TC != 0,
        question,
        ttl: None,
    };
    if info.truncated {
        return Ok(info);
    }
    let mut answers: Option<u32> = None;
    let mut negative: Option<u32> = None;
    let mut extended_rcode = 0;
    let mut walk = Walker::new(msg)?;
    while let Some(record) = walk.next(msg)? {
        let ttl = ttl_value(record.ttl);
        match (record.section, record.rtype) {
            (_, TYPE_OPT) => extended_rcode = record.ttl >> 24,
            (Section::Answer, _) => answers = Some(answers.map_or(ttl, |t| t.min(ttl))),
            (Section::Authority, TYPE_SOA) => {
                let minimum = u32_at(msg, record.rdata.end - 4).map_or(0, ttl_value);
                let soa = ttl.min(minimum);
                negative = Some(negative.map_or(soa, |t| t.min(soa)));
            }
            _ => {}
        }
    }
    if info.question.is_some() && extended_rcode == 0 {
        info.ttl = match info.rcode {
            RCODE_NOERROR if answers.is_some() => answers.map(|a| negative.map_or(a, |n| a.min(n))),
            RCODE_NOERROR | RCODE_NXDOMAIN => negative.map(|n| answers.map_or(n, |a| a.min(n))),
            _ => None,
        };
    }
    Ok(info)
}

/// Sets a message's ID (to serve a cached answer, or to forward a query
/// under an ID of the forwarder's own). A message shorter than its ID is
/// left as it is.
pub fn set_id(msg: &mut [u8], id: u16) {
    if let Some(field) = msg.get_mut(..2) {
        field.copy_from_slice(&id.to_be_bytes());
    }
}

/// Makes a cached answer the answer to `query`: the query's ID, RD and CD
/// bits, and its question spelled as the query spells it. Resolvers that
/// mix the case of a name (the "0x20" defence against forged answers) drop
/// an answer whose question is spelled otherwise, and the cache finds the
/// answer by its name in lower case.
///
/// Both must have one question, the same but for the case of the name's
/// letters; otherwise `Malformed`, and the answer is left as it was.
pub fn fit_to_query(answer: &mut [u8], query: &[u8]) -> Result<(), DnsError> {
    let q = Header::read(query)?;
    let a = Header::read(answer)?;
    if q.qd != 1 || a.qd != 1 {
        return Err(bad("not one question"));
    }
    // The first name of a message never holds a pointer: there is nothing before it.
    let q_end = read_name(query, HEADER_LEN, None, &mut Seen::nothing())?;
    let a_end = read_name(answer, HEADER_LEN, None, &mut Seen::nothing())?;
    let (Some(q_name), Some(q_rest), Some(a_rest)) =
        (query.get(HEADER_LEN..q_end), query.get(q_end..q_end + 4), answer.get(a_end..a_end + 4))
    else {
        return Err(bad("question cut short"));
    };
    // Length bytes (0 to 63) are not letters, so they compare exactly.
    let same = answer.get(HEADER_LEN..a_end).is_some_and(|a_name| a_name.eq_ignore_ascii_case(q_name));
    if !same || q_rest != a_rest {
        return Err(bad("the answer is to another question"));
    }
    if let Some(a_name) = answer.get_mut(HEADER_LEN..a_end) {
        a_name.copy_from_slice(q_name);
    }
    let flags = a.flags & !(FLAG_RD | FLAG_CD) | q.flags & (FLAG_RD | FLAG_CD);
    set_id(answer, q.id);
    if let Some(field) = answer.get_mut(2..4) {
        field.copy_from_slice(&flags.to_be_bytes());
    }
    Ok(())
}

/// Ages an answer served from a cache: takes `elapsed_secs` from the TTL
/// of every record but OPT (whose TTL field holds flags), down to 0 at
/// most. A TTL with its top bit set becomes 0 (RFC 2181 section 8).
///
/// The whole message is walked first: a malformed one is refused and left
/// as it was.
pub fn age(msg: &mut [u8], elapsed_secs: u32) -> Result<(), DnsError> {
    let mut check = Walker::new(msg)?;
    while check.next(msg)?.is_some() {}
    let mut walk = Walker::new(msg)?;
    while let Some(record) = walk.next(msg)? {
        if record.rtype == TYPE_OPT {
            continue;
        }
        let ttl = ttl_value(record.ttl).saturating_sub(elapsed_secs);
        if let Some(field) = msg.get_mut(record.ttl_at..record.ttl_at + 4) {
            field.copy_from_slice(&ttl.to_be_bytes());
        }
    }
    Ok(())
}

/// Fits an answer into a UDP datagram of `limit` bytes (a limit below 512
/// counts as 512, which every client takes). One that fits is returned
/// unchanged. Otherwise the answer keeps its header with TC set (RFC 1035
/// section 4.1.1) and its question, and loses every record (RFC 2181
/// section 9: rather no records than some of an RRset) but its OPT record,
/// which stays (RFC 6891 section 7), without its options if they do not
/// fit. The client asks again over TCP.
///
/// A message whose questions do not read keeps only its header; one whose
/// records do not read, no OPT record; questions that do not fit with the
/// OPT record (several long ones) are dropped too.
pub fn truncate_for_udp(msg: &[u8], limit: usize) -> Vec<u8> {
    let limit = limit.max(UDP_MAX_CLASSIC);
    if msg.len() <= limit {
        return msg.to_vec();
    }
    let Ok(h) = Header::read(msg) else { return msg.to_vec() };
    let mut questions: &[u8] = &[];
    let mut opt = None;
    if let Ok(mut walk) = Walker::new(msg) {
        questions = msg.get(HEADER_LEN..walk.questions_end).unwrap_or_default();
        loop {
            match walk.next(msg) {
                Ok(Some(record)) if record.rtype == TYPE_OPT => opt = Some(record),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    opt = None;
                    break;
                }
            }
        }
    }
    const OPT_FIXED: usize = 1 + RR_FIXED;
    let opt_len = opt.as_ref().map_or(0, |o| OPT_FIXED + o.rdata.len());
    let opt_min = opt.as_ref().map_or(0, |_| OPT_FIXED);
    if HEADER_LEN + questions.len() + opt_min > limit {
        questions = &[];
    }
    let keep_options = HEADER_LEN + questions.len() + opt_len <= limit;
    let header = Header {
        flags: h.flags | FLAG_TC,
        qd: if questions.is_empty() { 0 } else { h.qd },
        an: 0,
        ns: 0,
        ar: u16::from(opt.is_some()),
        ..h
    };
    let mut out = Vec::with_capacity(limit.min(msg.len()));
    header.write(&mut out);
    out.extend_from_slice(questions);
    if let Some(o) = opt {
        let options = if keep_options { msg.get(o.rdata).unwrap_or_default() } else { &[] };
        push_opt(&mut out, o.class, o.ttl, options);
    }
    out
}

/// Reads one message from a TCP stream (RFC 1035 section 4.2.2, RFC 7766
/// section 8): a two-byte length, then exactly that many bytes, so that the
/// next message stays unread. `Ok(None)` at a clean end of the stream, before
/// a length; an end inside a message, or a length of zero, is an error.
///
/// The buffer grows with the bytes that arrive, not with what the length
/// claims.
pub fn read_tcp<R: Read>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut first = [0u8; 1];
    loop {
        match r.read(&mut first) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut second = [0u8; 1];
    r.read_exact(&mut second)?;
    let len = usize::from(u16::from_be_bytes([first[0], second[0]]));
    if len == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "DNS message of length 0"));
    }
    let mut msg = Vec::new();
    while msg.len() < len {
        let have = msg.len();
        let want = (2 * have).max(TCP_READ_STEP).min(len);
        msg.reserve_exact(want - have);
        msg.resize(want, 0);
        let mut at = have;
        while at < want {
            match r.read(&mut msg[at..want]) {
                Ok(0) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "DNS message cut short"));
                }
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Some(msg))
}

/// Writes one message to a TCP stream: its two-byte length and the message,
/// in one `write_all`. A message that is empty or longer than 65,535 bytes
/// is refused (`InvalidInput`).
pub fn write_tcp<W: Write>(w: &mut W, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).ok().filter(|&n| n > 0).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "DNS message of length 0 or over 65535")
    })?;
    let mut framed = Vec::with_capacity(2 + msg.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    w.write_all(&framed)
}

/// Builds a query: `id`, RD as asked, one question, no EDNS. The name may
/// end with a dot; `Malformed` if it is not a name (an empty label, a label
/// over 63 bytes, more than 255 bytes, a bad escape).
pub fn query(id: u16, question: &Question, recursion_desired: bool) -> Result<Vec<u8>, DnsError> {
    let header =
        Header { id, flags: if recursion_desired { FLAG_RD } else { 0 }, qd: 1, an: 0, ns: 0, ar: 0 };
    let mut out = Vec::with_capacity(HEADER_LEN + question.name.len() + 6);
    header.write(&mut out);
    encode_name(&question.name, &mut out)?;
    out.extend_from_slice(&question.qtype.to_be_bytes());
    out.extend_from_slice(&question.qclass.to_be_bytes());
    Ok(out)
}

/// The cache's key for a question: its name in lower case (ASCII letters
/// only, RFC 4343), without a trailing dot and in the one spelling
/// [`parse_query`] gives it (`\065` is `a`), then its type and class.
pub fn cache_key(q: &Question) -> (String, u16, u16) {
    let mut wire = Vec::new();
    let mut name = String::new();
    if encode_name(&q.name, &mut wire).is_err()
        || read_name(&wire, 0, Some(&mut name), &mut Seen::nothing()).is_err()
    {
        // Not a name: no spelling of it is another's.
        name = q.name.clone();
    }
    name.make_ascii_lowercase();
    (name, q.qtype, q.qclass)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::proto::testing::OneByte;

    const QR: u16 = FLAG_QR;
    const RD: u16 = FLAG_RD;

    /// A message: ID 0x1234, `flags`, the four counts, then `parts`.
    fn msg(flags: u16, counts: [u16; 4], parts: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![0x12, 0x34];
        v.extend(flags.to_be_bytes());
        for c in counts {
            v.extend(c.to_be_bytes());
        }
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    }

    /// A name in wire form, uncompressed; `""` is the root.
    fn name(text: &str) -> Vec<u8> {
        let mut v = Vec::new();
        for label in text.split('.').filter(|l| !l.is_empty()) {
            v.push(label.len() as u8);
            v.extend(label.as_bytes());
        }
        v.push(0);
        v
    }

    /// A compression pointer to `at`.
    fn ptr(at: usize) -> Vec<u8> {
        vec![0xc0 | (at >> 8) as u8, at as u8]
    }

    /// Wire bytes joined.
    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// A question of class IN.
    fn question(owner: &[u8], qtype: u16) -> Vec<u8> {
        cat(&[owner, &qtype.to_be_bytes(), &CLASS_IN.to_be_bytes()])
    }

    /// A record of class IN.
    fn rr(owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
        let len = (rdata.len() as u16).to_be_bytes();
        cat(&[owner, &rtype.to_be_bytes(), &CLASS_IN.to_be_bytes(), &ttl.to_be_bytes(), &len, rdata])
    }

    /// An OPT record: `payload` and `ttl` (extended RCODE, version, DO), `options`.
    fn opt(payload: u16, ttl: u32, options: &[u8]) -> Vec<u8> {
        let len = (options.len() as u16).to_be_bytes();
        cat(&[&[0], &TYPE_OPT.to_be_bytes(), &payload.to_be_bytes(), &ttl.to_be_bytes(), &len, options])
    }

    /// SOA data: two names, then serial, refresh, retry, expire and `minimum`.
    fn soa(minimum: u32) -> Vec<u8> {
        let mut v = cat(&[&name("ns.example.com"), &name("hostmaster.example.com")]);
        for field in [2024010101, 7200, 3600, 1209600, minimum] {
            v.extend(u32::to_be_bytes(field));
        }
        v
    }

    fn q(name: &str, qtype: u16) -> Question {
        Question { name: name.to_string(), qtype, qclass: CLASS_IN }
    }

    fn malformed(got: Result<impl fmt::Debug, DnsError>) -> &'static str {
        match got {
            Err(DnsError::Malformed(why)) => why,
            other => panic!("not malformed: {other:?}"),
        }
    }

    #[test]
    fn a_query_without_edns_reads_as_sent() {
        let m = msg(RD, [1, 0, 0, 0], &[&question(&name("WwW.ExAmple.COM"), TYPE_AAAA)]);
        let got = parse_query(&m).unwrap();
        assert_eq!(got.id, 0x1234);
        assert_eq!(got.question, q("WwW.ExAmple.COM", TYPE_AAAA), "the case as sent");
        assert!(got.recursion_desired && !got.checking_disabled);
        assert_eq!((got.udp_limit, got.edns, got.dnssec_ok), (UDP_MAX_CLASSIC, false, false));
        let plain = msg(FLAG_CD, [1, 0, 0, 0], &[&question(&name(""), TYPE_NS)]);
        let got = parse_query(&plain).unwrap();
        assert_eq!(got.question.name, "", "the root");
        assert!(!got.recursion_desired && got.checking_disabled);
    }

    #[test]
    fn a_query_with_edns_gives_its_udp_size_and_do_bit() {
        let query = |payload: u16, ttl: u32| {
            let m =
                msg(RD, [1, 0, 0, 1], &[&question(&name("example.com"), TYPE_A), &opt(payload, ttl, &[])]);
            parse_query(&m)
        };
        let got = query(4096, EDNS_DO).unwrap();
        assert_eq!((got.udp_limit, got.edns, got.dnssec_ok), (4096, true, true));
        assert_eq!(query(100, 0).unwrap().udp_limit, UDP_MAX_CLASSIC, "below 512 counts as 512");
        assert_eq!(query(0, 0).unwrap().udp_limit, UDP_MAX_CLASSIC);
        assert_eq!(query(65535, 0).unwrap().udp_limit, 65535);
        let got = query(1232, 0).unwrap();
        assert!(got.edns && !got.dnssec_ok);
        assert_eq!(query(1232, 1 << 16), Err(DnsError::BadVersion(1)));
        assert_eq!(query(1232, 1 << 16).unwrap_err().rcode(), RCODE_BADVERS);
        // With options (a cookie, code 10).
        let cookie = cat(&[&[0, 10, 0, 8], &[7; 8]]);
        let m = msg(0, [1, 0, 0, 1], &[&question(&name("a"), TYPE_A), &opt(1400, 0, &cookie)]);
        assert_eq!(parse_query(&m).unwrap().udp_limit, 1400);
        let cut_option = msg(0, [1, 0, 0, 1], &[&question(&name("a"), TYPE_A), &opt(1400, 0, &cookie[..6])]);
        assert_eq!(malformed(parse_query(&cut_option)), "record data of the wrong length");
    }

    #[test]
    fn a_query_refused_for_what_it_is() {
        let qn = question(&name("example.com"), TYPE_A);
        assert_eq!(malformed(parse_query(&msg(RD, [0, 0, 0, 0], &[]))), "a query without a question");
        let two = msg(RD, [2, 0, 0, 0], &[&qn, &qn]);
        assert_eq!(malformed(parse_query(&two)), "a query with more than one question");
        assert_eq!(
            malformed(parse_query(&msg(QR, [1, 0, 0, 0], &[&qn]))),
            "a response where a query belongs"
        );
        for (opcode, what) in [(1u16, "IQUERY"), (2, "STATUS"), (4, "NOTIFY"), (5, "UPDATE")] {
            let got = parse_query(&msg(opcode << OPCODE_SHIFT, [1, 0, 0, 0], &[&qn]));
            assert!(matches!(got, Err(DnsError::NotImplemented(_))), "{what}: {got:?}");
            assert_eq!(got.unwrap_err().rcode(), RCODE_NOTIMP);
        }
        assert_eq!(DnsError::Malformed("x").rcode(), RCODE_FORMERR);
        let two_opts = msg(0, [1, 0, 0, 2], &[&qn, &opt(512, 0, &[]), &opt(512, 0, &[])]);
        assert_eq!(malformed(parse_query(&two_opts)), "more than one OPT record");
        let opt_answer = msg(0, [1, 1, 0, 0], &[&qn, &opt(512, 0, &[])]);
        assert_eq!(malformed(parse_query(&opt_answer)), "OPT record outside the additional section");
        let mut owned = opt(512, 0, &[]);
        owned.splice(0..1, ptr(12));
        let opt_owned = msg(0, [1, 0, 0, 1], &[&qn, &owned]);
        assert_eq!(malformed(parse_query(&opt_owned)), "OPT record not owned by the root");
    }

    #[test]
    fn a_query_must_end_with_its_last_record_and_every_cut_is_malformed() {
        let whole = msg(RD, [1, 0, 0, 1], &[&question(&name("example.com"), TYPE_A), &opt(1232, 0, &[])]);
        assert!(parse_query(&whole).is_ok());
        for cut in 0..whole.len() {
            assert!(matches!(parse_query(&whole[..cut]), Err(DnsError::Malformed(_))), "cut at {cut}");
        }
        let mut longer = whole.clone();
        longer.push(0);
        assert_eq!(malformed(parse_query(&longer)), "bytes after the last record");
        let mut counted_short = whole.clone();
        counted_short[11] = 0; // ARCOUNT 0: the OPT record is garbage after the question
        assert_eq!(malformed(parse_query(&counted_short)), "bytes after the last record");
        let mut counted_long = whole;
        counted_long[11] = 200; // ARCOUNT 200, one record there
        assert_eq!(malformed(parse_query(&counted_long)), "name cut short");
    }

    #[test]
    fn labels_and_names_are_bounded() {
        let query_of = |owner: &[u8]| parse_query(&msg(0, [1, 0, 0, 0], &[&question(owner, TYPE_A)]));
        let label63 = "a".repeat(63);
        assert_eq!(query_of(&name(&label63)).unwrap().question.name, label63);
        let mut label64 = vec![64];
        label64.extend([b'a'; 64]);
        label64.push(0);
        assert_eq!(malformed(query_of(&label64)), "unknown label type", "0b01: no label is 64 long");
        assert_eq!(malformed(query_of(&[0x80, 0])), "unknown label type");
        // 255 bytes: three labels of 63 and one of 61, with their length bytes and the root.
        let longest = [label63.as_str(), &label63, &label63, &"b".repeat(61)].join(".");
        assert_eq!(name(&longest).len(), NAME_MAX);
        assert_eq!(query_of(&name(&longest)).unwrap().question.name, longest);
        let too_long = [label63.as_str(), &label63, &label63, &"b".repeat(62)].join(".");
        assert_eq!(malformed(query_of(&name(&too_long))), "name longer than 255 bytes");
        assert_eq!(malformed(parse_query(&msg(0, [1, 0, 0, 0], &[&[3, b'a', b'b']]))), "name cut short");
        assert_eq!(malformed(parse_query(&msg(0, [1, 0, 0, 0], &[]))), "name cut short");
        assert_eq!(malformed(parse_query(&msg(0, [1, 0, 0, 0], &[&[0, 0, 1, 0]]))), "question cut short");
        // Bytes that are not letters, digits or hyphens are written so the text reads back.
        let odd = query_of(&[3, b'a', b'.', b'b', 3, b'\\', 0, 0xff, 2, b'A', b' ', 0]).unwrap();
        assert_eq!(odd.question.name, r"a\.b.\\\000\255.A\032");
    }

    #[test]
    fn compression_pointers_go_strictly_backward_and_are_bounded() {
        let qn = question(&name("example.com"), TYPE_A);
        // A record whose owner points back at the question's name (offset 12).
        let back = msg(QR, [1, 1, 0, 0], &[&qn, &rr(&ptr(12), TYPE_A, 60, &[192, 0, 2, 1])]);
        assert_eq!(parse_answer(&back).unwrap().ttl, Some(60));
        // A label, then a pointer to the question's name: www.example.com.
        let www = cat(&[&[3], b"www", &ptr(12)]);
        let q_www = msg(0, [1, 1, 0, 0], &[&qn, &rr(&www, TYPE_A, 60, &[192, 0, 2, 1])]);
        assert!(parse_query(&q_www).is_ok(), "a query's records may be compressed too");
        // Forward: the owner points at the record's own data.
        let at = HEADER_LEN + qn.len();
        let fwd = msg(QR, [1, 1, 0, 0], &[&qn, &rr(&ptr(at + 12), TYPE_A, 60, &[192, 0, 2, 1])]);
        assert_eq!(malformed(parse_answer(&fwd)), "compression pointer not strictly backward");
        let itself = msg(QR, [1, 1, 0, 0], &[&qn, &rr(&ptr(at), TYPE_A, 60, &[192, 0, 2, 1])]);
        assert_eq!(malformed(parse_answer(&itself)), "compression pointer not strictly backward");
        // A loop: a label, then a pointer back to that label.
        let looping = cat(&[&[1, b'x'], &ptr(at)]);
        let looped = msg(QR, [1, 1, 0, 0], &[&qn, &rr(&looping, TYPE_A, 60, &[192, 0, 2, 1])]);
        assert_eq!(malformed(parse_answer(&looped)), "compression pointer not strictly backward");
        let header = msg(QR, [1, 1, 0, 0], &[&qn, &rr(&ptr(4), TYPE_A, 60, &[192, 0, 2, 1])]);
        assert_eq!(malformed(parse_answer(&header)), "compression pointer into the header");
        // Into what is not a name: a record's TTL, an address.
        let ttl_at = at + 2 + 4;
        let ttl_bytes = [0, 0, 0, 0]; // the root name, if it were one
        let into_ttl = msg(
            QR,
            [1, 2, 0, 0],
            &[&qn, &rr(&ptr(12), TYPE_A, 0, &ttl_bytes), &rr(&ptr(ttl_at), TYPE_A, 60, &[1; 4])],
        );
        assert_eq!(malformed(parse_answer(&into_ttl)), "compression pointer to no earlier name");
        let address = cat(&[&[1, b'x'], &[0; 3]]);
        let rdata_at = at + 12;
        let into_a = msg(
            QR,
            [1, 2, 0, 0],
            &[&qn, &rr(&ptr(12), TYPE_A, 0, &address[..4]), &rr(&ptr(rdata_at), TYPE_A, 60, &[1; 4])],
        );
        assert_eq!(malformed(parse_answer(&into_a)), "compression pointer to no earlier name");
        // Into a name inside a record's data: an SRV record's target, a label of it.
        let srv = cat(&[&[0, 1, 0, 2, 0x01, 0xbb], &name("host.example.net")]);
        let target_at = at + 12 + 6;
        let into_srv = msg(
            QR,
            [1, 2, 0, 0],
            &[&qn, &rr(&ptr(12), TYPE_SRV, 60, &srv), &rr(&ptr(target_at + 5), TYPE_A, 30, &[1; 4])],
        );
        assert_eq!(parse_answer(&into_srv).unwrap().ttl, Some(30));
        let mut srv_cut = msg(QR, [1, 1, 0, 0], &[&qn, &rr(&ptr(12), TYPE_SRV, 60, &srv[..5])]);
        assert_eq!(malformed(parse_answer(&srv_cut)), "record data of the wrong length");
        srv_cut.truncate(at + 10);
        assert!(parse_answer(&srv_cut).is_err());
        // The question's own name can hold no pointer: nothing lies between the header and it.
        assert!(parse_query(&msg(0, [1, 0, 0, 0], &[&question(&ptr(12), TYPE_A)])).is_err());
        // Expanded through a pointer, a name still may not pass 255 bytes.
        let label63 = "a".repeat(63);
        let long = name(&[label63.as_str(), &label63, &label63].join("."));
        let long_q = question(&long, TYPE_A);
        let longer = cat(&[&[63], &[b'b'; 63], &ptr(12)]); // 64 bytes before the 193 it points at
        let over = msg(QR, [1, 1, 0, 0], &[&long_q, &rr(&longer, TYPE_A, 60, &[192, 0, 2, 1])]);
        assert_eq!(malformed(parse_answer(&over)), "name longer than 255 bytes");
    }

    /// An answer whose question is `a` and whose records' owners each point
    /// at the previous record's: the last one's name is `hops` pointers deep.
    fn pointer_chain(hops: usize) -> Vec<u8> {
        let mut m = msg(QR, [1, hops as u16, 0, 0], &[&question(&name("a"), TYPE_A)]);
        let mut previous = HEADER_LEN;
        for _ in 0..hops {
            let at = m.len();
            m.extend(rr(&ptr(previous), 0xff00, 30, &[]));
            previous = at;
        }
        m
    }

    #[test]
    fn a_chain_of_pointers_is_followed_up_to_its_bound() {
        assert_eq!(parse_answer(&pointer_chain(POINTER_HOPS_MAX)).unwrap().ttl, Some(30));
        assert_eq!(
            malformed(parse_answer(&pointer_chain(POINTER_HOPS_MAX + 1))),
            "too many compression pointers"
        );
    }

    #[test]
    fn query_writes_what_parse_query_reads() {
        for text in ["example.com", "ExAmple.COM", "", r"a\.b.c", r"\\\000\255.A\032", "x.y.z.w.v"] {
            let question = q(text, TYPE_TXT);
            let wire = query(0xbeef, &question, true).unwrap();
            let got = parse_query(&wire).unwrap();
            assert_eq!(got.question, question, "{text}");
            assert_eq!((got.id, got.recursion_desired, got.edns), (0xbeef, true, false));
        }
        let read_back = |text: &str| parse_query(&query(1, &q(text, TYPE_A), false).unwrap()).unwrap();
        assert_eq!(read_back("example.com.").question.name, "example.com", "the trailing dot goes");
        assert_eq!(read_back(".").question.name, "");
        assert_eq!(read_back(r"\065b").question.name, "Ab");
        assert_eq!(read_back("ü").question.name, r"\195\188", "not ASCII: its UTF-8 bytes");
        assert!(!read_back("a").recursion_desired);
        let label63 = "a".repeat(63);
        for bad_name in
            ["a..b", ".a", "a.b..", r"\256", "a\\", &"a".repeat(64), &[label63.as_str(); 4].join(".")]
        {
            assert!(
                matches!(query(1, &q(bad_name, TYPE_A), true), Err(DnsError::Malformed(_))),
                "{bad_name}"
            );
        }
    }

    #[test]
    fn cache_keys_are_lower_case_in_one_spelling() {
        let key = |text: &str| cache_key(&q(text, TYPE_A));
        assert_eq!(key("WWW.Example.COM."), ("www.example.com".to_string(), TYPE_A, CLASS_IN));
        assert_eq!(key("www.example.com"), key("WWW.EXAMPLE.COM."));
        assert_eq!(key(r"\065"), key("a"));
        assert_eq!(
            key(r"a\."),
            (r"a\.".to_string(), TYPE_A, CLASS_IN),
            "an escaped dot is not the trailing one"
        );
        assert_eq!(key(".").0, "");
        assert_eq!(key("").0, "");
        assert_ne!(cache_key(&q("a", TYPE_A)), cache_key(&q("a", TYPE_AAAA)));
    }

    /// An answer for `www.example.com`: a CNAME chain (its names compressed)
    /// to an address, and an OPT record.
    fn cname_chain() -> Vec<u8> {
        let qn = question(&name("www.example.com"), TYPE_A);
        let first = HEADER_LEN + qn.len();
        let cdn = cat(&[&[3], b"cdn", &ptr(HEADER_LEN + 4)]); // cdn.example.com
        let a1 = rr(&ptr(HEADER_LEN), TYPE_CNAME, 600, &cdn);
        let edge = cat(&[&[4], b"edge", &ptr(first + 12)]); // edge.cdn.example.com
        let a2 = rr(&ptr(first + 12), TYPE_CNAME, 120, &edge);
        let a3 = rr(&ptr(first + a1.len() + 12), TYPE_A, 300, &[192, 0, 2, 7]);
        msg(QR | RD | FLAG_RA, [1, 3, 0, 1], &[&qn, &a1, &a2, &a3, &opt(1232, 0, &[])])
    }

    #[test]
    fn positive_answers_are_kept_for_their_least_ttl() {
        let qn = question(&name("example.com"), TYPE_A);
        let a = msg(
            QR,
            [1, 2, 0, 0],
            &[&qn, &rr(&ptr(12), TYPE_A, 300, &[1; 4]), &rr(&ptr(12), TYPE_A, 200, &[2; 4])],
        );
        let got = parse_answer(&a).unwrap();
        assert_eq!(
            got,
            AnswerInfo {
                id: 0x1234,
                rcode: 0,
                truncated: false,
                question: Some(q("example.com", TYPE_A)),
                ttl: Some(200)
            }
        );
        let qn6 = question(&name("example.com"), TYPE_AAAA);
        let aaaa = msg(QR, [1, 1, 0, 0], &[&qn6, &rr(&ptr(12), TYPE_AAAA, 86400, &[0x20; 16])]);
        assert_eq!(parse_answer(&aaaa).unwrap().ttl, Some(86400));
        let chain = parse_answer(&cname_chain()).unwrap();
        assert_eq!(chain.ttl, Some(120), "the CNAMEs count, the OPT does not");
        assert_eq!(chain.question, Some(q("www.example.com", TYPE_A)));
        // A huge OPT "TTL" (DO and Z bits) next to a small answer: only the answer counts.
        let with_opt =
            msg(QR, [1, 1, 0, 1], &[&qn, &rr(&ptr(12), TYPE_A, 100, &[1; 4]), &opt(1232, 0xffff, &[])]);
        assert_eq!(parse_answer(&with_opt).unwrap().ttl, Some(100));
        let top_bit = msg(QR, [1, 1, 0, 0], &[&qn, &rr(&ptr(12), TYPE_A, 0x8000_0000, &[1; 4])]);
        assert_eq!(parse_answer(&top_bit).unwrap().ttl, Some(0), "RFC 2181 section 8");
        let short_a = msg(QR, [1, 1, 0, 0], &[&qn, &rr(&ptr(12), TYPE_A, 100, &[1; 3])]);
        assert_eq!(malformed(parse_answer(&short_a)), "record data of the wrong length");
        let no_question = msg(QR, [0, 1, 0, 0], &[&rr(&name("a"), TYPE_A, 100, &[1; 4])]);
        assert_eq!(parse_answer(&no_question).unwrap().ttl, None, "no question, no key");
    }

    #[test]
    fn negative_answers_are_kept_for_the_soa_ttl_or_minimum() {
        let qn = question(&name("nope.example.com"), TYPE_A);
        let zone = ptr(HEADER_LEN + 5); // example.com
        let nx = |ttl: u32, minimum: u32| {
            msg(QR | 3, [1, 0, 1, 0], &[&qn, &rr(&zone, TYPE_SOA, ttl, &soa(minimum))])
        };
        let got = parse_answer(&nx(3600, 300)).unwrap();
        assert_eq!((got.rcode, got.ttl), (RCODE_NXDOMAIN, Some(300)), "MINIMUM below the TTL");
        assert_eq!(parse_answer(&nx(60, 300)).unwrap().ttl, Some(60), "the TTL below MINIMUM");
        let nodata = msg(QR, [1, 0, 1, 0], &[&qn, &rr(&zone, TYPE_SOA, 900, &soa(3600))]);
        assert_eq!(parse_answer(&nodata).unwrap().ttl, Some(900));
        let referral = msg(QR, [1, 0, 1, 0], &[&qn, &rr(&zone, TYPE_NS, 900, &name("ns.example.com"))]);
        assert_eq!(parse_answer(&referral).unwrap().ttl, None, "no SOA: not cached");
        let nx_no_soa = msg(QR | 3, [1, 0, 0, 0], &[&qn]);
        assert_eq!(parse_answer(&nx_no_soa).unwrap().ttl, None);
        // A CNAME to a name that does not exist: the CNAME's TTL counts too.
        let cname = rr(&ptr(HEADER_LEN), TYPE_CNAME, 30, &name("gone.example.net"));
        let nx_chain = msg(QR | 3, [1, 1, 1, 0], &[&qn, &cname, &rr(&zone, TYPE_SOA, 3600, &soa(600))]);
        assert_eq!(parse_answer(&nx_chain).unwrap().ttl, Some(30));
        let no_chain = msg(
            QR,
            [1, 1, 1, 0],
            &[&qn, &rr(&ptr(12), TYPE_CNAME, 900, &name("x")), &rr(&zone, TYPE_SOA, 3600, &soa(60))],
        );
        assert_eq!(parse_answer(&no_chain).unwrap().ttl, Some(60), "a chain that ends in no data");
        let mut bad_soa = soa(60);
        bad_soa.pop();
        let short = msg(QR | 3, [1, 0, 1, 0], &[&qn, &rr(&zone, TYPE_SOA, 60, &bad_soa)]);
        assert_eq!(malformed(parse_answer(&short)), "record data of the wrong length");
    }

    #[test]
    fn failures_and_truncated_answers_are_not_cached() {
        let qn = question(&name("example.com"), TYPE_A);
        let servfail = msg(QR | 2, [1, 0, 0, 0], &[&qn]);
        assert_eq!(parse_answer(&servfail).unwrap().rcode, RCODE_SERVFAIL);
        assert_eq!(parse_answer(&servfail).unwrap().ttl, None);
        let refused = msg(QR | 5, [1, 0, 1, 0], &[&qn, &rr(&ptr(12), TYPE_SOA, 60, &soa(60))]);
        assert_eq!(parse_answer(&refused).unwrap().ttl, None);
        // Cut in the middle of its only record, with the counts of the whole.
        let mut cut = msg(QR | FLAG_TC, [1, 5, 0, 0], &[&qn, &rr(&ptr(12), TYPE_A, 60, &[1; 4])]);
        cut.truncate(cut.len() - 3);
        let got = parse_answer(&cut).unwrap();
        assert!(got.truncated);
        assert_eq!((got.ttl, got.question), (None, Some(q("example.com", TYPE_A))));
        // BADVERS: the OPT record's extended RCODE says so, the header says 0.
        let badvers =
            msg(QR, [1, 1, 0, 1], &[&qn, &rr(&ptr(12), TYPE_A, 60, &[1; 4]), &opt(1232, 1 << 24, &[])]);
        assert_eq!(parse_answer(&badvers).unwrap().ttl, None);
        assert_eq!(malformed(parse_answer(&msg(0, [1, 0, 0, 0], &[&qn]))), "a query where an answer belongs");
        let two = msg(QR, [2, 0, 0, 0], &[&qn, &qn]);
        assert_eq!(malformed(parse_answer(&two)), "an answer with more than one question");
        let status = msg(QR | 2 << OPCODE_SHIFT, [1, 0, 0, 0], &[&qn]);
        assert!(parse_answer(&status).is_err());
    }

    fn ttls(m: &[u8]) -> Vec<u32> {
        let mut walk = Walker::new(m).unwrap();
        let mut out = Vec::new();
        while let Some(r) = walk.next(m).unwrap() {
            out.push(r.ttl);
        }
        out
    }

    #[test]
    fn age_takes_the_time_spent_from_every_ttl_but_opts() {
        let qn = question(&name("example.com"), TYPE_A);
        let mut m = msg(
            QR,
            [1, 1, 1, 1],
            &[
                &qn,
                &rr(&ptr(12), TYPE_A, 300, &[1; 4]),
                &rr(&ptr(12), TYPE_SOA, 3600, &soa(60)),
                &opt(1232, EDNS_DO, &[]),
            ],
        );
        age(&mut m, 100).unwrap();
        assert_eq!(ttls(&m), [200, 3500, EDNS_DO]);
        age(&mut m, 250).unwrap();
        assert_eq!(ttls(&m), [0, 3250, EDNS_DO], "down to 0, no lower");
        let mut chain = cname_chain();
        age(&mut chain, 0).unwrap();
        assert_eq!(chain, cname_chain(), "no time, no change");
        age(&mut chain, 60).unwrap();
        assert_eq!(parse_answer(&chain).unwrap().ttl, Some(60));
        let mut top_bit = msg(QR, [1, 1, 0, 0], &[&qn, &rr(&ptr(12), TYPE_A, 0x8000_0001, &[1; 4])]);
        age(&mut top_bit, 0).unwrap();
        assert_eq!(ttls(&top_bit), [0]);
        let mut garbage = msg(QR, [1, 1, 0, 0], &[&qn, &rr(&ptr(12), TYPE_A, 300, &[1; 4]), &[0]]);
        let before = garbage.clone();
        assert!(age(&mut garbage, 10).is_err());
        assert_eq!(garbage, before, "refused whole: nothing changed");
        assert!(age(&mut [0u8; 5], 1).is_err());
    }

    /// An answer of `n` A records for `example.com`, with `opt` in its additional section.
    fn big_answer(n: u16, opt_record: Option<&[u8]>) -> Vec<u8> {
        let mut m = msg(
            QR | RD | FLAG_RA,
            [1, n, 0, u16::from(opt_record.is_some())],
            &[&question(&name("example.com"), TYPE_A)],
        );
        for i in 0..n {
            m.extend(rr(&ptr(12), TYPE_A, 60, &[10, 0, (i >> 8) as u8, i as u8]));
        }
        m.extend(opt_record.unwrap_or_default());
        m
    }

    #[test]
    fn truncate_for_udp_keeps_the_header_the_question_and_the_opt() {
        let small = big_answer(10, None);
        assert_eq!(truncate_for_udp(&small, 512), small, "it fits: unchanged");
        let big = big_answer(40, None);
        assert!(big.len() > 512);
        let cut = truncate_for_udp(&big, 512);
        assert_eq!(cut.len(), HEADER_LEN + 17);
        let got = parse_answer(&cut).unwrap();
        assert!(got.truncated);
        assert_eq!(got.question, Some(q("example.com", TYPE_A)));
        assert_eq!(&cut[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(u16::from_be_bytes([cut[2], cut[3]]), QR | RD | FLAG_RA | FLAG_TC, "the other flags kept");
        assert_eq!(truncate_for_udp(&big, 100), cut, "a limit below 512 counts as 512");
        assert_eq!(truncate_for_udp(&big, big.len()), big);

        let cookie = cat(&[&[0, 10, 0, 16], &[9; 16]]);
        let with_opt = big_answer(100, Some(&opt(4096, EDNS_DO, &cookie)));
        let cut = truncate_for_udp(&with_opt, 1232);
        assert_eq!(
            cut,
            msg(
                QR | RD | FLAG_RA | FLAG_TC,
                [1, 0, 0, 1],
                &[&question(&name("example.com"), TYPE_A), &opt(4096, EDNS_DO, &cookie)]
            )
        );
        assert!(parse_answer(&cut).unwrap().truncated);
        // Options too long to fit are left out; the OPT record stays.
        let padding = cat(&[&[0, 12, 2, 0], &[0; 512]]);
        let padded = big_answer(100, Some(&opt(4096, 0, &padding)));
        let cut = truncate_for_udp(&padded, 512);
        assert_eq!(
            cut,
            msg(
                QR | RD | FLAG_RA | FLAG_TC,
                [1, 0, 0, 1],
                &[&question(&name("example.com"), TYPE_A), &opt(4096, 0, &[])]
            )
        );
        // Records that do not read: the header and the question, no OPT.
        let mut broken = big_answer(100, Some(&opt(4096, 0, &[])));
        broken.push(0);
        let cut = truncate_for_udp(&broken, 512);
        assert_eq!(
            cut,
            msg(QR | RD | FLAG_RA | FLAG_TC, [1, 0, 0, 0], &[&question(&name("example.com"), TYPE_A)])
        );
        let junk = vec![0xc0; 600];
        let cut = truncate_for_udp(&junk, 512);
        assert_eq!(
            cut,
            [&junk[..2], &[0xc2, 0xc0], &[0; 8]].concat(),
            "questions that do not read: the header alone"
        );
    }

    /// `parts` each framed with its length, as on a TCP stream.
    fn framed(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            write_tcp(&mut out, p).unwrap();
        }
        out
    }

    #[test]
    fn read_tcp_one_byte_per_read_leaves_the_next_message_unread() {
        let first = query(1, &q("example.com", TYPE_A), true).unwrap();
        let second = cname_chain();
        let stream = framed(&[&first, &second]);
        let mut r = OneByte(Cursor::new(&stream[..]));
        assert_eq!(read_tcp(&mut r).unwrap().unwrap(), first);
        assert_eq!(r.0.position() as usize, 2 + first.len(), "the second message stays unread");
        assert_eq!(read_tcp(&mut r).unwrap().unwrap(), second);
        assert!(read_tcp(&mut r).unwrap().is_none(), "a clean end");
        // All at once, the same; and a message larger than the first step of the buffer.
        let large = vec![0x5a; 3000];
        let stream = framed(&[&first, &large, &second]);
        let mut r = Cursor::new(&stream[..]);
        assert_eq!(read_tcp(&mut r).unwrap().unwrap(), first);
        assert_eq!(r.position() as usize, 2 + first.len());
        assert_eq!(read_tcp(&mut r).unwrap().unwrap(), large);
        assert_eq!(r.position() as usize, 4 + first.len() + large.len());
        let mut r = OneByte(Cursor::new(&stream[2 + first.len()..]));
        assert_eq!(read_tcp(&mut r).unwrap().unwrap(), large);
    }

    #[test]
    fn read_tcp_refuses_a_zero_length_and_a_cut_message() {
        let kind = |bytes: &[u8]| read_tcp(&mut OneByte(bytes)).unwrap_err().kind();
        assert_eq!(kind(&[0, 0, 1, 2]), io::ErrorKind::InvalidData);
        assert_eq!(kind(&[0]), io::ErrorKind::UnexpectedEof, "the length cut");
        assert_eq!(kind(&[0, 5, 1, 2, 3, 4]), io::ErrorKind::UnexpectedEof);
        assert_eq!(kind(&[0xff, 0xff, 1]), io::ErrorKind::UnexpectedEof, "65535 claimed, 1 sent");
        assert!(read_tcp(&mut OneByte(&[][..])).unwrap().is_none());
        let mut out = Vec::new();
        assert_eq!(write_tcp(&mut out, &[]).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(write_tcp(&mut out, &vec![0; 65536]).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        write_tcp(&mut out, &vec![1; 65535]).unwrap();
        assert_eq!(out.len(), 65537);
        assert_eq!(out[..2], [0xff, 0xff]);
    }

    #[test]
    fn error_responses_echo_what_they_can() {
        assert_eq!(error_response(&[0x12, 0x34, 1], RCODE_FORMERR), None, "not even a header");
        let header_only = msg(RD | FLAG_CD, [0, 0, 0, 0], &[]);
        let got = error_response(&header_only, RCODE_FORMERR).unwrap();
        assert_eq!(got, msg(QR | RD | FLAG_CD | FLAG_RA | 1, [0, 0, 0, 0], &[]));
        let garbage: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) & 0x7f).collect();
        let got = error_response(&garbage, RCODE_FORMERR).unwrap();
        assert_eq!(got.len(), HEADER_LEN);
        assert_eq!(&got[..2], &garbage[..2]);
        assert_eq!(got[3] & 0x0f, RCODE_FORMERR);
        assert_eq!(&got[4..], &[0; 8], "no question that reads, no records");
        let response = msg(QR, [0, 0, 0, 0], &[]);
        assert_eq!(error_response(&response, RCODE_FORMERR), None, "a response is never answered");

        let qn = question(&name("Example.com"), TYPE_A);
        let plain = msg(RD, [1, 0, 0, 0], &[&qn]);
        let got = error_response(&plain, RCODE_REFUSED).unwrap();
        assert_eq!(got, msg(QR | RD | FLAG_RA | 5, [1, 0, 0, 0], &[&qn]));
        assert_eq!(parse_answer(&got).unwrap().rcode, RCODE_REFUSED);
        let edns = msg(RD, [1, 0, 0, 1], &[&qn, &opt(4096, EDNS_DO, &[])]);
        let got = error_response(&edns, RCODE_REFUSED).unwrap();
        assert_eq!(got, msg(QR | RD | FLAG_RA | 5, [1, 0, 0, 1], &[&qn, &opt(EDNS_UDP_SIZE, EDNS_DO, &[])]));
        // Malformed after the question: the question still copied, no OPT.
        let mut broken = edns.clone();
        broken.push(0);
        let got = error_response(&broken, RCODE_FORMERR).unwrap();
        assert_eq!(got, msg(QR | RD | FLAG_RA | 1, [1, 0, 0, 0], &[&qn]));
        // BADVERS: 16, so 0 in the header and 1 in the OPT record.
        let v1 = msg(0, [1, 0, 0, 1], &[&qn, &opt(4096, 1 << 16, &[])]);
        let err = parse_query(&v1).unwrap_err();
        let got = error_response(&v1, err.rcode()).unwrap();
        assert_eq!(got, msg(QR | FLAG_RA, [1, 0, 0, 1], &[&qn, &opt(EDNS_UDP_SIZE, 1 << 24, &[])]));
        let got = error_response(&plain, RCODE_BADVERS).unwrap();
        assert_eq!(got[3] & 0x0f, RCODE_SERVFAIL, "no OPT to say BADVERS in");
        // NOTIFY: its OPCODE copied into the NOTIMP answer.
        let notify = msg(4 << OPCODE_SHIFT, [1, 0, 0, 0], &[&qn]);
        let got = error_response(&notify, parse_query(&notify).unwrap_err().rcode()).unwrap();
        assert_eq!(got, msg(QR | 4 << OPCODE_SHIFT | FLAG_RA | 4, [1, 0, 0, 0], &[&qn]));
    }

    #[test]
    fn fit_to_query_gives_a_cached_answer_the_querys_id_flags_and_spelling() {
        let cached = msg(
            QR | RD | FLAG_RA,
            [1, 1, 0, 0],
            &[&question(&name("example.com"), TYPE_A), &rr(&ptr(12), TYPE_A, 60, &[1; 4])],
        );
        let mut query_bytes = query(0x0707, &q("ExAmPle.CoM", TYPE_A), false).unwrap();
        query_bytes[3] |= FLAG_CD as u8;
        let mut answer = cached.clone();
        fit_to_query(&mut answer, &query_bytes).unwrap();
        let got = parse_answer(&answer).unwrap();
        assert_eq!((got.id, got.question), (0x0707, Some(q("ExAmPle.CoM", TYPE_A))));
        assert_eq!(u16::from_be_bytes([answer[2], answer[3]]), QR | FLAG_RA | FLAG_CD);
        assert_eq!(answer[HEADER_LEN + 17..], cached[HEADER_LEN + 17..], "the records untouched");
        for other in [q("example.org", TYPE_A), q("example.com", TYPE_AAAA), q("exAmple.com", 0x61)] {
            let mut answer = cached.clone();
            let mut other_q = query(1, &other, true).unwrap();
            if other.qtype == 0x61 {
                // 0x0061 against 0x0041 (TYPE_A is 1): bytes that differ as `a` and `A` do.
                other_q[HEADER_LEN + 13] = 0x41;
                answer[HEADER_LEN + 14] = 0x61;
            }
            let before = answer.clone();
            assert!(fit_to_query(&mut answer, &other_q).is_err(), "{other:?}");
            assert_eq!(answer, before);
        }
    }

    #[test]
    fn set_id_leaves_a_message_too_short_alone() {
        let mut m = query(1, &q("a", TYPE_A), true).unwrap();
        set_id(&mut m, 0xabcd);
        assert_eq!(parse_query(&m).unwrap().id, 0xabcd);
        let mut short = [7u8];
        set_id(&mut short, 0xabcd);
        assert_eq!(short, [7]);
    }
}
