//! The header blocking-local sends blocking-server inside TLS, before the payload.
//!
//! Two formats. Seed format (the default), byte-compatible with the original
//! Python local and server:
//!
//! ```text
//! +------+-----+----------------------+----------+-----------
//! | ATYP | LEN | ADDR                 | PORT     | payload…
//! |  1   |  1  | 4 / LEN / 16 bytes   | 2, BE    |
//! +------+-----+----------------------+----------+-----------
//! ```
//!
//! LEN is present for every type. For IPv4 and IPv6 the writer puts 0 and the
//! reader ignores it, as the original does.
//!
//! Trojan format (with a password), interoperable with trojan clients and servers:
//!
//! ```text
//! hex(SHA224(password))  CRLF  CMD  ATYP  DST.ADDR  DST.PORT  CRLF  payload…
//! 56 ASCII hex bytes     2     1    1     SOCKS5    2, BE     2
//! ```
//!
//! Pure functions over `Read` and `Vec<u8>`; every read is exact, so bytes
//! after the header stay unread.

use std::fmt;
use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::escape::Escaped;
use crate::Error;

/// Address type: IPv4, four bytes follow.
pub const ATYP_IPV4: u8 = 0x01;
/// Address type: a domain name, LEN bytes follow.
pub const ATYP_DOMAIN: u8 = 0x03;
/// Address type: IPv6, sixteen bytes follow.
pub const ATYP_IPV6: u8 = 0x04;

/// Length of a trojan password hash: SHA-224 in lowercase hex.
pub const TROJAN_HASH_LEN: usize = 56;
/// A trojan password hash as it appears on the wire.
pub type TrojanHash = [u8; TROJAN_HASH_LEN];
/// Trojan command: CONNECT.
pub const TROJAN_CMD_CONNECT: u8 = 0x01;
/// Trojan command: UDP ASSOCIATE (not served).
pub const TROJAN_CMD_UDP_ASSOCIATE: u8 = 0x03;
const CRLF: &[u8; 2] = b"\r\n";

/// Where a connection should go: an address, or a name for the server to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An IPv4 or IPv6 address and port.
    Ip(SocketAddr),
    /// A domain name (1 to 255 bytes) and port, resolved only by the server.
    Domain(String, u16),
}

impl Target {
    /// The port to connect to.
    pub fn port(&self) -> u16 {
        match self {
            Target::Ip(a) => a.port(),
            Target::Domain(_, p) => *p,
        }
    }
}

impl Target {
    /// Parses `host:port`, `a.b.c.d:port` or `[v6]:port`, without resolving names.
    pub fn parse(s: &str) -> Option<Target> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Some(Target::Ip(a));
        }
        let (host, port) = s.rsplit_once(':')?;
        let port = port.parse().ok()?;
        if host.is_empty() || host.len() > 255 || host.contains(':') {
            return None;
        }
        Some(Target::Domain(host.to_owned(), port))
    }

    /// The host part: the name, or the address without brackets.
    pub fn host(&self) -> String {
        match self {
            Target::Ip(a) => a.ip().to_string(),
            Target::Domain(name, _) => name.clone(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Ip(a) => write!(f, "{a}"),
            // The name is the peer's: escaped, so that it stays one field of a log line.
            Target::Domain(name, port) => write!(f, "{}:{port}", Escaped(name)),
        }
    }
}

/// Appends the seed header for `target` to `out`.
pub fn encode_seed(target: &Target, out: &mut Vec<u8>) {
    match target {
        Target::Ip(SocketAddr::V4(a)) => {
            out.extend_from_slice(&[ATYP_IPV4, 0]);
            out.extend_from_slice(&a.ip().octets());
        }
        Target::Ip(SocketAddr::V6(a)) => {
            out.extend_from_slice(&[ATYP_IPV6, 0]);
            out.extend_from_slice(&a.ip().octets());
        }
        Target::Domain(name, _) => {
            // A SOCKS5 name is at most 255 bytes, so the length always fits.
            out.extend_from_slice(&[ATYP_DOMAIN, name.len() as u8]);
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.extend_from_slice(&target.port().to_be_bytes());
}

/// Appends an address as SOCKS5 writes it: ATYP, address (a length byte
/// before a name, none before an IP), port.
pub fn encode_socks_addr(target: &Target, out: &mut Vec<u8>) {
    match target {
        Target::Ip(SocketAddr::V4(a)) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&a.ip().octets());
        }
        Target::Ip(SocketAddr::V6(a)) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&a.ip().octets());
        }
        Target::Domain(name, _) => {
            out.extend_from_slice(&[ATYP_DOMAIN, name.len() as u8]);
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.extend_from_slice(&target.port().to_be_bytes());
}

/// Reads the rest of a SOCKS5-style address whose ATYP byte was `atyp`.
/// `Ok(None)` means the address type is unknown (nothing more was read).
pub fn read_socks_addr<R: Read>(r: &mut R, atyp: u8) -> Result<Option<Target>, Error> {
    let target = match atyp {
        ATYP_IPV4 => {
            let mut a = [0u8; 4];
            r.read_exact(&mut a)?;
            Target::Ip(SocketAddr::from((Ipv4Addr::from(a), read_port(r)?)))
        }
        ATYP_IPV6 => {
            let mut a = [0u8; 16];
            r.read_exact(&mut a)?;
            Target::Ip(SocketAddr::from((Ipv6Addr::from(a), read_port(r)?)))
        }
        ATYP_DOMAIN => {
            let mut len = [0u8; 1];
            r.read_exact(&mut len)?;
            let name = read_domain(r, len[0])?;
            Target::Domain(name, read_port(r)?)
        }
        _ => return Ok(None),
    };
    Ok(Some(target))
}

/// The trojan hash of a password: lowercase hex of its SHA-224.
pub fn trojan_hash(password: &str) -> TrojanHash {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA224, password.as_bytes());
    let mut out = [0u8; TROJAN_HASH_LEN];
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest.as_ref()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends a trojan CONNECT header for `target`.
pub fn encode_trojan(hash: &TrojanHash, target: &Target, out: &mut Vec<u8>) {
    out.extend_from_slice(hash);
    out.extend_from_slice(CRLF);
    out.push(TROJAN_CMD_CONNECT);
    encode_socks_addr(target, out);
    out.extend_from_slice(CRLF);
}

/// Reads one trojan header and checks its hash against `known`.
///
/// Stops at the first byte that cannot belong to a hash (a TLS prober's
/// `GET /`, a seed header), so such clients are handed over at once. Once 56
/// hex bytes are in, they are compared with every known hash in constant
/// time: how long a wrong password takes does not depend on how much of it
/// matched.
pub fn read_trojan<R: Read>(r: &mut R, known: &[TrojanHash]) -> Result<Target, Error> {
    let mut hash = [0u8; TROJAN_HASH_LEN];
    for i in 0..TROJAN_HASH_LEN {
        r.read_exact(&mut hash[i..=i])?;
        if !HEX.contains(&hash[i]) {
            return Err(Error::Protocol("not a trojan header"));
        }
    }
    if !trojan_hash_known(&hash, known) {
        return Err(Error::Protocol("wrong password"));
    }
    let mut head = [0u8; 4];
    r.read_exact(&mut head)?;
    if &head[..2] != CRLF {
        return Err(Error::Protocol("malformed trojan header"));
    }
    if head[2] != TROJAN_CMD_CONNECT {
        return Err(Error::Protocol("only CONNECT is served"));
    }
    let target = read_socks_addr(r, head[3])?.ok_or(Error::Protocol("unknown address type in header"))?;
    let mut end = [0u8; 2];
    r.read_exact(&mut end)?;
    if &end != CRLF {
        return Err(Error::Protocol("malformed trojan header"));
    }
    Ok(target)
}

/// Whether `seen` starts with one of the `known` hashes (compared in constant time).
pub fn trojan_hash_known(seen: &[u8], known: &[TrojanHash]) -> bool {
    let Some(hash) = seen.get(..TROJAN_HASH_LEN) else { return false };
    let mut matched = false;
    for k in known {
        matched |= constant_time_eq(k, hash);
    }
    matched
}

/// Compares two byte strings in time that depends only on their length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

/// Reads one seed header, exactly its bytes and no more.
pub fn read_seed<R: Read>(r: &mut R) -> Result<Target, Error> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head)?;
    let [atyp, len] = head;
    match atyp {
        ATYP_IPV4 => {
            let mut a = [0u8; 4];
            r.read_exact(&mut a)?;
            Ok(Target::Ip(SocketAddr::from((Ipv4Addr::from(a), read_port(r)?))))
        }
        ATYP_IPV6 => {
            let mut a = [0u8; 16];
            r.read_exact(&mut a)?;
            Ok(Target::Ip(SocketAddr::from((Ipv6Addr::from(a), read_port(r)?))))
        }
        ATYP_DOMAIN => {
            let name = read_domain(r, len)?;
            Ok(Target::Domain(name, read_port(r)?))
        }
        _ => Err(Error::Protocol("unknown address type in header")),
    }
}

/// Reads a big-endian port.
pub(crate) fn read_port<R: Read>(r: &mut R) -> io::Result<u16> {
    let mut p = [0u8; 2];
    r.read_exact(&mut p)?;
    Ok(u16::from_be_bytes(p))
}

/// Reads a domain name of `len` bytes; it must be non-empty UTF-8 without
/// control characters. Other text (spaces, U+2028) is passed on to the
/// resolver, which refuses it; logs write it escaped (see [`Escaped`]).
pub(crate) fn read_domain<R: Read>(r: &mut R, len: u8) -> Result<String, Error> {
    if len == 0 {
        return Err(Error::Protocol("empty domain name"));
    }
    let mut name = [0u8; 255];
    let name = &mut name[..usize::from(len)];
    r.read_exact(name)?;
    match std::str::from_utf8(name) {
        Ok(s) if !s.chars().any(char::is_control) => Ok(s.to_owned()),
        _ => Err(Error::Protocol("domain name is not text")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socks5::tests::OneByte;

    fn roundtrip(t: Target) {
        let mut buf = Vec::new();
        encode_seed(&t, &mut buf);
        buf.extend_from_slice(b"payload");
        let mut r = OneByte(&buf[..]);
        assert_eq!(read_seed(&mut r).unwrap(), t);
        let mut rest = Vec::new();
        r.0.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"payload", "bytes after the header stay unread");
    }

    #[test]
    fn every_address_type_roundtrips_one_byte_at_a_time() {
        roundtrip(Target::Ip("10.1.2.3:80".parse().unwrap()));
        roundtrip(Target::Ip("[2001:db8::1]:443".parse().unwrap()));
        roundtrip(Target::Domain("example.com".into(), 8080));
        roundtrip(Target::Domain("a".repeat(255), 1));
    }

    #[test]
    fn seed_bytes_match_the_original() {
        let mut buf = Vec::new();
        encode_seed(&Target::Domain("example.com".into(), 443), &mut buf);
        assert_eq!(buf, b"\x03\x0bexample.com\x01\xbb");
        buf.clear();
        encode_seed(&Target::Ip("1.2.3.4:80".parse().unwrap()), &mut buf);
        assert_eq!(buf, [1, 0, 1, 2, 3, 4, 0, 80]);
    }

    #[test]
    fn any_len_is_accepted_for_ip_addresses() {
        let t = read_seed(&mut &[1, 9, 127, 0, 0, 1, 0, 80][..]).unwrap();
        assert_eq!(t, Target::Ip("127.0.0.1:80".parse().unwrap()));
    }

    #[test]
    fn trojan_hash_is_hex_sha224() {
        // SHA-224("password"), as trojan computes it.
        assert_eq!(&trojan_hash("password"), b"d63dc919e201d7bc4c825630d2cf25fdc93d4b2f0d46706d29038d01");
    }

    #[test]
    fn trojan_header_roundtrips_one_byte_at_a_time() {
        let known = [trojan_hash("other"), trojan_hash("secret")];
        for t in [
            Target::Domain("example.com".into(), 443),
            Target::Ip("10.0.0.1:22".parse().unwrap()),
            Target::Ip("[::1]:8080".parse().unwrap()),
        ] {
            let mut buf = Vec::new();
            encode_trojan(&trojan_hash("secret"), &t, &mut buf);
            buf.extend_from_slice(b"GET /");
            let mut r = OneByte(&buf[..]);
            assert_eq!(read_trojan(&mut r, &known).unwrap(), t);
            let mut rest = Vec::new();
            r.0.read_to_end(&mut rest).unwrap();
            assert_eq!(rest, b"GET /");
        }
    }

    #[test]
    fn trojan_bytes_match_the_format() {
        let mut buf = Vec::new();
        encode_trojan(&trojan_hash("password"), &Target::Domain("a.io".into(), 80), &mut buf);
        let mut want = b"d63dc919e201d7bc4c825630d2cf25fdc93d4b2f0d46706d29038d01\r\n".to_vec();
        want.extend_from_slice(b"\x01\x03\x04a.io\x00\x50\r\n");
        assert_eq!(buf, want);
    }

    #[test]
    fn trojan_rejects_what_is_not_a_valid_header() {
        let known = [trojan_hash("secret")];
        let err = |input: &[u8]| match read_trojan(&mut &input[..], &known) {
            Err(Error::Protocol(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), "not a trojan header");
        assert_eq!(err(&[3, 9, b'l']), "not a trojan header");
        let mut wrong = Vec::new();
        encode_trojan(&trojan_hash("guess"), &Target::Domain("a.io".into(), 80), &mut wrong);
        assert_eq!(err(&wrong), "wrong password");
        let mut udp = Vec::new();
        encode_trojan(&trojan_hash("secret"), &Target::Domain("a.io".into(), 80), &mut udp);
        udp[58] = TROJAN_CMD_UDP_ASSOCIATE;
        assert_eq!(err(&udp), "only CONNECT is served");
        let mut bad_end = Vec::new();
        encode_trojan(&trojan_hash("secret"), &Target::Domain("a.io".into(), 80), &mut bad_end);
        let n = bad_end.len();
        bad_end[n - 1] = b'x';
        assert_eq!(err(&bad_end), "malformed trojan header");
        // Cut short: an I/O error (the caller's deadline), not a verdict.
        assert!(matches!(read_trojan(&mut &wrong[..30], &known), Err(Error::Io(_))));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn bad_headers_are_errors() {
        assert!(matches!(read_seed(&mut &[2, 0, 0, 0][..]), Err(Error::Protocol(_))));
        assert!(matches!(read_seed(&mut &[3, 0, 0, 80][..]), Err(Error::Protocol(_))));
        assert!(matches!(read_seed(&mut &[3, 2, 0xff, 0xfe, 0, 80][..]), Err(Error::Protocol(_))));
        assert!(
            matches!(read_seed(&mut &b"\x03\x03a\nb\x00\x50"[..]), Err(Error::Protocol(_))),
            "no newline"
        );
        assert!(matches!(read_seed(&mut &[1, 0, 127, 0][..]), Err(Error::Io(_))));
        assert!(matches!(read_seed(&mut &[][..]), Err(Error::Io(_))));
    }
}
