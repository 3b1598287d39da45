//! The header blocking-local sends blocking-server inside TLS, before the payload.
//!
//! Seed format, byte-compatible with the original Python local and server:
//!
//! ```text
//! +------+-----+----------------------+----------+-----------
//! | ATYP | LEN | ADDR                 | PORT     | payload…
//! |  1   |  1  | 4 / LEN / 16 bytes   | 2, BE    |
//! +------+-----+----------------------+----------+-----------
//! ```
//!
//! LEN is present for every type. For IPv4 and IPv6 the writer puts 0 and the
//! reader ignores it, as the original does. Pure functions over `Read` and
//! `Vec<u8>`; every read is exact, so bytes after the header stay unread.

use std::fmt;
use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::Error;

/// Address type: IPv4, four bytes follow.
pub const ATYP_IPV4: u8 = 0x01;
/// Address type: a domain name, LEN bytes follow.
pub const ATYP_DOMAIN: u8 = 0x03;
/// Address type: IPv6, sixteen bytes follow.
pub const ATYP_IPV6: u8 = 0x04;

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
            Target::Domain(name, port) => write!(f, "{name}:{port}"),
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

/// Reads a domain name of `len` bytes; it must be non-empty UTF-8 without NUL.
pub(crate) fn read_domain<R: Read>(r: &mut R, len: u8) -> Result<String, Error> {
    if len == 0 {
        return Err(Error::Protocol("empty domain name"));
    }
    let mut name = [0u8; 255];
    let name = &mut name[..usize::from(len)];
    r.read_exact(name)?;
    match std::str::from_utf8(name) {
        Ok(s) if !s.contains('\0') => Ok(s.to_owned()),
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
    fn bad_headers_are_errors() {
        assert!(matches!(read_seed(&mut &[2, 0, 0, 0][..]), Err(Error::Protocol(_))));
        assert!(matches!(read_seed(&mut &[3, 0, 0, 80][..]), Err(Error::Protocol(_))));
        assert!(matches!(read_seed(&mut &[3, 2, 0xff, 0xfe, 0, 80][..]), Err(Error::Protocol(_))));
        assert!(matches!(read_seed(&mut &[1, 0, 127, 0][..]), Err(Error::Io(_))));
        assert!(matches!(read_seed(&mut &[][..]), Err(Error::Io(_))));
    }
}
