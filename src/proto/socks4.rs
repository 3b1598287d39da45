//! SOCKS4 and SOCKS4a as blocking-local speaks them to applications, for
//! the clients that still know only these (older tools, `curl --proxy
//! socks4a://`). Served on the same port as SOCKS5 and HTTP: the listener
//! tells them apart by the first byte (4).
//!
//! Pure over `Read + Write` so it can be tested without a socket. The fixed
//! part is read with one `read_exact`, the NUL-terminated USERID and (4a)
//! domain one byte at a time, each bounded, so bytes the application sends
//! right after its request stay unread for the relay.
//!
//! ```text
//! +----+----+----+----+----+----+----+----+----+....+----+ (4a) +----+....+----+
//! | VN | CD | DSTPORT |      DSTIP        | USERID  |NULL|      | DOMAIN  |NULL|
//! +----+----+----+----+----+----+----+----+----+....+----+      +----+....+----+
//!    1    1      2              4           variable    1        variable    1
//! ```
//!
//! Served: CONNECT to an IPv4 address, or (4a: DSTIP 0.0.0.x, x ≠ 0) to a
//! name the server resolves. SOCKS4 has no password and no IPv6: when users
//! are configured every SOCKS4 request is refused, and an IPv6 target cannot
//! even be asked for. BIND and anything else get [`REQUEST_REJECTED`].

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};

use crate::error::Error;
use crate::text::Escaped;

use super::addr::{host_name, Target};

/// VN of a request: the protocol version.
pub const SOCKS4_VERSION: u8 = 4;
/// VN of a reply: the version of the reply code, always 0.
pub const REPLY_VERSION: u8 = 0;

/// CD of a request: CONNECT.
pub const CMD_CONNECT: u8 = 1;
/// CD of a request: BIND.
pub const CMD_BIND: u8 = 2;

/// CD of a reply: request granted.
pub const REQUEST_GRANTED: u8 = 90;
/// CD of a reply: request rejected or failed.
pub const REQUEST_REJECTED: u8 = 91;

/// The longest USERID read, and the longest domain (as for SOCKS5).
pub const FIELD_MAX: usize = 255;

/// Reads a SOCKS4 or SOCKS4a request and returns the CONNECT target.
///
/// With `login_required` (users are configured; SOCKS4 has no password) a
/// well-formed request is refused. Bad input the protocol has a reply for
/// (BIND, an unknown command, a USERID too long, a domain too long or not a
/// [`host_name`] as SOCKS5 requires, a refusal) gets [`REQUEST_REJECTED`] here, after the whole request
/// has been read; a wrong version gets none. Either way the caller closes.
/// On success nothing is written: the caller replies with [`reply`] once it
/// knows whether the server could be reached.
pub fn accept<S: Read + Write>(s: &mut S, login_required: bool) -> Result<Target, Error> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head)?;
    let [vn, cd, p0, p1, a, b, c, d] = head;
    if vn != SOCKS4_VERSION {
        return Err(Error::Protocol("not socks4"));
    }
    let port = u16::from_be_bytes([p0, p1]);
    let ip = Ipv4Addr::new(a, b, c, d);
    let mut userid = [0u8; FIELD_MAX];
    let Some(userid) = read_nul_terminated(s, &mut userid)? else {
        reply(s, REQUEST_REJECTED)?;
        return Err(Error::Protocol("socks4 userid too long"));
    };
    // SOCKS4a: 0.0.0.x with x ≠ 0 says that a domain follows.
    let domain = if a == 0 && b == 0 && c == 0 && d != 0 {
        let mut name = [0u8; FIELD_MAX];
        let Some(name) = read_nul_terminated(s, &mut name)? else {
            reply(s, REQUEST_REJECTED)?;
            return Err(Error::Protocol("socks4a domain too long"));
        };
        match host_name(name) {
            Some(n) => Some(n.to_owned()),
            None => {
                reply(s, REQUEST_REJECTED)?;
                return Err(Error::Protocol("socks4a domain empty or not text"));
            }
        }
    } else {
        None
    };
    if cd != CMD_CONNECT {
        reply(s, REQUEST_REJECTED)?;
        return Err(Error::Protocol(if cd == CMD_BIND {
            "bind is not supported"
        } else {
            "unknown command"
        }));
    }
    if login_required {
        reply(s, REQUEST_REJECTED)?;
        let userid = String::from_utf8_lossy(userid);
        return Err(Error::Denied(format!(
            "socks4 has no password and users are configured (userid {})",
            Escaped(&userid)
        )));
    }
    Ok(match domain {
        Some(name) => Target::Domain(name, port),
        None => Target::Ip(SocketAddr::from((ip, port))),
    })
}

/// Reads bytes up to a NUL, one at a time, into `buf`; returns them without
/// the NUL, or None when `buf` fills before one comes (the rest is left unread).
fn read_nul_terminated<'b, R: Read>(r: &mut R, buf: &'b mut [u8]) -> io::Result<Option<&'b [u8]>> {
    let mut byte = [0u8; 1];
    for i in 0..=buf.len() {
        r.read_exact(&mut byte)?;
        if byte[0] == 0 {
            return Ok(Some(&buf[..i]));
        }
        match buf.get_mut(i) {
            Some(slot) => *slot = byte[0],
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// Writes a reply with code `cd`; DSTPORT and DSTIP are ignored by clients
/// of CONNECT and left zero (the real ones are on the server's side).
pub fn reply<W: Write + ?Sized>(w: &mut W, cd: u8) -> io::Result<()> {
    w.write_all(&[REPLY_VERSION, cd, 0, 0, 0, 0, 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testing::{Duplex, OneByte};

    fn run(input: &[u8], login_required: bool) -> (Result<Target, Error>, Vec<u8>, Vec<u8>) {
        let mut d = Duplex { input: OneByte(input), output: Vec::new() };
        let res = accept(&mut d, login_required);
        let mut rest = Vec::new();
        d.input.0.read_to_end(&mut rest).unwrap();
        (res, d.output, rest)
    }

    fn request(cd: u8, ip: [u8; 4], userid: &[u8], domain: Option<&[u8]>) -> Vec<u8> {
        let mut v = vec![4, cd, 0x1f, 0x90];
        v.extend_from_slice(&ip);
        v.extend_from_slice(userid);
        v.push(0);
        if let Some(d) = domain {
            v.extend_from_slice(d);
            v.push(0);
        }
        v
    }

    const REJECTED: [u8; 8] = [0, REQUEST_REJECTED, 0, 0, 0, 0, 0, 0];

    #[test]
    fn connect_ipv4_one_byte_at_a_time_with_coalesced_payload() {
        let mut input = request(CMD_CONNECT, [127, 0, 0, 1], b"someone", None);
        input.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
        let (res, out, rest) = run(&input, false);
        assert_eq!(res.unwrap(), Target::Ip("127.0.0.1:8080".parse().unwrap()));
        assert!(out.is_empty(), "nothing is written before the tunnel is up");
        assert_eq!(rest, b"GET / HTTP/1.0\r\n\r\n", "payload after the request is not consumed");
    }

    #[test]
    fn socks4a_names_a_domain_after_the_userid() {
        let mut input = request(CMD_CONNECT, [0, 0, 0, 1], b"", Some(b"example.com"));
        input.push(b'X');
        let (res, out, rest) = run(&input, false);
        assert_eq!(res.unwrap(), Target::Domain("example.com".into(), 8080));
        assert!(out.is_empty());
        assert_eq!(rest, b"X");
        // 0.0.0.0 is an address, not the 4a marker: nothing more is read.
        let mut input = request(CMD_CONNECT, [0, 0, 0, 0], b"", None);
        input.extend_from_slice(b"x\0");
        let (res, _, rest) = run(&input, false);
        assert_eq!(res.unwrap(), Target::Ip("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(rest, b"x\0");
    }

    #[test]
    fn the_longest_fields_pass_and_one_more_byte_is_rejected() {
        let max = vec![b'a'; FIELD_MAX];
        let (res, _, _) = run(&request(CMD_CONNECT, [0, 0, 0, 9], &max, Some(&max)), false);
        assert_eq!(res.unwrap(), Target::Domain("a".repeat(FIELD_MAX), 8080));

        let over = vec![b'a'; FIELD_MAX + 1];
        let (res, out, rest) = run(&request(CMD_CONNECT, [1, 2, 3, 4], &over, None), false);
        assert!(matches!(res, Err(Error::Protocol(_))), "{res:?}");
        assert_eq!(out, REJECTED);
        assert_eq!(rest, b"\0", "reading stops at the bound");

        let (res, out, _) = run(&request(CMD_CONNECT, [0, 0, 0, 1], b"u", Some(&over)), false);
        assert!(matches!(res, Err(Error::Protocol(_))), "{res:?}");
        assert_eq!(out, REJECTED);
    }

    #[test]
    fn an_empty_or_invalid_domain_is_rejected() {
        for name in [&b""[..], b"\xff\xfe", b"bad\x01name", b"tab\there", b"del\x7f", b"c1\xc2\x85"] {
            let (res, out, _) = run(&request(CMD_CONNECT, [0, 0, 0, 1], b"", Some(name)), false);
            assert!(matches!(res, Err(Error::Protocol(_))), "{res:?}");
            assert_eq!(out, REJECTED);
        }
    }

    #[test]
    fn bind_and_unknown_commands_get_91_after_the_whole_request() {
        for cd in [CMD_BIND, 0, 3, 0xff] {
            let (res, out, rest) = run(&request(cd, [0, 0, 0, 1], b"u", Some(b"h")), false);
            assert!(matches!(res, Err(Error::Protocol(_))), "{res:?}");
            assert_eq!(out, REJECTED);
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn with_users_configured_socks4_is_refused_and_the_userid_logged_escaped() {
        let (res, out, _) = run(&request(CMD_CONNECT, [1, 2, 3, 4], b"eve up=0\n#9", None), true);
        let Err(Error::Denied(why)) = res else { panic!("{res:?}") };
        assert_eq!(why, r#"socks4 has no password and users are configured (userid "eve up=0\u{a}#9")"#);
        assert_eq!(out, REJECTED);
    }

    #[test]
    fn wrong_version_gets_no_reply() {
        let (res, out, _) = run(&[5, 1, 0, 80, 1, 2, 3, 4, 0], false);
        assert!(matches!(res, Err(Error::Protocol(_))));
        assert!(out.is_empty());
    }

    #[test]
    fn truncated_input_is_an_io_error() {
        let full = request(CMD_CONNECT, [0, 0, 0, 1], b"user", Some(b"example.com"));
        for cut in 0..full.len() {
            let (res, out, _) = run(&full[..cut], false);
            assert!(matches!(res, Err(Error::Io(_))), "cut at {cut}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn replies_are_eight_bytes() {
        let mut out = Vec::new();
        reply(&mut out, REQUEST_GRANTED).unwrap();
        assert_eq!(out, [0, 90, 0, 0, 0, 0, 0, 0]);
    }
}
