//! SOCKS5 as blocking-local speaks it to applications (RFC 1928).
//!
//! Pure over `Read + Write` so it can be tested without a socket. Every field
//! is read with `read_exact`: a request split over many reads works, and bytes
//! the application sends right after its request stay unread for the relay.
//!
//! Served: CONNECT, with "no authentication" or, when users are configured,
//! only username/password (RFC 1929). Anything else gets the reply the RFC
//! names for it before the caller closes the connection.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};

use crate::error::Error;
use crate::text::Escaped;

use super::addr::{self, Layout, Target, ATYP_IPV4};
use super::failure::Failure;
use super::users::{is_user, User};

/// Protocol version, first byte of every SOCKS5 message.
pub const SOCKS_VERSION: u8 = 0x05;

/// Method: no authentication required.
pub const METHOD_NO_AUTH: u8 = 0x00;
/// Method: username/password (RFC 1929).
pub const METHOD_USERPASS: u8 = 0x02;
/// Method reply: none of the offered methods is acceptable.
pub const METHOD_NO_ACCEPTABLE: u8 = 0xFF;

/// RFC 1929 subnegotiation version.
pub const USERPASS_VERSION: u8 = 0x01;
/// RFC 1929 status: success.
pub const USERPASS_SUCCESS: u8 = 0x00;
/// RFC 1929 status: failure (any non-zero value; the connection is then closed).
pub const USERPASS_FAILURE: u8 = 0x01;

/// Command: CONNECT.
pub const CMD_CONNECT: u8 = 0x01;
/// Command: BIND.
pub const CMD_BIND: u8 = 0x02;
/// Command: UDP ASSOCIATE.
pub const CMD_UDP_ASSOCIATE: u8 = 0x03;

/// Reply: succeeded.
pub const REP_SUCCEEDED: u8 = 0x00;
/// Reply: general SOCKS server failure.
pub const REP_GENERAL_FAILURE: u8 = 0x01;
/// Reply: connection not allowed by ruleset.
pub const REP_NOT_ALLOWED: u8 = 0x02;
/// Reply: network unreachable.
pub const REP_NETWORK_UNREACHABLE: u8 = 0x03;
/// Reply: host unreachable.
pub const REP_HOST_UNREACHABLE: u8 = 0x04;
/// Reply: connection refused.
pub const REP_CONNECTION_REFUSED: u8 = 0x05;
/// Reply: TTL expired (also used for a connect that timed out, as microsocks does).
pub const REP_TTL_EXPIRED: u8 = 0x06;
/// Reply: command not supported.
pub const REP_COMMAND_NOT_SUPPORTED: u8 = 0x07;

/// Why UDP ASSOCIATE is refused where it is not served: UDP travels in the
/// trojan format, which a password on both sides turns on.
pub const UDP_NEEDS_PASSWORD: &str =
    "udp associate needs a password on both sides (udp travels in the trojan format; the seed format has none)";
/// Reply: address type not supported.
pub const REP_ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;

/// Reads the greeting (and, with `users`, a login) and the request, and
/// returns the CONNECT target.
///
/// Bad input that the RFC has a reply for gets that reply here (0xFF for no
/// acceptable method, 0x01 status for a failed login, 0x07 for BIND or UDP
/// ASSOCIATE, 0x08 for an unknown address type); a wrong version or a
/// malformed message gets none. Either way the caller closes. On success
/// nothing more is written: the caller replies with [`reply`] once it knows
/// whether the server could be reached.
pub fn accept<S: Read + Write>(s: &mut S, users: &[User]) -> Result<Target, Error> {
    match accept_request(s, users, false)? {
        Request::Connect(target) => Ok(target),
        // Not asked for: accept_request has answered UDP ASSOCIATE with 0x07.
        Request::UdpAssociate(_) => Err(Error::Protocol(UDP_NEEDS_PASSWORD)),
    }
}

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// CONNECT to this target.
    Connect(Target),
    /// UDP ASSOCIATE: datagrams will come from this address (often
    /// `0.0.0.0:0`, "not known yet"; a port other than 0 is the client's).
    UdpAssociate(Target),
}

/// Like [`accept`], and with `udp`, UDP ASSOCIATE is served too (RFC 1928,
/// section 7); without, it gets 0x07 as BIND does.
pub fn accept_request<S: Read + Write>(s: &mut S, users: &[User], udp: bool) -> Result<Request, Error> {
    // Greeting: VER NMETHODS METHODS...
    let mut head = [0u8; 2];
    s.read_exact(&mut head)?;
    if head[0] != SOCKS_VERSION {
        return Err(Error::Protocol("not socks5"));
    }
    let mut methods = [0u8; 255];
    let methods = &mut methods[..usize::from(head[1])];
    s.read_exact(methods)?;
    let method = if users.is_empty() { METHOD_NO_AUTH } else { METHOD_USERPASS };
    if !methods.contains(&method) {
        s.write_all(&[SOCKS_VERSION, METHOD_NO_ACCEPTABLE])?;
        return Err(Error::Protocol("no acceptable auth method"));
    }
    s.write_all(&[SOCKS_VERSION, method])?;
    if method == METHOD_USERPASS {
        login(s, users)?;
    }

    // Request: VER CMD RSV ATYP DST.ADDR DST.PORT
    let mut req = [0u8; 4];
    s.read_exact(&mut req)?;
    let [ver, cmd, _rsv, atyp] = req;
    if ver != SOCKS_VERSION {
        return Err(Error::Protocol("not socks5"));
    }
    let target = match addr::read(s, atyp, Layout::Socks) {
        Ok(Some(t)) => t,
        Ok(None) => {
            reply(s, REP_ADDRESS_TYPE_NOT_SUPPORTED)?;
            return Err(Error::Protocol("unknown address type"));
        }
        Err(e @ Error::Protocol(_)) => {
            reply(s, REP_GENERAL_FAILURE)?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    match cmd {
        CMD_CONNECT => Ok(Request::Connect(target)),
        CMD_UDP_ASSOCIATE if udp => Ok(Request::UdpAssociate(target)),
        _ => {
            reply(s, REP_COMMAND_NOT_SUPPORTED)?;
            Err(Error::Protocol(match cmd {
                CMD_BIND => "bind is not supported",
                CMD_UDP_ASSOCIATE => UDP_NEEDS_PASSWORD,
                _ => "unknown command",
            }))
        }
    }
}

/// RFC 1929: VER ULEN UNAME PLEN PASSWD, answered with VER STATUS.
fn login<S: Read + Write>(s: &mut S, users: &[User]) -> Result<(), Error> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head)?;
    if head[0] != USERPASS_VERSION {
        return Err(Error::Protocol("bad username/password version"));
    }
    let mut name = [0u8; 255];
    let name = &mut name[..usize::from(head[1])];
    s.read_exact(name)?;
    let mut plen = [0u8; 1];
    s.read_exact(&mut plen)?;
    let mut password = [0u8; 255];
    let password = &mut password[..usize::from(plen[0])];
    s.read_exact(password)?;
    if is_user(users, name, password) {
        s.write_all(&[USERPASS_VERSION, USERPASS_SUCCESS])?;
        Ok(())
    } else {
        s.write_all(&[USERPASS_VERSION, USERPASS_FAILURE])?;
        let name = String::from_utf8_lossy(name);
        Err(Error::Denied(format!("login failed for user {}", Escaped(&name))))
    }
}

/// Writes a reply with code `rep` and an unspecified bound address (0.0.0.0:0):
/// the real one is on the server's side of the tunnel.
pub fn reply<W: Write + ?Sized>(w: &mut W, rep: u8) -> io::Result<()> {
    w.write_all(&[SOCKS_VERSION, rep, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0])
}

/// Writes a success reply naming `bound`: for UDP ASSOCIATE, the address
/// the client sends its datagrams to.
pub fn reply_bound<W: Write + ?Sized>(w: &mut W, bound: SocketAddr) -> io::Result<()> {
    let mut out = vec![SOCKS_VERSION, REP_SUCCEEDED, 0];
    // A dual-stack listener's IPv4 client is named in IPv4, which it can reach.
    let ip = match bound.ip() {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(bound.ip(), IpAddr::V4),
        v4 => v4,
    };
    addr::write(&Target::Ip(SocketAddr::new(ip, bound.port())), Layout::Socks, &mut out);
    w.write_all(&out)
}

/// The UDP request header (RFC 1928, section 7) before each datagram's
/// data: RSV(2) FRAG(1) ATYP DST.ADDR DST.PORT.
const UDP_RSV_FRAG: usize = 3;

/// Reads the header of a whole datagram: where it goes, and where its data
/// starts. A fragment (FRAG other than 0) is an error: fragments are not
/// reassembled, so they are dropped.
pub fn read_udp_header(datagram: &[u8]) -> Result<(Target, usize), Error> {
    let [_, _, frag, atyp, ..] = *datagram else {
        return Err(Error::Protocol("datagram shorter than its header"));
    };
    if frag != 0 {
        return Err(Error::Protocol("fragmented datagram"));
    }
    let mut rest = &datagram[UDP_RSV_FRAG + 1..];
    let target = match addr::read(&mut rest, atyp, Layout::Socks) {
        Ok(Some(t)) => t,
        Ok(None) => return Err(Error::Protocol("unknown address type in datagram")),
        Err(Error::Io(_)) => return Err(Error::Protocol("datagram shorter than its header")),
        Err(e) => return Err(e),
    };
    Ok((target, datagram.len() - rest.len()))
}

/// Appends the header of a datagram that came from `from`.
pub fn write_udp_header(from: &Target, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0]);
    addr::write(from, Layout::Socks, out);
}

/// The reply code for a failure to reach the next hop (a connect that
/// timed out is 0x06, TTL expired, as microsocks answers it).
pub fn reply_code(failure: Failure) -> u8 {
    match failure {
        Failure::Refused => REP_CONNECTION_REFUSED,
        Failure::NetworkUnreachable => REP_NETWORK_UNREACHABLE,
        Failure::HostUnreachable => REP_HOST_UNREACHABLE,
        Failure::TimedOut => REP_TTL_EXPIRED,
        Failure::NotAllowed => REP_NOT_ALLOWED,
        Failure::General => REP_GENERAL_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::addr::ATYP_IPV6;
    use crate::proto::testing::{Duplex, OneByte};
    use std::net::Ipv6Addr;

    fn run(input: &[u8]) -> (Result<Target, Error>, Vec<u8>, Vec<u8>) {
        let mut d = Duplex { input: OneByte(input), output: Vec::new() };
        let res = accept(&mut d, &[]);
        let mut rest = Vec::new();
        d.input.0.read_to_end(&mut rest).unwrap();
        (res, d.output, rest)
    }

    const GREETING: &[u8] = &[5, 1, 0];

    fn request(cmd: u8, addr: &[u8]) -> Vec<u8> {
        let mut v = GREETING.to_vec();
        v.extend_from_slice(&[5, cmd, 0]);
        v.extend_from_slice(addr);
        v
    }

    #[test]
    fn connect_ipv4_one_byte_at_a_time_with_coalesced_payload() {
        let mut input = request(CMD_CONNECT, &[ATYP_IPV4, 127, 0, 0, 1, 0x1f, 0x90]);
        input.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
        let (res, out, rest) = run(&input);
        assert_eq!(res.unwrap(), Target::Ip("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(out, [5, 0], "only the method choice is written");
        assert_eq!(rest, b"GET / HTTP/1.0\r\n\r\n", "payload after the request is not consumed");
    }

    #[test]
    fn connect_ipv6_and_domain() {
        let mut v6 = vec![ATYP_IPV6];
        v6.extend_from_slice(&"::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 80]);
        let (res, _, _) = run(&request(CMD_CONNECT, &v6));
        assert_eq!(res.unwrap(), Target::Ip("[::1]:80".parse().unwrap()));

        let (res, _, rest) = run(&request(CMD_CONNECT, b"\x03\x0bexample.com\x01\xbbX"));
        assert_eq!(res.unwrap(), Target::Domain("example.com".into(), 443));
        assert_eq!(rest, b"X");
    }

    #[test]
    fn greeting_may_offer_many_methods() {
        let mut input = vec![5, 3, 2, 1, 0];
        input.extend_from_slice(&[5, 1, 0, 1, 1, 2, 3, 4, 0, 1]);
        let (res, out, _) = run(&input);
        assert!(res.is_ok());
        assert_eq!(out, [5, 0]);
    }

    #[test]
    fn no_acceptable_method_gets_ff() {
        let (res, out, _) = run(&[5, 1, METHOD_USERPASS]);
        assert!(matches!(res, Err(Error::Protocol(_))));
        assert_eq!(out, [5, 0xFF]);
        let (res, out, _) = run(&[5, 0]);
        assert!(res.is_err());
        assert_eq!(out, [5, 0xFF]);
    }

    #[test]
    fn bind_and_udp_get_07() {
        for cmd in [CMD_BIND, CMD_UDP_ASSOCIATE, 9] {
            let (res, out, rest) = run(&request(cmd, &[ATYP_IPV4, 1, 2, 3, 4, 0, 80]));
            assert!(res.is_err());
            assert_eq!(out, [5, 0, 5, REP_COMMAND_NOT_SUPPORTED, 0, 1, 0, 0, 0, 0, 0, 0]);
            assert!(rest.is_empty(), "the whole request is read before the reply");
        }
    }

    #[test]
    fn unknown_address_type_gets_08() {
        let (res, out, _) = run(&request(CMD_CONNECT, &[2, 1, 2, 3, 4, 0, 80]));
        assert!(res.is_err());
        assert_eq!(&out[2..4], [5, REP_ADDRESS_TYPE_NOT_SUPPORTED]);
    }

    #[test]
    fn empty_domain_gets_general_failure() {
        let (res, out, _) = run(&request(CMD_CONNECT, &[3, 0, 0, 80]));
        assert!(res.is_err());
        assert_eq!(&out[2..4], [5, REP_GENERAL_FAILURE]);
    }

    #[test]
    fn wrong_version_is_closed_without_reply() {
        let (res, out, _) = run(&[4, 1, 0, 80, 127, 0, 0, 1, 0]);
        assert!(matches!(res, Err(Error::Protocol(_))));
        assert!(out.is_empty());
        let (res, out, _) = run(&[5, 1, 0, 4, 1, 0, 1, 1, 2, 3, 4, 0, 80]);
        assert!(res.is_err());
        assert_eq!(out, [5, 0], "a request with the wrong version gets no reply");
    }

    #[test]
    fn truncated_input_is_an_io_error() {
        let full = request(CMD_CONNECT, b"\x03\x0bexample.com\x01\xbb");
        for cut in 0..full.len() {
            let (res, _, _) = run(&full[..cut]);
            assert!(matches!(res, Err(Error::Io(_))), "cut at {cut}");
        }
    }

    fn users() -> Vec<User> {
        vec![
            User { name: "alice".into(), password: "wonder".into() },
            User { name: "bob".into(), password: "builder".into() },
        ]
    }

    fn run_with_users(input: &[u8]) -> (Result<Target, Error>, Vec<u8>, Vec<u8>) {
        let mut d = Duplex { input: OneByte(input), output: Vec::new() };
        let res = accept(&mut d, &users());
        let mut rest = Vec::new();
        d.input.0.read_to_end(&mut rest).unwrap();
        (res, d.output, rest)
    }

    fn login_bytes(name: &str, pass: &str) -> Vec<u8> {
        let mut v = vec![5, 2, 0, 2, 1, name.len() as u8];
        v.extend_from_slice(name.as_bytes());
        v.push(pass.len() as u8);
        v.extend_from_slice(pass.as_bytes());
        v
    }

    #[test]
    fn rfc1929_right_credentials_pass_one_byte_at_a_time() {
        let mut input = login_bytes("bob", "builder");
        input.extend_from_slice(&[5, 1, 0, 1, 1, 2, 3, 4, 0, 80, b'X']);
        let (res, out, rest) = run_with_users(&input);
        assert_eq!(res.unwrap(), Target::Ip("1.2.3.4:80".parse().unwrap()));
        assert_eq!(out, [5, 2, 1, 0]);
        assert_eq!(rest, b"X");
    }

    #[test]
    fn rfc1929_wrong_credentials_get_status_1() {
        for (name, pass) in [("bob", "wonder"), ("alice", "wonde"), ("carol", "x"), ("", "")] {
            let (res, out, _) = run_with_users(&login_bytes(name, pass));
            let Err(Error::Denied(why)) = res else { panic!("{name}: {res:?}") };
            assert!(!why.contains(pass) || pass.is_empty(), "the password is not in {why:?}");
            assert_eq!(out, [5, 2, 1, 1]);
        }
    }

    #[test]
    fn rfc1929_a_failed_login_logs_the_username_escaped() {
        let (res, _, _) = run_with_users(&login_bytes("eve up=0\u{2028}#9 closed", "x"));
        let Err(Error::Denied(why)) = res else { panic!("{res:?}") };
        assert_eq!(why, r#"login failed for user "eve up=0\u{2028}#9 closed""#);
        let (res, _, _) = run_with_users(&login_bytes("mallory", "x"));
        let Err(Error::Denied(why)) = res else { panic!("{res:?}") };
        assert_eq!(why, "login failed for user mallory");
    }

    #[test]
    fn rfc1929_no_auth_only_gets_ff_when_users_are_required() {
        let (res, out, _) = run_with_users(&[5, 1, 0]);
        assert!(res.is_err());
        assert_eq!(out, [5, 0xFF]);
    }

    #[test]
    fn udp_associate_is_served_when_asked_for() {
        let input = request(CMD_UDP_ASSOCIATE, &[ATYP_IPV4, 0, 0, 0, 0, 0x12, 0x34]);
        let mut d = Duplex { input: OneByte(&input), output: Vec::new() };
        let got = accept_request(&mut d, &[], true).unwrap();
        assert_eq!(got, Request::UdpAssociate(Target::Ip("0.0.0.0:4660".parse().unwrap())));
        assert_eq!(d.output, [5, 0], "the reply waits for the association");
        let mut out = Vec::new();
        reply_bound(&mut out, "127.0.0.1:9".parse().unwrap()).unwrap();
        assert_eq!(out, [5, 0, 0, 1, 127, 0, 0, 1, 0, 9]);
    }

    #[test]
    fn udp_headers_roundtrip_and_fragments_are_refused() {
        for from in [Target::Ip("10.0.0.1:53".parse().unwrap()), Target::Domain("example.com".into(), 53)] {
            let mut d = Vec::new();
            write_udp_header(&from, &mut d);
            let len = d.len();
            d.extend_from_slice(b"payload");
            assert_eq!(read_udp_header(&d).unwrap(), (from, len));
        }
        let mut frag = vec![0, 0, 1];
        addr::write(&Target::Ip("10.0.0.1:53".parse().unwrap()), Layout::Socks, &mut frag);
        assert!(matches!(read_udp_header(&frag), Err(Error::Protocol("fragmented datagram"))));
        for cut in 0..frag.len() {
            let mut short = frag[..cut].to_vec();
            if cut > 2 {
                short[2] = 0;
            }
            assert!(read_udp_header(&short).is_err(), "cut at {cut}");
        }
        assert!(read_udp_header(&[0, 0, 0, 9, 1, 2]).is_err(), "unknown address type");
    }

    #[test]
    fn each_failure_has_its_reply_code() {
        assert_eq!(reply_code(Failure::Refused), REP_CONNECTION_REFUSED);
        assert_eq!(reply_code(Failure::NetworkUnreachable), REP_NETWORK_UNREACHABLE);
        assert_eq!(reply_code(Failure::HostUnreachable), REP_HOST_UNREACHABLE);
        assert_eq!(reply_code(Failure::TimedOut), REP_TTL_EXPIRED);
        assert_eq!(reply_code(Failure::General), REP_GENERAL_FAILURE);
    }
}
