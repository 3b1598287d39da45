//! The address a client asks to reach, as SOCKS5 writes it (RFC 1928,
//! section 5): shared by SOCKS5 requests, the seed header and the trojan
//! header, with one set of address types, one reader and one writer.
//!
//! ```text
//! +------+----------------------------+----------+
//! | ATYP | DST.ADDR                   | DST.PORT |
//! |  1   | 4 / 1 + LEN / 16 bytes     | 2, BE    |
//! +------+----------------------------+----------+
//! ```
//!
//! SOCKS5 and trojan put a length byte only before a name. The seed header
//! puts one before every address ([`Layout::Seed`]): 0 before an IP, which a
//! reader ignores.

use std::fmt;
use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::Error;
use crate::text::Escaped;

/// Address type: IPv4, four bytes follow.
pub const ATYP_IPV4: u8 = 0x01;
/// Address type: a fully-qualified domain name, a length byte and the name follow.
pub const ATYP_DOMAINNAME: u8 = 0x03;
/// Address type: IPv6, sixteen bytes follow.
pub const ATYP_IPV6: u8 = 0x04;

/// Where a length byte goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Before a name only (SOCKS5, trojan).
    Socks,
    /// Before every address, 0 before an IP (the seed header).
    Seed,
}

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

/// Appends `target`: ATYP, the address (with its length byte as `layout`
/// says), the port.
pub fn write(target: &Target, layout: Layout, out: &mut Vec<u8>) {
    let seed_len = |out: &mut Vec<u8>| {
        if layout == Layout::Seed {
            out.push(0);
        }
    };
    match target {
        Target::Ip(SocketAddr::V4(a)) => {
            out.push(ATYP_IPV4);
            seed_len(out);
            out.extend_from_slice(&a.ip().octets());
        }
        Target::Ip(SocketAddr::V6(a)) => {
            out.push(ATYP_IPV6);
            seed_len(out);
            out.extend_from_slice(&a.ip().octets());
        }
        Target::Domain(name, _) => {
            // A name is at most 255 bytes (Target::parse and `read` see to it).
            out.extend_from_slice(&[ATYP_DOMAINNAME, name.len() as u8]);
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.extend_from_slice(&target.port().to_be_bytes());
}

/// Reads the rest of an address whose ATYP byte was `atyp`, exactly its
/// bytes. `Ok(None)` means the address type is unknown (nothing more was read).
pub fn read<R: Read>(r: &mut R, atyp: u8, layout: Layout) -> Result<Option<Target>, Error> {
    if !matches!(atyp, ATYP_IPV4 | ATYP_IPV6 | ATYP_DOMAINNAME) {
        return Ok(None);
    }
    let mut len = [0u8; 1];
    if layout == Layout::Seed || atyp == ATYP_DOMAINNAME {
        r.read_exact(&mut len)?;
    }
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
        _ => {
            let name = read_domain(r, len[0])?;
            Target::Domain(name, read_port(r)?)
        }
    };
    Ok(Some(target))
}

/// Reads a big-endian port.
fn read_port<R: Read>(r: &mut R) -> io::Result<u16> {
    let mut p = [0u8; 2];
    r.read_exact(&mut p)?;
    Ok(u16::from_be_bytes(p))
}

/// Reads a domain name of `len` bytes, which must be a [`host_name`].
fn read_domain<R: Read>(r: &mut R, len: u8) -> Result<String, Error> {
    if len == 0 {
        return Err(Error::Protocol("empty domain name"));
    }
    let mut name = [0u8; 255];
    let name = &mut name[..usize::from(len)];
    r.read_exact(name)?;
    host_name(name).map(str::to_owned).ok_or(Error::Protocol("domain name is not text"))
}

/// `name` as a host name every protocol accepts (SOCKS5, SOCKS4a, the
/// wire headers): non-empty UTF-8 without control characters, or None.
/// Other text (spaces, U+2028) is passed on to the resolver, which refuses
/// it; logs write it escaped (see [`Escaped`]). A name the local lets
/// through is one the server takes, so a client's bad name is refused at
/// the local and never reaches a server.
pub fn host_name(name: &[u8]) -> Option<&str> {
    std::str::from_utf8(name).ok().filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testing::OneByte;

    #[test]
    fn every_address_type_roundtrips_in_both_layouts_one_byte_at_a_time() {
        for layout in [Layout::Socks, Layout::Seed] {
            for t in [
                Target::Ip("10.1.2.3:80".parse().unwrap()),
                Target::Ip("[2001:db8::1]:443".parse().unwrap()),
                Target::Domain("example.com".into(), 8080),
                Target::Domain("a".repeat(255), 1),
            ] {
                let mut buf = Vec::new();
                write(&t, layout, &mut buf);
                buf.extend_from_slice(b"rest");
                let mut r = OneByte(&buf[1..]);
                assert_eq!(read(&mut r, buf[0], layout).unwrap(), Some(t.clone()), "{layout:?}");
                let mut rest = Vec::new();
                r.0.read_to_end(&mut rest).unwrap();
                assert_eq!(rest, b"rest", "bytes after the address stay unread");
            }
        }
    }

    #[test]
    fn the_layouts_differ_by_one_length_byte_before_an_ip() {
        let t = Target::Ip("1.2.3.4:80".parse().unwrap());
        let (mut socks, mut seed) = (Vec::new(), Vec::new());
        write(&t, Layout::Socks, &mut socks);
        write(&t, Layout::Seed, &mut seed);
        assert_eq!(socks, [1, 1, 2, 3, 4, 0, 80]);
        assert_eq!(seed, [1, 0, 1, 2, 3, 4, 0, 80]);
    }

    #[test]
    fn an_unknown_type_reads_nothing_more() {
        let mut input = &[1u8, 2, 3][..];
        assert_eq!(read(&mut input, 2, Layout::Socks).unwrap(), None);
        assert_eq!(input, [1, 2, 3]);
    }

    #[test]
    fn targets_parse_without_resolving_and_print_names_escaped() {
        assert_eq!(Target::parse("example.com:443"), Some(Target::Domain("example.com".into(), 443)));
        assert_eq!(Target::parse("[::1]:80"), Some(Target::Ip("[::1]:80".parse().unwrap())));
        assert_eq!(Target::parse("nope"), None);
        assert_eq!(Target::parse("a:b:1"), None);
        assert_eq!(Target::Domain("x y".into(), 1).to_string(), "\"x y\":1");
        assert_eq!(Target::Ip("[::1]:80".parse().unwrap()).host(), "::1");
    }

    #[test]
    fn a_target_name_is_escaped_and_its_port_stays_outside_the_quotes() {
        let forged = "x.invalid:1 up=0 down=0 time=0.001s end=eof\u{2028}#9 closed client=127.0.0.1:9";
        assert_eq!(
            Target::Domain(forged.into(), 80).to_string(),
            r#""x.invalid:1 up=0 down=0 time=0.001s end=eof\u{2028}#9 closed client=127.0.0.1:9":80"#
        );
        assert_eq!(Target::Domain("example.com".into(), 443).to_string(), "example.com:443");
        assert_eq!(Target::Ip("[::1]:80".parse().unwrap()).to_string(), "[::1]:80");
    }
}
