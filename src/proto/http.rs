//! The HTTP proxy protocol as blocking-local speaks it, for the clients that
//! know only `http_proxy` and `https_proxy` (wget, pip, apt, git, Docker,
//! most language libraries). Served on the same port as SOCKS5 and SOCKS4:
//! the listener tells it by its first byte, an ASCII letter.
//!
//! Pure over `Read + Write`, like the SOCKS parsers: the request head is read
//! one byte at a time, so it is never read past, and bytes the client sends
//! after the head (a request body, a TLS ClientHello) stay unread for the
//! relay. Every line and the head as a whole are bounded.
//!
//! Two kinds of request are served:
//!
//! - `CONNECT host:port`: a tunnel. The caller answers [`ESTABLISHED`] once it
//!   is up and relays bytes, as for SOCKS.
//! - An absolute-form request (`GET http://host[:port]/path HTTP/1.1`, for
//!   the methods in [`FORWARDED`]): sent to `host` (port 80 by default) in
//!   origin form, with the hop-by-hop headers removed, `Host` set from the
//!   target and `Connection: close` added; after that head the connection is
//!   relayed raw, so a body in any framing passes exactly, the upstream's
//!   response reaches the client, and the upstream closes after it. One
//!   request per connection: a client sends its next on a new one.
//!
//! With users configured, `Proxy-Authorization: Basic` must carry one of
//! them. Bad input gets its status ([`Status`]) with `Content-Length` and
//! `Connection: close`, written here; the caller then closes.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::Error;
use crate::text::Escaped;

use super::addr::Target;
use super::failure::Failure;
use super::users::{is_user, User};

/// The longest request line, with its line ending; longer gets 414.
pub const REQUEST_LINE_MAX: usize = 8 * 1024;
/// The most header bytes (lines with their endings, and the empty line); more gets 431.
pub const HEADERS_MAX: usize = 16 * 1024;
/// The most header lines; more gets 431.
pub const HEADER_LINES_MAX: usize = 100;

/// Methods forwarded in absolute form. Anything else but CONNECT gets 405.
pub const FORWARDED: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];
/// The `Allow` header of a 405: [`FORWARDED`] and CONNECT.
pub const ALLOW: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, CONNECT";
/// The `Proxy-Authenticate` challenge of a 407.
pub const CHALLENGE: &str = "Basic realm=\"blocking-proxy\"";

/// The answer to a CONNECT once its tunnel is up.
pub const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// [`response`] for [`Status::BadGateway`], for a relay to write when the
/// upstream ends without a byte of response.
pub const SILENT_UPSTREAM: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n\
Content-Length: 16\r\nConnection: close\r\n\r\n502 Bad Gateway\n";

/// [`response`] for [`Status::GatewayTimeout`], for a relay to write when
/// the server says nothing at all in time (see `relay::Owed`).
pub const SILENT_SERVER: &[u8] = b"HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain\r\n\
Content-Length: 20\r\nConnection: close\r\n\r\n504 Gateway Timeout\n";

/// The statuses the proxy answers with itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 400: a malformed request line or header, a bad target, a request
    /// that is not in absolute form, an `https://` target (use CONNECT).
    BadRequest,
    /// 404: a path the metrics endpoint does not serve.
    NotFound,
    /// 405: a method the proxy does not forward.
    MethodNotAllowed,
    /// 407: users are configured and the request does not log in as one.
    ProxyAuthenticationRequired,
    /// 414: a request line over [`REQUEST_LINE_MAX`].
    UriTooLong,
    /// 431: headers over [`HEADERS_MAX`] or [`HEADER_LINES_MAX`].
    HeaderFieldsTooLarge,
    /// 502: the server could not be reached (or the upstream sent nothing).
    BadGateway,
    /// 503: the local is at its connection cap.
    ServiceUnavailable,
    /// 504: the server did not answer before the connect deadline.
    GatewayTimeout,
}

impl Status {
    /// The answer when the tunnel could not be opened: 504 when the next
    /// hop did not answer in time, 502 otherwise.
    pub fn of(failure: Failure) -> Status {
        match failure {
            Failure::TimedOut => Status::GatewayTimeout,
            _ => Status::BadGateway,
        }
    }

    /// The status code.
    pub fn code(self) -> u16 {
        match self {
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::ProxyAuthenticationRequired => 407,
            Status::UriTooLong => 414,
            Status::HeaderFieldsTooLarge => 431,
            Status::BadGateway => 502,
            Status::ServiceUnavailable => 503,
            Status::GatewayTimeout => 504,
        }
    }

    /// The reason phrase.
    pub fn reason(self) -> &'static str {
        match self {
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::ProxyAuthenticationRequired => "Proxy Authentication Required",
            Status::UriTooLong => "URI Too Long",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::BadGateway => "Bad Gateway",
            Status::ServiceUnavailable => "Service Unavailable",
            Status::GatewayTimeout => "Gateway Timeout",
        }
    }
}

/// A complete error response: a short text body, its `Content-Length`,
/// `Connection: close`, and `Allow` or `Proxy-Authenticate` where the status calls for one.
pub fn response(status: Status) -> Vec<u8> {
    let (code, reason) = (status.code(), status.reason());
    let body = format!("{code} {reason}\n");
    let extra = match status {
        Status::MethodNotAllowed => format!("Allow: {ALLOW}\r\n"),
        Status::ProxyAuthenticationRequired => format!("Proxy-Authenticate: {CHALLENGE}\r\n"),
        _ => String::new(),
    };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What a client asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A tunnel to the target.
    Connect(Target),
    /// A request for the target: `head` is the request head to send it,
    /// rewritten to origin form, to be followed by whatever the client sends.
    Forward {
        /// Where the request goes.
        target: Target,
        /// The rewritten head, ending with its empty line.
        head: Vec<u8>,
    },
}

/// Why a request head is not served.
pub enum Fault {
    /// Reading failed (the deadline, an end): no answer.
    Io(io::Error),
    /// The answer, and the error it is logged as.
    Status(Status, Error),
}

impl From<io::Error> for Fault {
    fn from(e: io::Error) -> Self {
        Fault::Io(e)
    }
}

fn bad(why: &'static str) -> Fault {
    Fault::Status(Status::BadRequest, Error::Protocol(why))
}

/// Reads a request head and returns what it asks for.
///
/// A request that is not served gets its status here (the login failure as
/// [`Error::Denied`], the rest as [`Error::Protocol`]); a read that fails
/// gets none. Either way the caller closes. On success nothing is written.
pub fn accept<S: Read + Write>(s: &mut S, users: &[User]) -> Result<Request, Error> {
    match read_request(s, users) {
        Ok(r) => Ok(r),
        Err(Fault::Io(e)) => Err(Error::Io(e)),
        Err(Fault::Status(status, e)) => {
            s.write_all(&response(status))?;
            Err(e)
        }
    }
}

fn read_request<R: Read>(r: &mut R, users: &[User]) -> Result<Request, Fault> {
    let RequestLine { method, target: uri, version } = read_request_line(r)?;
    let (method, uri, version) = (method.as_str(), uri.as_str(), version.as_str());
    let connect = method == "CONNECT";
    if !connect && !FORWARDED.contains(&method) {
        return Err(Fault::Status(Status::MethodNotAllowed, Error::Protocol("method not forwarded")));
    }
    if uri.is_empty() || !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("malformed request target"));
    }
    let (target, authority, path) = if connect {
        let target = authority(uri, None).ok_or_else(|| bad("bad CONNECT target"))?;
        (target, uri, "")
    } else {
        absolute(uri)?
    };

    let headers = read_headers(r)?;
    if !users.is_empty() {
        login(&headers, users)?;
    }
    if connect {
        return Ok(Request::Connect(target));
    }
    Ok(Request::Forward { head: rewrite(method, path, version, authority, &headers), target })
}

/// A request line: `METHOD TARGET VERSION`.
pub struct RequestLine {
    /// A token, such as `GET`.
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
}

/// Reads a request line (one byte at a time, within [`REQUEST_LINE_MAX`]):
/// three parts split by single spaces, a token for the method, and HTTP/1.1
/// or HTTP/1.0. What is not gets its status: 414 when it is too long, 400.
pub fn read_request_line<R: Read>(r: &mut R) -> Result<RequestLine, Fault> {
    let mut line = Vec::new();
    if read_line(r, REQUEST_LINE_MAX, &mut line)?.is_none() {
        return Err(Fault::Status(Status::UriTooLong, Error::Protocol("request line too long")));
    }
    let line = std::str::from_utf8(&line).map_err(|_| bad("request line is not text"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(bad("malformed method"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(bad("not HTTP/1.0 or HTTP/1.1"));
    }
    Ok(RequestLine { method: method.into(), target: target.into(), version: version.into() })
}

/// Splits an absolute-form `http://` target into where it goes, its
/// authority and the origin-form path.
fn absolute(uri: &str) -> Result<(Target, &str, &str), Fault> {
    let scheme = |s: &str| uri.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s));
    if scheme("https://") {
        return Err(bad("https:// in absolute form (use CONNECT)"));
    }
    if !scheme("http://") {
        return Err(bad("not an absolute http:// target"));
    }
    let rest = &uri["http://".len()..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (auth, path) = rest.split_at(end);
    let target = authority(auth, Some(80)).ok_or_else(|| bad("bad host in target"))?;
    Ok((target, auth, path))
}

/// Parses `host:port`, `[v6]:port` (and, with a `default` port, the forms
/// without `:port`): a name of letters, digits, `.`, `-` and `_`, or an IP
/// address. No user info, no empty port, no port 0.
fn authority(s: &str, default: Option<u16>) -> Option<Target> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        let ip: Ipv6Addr = addr.parse().ok()?;
        (IpAddr::V6(ip).to_string(), after)
    } else {
        let end = s.find(':').unwrap_or(s.len());
        (s[..end].to_owned(), &s[end..])
    };
    let port = match port.strip_prefix(':') {
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().ok()?
        }
        Some(_) => return None,
        None if port.is_empty() => default?,
        None => return None,
    };
    if port == 0 || host.is_empty() || host.len() > 255 {
        return None;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Target::Ip(SocketAddr::new(ip, port)));
    }
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
        return None;
    }
    // Digits and dots that are not an IPv4 address (999.1.1.1) are no name either.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') && host.parse::<Ipv4Addr>().is_err() {
        return None;
    }
    Some(Target::Domain(host, port))
}

/// One header field: its name as sent and its value without surrounding blanks.
pub struct Header {
    /// The field name, as sent.
    pub name: String,
    /// The value, without the blanks around it.
    pub value: Vec<u8>,
}

/// Reads header lines up to the empty one, within [`HEADERS_MAX`] and
/// [`HEADER_LINES_MAX`] (431 past them); a malformed line is a 400.
pub fn read_headers<R: Read>(r: &mut R) -> Result<Vec<Header>, Fault> {
    let too_large = || Fault::Status(Status::HeaderFieldsTooLarge, Error::Protocol("headers too large"));
    let mut headers = Vec::new();
    let mut left = HEADERS_MAX;
    let mut line = Vec::new();
    loop {
        line.clear();
        let Some(taken) = read_line(r, left, &mut line)? else {
            return Err(too_large());
        };
        left -= taken;
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() == HEADER_LINES_MAX {
            return Err(too_large());
        }
        if matches!(line[0], b' ' | b'\t') {
            return Err(bad("obsolete header line folding"));
        }
        let colon = line.iter().position(|&b| b == b':').ok_or_else(|| bad("header without a colon"))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().copied().all(is_tchar) {
            return Err(bad("malformed header name"));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(bad("control character in a header value"));
        }
        let value = value.trim_ascii();
        headers.push(Header { name: String::from_utf8_lossy(name).into_owned(), value: value.to_vec() });
    }
}

/// Reads a line ending in LF into `line`, without the LF and a CR before it,
/// and returns how many bytes it took; None (the rest unread) when it runs
/// past `max` bytes with its ending. A CR anywhere else is a 400.
fn read_line<R: Read>(r: &mut R, max: usize, line: &mut Vec<u8>) -> Result<Option<usize>, Fault> {
    let mut byte = [0u8; 1];
    for taken in 1..=max {
        r.read_exact(&mut byte)?;
        if byte[0] == b'\n' {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.contains(&b'\r') {
                return Err(bad("bare CR in a line"));
            }
            return Ok(Some(taken));
        }
        line.push(byte[0]);
    }
    Ok(None)
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks `Proxy-Authorization: Basic` against every user, each in constant time.
fn login(headers: &[Header], users: &[User]) -> Result<(), Fault> {
    let denied = |why: String| Fault::Status(Status::ProxyAuthenticationRequired, Error::Denied(why));
    let Some(auth) = headers.iter().find(|h| h.name.eq_ignore_ascii_case("proxy-authorization")) else {
        return Err(denied("no proxy credentials".into()));
    };
    let mut words = auth.value.splitn(2, |&b| b == b' ');
    let (Some(scheme), Some(encoded)) = (words.next(), words.next()) else {
        return Err(denied("malformed proxy credentials".into()));
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Err(denied("proxy credentials not Basic".into()));
    }
    let Some(decoded) = decode_base64(encoded.trim_ascii()) else {
        return Err(denied("proxy credentials not base64".into()));
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return Err(denied("proxy credentials without a colon".into()));
    };
    let (name, password) = (&decoded[..colon], &decoded[colon + 1..]);
    if is_user(users, name, password) {
        return Ok(());
    }
    let name = String::from_utf8_lossy(name);
    Err(denied(format!("proxy login failed for user {}", Escaped(&name))))
}

/// Headers for this hop only, which a proxy takes out whatever the client
/// says (RFC 9110, section 7.6.1), and `Host`, which it replaces.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "host",
];

/// Headers that frame the body. The body is relayed as the client sent it,
/// so its framing goes with it: `Connection` cannot take these out (which
/// would make the upstream read the body as further requests).
const FRAMING: [&str; 2] = ["content-length", "transfer-encoding"];

/// Whether a header is for this hop only, given the names `Connection` lists.
fn hop_by_hop(name: &str, listed: &[String]) -> bool {
    let is = |h: &&str| name.eq_ignore_ascii_case(h);
    HOP_BY_HOP.iter().any(is)
        || (listed.iter().any(|l| name.eq_ignore_ascii_case(l)) && !FRAMING.iter().any(is))
}

/// The head sent upstream: origin form, `Host` from the target (RFC 9112
/// section 3.2.2: a proxy replaces the client's), the end-to-end headers as
/// sent, and `Connection: close`.
fn rewrite(method: &str, path: &str, version: &str, authority: &str, headers: &[Header]) -> Vec<u8> {
    let listed: Vec<String> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).into_owned())
        .filter(|t| !t.is_empty())
        .collect();
    let path = match path.split_once('#').map_or(path, |(p, _)| p) {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    let mut head = format!("{method} {path} {version}\r\nHost: {authority}\r\n").into_bytes();
    for h in headers.iter().filter(|h| !hop_by_hop(&h.name, &listed)) {
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(&h.value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    head
}

/// Decodes standard base64 (RFC 4648 section 4), with or without its
/// padding; None for any other byte, a misplaced `=`, or an impossible length.
pub fn decode_base64(s: &[u8]) -> Option<Vec<u8>> {
    let data = s.strip_suffix(b"==").or_else(|| s.strip_suffix(b"=")).unwrap_or(s);
    if (data.len() != s.len() && s.len() % 4 != 0) || data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in data {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testing::{Duplex, OneByte};

    fn run_with(input: &[u8], users: &[User]) -> (Result<Request, Error>, String, Vec<u8>) {
        let mut d = Duplex { input: OneByte(input), output: Vec::new() };
        let res = accept(&mut d, users);
        let mut rest = Vec::new();
        d.input.0.read_to_end(&mut rest).unwrap();
        (res, String::from_utf8(d.output).unwrap(), rest)
    }

    fn run(input: &[u8]) -> (Result<Request, Error>, String, Vec<u8>) {
        run_with(input, &[])
    }

    fn status_of(input: &[u8]) -> String {
        let (res, out, _) = run(input);
        assert!(res.is_err(), "{input:?}: {res:?}");
        out.split("\r\n").next().unwrap_or("").to_owned()
    }

    fn users() -> Vec<User> {
        vec![User { name: "alice".into(), password: "wonder:land".into() }]
    }

    #[test]
    fn connect_one_byte_at_a_time_leaves_the_early_data_unread() {
        let (res, out, rest) =
            run(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01");
        assert_eq!(res.unwrap(), Request::Connect(Target::Domain("example.com".into(), 443)));
        assert!(out.is_empty());
        assert_eq!(rest, b"\x16\x03\x01");
        let (res, _, _) = run(b"CONNECT [::1]:8443 HTTP/1.1\n\n");
        assert_eq!(res.unwrap(), Request::Connect(Target::Ip("[::1]:8443".parse().unwrap())));
        let (res, _, _) = run(b"CONNECT 127.0.0.1:22 HTTP/1.0\r\n\r\n");
        assert_eq!(res.unwrap(), Request::Connect(Target::Ip("127.0.0.1:22".parse().unwrap())));
    }

    #[test]
    fn absolute_form_is_rewritten_to_origin_form_without_hop_by_hop_headers() {
        let input = b"POST http://Example.com:8080/a/b?q=1 HTTP/1.1\r\n\
Host: wrong.example\r\n\
Proxy-Connection: keep-alive\r\n\
Proxy-Authorization: Basic c2VjcmV0OnNlY3JldA==\r\n\
Connection: keep-alive, X-Hop\r\n\
Keep-Alive: timeout=5\r\n\
X-Hop: 1\r\n\
Content-Length: 5\r\n\
User-Agent:   test/1.0  \r\n\
\r\n\
hello";
        let (res, out, rest) = run(input);
        let Ok(Request::Forward { target, head }) = res else { panic!("{res:?}") };
        assert_eq!(target, Target::Domain("Example.com".into(), 8080));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /a/b?q=1 HTTP/1.1\r\nHost: Example.com:8080\r\nContent-Length: 5\r\n\
User-Agent: test/1.0\r\nConnection: close\r\n\r\n"
        );
        assert!(out.is_empty());
        assert_eq!(rest, b"hello", "the body stays unread");
    }

    #[test]
    fn connection_cannot_take_out_the_framing_and_te_trailer_upgrade_always_go() {
        let input = b"POST http://a.example/ HTTP/1.1\r\n\
Connection: transfer-encoding, content-length, x-gone\r\n\
Transfer-Encoding: chunked\r\n\
TE: trailers\r\n\
Trailer: X-Sum\r\n\
Upgrade: websocket\r\n\
X-Gone: 1\r\n\
\r\n";
        let (res, _, _) = run(input);
        let Ok(Request::Forward { head, .. }) = res else { panic!("{res:?}") };
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn absolute_form_defaults_port_80_and_path_slash_and_adds_host() {
        for (uri, path) in
            [("http://h.example", "/"), ("HTTP://h.example?x", "/?x"), ("http://h.example/p#f", "/p")]
        {
            let (res, _, _) = run(format!("GET {uri} HTTP/1.0\r\n\r\n").as_bytes());
            let Ok(Request::Forward { target, head }) = res else { panic!("{res:?}") };
            assert_eq!(target, Target::Domain("h.example".into(), 80));
            let want = format!("GET {path} HTTP/1.0\r\nHost: h.example\r\nConnection: close\r\n\r\n");
            assert_eq!(String::from_utf8(head).unwrap(), want, "{uri}");
        }
        let (res, _, _) = run(b"GET http://[::1]:81/ HTTP/1.1\r\n\r\n");
        let Ok(Request::Forward { target, .. }) = res else { panic!("{res:?}") };
        assert_eq!(target, Target::Ip("[::1]:81".parse().unwrap()));
    }

    #[test]
    fn malformed_requests_get_400() {
        for input in [
            &b"GET  http://h/ HTTP/1.1\r\n\r\n"[..],
            b"GET http://h/ HTTP/1.1 x\r\n\r\n",
            b"GET http://h/\r\n\r\n",
            b"GET http://h/ HTTP/2.0\r\n\r\n",
            b"G(T http://h/ HTTP/1.1\r\n\r\n",
            b"GET /path HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET https://h/ HTTP/1.1\r\n\r\n",
            b"GET ftp://h/ HTTP/1.1\r\n\r\n",
            b"GET http://user@h/ HTTP/1.1\r\n\r\n",
            b"GET http://h:0/ HTTP/1.1\r\n\r\n",
            b"GET http://h:99999/ HTTP/1.1\r\n\r\n",
            b"GET http://h:/ HTTP/1.1\r\n\r\n",
            b"GET http:/// HTTP/1.1\r\n\r\n",
            b"GET http://h\"x/ HTTP/1.1\r\n\r\n",
            b"GET http://999.1.1.1/ HTTP/1.1\r\n\r\n",
            b"CONNECT h HTTP/1.1\r\n\r\n",
            b"CONNECT h:443x HTTP/1.1\r\n\r\n",
            b"CONNECT [::1 HTTP/1.1\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\nNo colon\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\n Folded: x\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\n: x\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\nX: a\rb\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET http://h/\xff HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(status_of(input), "HTTP/1.1 400 Bad Request", "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn other_methods_get_405_with_allow() {
        let (res, out, _) = run(b"TRACE http://h/ HTTP/1.1\r\n\r\n");
        assert!(matches!(res, Err(Error::Protocol(_))));
        assert!(out.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{out}");
        assert!(out.contains(&format!("\r\nAllow: {ALLOW}\r\n")), "{out}");
        assert_eq!(status_of(b"get http://h/ HTTP/1.1\r\n\r\n"), "HTTP/1.1 405 Method Not Allowed");
    }

    #[test]
    fn limits_get_414_and_431_and_stop_reading() {
        let mut long = b"GET http://h/".to_vec();
        long.resize(REQUEST_LINE_MAX + 10, b'a');
        let (res, out, rest) = run(&long);
        assert!(res.is_err());
        assert!(out.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{out}");
        assert_eq!(rest.len(), 10, "reading stops at the limit");
        // Just under the limit passes.
        let mut line = b"GET http://h/".to_vec();
        line.resize(REQUEST_LINE_MAX - b" HTTP/1.1\r\n".len(), b'a');
        line.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        assert!(run(&line).0.is_ok());

        let mut many = b"GET http://h/ HTTP/1.1\r\n".to_vec();
        for i in 0..=HEADER_LINES_MAX {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(status_of(&many), "HTTP/1.1 431 Request Header Fields Too Large");
        let mut big = b"GET http://h/ HTTP/1.1\r\nX: ".to_vec();
        big.resize(big.len() + HEADERS_MAX, b'v');
        assert_eq!(status_of(&big), "HTTP/1.1 431 Request Header Fields Too Large");
    }

    #[test]
    fn truncated_heads_are_io_errors_without_a_reply() {
        let full = b"GET http://h.example/ HTTP/1.1\r\nHost: h.example\r\n\r\n";
        for cut in 0..full.len() {
            let (res, out, _) = run(&full[..cut]);
            assert!(matches!(res, Err(Error::Io(_))), "cut at {cut}: {res:?}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn every_error_response_has_content_length_and_connection_close() {
        for s in [
            Status::BadRequest,
            Status::NotFound,
            Status::MethodNotAllowed,
            Status::ProxyAuthenticationRequired,
            Status::UriTooLong,
            Status::HeaderFieldsTooLarge,
            Status::BadGateway,
            Status::ServiceUnavailable,
            Status::GatewayTimeout,
        ] {
            let r = String::from_utf8(response(s)).unwrap();
            let (head, body) = r.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{r}");
            assert!(head.contains("\r\nConnection: close"), "{r}");
            assert!(head.starts_with(&format!("HTTP/1.1 {} ", s.code())), "{r}");
        }
        assert_eq!(SILENT_UPSTREAM, response(Status::BadGateway));
        assert_eq!(SILENT_SERVER, response(Status::GatewayTimeout));
    }

    #[test]
    fn with_users_basic_credentials_are_required() {
        let get = |auth: &str| format!("GET http://h/ HTTP/1.1\r\n{auth}\r\n");
        // alice:wonder:land, the password holds a colon.
        let (res, _, _) =
            run_with(get("Proxy-Authorization: Basic YWxpY2U6d29uZGVyOmxhbmQ=\r\n").as_bytes(), &users());
        let Ok(Request::Forward { head, .. }) = res else { panic!("{res:?}") };
        assert!(!String::from_utf8(head).unwrap().contains("Proxy-Authorization"), "never forwarded");
        let (res, _, _) = run_with(
            b"CONNECT h:443 HTTP/1.1\r\nproxy-authorization: basic YWxpY2U6d29uZGVyOmxhbmQ\r\n\r\n",
            &users(),
        );
        assert!(res.is_ok(), "{res:?}");

        for auth in [
            "",
            "Proxy-Authorization: Basic YWxpY2U6d29uZGVy\r\n",
            "Proxy-Authorization: Basic bWFsbG9yeTp4\r\n",
            "Proxy-Authorization: Bearer YWxpY2U6d29uZGVyOmxhbmQ=\r\n",
            "Proxy-Authorization: Basic !!!!\r\n",
            "Proxy-Authorization: Basic\r\n",
            "Authorization: Basic YWxpY2U6d29uZGVyOmxhbmQ=\r\n",
        ] {
            let (res, out, _) = run_with(get(auth).as_bytes(), &users());
            let Err(Error::Denied(why)) = res else { panic!("{auth}: {res:?}") };
            assert!(!why.contains("wonder"), "{why}");
            assert!(out.starts_with("HTTP/1.1 407 Proxy Authentication Required\r\n"), "{out}");
            assert!(out.contains(&format!("\r\nProxy-Authenticate: {CHALLENGE}\r\n")), "{out}");
        }
        // The username is logged, escaped.
        let (res, _, _) =
            run_with(get("Proxy-Authorization: Basic ZXZlIHVwPTAKIzk6eA==\r\n").as_bytes(), &users());
        let Err(Error::Denied(why)) = res else { panic!("{res:?}") };
        assert_eq!(why, r#"proxy login failed for user "eve up=0\u{a}#9""#);
    }

    #[test]
    fn base64_decodes_padded_and_unpadded_and_refuses_the_rest() {
        assert_eq!(decode_base64(b"").unwrap(), b"");
        assert_eq!(decode_base64(b"Zg==").unwrap(), b"f");
        assert_eq!(decode_base64(b"Zg").unwrap(), b"f");
        assert_eq!(decode_base64(b"Zm8=").unwrap(), b"fo");
        assert_eq!(decode_base64(b"Zm9v").unwrap(), b"foo");
        assert_eq!(decode_base64(b"Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(decode_base64(b"+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        assert_eq!(decode_base64(b"YWxpY2U6d29uZGVy").unwrap(), b"alice:wonder");
        for bad in [&b"Z"[..], b"Zm9=v", b"Zg=", b"Z===", b"Zm9v!", b"Zm 9v", b"-_-_", b"====", b"Zm9vY"] {
            assert_eq!(decode_base64(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
