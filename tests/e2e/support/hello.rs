//! TLS ClientHellos written byte by byte, and what a server shows in
//! answer to one: the records of its first flight, read until it closes,
//! and what they say in the clear (an alert, or the ServerHello's version,
//! suite and key exchange).
//!
//! The hellos are those of real clients (browsers, curl) or of probers (one
//! protocol version, one group, CBC suites), with real key shares, so a
//! server goes as far as it would with that client. The client sends its
//! hello and then a FIN: a server writes its whole first flight before it
//! reads again, meets the end, and closes, so everything read before the
//! close is that flight.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use aws_lc_rs::agreement::{self, EphemeralPrivateKey};
use aws_lc_rs::kem::{DecapsulationKey, ML_KEM_768};
use aws_lc_rs::rand::SystemRandom;

use super::connect;

/// TLS versions as they appear on the wire.
pub const TLS10: u16 = 0x0301;
pub const TLS11: u16 = 0x0302;
pub const TLS12: u16 = 0x0303;
pub const TLS13: u16 = 0x0304;

/// Key exchange groups.
pub const X25519: u16 = 0x001d;
pub const P256: u16 = 0x0017;
pub const P384: u16 = 0x0018;
pub const P521: u16 = 0x0019;
pub const X448: u16 = 0x001e;
pub const X25519MLKEM768: u16 = 0x11ec;
pub const FFDHE: [u16; 5] = [0x0100, 0x0101, 0x0102, 0x0103, 0x0104];

/// A GREASE value (RFC 8701), as browsers scatter them.
pub const GREASE: [u16; 4] = [0x0a0a, 0x2a2a, 0x4a4a, 0x8a8a];

/// A ClientHello: the legacy version, the suites in the client's order, and
/// the extensions in the order they are sent.
#[derive(Clone)]
pub struct Hello {
    pub version: u16,
    pub suites: Vec<u16>,
    pub extensions: Vec<(u16, Vec<u8>)>,
}

impl Hello {
    /// The hello as one handshake record (record version 0x0301, as clients send it).
    pub fn bytes(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&self.version.to_be_bytes());
        body.extend((0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11))); // random
        body.push(32);
        body.extend((0..32u8).map(|i| i.wrapping_mul(53).wrapping_add(7))); // session id
        body.extend_from_slice(&u16s(&self.suites));
        body.extend_from_slice(&[1, 0]); // compression: null
        let mut exts = Vec::new();
        for (kind, data) in &self.extensions {
            exts.extend_from_slice(&kind.to_be_bytes());
            exts.extend_from_slice(&len16(data.len()));
            exts.extend_from_slice(data);
        }
        body.extend_from_slice(&len16(exts.len()));
        body.extend_from_slice(&exts);
        let mut msg = vec![1]; // client_hello
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        let mut record = vec![22, 3, 1];
        record.extend_from_slice(&len16(msg.len()));
        record.extend_from_slice(&msg);
        record
    }

    /// The same hello with extension `kind` replaced by `data`, or dropped when `data` is None.
    pub fn with(mut self, kind: u16, data: Option<Vec<u8>>) -> Hello {
        let at = self.extensions.iter().position(|(k, _)| *k == kind);
        match (at, data) {
            (Some(i), Some(d)) => self.extensions[i].1 = d,
            (Some(i), None) => {
                self.extensions.remove(i);
            }
            (None, Some(d)) => self.extensions.push((kind, d)),
            (None, None) => {}
        }
        self
    }

    /// The same hello as the client sends it when it speaks TLS 1.2 at most:
    /// no TLS 1.3 suites, no supported_versions, key shares or PSK modes.
    pub fn tls12_only(mut self) -> Hello {
        self.suites.retain(|s| !(0x1301..=0x1305).contains(s));
        for kind in [ext::SUPPORTED_VERSIONS, ext::KEY_SHARE, ext::PSK_MODES] {
            self = self.with(kind, None);
        }
        self
    }
}

/// Extension types.
pub mod ext {
    pub const SERVER_NAME: u16 = 0x0000;
    pub const STATUS_REQUEST: u16 = 0x0005;
    pub const SUPPORTED_GROUPS: u16 = 0x000a;
    pub const EC_POINT_FORMATS: u16 = 0x000b;
    pub const SIGNATURE_ALGORITHMS: u16 = 0x000d;
    pub const ALPN: u16 = 0x0010;
    pub const SCT: u16 = 0x0012;
    pub const ENCRYPT_THEN_MAC: u16 = 0x0016;
    pub const EXTENDED_MASTER_SECRET: u16 = 0x0017;
    pub const COMPRESS_CERTIFICATE: u16 = 0x001b;
    pub const RECORD_SIZE_LIMIT: u16 = 0x001c;
    pub const DELEGATED_CREDENTIALS: u16 = 0x0022;
    pub const SESSION_TICKET: u16 = 0x0023;
    pub const SUPPORTED_VERSIONS: u16 = 0x002b;
    pub const PSK_MODES: u16 = 0x002d;
    pub const KEY_SHARE: u16 = 0x0033;
    pub const APPLICATION_SETTINGS: u16 = 0x44cd;
    pub const ECH: u16 = 0xfe0d;
    pub const RENEGOTIATION_INFO: u16 = 0xff01;
}

fn len16(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap().to_be_bytes()
}

/// A list of u16s behind its two-byte length.
fn u16s(v: &[u16]) -> Vec<u8> {
    let mut out = len16(v.len() * 2).to_vec();
    for x in v {
        out.extend_from_slice(&x.to_be_bytes());
    }
    out
}

/// server_name with one host name.
pub fn sni(name: &str) -> Vec<u8> {
    let mut entry = vec![0];
    entry.extend_from_slice(&len16(name.len()));
    entry.extend_from_slice(name.as_bytes());
    [len16(entry.len()).to_vec(), entry].concat()
}

/// application_layer_protocol_negotiation with these protocols.
pub fn alpn(protocols: &[&str]) -> Vec<u8> {
    let mut list = Vec::new();
    for p in protocols {
        list.push(p.len() as u8);
        list.extend_from_slice(p.as_bytes());
    }
    [len16(list.len()).to_vec(), list].concat()
}

/// supported_groups, signature_algorithms: a list of u16s.
pub fn list(v: &[u16]) -> Vec<u8> {
    u16s(v)
}

/// supported_versions: a one-byte length, then the versions.
pub fn versions(v: &[u16]) -> Vec<u8> {
    let body = u16s(v);
    [vec![body.len() as u8 - 2], body[2..].to_vec()].concat()
}

/// key_share with a fresh public key for each group (one zero byte for GREASE).
pub fn key_shares(groups: &[u16]) -> Vec<u8> {
    let mut entries = Vec::new();
    for &g in groups {
        let key = public_key(g);
        entries.extend_from_slice(&g.to_be_bytes());
        entries.extend_from_slice(&len16(key.len()));
        entries.extend_from_slice(&key);
    }
    [len16(entries.len()).to_vec(), entries].concat()
}

fn public_key(group: u16) -> Vec<u8> {
    let ecdh = |alg| {
        let key = EphemeralPrivateKey::generate(alg, &SystemRandom::new()).unwrap();
        key.compute_public_key().unwrap().as_ref().to_vec()
    };
    match group {
        X25519 => ecdh(&agreement::X25519),
        P256 => ecdh(&agreement::ECDH_P256),
        P384 => ecdh(&agreement::ECDH_P384),
        P521 => ecdh(&agreement::ECDH_P521),
        X25519MLKEM768 => {
            let kem = DecapsulationKey::generate(&ML_KEM_768).unwrap();
            let ek = kem.encapsulation_key().unwrap().key_bytes().unwrap().as_ref().to_vec();
            [ek, ecdh(&agreement::X25519)].concat()
        }
        g if GREASE.contains(&g) => vec![0],
        g => panic!("no key share for group {g:#06x}"),
    }
}

/// One record as read off the wire.
pub struct Record {
    pub kind: u8,
    pub version: u16,
    pub body: Vec<u8>,
}

/// Everything a server sent in answer to a hello, up to its close.
pub struct Answer {
    pub records: Vec<Record>,
    /// The connection ended in a reset rather than a FIN.
    pub reset: bool,
}

/// Sends `hello` to `addr`, then a FIN, and reads every record until the server closes.
pub fn exchange(addr: SocketAddr, hello: &[u8]) -> Answer {
    let mut sock = connect(addr);
    sock.write_all(hello).unwrap();
    sock.shutdown(Shutdown::Write).unwrap();
    let mut records = Vec::new();
    loop {
        let mut head = [0u8; 5];
        match read_full(&mut sock, &mut head) {
            Ok(0) => return Answer { records, reset: false },
            Ok(5) => {}
            Ok(n) => panic!("{addr}: the connection ended {n} bytes into a record header"),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Answer { records, reset: true },
            Err(e) => panic!("{addr}: {e}"),
        }
        let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[3], head[4]]))];
        sock.read_exact(&mut body).unwrap_or_else(|e| panic!("{addr}: a record cut short: {e}"));
        records.push(Record { kind: head[0], version: u16::from_be_bytes([head[1], head[2]]), body });
    }
}

/// Reads until `buf` is full or the stream ends; the count read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What a server's answer says in the clear.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// A plaintext alert first: its description, and the record's version.
    Alert { description: u8, record: u16 },
    /// A ServerHello: the version chosen, the suite, and the key exchange
    /// group (from the key_share in TLS 1.3, the ServerKeyExchange in 1.2).
    Hello { version: u16, suite: u16, group: Option<u16> },
    /// Neither: the server closed, or sent something else first.
    Nothing,
}

impl Answer {
    /// The alert or ServerHello the answer begins with.
    pub fn outcome(&self) -> Outcome {
        match self.records.first() {
            Some(r) if r.kind == 21 && r.body.len() == 2 => {
                Outcome::Alert { description: r.body[1], record: r.version }
            }
            Some(r) if r.kind == 22 => {
                let messages = self.handshake_messages();
                match messages.first() {
                    Some((2, body)) => {
                        let (version, suite, share) = server_hello(body);
                        let group = share.or_else(|| {
                            messages.iter().find(|(t, _)| *t == 12).and_then(|(_, ske)| {
                                // ECDHE: curve_type 3 (named_curve), then the group.
                                (ske.first() == Some(&3)).then(|| u16::from_be_bytes([ske[1], ske[2]]))
                            })
                        });
                        Outcome::Hello { version, suite, group }
                    }
                    _ => Outcome::Nothing,
                }
            }
            _ => Outcome::Nothing,
        }
    }

    /// The plaintext handshake messages, from the handshake records before
    /// the first record of another kind: (type, body).
    fn handshake_messages(&self) -> Vec<(u8, Vec<u8>)> {
        let stream: Vec<u8> =
            self.records.iter().take_while(|r| r.kind == 22).flat_map(|r| r.body.iter().copied()).collect();
        let mut messages = Vec::new();
        let mut rest = &stream[..];
        while rest.len() >= 4 {
            let len = usize::from(rest[1]) << 16 | usize::from(rest[2]) << 8 | usize::from(rest[3]);
            if rest.len() < 4 + len {
                break;
            }
            messages.push((rest[0], rest[4..4 + len].to_vec()));
            rest = &rest[4 + len..];
        }
        messages
    }

    /// How the flight is cut into records: each record's kind, a plaintext
    /// handshake record as the messages that begin in it (`SH+Cert`), and
    /// `RST` after them when the connection ended in a reset.
    pub fn split(&self) -> String {
        let mut at = 0usize; // offset of the next handshake message in the handshake stream
        let mut seen = 0usize; // handshake bytes in the records so far
        let mut parts = Vec::new();
        let stream: Vec<u8> =
            self.records.iter().filter(|r| r.kind == 22).flat_map(|r| r.body.clone()).collect();
        for r in &self.records {
            let part = match r.kind {
                20 => "CCS".to_owned(),
                21 => "alert".to_owned(),
                23 => "enc".to_owned(),
                22 => {
                    seen += r.body.len();
                    let mut names = Vec::new();
                    while at + 4 <= stream.len() && at < seen {
                        names.push(message_name(stream[at]));
                        let len = usize::from(stream[at + 1]) << 16
                            | usize::from(stream[at + 2]) << 8
                            | usize::from(stream[at + 3]);
                        at += 4 + len;
                    }
                    if names.is_empty() {
                        "…".to_owned()
                    } else {
                        names.join("+")
                    }
                }
                k => format!("type{k}"),
            };
            parts.push(part);
        }
        if parts.is_empty() {
            parts.push("none".to_owned());
        }
        if self.reset {
            parts.push("RST".to_owned());
        }
        parts.join("|")
    }
}

/// The version (supported_versions if present), the suite and the key
/// share's group of a ServerHello body.
fn server_hello(body: &[u8]) -> (u16, u16, Option<u16>) {
    let mut version = u16::from_be_bytes([body[0], body[1]]);
    let sid = usize::from(body[34]);
    let at = 35 + sid;
    let suite = u16::from_be_bytes([body[at], body[at + 1]]);
    let mut share = None;
    let mut rest = body.get(at + 5..).unwrap_or_default(); // after suite, compression and the extensions' length
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let data = &rest[4..4 + len];
        match kind {
            ext::SUPPORTED_VERSIONS => version = u16::from_be_bytes([data[0], data[1]]),
            ext::KEY_SHARE => share = Some(u16::from_be_bytes([data[0], data[1]])),
            _ => {}
        }
        rest = &rest[4 + len..];
    }
    (version, suite, share)
}

fn message_name(kind: u8) -> &'static str {
    match kind {
        2 => "SH",
        4 => "NST",
        8 => "EE",
        11 => "Cert",
        12 => "SKE",
        13 => "CR",
        14 => "SHD",
        15 => "CV",
        20 => "Fin",
        22 => "Status",
        _ => "?",
    }
}

/// A version's name.
pub fn version_name(v: u16) -> String {
    match v {
        TLS10 => "TLSv1.0".into(),
        TLS11 => "TLSv1.1".into(),
        TLS12 => "TLSv1.2".into(),
        TLS13 => "TLSv1.3".into(),
        v => format!("{v:#06x}"),
    }
}

/// A group's name.
pub fn group_name(g: u16) -> String {
    match g {
        X25519 => "X25519".into(),
        P256 => "P-256".into(),
        P384 => "P-384".into(),
        P521 => "P-521".into(),
        X448 => "X448".into(),
        X25519MLKEM768 => "X25519MLKEM768".into(),
        g => format!("{g:#06x}"),
    }
}

/// A suite's name: the IANA name for the suites rustls or nginx choose.
pub fn suite_name(s: u16) -> String {
    rustls::CipherSuite::from(s).as_str().map(str::to_owned).unwrap_or_else(|| format!("{s:#06x}"))
}

/// An alert description's name (the IANA registry's).
pub fn alert_name(d: u8) -> String {
    let name = match d {
        10 => "unexpected_message",
        20 => "bad_record_mac",
        40 => "handshake_failure",
        47 => "illegal_parameter",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        120 => "no_application_protocol",
        _ => "",
    };
    format!("{d} {name}").trim_end().to_owned()
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Alert { description, record } => {
                write!(f, "alert {} in a {} record", alert_name(*description), version_name(*record))
            }
            Outcome::Hello { version, suite, group } => {
                let group = group.map(group_name).unwrap_or_else(|| "-".into());
                write!(f, "{} {} {group}", version_name(*version), suite_name(*suite))
            }
            Outcome::Nothing => f.write_str("no answer"),
        }
    }
}

/// The signature algorithms of Chrome and Safari's BoringSSL (Safari adds a few).
const CHROME_SIGALGS: [u16; 8] = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601];

/// Chrome 131 and later (BoringSSL), its extensions in one of the orders
/// it shuffles them into, with GREASE, X25519MLKEM768 and an ECH GREASE.
pub fn chrome() -> Hello {
    let ech_grease = {
        let mut e = vec![0, 0x00, 0x01, 0x00, 0x01, 0x4f, 0x00, 0x20];
        e.extend([0x5a; 32]); // enc
        e.extend_from_slice(&len16(144));
        e.extend([0xa5; 144]); // payload
        e
    };
    Hello {
        version: TLS12,
        suites: vec![
            GREASE[0], 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
            0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
        ],
        extensions: vec![
            (GREASE[1], vec![]),
            (ext::SERVER_NAME, sni("localhost")),
            (ext::EXTENDED_MASTER_SECRET, vec![]),
            (ext::RENEGOTIATION_INFO, vec![0]),
            (ext::SUPPORTED_GROUPS, list(&[GREASE[2], X25519MLKEM768, X25519, P256, P384])),
            (ext::EC_POINT_FORMATS, vec![1, 0]),
            (ext::SESSION_TICKET, vec![]),
            (ext::ALPN, alpn(&["h2", "http/1.1"])),
            (ext::STATUS_REQUEST, vec![1, 0, 0, 0, 0]),
            (ext::SIGNATURE_ALGORITHMS, list(&CHROME_SIGALGS)),
            (ext::SCT, vec![]),
            (ext::KEY_SHARE, key_shares(&[GREASE[2], X25519MLKEM768, X25519])),
            (ext::PSK_MODES, vec![1, 1]),
            (ext::SUPPORTED_VERSIONS, versions(&[GREASE[3], TLS13, TLS12])),
            (ext::COMPRESS_CERTIFICATE, vec![2, 0, 2]),
            (ext::APPLICATION_SETTINGS, [len16(3).to_vec(), vec![2], b"h2".to_vec()].concat()),
            (ext::ECH, ech_grease),
            (GREASE[3], vec![0]),
        ],
    }
}

/// Firefox 13x (NSS): X25519MLKEM768 first, three key shares, ChaCha20 before AES-256.
pub fn firefox() -> Hello {
    Hello {
        version: TLS12,
        suites: vec![
            0x1301, 0x1303, 0x1302, 0xc02b, 0xc02f, 0xcca9, 0xcca8, 0xc02c, 0xc030, 0xc00a, 0xc009, 0xc013,
            0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
        ],
        extensions: vec![
            (ext::SERVER_NAME, sni("localhost")),
            (ext::EXTENDED_MASTER_SECRET, vec![]),
            (ext::RENEGOTIATION_INFO, vec![0]),
            (ext::SUPPORTED_GROUPS, list(&[X25519MLKEM768, X25519, P256, P384, P521, FFDHE[0], FFDHE[1]])),
            (ext::EC_POINT_FORMATS, vec![1, 0]),
            (ext::SESSION_TICKET, vec![]),
            (ext::ALPN, alpn(&["h2", "http/1.1"])),
            (ext::STATUS_REQUEST, vec![1, 0, 0, 0, 0]),
            (ext::DELEGATED_CREDENTIALS, list(&[0x0403, 0x0503, 0x0603, 0x0203])),
            (ext::SCT, vec![]),
            (ext::KEY_SHARE, key_shares(&[X25519MLKEM768, X25519, P256])),
            (ext::SUPPORTED_VERSIONS, versions(&[TLS13, TLS12])),
            (
                ext::SIGNATURE_ALGORITHMS,
                list(&[
                    0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0203, 0x0201,
                ]),
            ),
            (ext::PSK_MODES, vec![1, 1]),
            (ext::RECORD_SIZE_LIMIT, vec![0x40, 0x01]),
            (ext::COMPRESS_CERTIFICATE, vec![6, 0, 1, 0, 2, 0, 3]),
        ],
    }
}

/// Safari 18 (macOS 15): AES-256 before AES-128 in TLS 1.2, CBC and 3DES at the end, X25519 only.
pub fn safari() -> Hello {
    Hello {
        version: TLS12,
        suites: vec![
            GREASE[0], 0x1301, 0x1302, 0x1303, 0xc02c, 0xc02b, 0xcca9, 0xc030, 0xc02f, 0xcca8, 0xc00a,
            0xc009, 0xc014, 0xc013, 0x009d, 0x009c, 0x0035, 0x002f, 0xc008, 0xc012, 0x000a,
        ],
        extensions: vec![
            (GREASE[1], vec![]),
            (ext::SERVER_NAME, sni("localhost")),
            (ext::EXTENDED_MASTER_SECRET, vec![]),
            (ext::RENEGOTIATION_INFO, vec![0]),
            (ext::SUPPORTED_GROUPS, list(&[GREASE[2], X25519, P256, P384, P521])),
            (ext::EC_POINT_FORMATS, vec![1, 0]),
            (ext::ALPN, alpn(&["h2", "http/1.1"])),
            (ext::STATUS_REQUEST, vec![1, 0, 0, 0, 0]),
            (
                ext::SIGNATURE_ALGORITHMS,
                list(&[0x0403, 0x0804, 0x0401, 0x0503, 0x0203, 0x0805, 0x0501, 0x0806, 0x0601, 0x0201]),
            ),
            (ext::SCT, vec![]),
            (ext::KEY_SHARE, key_shares(&[GREASE[2], X25519])),
            (ext::PSK_MODES, vec![1, 1]),
            (ext::SUPPORTED_VERSIONS, versions(&[GREASE[3], TLS13, TLS12, TLS11, TLS10])),
            (ext::COMPRESS_CERTIFICATE, vec![2, 0, 1]),
            (GREASE[3], vec![0]),
        ],
    }
}

/// curl with OpenSSL 3.0's defaults: AES-256 first, X25519's key share, ALPN h2 and http/1.1.
pub fn curl() -> Hello {
    Hello {
        version: TLS12,
        suites: vec![
            0x1302, 0x1303, 0x1301, 0xc02c, 0xc030, 0x009f, 0xcca9, 0xcca8, 0xccaa, 0xc02b, 0xc02f, 0x009e,
            0xc024, 0xc028, 0x006b, 0xc023, 0xc027, 0x0067, 0xc00a, 0xc014, 0x0039, 0xc009, 0xc013, 0x0033,
            0x009d, 0x009c, 0x003d, 0x003c, 0x0035, 0x002f, 0x00ff,
        ],
        extensions: vec![
            (ext::SERVER_NAME, sni("localhost")),
            (ext::EC_POINT_FORMATS, vec![3, 0, 1, 2]),
            (
                ext::SUPPORTED_GROUPS,
                list(&[X25519, P256, X448, P521, P384, FFDHE[0], FFDHE[1], FFDHE[2], FFDHE[3], FFDHE[4]]),
            ),
            (ext::SESSION_TICKET, vec![]),
            (ext::ALPN, alpn(&["h2", "http/1.1"])),
            (ext::ENCRYPT_THEN_MAC, vec![]),
            (ext::EXTENDED_MASTER_SECRET, vec![]),
            (
                ext::SIGNATURE_ALGORITHMS,
                list(&[
                    0x0403, 0x0503, 0x0603, 0x0807, 0x0808, 0x081a, 0x081b, 0x081c, 0x0809, 0x080a, 0x080b,
                    0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0303, 0x0301, 0x0302, 0x0402, 0x0502,
                    0x0602,
                ]),
            ),
            (ext::SUPPORTED_VERSIONS, versions(&[TLS13, TLS12])),
            (ext::PSK_MODES, vec![1, 1]),
            (ext::KEY_SHARE, key_shares(&[X25519])),
        ],
    }
}

/// A client that speaks TLS 1.0 or 1.1 at most (`version`), as OpenSSL's
/// s_client with `-tls1_1` sends it: CBC suites, no signature_algorithms.
pub fn legacy(version: u16) -> Hello {
    Hello {
        version,
        suites: vec![0xc00a, 0xc014, 0x0039, 0xc009, 0xc013, 0x0033, 0x0035, 0x002f, 0x00ff],
        extensions: vec![
            (ext::SERVER_NAME, sni("localhost")),
            (ext::EC_POINT_FORMATS, vec![3, 0, 1, 2]),
            (ext::SUPPORTED_GROUPS, list(&[X25519, P256, X448, P521, P384])),
            (ext::SESSION_TICKET, vec![]),
            (ext::ENCRYPT_THEN_MAC, vec![]),
            (ext::EXTENDED_MASTER_SECRET, vec![]),
        ],
    }
}

/// A TLS 1.2 client that offers only CBC suites (SHA-1 and SHA-2 MACs).
pub fn cbc_only() -> Hello {
    let mut hello = curl().tls12_only();
    hello.suites =
        vec![0xc024, 0xc028, 0xc023, 0xc027, 0xc00a, 0xc014, 0xc009, 0xc013, 0x003d, 0x003c, 0x0035, 0x002f];
    hello
}

/// curl's hello with only P-521 as its group and key share.
pub fn p521_only() -> Hello {
    curl().with(ext::SUPPORTED_GROUPS, Some(list(&[P521]))).with(ext::KEY_SHARE, Some(key_shares(&[P521])))
}
