//! The PROXY protocol header (HAProxy's "PROXY protocol", versions 1 and 2)
//! that a load balancer sends before a connection's own bytes, to say whom
//! the connection really comes from.
//!
//! Version 1 is one line of text, at most 107 bytes with its CRLF:
//!
//! ```text
//! PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n
//! PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n
//! PROXY UNKNOWN …\r\n
//! ```
//!
//! Version 2 is binary: a 12-byte signature, a version and command byte, an
//! address family and protocol byte, a 2-byte length, then the addresses and
//! optional TLVs (which are skipped):
//!
//! ```text
//! \r\n\r\n\0\r\nQUIT\n  0x2C  0xAF  LEN(2, BE)  SRC DST SPORT DPORT  TLVs…
//! ```
//!
//! Both are read with exact reads and a length limit, so bytes after the
//! header stay unread. `LOCAL` (version 2's health checks) and `UNKNOWN`
//! (version 1) carry no client address.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::Error;

/// The signature that starts a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The start of a version 1 header.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest version 1 header, CRLF included (the specification's bound).
pub const V1_MAX: usize = 107;
/// The most address and TLV bytes a version 2 header may carry here.
pub const V2_MAX_LEN: usize = 1024;

/// Version 2 command: the connection was relayed for a client.
const V2_CMD_PROXY: u8 = 0x1;
/// Version 2 command: the balancer's own connection (a health check).
const V2_CMD_LOCAL: u8 = 0x0;
/// Version 2 family and protocol: TCP over IPv4, and over IPv6.
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;

/// What a header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// The connection was relayed for `source`, which connected to `destination`.
    Proxied {
        /// The client's address: what logs and limits should use.
        source: SocketAddr,
        /// The address the client connected to, at the balancer.
        destination: SocketAddr,
    },
    /// The balancer's own connection, or one it cannot describe: the
    /// connection's own address stands.
    Local,
}

fn bad(why: &'static str) -> Error {
    Error::Protocol(why)
}

/// Reads one header, version 1 or 2, exactly its bytes.
pub fn read<R: Read>(r: &mut R) -> Result<Header, Error> {
    let mut first = [0u8; 1];
    r.read_exact(&mut first)?;
    match first[0] {
        b'P' => read_v1(r),
        b'\r' => read_v2(r),
        _ => Err(bad("no PROXY protocol header")),
    }
}

/// Version 1, after its first byte.
fn read_v1<R: Read>(r: &mut R) -> Result<Header, Error> {
    let mut line = Vec::with_capacity(V1_MAX);
    line.push(b'P');
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() == V1_MAX {
            return Err(bad("PROXY v1 header too long"));
        }
        r.read_exact(&mut byte)?;
        line.push(byte[0]);
        if line.len() <= V1_PREFIX.len() && line[..] != V1_PREFIX[..line.len()] {
            return Err(bad("no PROXY protocol header"));
        }
    }
    let text = std::str::from_utf8(&line[V1_PREFIX.len()..line.len() - 2])
        .map_err(|_| bad("PROXY v1 header is not text"))?;
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["UNKNOWN", ..] => Ok(Header::Local),
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Result<IpAddr, Error> {
                let ip: IpAddr = s.parse().map_err(|_| bad("bad address in PROXY v1 header"))?;
                match (*family, ip) {
                    ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => Err(bad("address of the wrong family in PROXY v1 header")),
                }
            };
            let port = |s: &str| -> Result<u16, Error> {
                // No sign, no leading zero: the specification's decimal form.
                let plain = !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && (s == "0" || !s.starts_with('0'));
                s.parse().ok().filter(|_| plain).ok_or(bad("bad port in PROXY v1 header"))
            };
            Ok(Header::Proxied {
                source: SocketAddr::new(ip(src)?, port(sport)?),
                destination: SocketAddr::new(ip(dst)?, port(dport)?),
            })
        }
        _ => Err(bad("malformed PROXY v1 header")),
    }
}

/// Version 2, after its first byte.
fn read_v2<R: Read>(r: &mut R) -> Result<Header, Error> {
    let mut head = [0u8; 15];
    r.read_exact(&mut head)?;
    if head[..11] != V2_SIGNATURE[1..] {
        return Err(bad("no PROXY protocol header"));
    }
    let (ver_cmd, family) = (head[11], head[12]);
    let len = usize::from(u16::from_be_bytes([head[13], head[14]]));
    if ver_cmd >> 4 != 2 {
        return Err(bad("PROXY v2 header of another version"));
    }
    if len > V2_MAX_LEN {
        return Err(bad("PROXY v2 header too long"));
    }
    let mut body = [0u8; V2_MAX_LEN];
    let body = &mut body[..len];
    r.read_exact(body)?;
    match ver_cmd & 0x0f {
        V2_CMD_LOCAL => return Ok(Header::Local),
        V2_CMD_PROXY => {}
        _ => return Err(bad("PROXY v2 header with an unknown command")),
    }
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match family {
        V2_TCP4 if len >= 12 => {
            let ip =
                |at: usize| IpAddr::V4(Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3]));
            Ok(Header::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            })
        }
        V2_TCP6 if len >= 36 => {
            let ip = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&body[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            Ok(Header::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            })
        }
        V2_TCP4 | V2_TCP6 => Err(bad("PROXY v2 addresses cut short")),
        // UNSPEC, UDP, UNIX: nothing this server can use; its own address stands.
        _ => Ok(Header::Local),
    }
}

/// Appends a version 2 header saying that `source` connected to `destination`
/// (both of one family), as a server sends one to its fallback.
pub fn write_v2(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x20 | V2_CMD_PROXY);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.extend_from_slice(&[V2_TCP4, 0, 12]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
        }
        _ => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.extend_from_slice(&[V2_TCP6, 0, 36]);
            out.extend_from_slice(&v6(source).octets());
            out.extend_from_slice(&v6(destination).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testing::OneByte;

    fn read_all(input: &[u8]) -> (Result<Header, Error>, Vec<u8>) {
        let mut r = OneByte(input);
        let got = read(&mut r);
        let mut rest = Vec::new();
        r.0.read_to_end(&mut rest).unwrap();
        (got, rest)
    }

    fn proxied(src: &str, dst: &str) -> Header {
        Header::Proxied { source: src.parse().unwrap(), destination: dst.parse().unwrap() }
    }

    #[test]
    fn version_1_one_byte_at_a_time_leaves_what_follows() {
        let (got, rest) = read_all(b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n\x16\x03\x01");
        assert_eq!(got.unwrap(), proxied("192.0.2.1:56324", "198.51.100.1:443"));
        assert_eq!(rest, b"\x16\x03\x01");
        let (got, _) = read_all(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n");
        assert_eq!(got.unwrap(), proxied("[2001:db8::1]:1", "[2001:db8::2]:65535"));
        let (got, rest) = read_all(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nX");
        assert_eq!(got.unwrap(), Header::Local);
        assert_eq!(rest, b"X");
    }

    #[test]
    fn version_2_one_byte_at_a_time_with_tlvs_leaves_what_follows() {
        for (src, dst) in [("192.0.2.1:56324", "198.51.100.1:443"), ("[2001:db8::1]:5", "[2001:db8::2]:443")]
        {
            let mut h = Vec::new();
            write_v2(src.parse().unwrap(), dst.parse().unwrap(), &mut h);
            // A TLV (type 0x04, NOOP) the reader skips: the length grows by its size.
            let extra = [0x04, 0, 2, 0xaa, 0xbb];
            let len = u16::from_be_bytes([h[14], h[15]]) + extra.len() as u16;
            h[14..16].copy_from_slice(&len.to_be_bytes());
            h.extend_from_slice(&extra);
            h.extend_from_slice(b"after");
            let (got, rest) = read_all(&h);
            assert_eq!(got.unwrap(), proxied(src, dst));
            assert_eq!(rest, b"after");
        }
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        local.push(b'Z');
        let (got, rest) = read_all(&local);
        assert_eq!(got.unwrap(), Header::Local, "LOCAL: a health check");
        assert_eq!(rest, b"Z");
    }

    #[test]
    fn anything_else_is_refused_and_cut_short_is_an_io_error() {
        let refused = |input: &[u8]| matches!(read_all(input).0, Err(Error::Protocol(_)));
        assert!(refused(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(refused(b"PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n"));
        assert!(refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"));
        assert!(refused(b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n"));
        assert!(refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"));
        assert!(refused(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"));
        assert!(refused(&[b"PROXY ".as_slice(), &[b'x'; 200]].concat()), "longer than 107 bytes");
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(refused(&v2), "addresses cut short");
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(refused(&big), "longer than the limit");
        let mut v3 = V2_SIGNATURE.to_vec();
        v3.extend_from_slice(&[0x31, 0x11, 0, 0]);
        assert!(refused(&v3));
        let full = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n";
        for cut in 0..full.len() {
            assert!(matches!(read_all(&full[..cut]).0, Err(Error::Io(_))), "cut at {cut}");
        }
    }
}
