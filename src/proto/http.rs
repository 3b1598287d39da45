//! The HTTP proxy protocol as blocking-local speaks it, for the clients that
//! know only `http_proxy` and `https_proxy` (wget, pip, apt, git, Docker,
//! most language libraries). Served on the same port as SOCKS5 and SOCKS4:
//! the listener tells it by its first byte, an ASCII letter.
//!
//! Pure over [`Peek`] and `Write`, like the SOCKS parsers over `Read`: the
//! request head is read through a peek window ([`WINDOW`] bytes looked at,
//! then exactly the bytes of the whole lines found in them read), a few
//! system calls per head and never a byte past it, so bytes the client sends
//! after the head (a request body, a TLS ClientHello) stay unread for the
//! caller. Every line and the head as a whole are bounded.
//!
//! Two kinds of request are served:
//!
//! - `CONNECT host:port`: a tunnel. The caller answers [`ESTABLISHED`] once it
//!   is up and relays bytes, as for SOCKS.
//! - An absolute-form request (`GET http://host[:port]/path HTTP/1.1`, for
//!   the methods in [`FORWARDED`]): sent to `host` (port 80 by default) in
//!   origin form, with the hop-by-hop headers removed, `Host` set from the
//!   target, the body's framing as this parser understood it and
//!   `Connection: close`. **One request per client connection, forwarded
//!   exactly**: the body's framing is decided here by RFC 9112 section 6.3
//!   ([`Framing`]; a request it leaves ambiguous gets 400), the caller passes
//!   the body upstream through a [`Body`], which finds its end, and nothing
//!   the client sends after it (a pipelined request, with its
//!   `Proxy-Authorization`) is ever forwarded. The upstream closes after its
//!   response, and the client sends its next request on a new connection.
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
/// Bytes of a head looked at in one peek (on the reading thread's stack).
pub const WINDOW: usize = 4 * 1024;

/// The largest `Content-Length` and chunk size taken: 2^63 - 1, what a
/// signed 64-bit length holds, so that no next hop reads a larger one as a
/// negative number (RFC 9112 section 7.1: a recipient must anticipate large
/// chunk sizes and prevent integer overflow). Larger is a 400.
pub const BODY_LENGTH_MAX: u64 = i64::MAX as u64;
/// The longest chunk-size line (size, extensions and CRLF) of a chunked body.
pub const CHUNK_LINE_MAX: usize = 4 * 1024;

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

/// A 502 for a forwarded request whose tunnel the local's server ended
/// before any reply byte, which says the likely causes.
pub const SILENT_TUNNEL: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n\
Content-Length: 163\r\nConnection: close\r\n\r\n502 Bad Gateway: the proxy's server ended the tunnel before any reply: \
the site closed, refused the connection or is unknown there, or the server's rules deny it.\n";

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
    /// 403: the local's rules block the target (an ACL's `[block_list]`).
    Forbidden,
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
    /// The answer when the tunnel could not be opened: 403 when the
    /// local's rules block the target, 504 when the next hop did not answer
    /// in time, 502 otherwise.
    pub fn of(failure: Failure) -> Status {
        match failure {
            Failure::NotAllowed => Status::Forbidden,
            Failure::TimedOut => Status::GatewayTimeout,
            _ => Status::BadGateway,
        }
    }

    /// The status code.
    pub fn code(self) -> u16 {
        match self {
            Status::BadRequest => 400,
            Status::Forbidden => 403,
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
            Status::Forbidden => "Forbidden",
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
    let body = match status {
        Status::Forbidden => format!("{code} {reason}: this proxy's rules block the site\n"),
        _ => format!("{code} {reason}\n"),
    };
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
    /// rewritten to origin form, to be followed by the body `framing` frames
    /// (through a [`Body`]) and by nothing else.
    Forward {
        /// Where the request goes.
        target: Target,
        /// The rewritten head, ending with its empty line.
        head: Vec<u8>,
        /// How the body that follows the head is framed.
        framing: Framing,
    },
}

/// A source whose next bytes can be looked at before they are taken, as
/// with `TcpStream::peek`: how a head is read in a few reads, never past its end.
pub trait Peek: Read {
    /// Copies into `buf` what has arrived, without taking it, waiting for at
    /// least one byte; 0 at the end of the stream.
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

impl Peek for &[u8] {
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.len());
        buf[..n].copy_from_slice(&self[..n]);
        Ok(n)
    }
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
pub fn accept<S: Peek + Write>(s: &mut S, users: &[User]) -> Result<Request, Error> {
    match read_request(s, users) {
        Ok(r) => Ok(r),
        Err(Fault::Io(e)) => Err(Error::Io(e)),
        Err(Fault::Status(status, e)) => {
            s.write_all(&response(status))?;
            Err(e)
        }
    }
}

fn read_request<R: Peek>(r: &mut R, users: &[User]) -> Result<Request, Fault> {
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
        // Whatever follows a CONNECT head is the tunnel's, relayed as it comes.
        return Ok(Request::Connect(target));
    }
    let framing = framing(version, &headers)?;
    Ok(Request::Forward {
        head: rewrite(method, path, version, authority, &headers, &framing),
        target,
        framing,
    })
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

/// Reads a request line (within [`REQUEST_LINE_MAX`], up to its LF and not
/// past it): three parts split by single spaces, a token for the method, and
/// HTTP/1.1 or HTTP/1.0. What is not gets its status: 414 when it is too long, 400.
pub fn read_request_line<R: Peek>(r: &mut R) -> Result<RequestLine, Fault> {
    let mut line = Vec::new();
    if with_lines(r, |lines| lines.next(REQUEST_LINE_MAX, &mut line))?.is_none() {
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

/// Reads header lines up to the empty one and not past it, within
/// [`HEADERS_MAX`] and [`HEADER_LINES_MAX`] (431 past them); a malformed
/// line is a 400.
pub fn read_headers<R: Peek>(r: &mut R) -> Result<Vec<Header>, Fault> {
    with_lines(r, read_header_lines)
}

fn read_header_lines<R: Peek>(lines: &mut Lines<'_, R>) -> Result<Vec<Header>, Fault> {
    let too_large = || Fault::Status(Status::HeaderFieldsTooLarge, Error::Protocol("headers too large"));
    let mut headers = Vec::new();
    let mut left = HEADERS_MAX;
    let mut line = Vec::new();
    loop {
        line.clear();
        let Some(taken) = lines.next(left, &mut line)? else {
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

/// Runs `read` over the lines of `r`, then takes off `r` the bytes of the
/// lines it was given (unless reading failed: the connection is done for).
fn with_lines<R: Peek, T>(
    r: &mut R,
    read: impl FnOnce(&mut Lines<'_, R>) -> Result<T, Fault>,
) -> Result<T, Fault> {
    let mut lines = Lines { r, window: [0; WINDOW], len: 0, cut: 0 };
    let out = read(&mut lines);
    if !matches!(out, Err(Fault::Io(_))) {
        lines.take()?;
    }
    out
}

/// Lines cut from a peek window: [`WINDOW`] bytes of what has arrived are
/// looked at, lines are cut from them, and only then are the bytes of the
/// lines cut read off the source, in one read. What follows the last line
/// cut is never taken.
struct Lines<'a, R: Peek> {
    r: &'a mut R,
    /// The next `len` bytes of the source, as peeked; none taken yet.
    window: [u8; WINDOW],
    len: usize,
    /// How many of them belong to lines already cut.
    cut: usize,
}

impl<R: Peek> Lines<'_, R> {
    /// Reads off the source the bytes of the lines cut so far.
    fn take(&mut self) -> io::Result<()> {
        if self.cut > 0 {
            // The very bytes the window holds: read over them.
            self.r.read_exact(&mut self.window[..self.cut])?;
            self.window.copy_within(self.cut..self.len, 0);
            self.len -= self.cut;
            self.cut = 0;
        }
        Ok(())
    }

    /// Cuts a line ending in LF into `line`, without the LF and a CR before
    /// it, and returns how many bytes it took; None when it runs past `max`
    /// bytes with its ending (those `max` taken, the rest left). A CR
    /// anywhere else is a 400. The end of the stream is an `UnexpectedEof`.
    fn next(&mut self, max: usize, line: &mut Vec<u8>) -> Result<Option<usize>, Fault> {
        let mut taken = 0;
        loop {
            let seen = &self.window[self.cut..self.len];
            let allowed = seen.len().min(max - taken);
            if let Some(lf) = seen[..allowed].iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&seen[..lf]);
                self.cut += lf + 1;
                taken += lf + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.contains(&b'\r') {
                    return Err(bad("bare CR in a line"));
                }
                return Ok(Some(taken));
            }
            line.extend_from_slice(&seen[..allowed]);
            self.cut += allowed;
            taken += allowed;
            if taken == max {
                self.take()?;
                return Ok(None);
            }
            // All that was seen is this line's: take it and look further.
            self.take()?;
            self.len = self.r.peek(&mut self.window)?;
            if self.len == 0 {
                return Err(Fault::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
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

/// Headers that frame the body. The client's never go upstream: the head
/// sent there carries the framing this parser decided ([`Framing`]), in
/// headers of its own, and `Connection` cannot take that out.
const FRAMING: [&str; 2] = ["content-length", "transfer-encoding"];

/// Whether a header is for this hop only, given the names `Connection`
/// lists, or one of the client's framing headers.
fn hop_by_hop(name: &str, listed: &[String]) -> bool {
    let is = |h: &&str| name.eq_ignore_ascii_case(h);
    HOP_BY_HOP.iter().any(is) || FRAMING.iter().any(is) || listed.iter().any(|l| name.eq_ignore_ascii_case(l))
}

/// How a request's body is framed, decided from its headers by RFC 9112
/// section 6.3 ([`framing`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Neither `Content-Length` nor `Transfer-Encoding`: no body.
    None,
    /// `Content-Length`: this many bytes.
    Length(u64),
    /// `Transfer-Encoding` ending in chunked: chunks up to the last, then
    /// the trailer section.
    Chunked,
}

/// The transfer codings of every `Transfer-Encoding` header, in order, empty
/// list elements left out.
fn codings(headers: &[Header]) -> impl Iterator<Item = &[u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty())
}

/// Decides a request's body framing by RFC 9112 section 6.3, refusing with
/// 400 what another parser could read otherwise (a request smuggled past
/// this one): `Transfer-Encoding` together with `Content-Length`, or in an
/// HTTP/1.0 request (section 6.1), or whose codings are not tokens or do
/// not end in chunked, once; a `Content-Length` that is not digits, over
/// [`BODY_LENGTH_MAX`], or given twice with different values (the same
/// value repeated, in one header as a list or in several, is that value).
pub fn framing(version: &str, headers: &[Header]) -> Result<Framing, Fault> {
    let named = |n: &'static str| headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(n));
    let chunked = named("transfer-encoding").next().is_some();
    let length = named("content-length").next().is_some();
    if chunked {
        if length {
            return Err(bad("both Content-Length and Transfer-Encoding"));
        }
        if version == "HTTP/1.0" {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        let is_chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
        let mut codings = codings(headers).peekable();
        while let Some(c) = codings.next() {
            let last = codings.peek().is_none();
            if !c.iter().copied().all(is_tchar) || is_chunked(c) != last {
                return Err(bad("Transfer-Encoding does not end in chunked"));
            }
            if last {
                return Ok(Framing::Chunked);
            }
        }
        return Err(bad("Transfer-Encoding does not end in chunked"));
    }
    if !length {
        return Ok(Framing::None);
    }
    let mut value = None;
    for v in named("content-length").flat_map(|h| h.value.split(|&b| b == b',')) {
        let v = v.trim_ascii();
        let n = (!v.is_empty() && v.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
            .flatten()
            .filter(|&n| n <= BODY_LENGTH_MAX)
            .ok_or_else(|| bad("invalid Content-Length"))?;
        if value.is_some_and(|was| was != n) {
            return Err(bad("conflicting Content-Length"));
        }
        value = Some(n);
    }
    value.map(Framing::Length).ok_or_else(|| bad("invalid Content-Length"))
}

/// The head sent upstream: origin form, `Host` from the target (RFC 9112
/// section 3.2.2: a proxy replaces the client's), the framing as decided
/// (one `Content-Length` with its value, or one `Transfer-Encoding` with the
/// codings as listed), the end-to-end headers as sent, and `Connection: close`.
fn rewrite(
    method: &str,
    path: &str,
    version: &str,
    authority: &str,
    headers: &[Header],
    framing: &Framing,
) -> Vec<u8> {
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
    match framing {
        Framing::None => {}
        Framing::Length(n) => head.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes()),
        Framing::Chunked => {
            head.extend_from_slice(b"Transfer-Encoding: ");
            for (i, c) in codings(headers).enumerate() {
                head.extend_from_slice(if i == 0 { b"" } else { b", " });
                head.extend_from_slice(c);
            }
            head.extend_from_slice(b"\r\n");
        }
    }
    for h in headers.iter().filter(|h| !hop_by_hop(&h.name, &listed)) {
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(&h.value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    head
}

/// A request body on its way upstream, framed as its head said: passes its
/// bytes, finds where it ends, and drops everything after that (RFC 9112
/// sections 6 and 7.1). A chunked body is checked as it passes: each
/// chunk-size line in hex (within [`BODY_LENGTH_MAX`]), with its extensions,
/// within [`CHUNK_LINE_MAX`], ending in CRLF (a bare LF or CR is refused, as
/// next hops disagree on it); each chunk's data followed by CRLF; then the
/// trailer section, within [`HEADERS_MAX`] and [`HEADER_LINES_MAX`]. Sizes,
/// extensions and data go upstream as sent; trailer fields do not (the
/// `Trailer` header that announces them is not forwarded either, and a
/// trailer could carry `Proxy-Authorization`), only the empty line that
/// ends the body. Pure, like the parsers: fed whatever a read returned,
/// however the bytes are split, it keeps the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    part: Part,
    /// The size of the chunk whose size line is being read.
    size: u64,
    /// Bytes of the current chunk-size line so far.
    line: usize,
    /// Bytes and field lines of the trailer section so far.
    trailer: usize,
    trailer_lines: usize,
}

/// Where in a body the next byte falls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Of a `Content-Length` body, this many bytes are still to come.
    Length(u64),
    /// A chunk size's hex digits.
    Size,
    /// Blanks after the size, before a `;`.
    SizeBlank,
    /// A chunk extension, up to the CR.
    Extension,
    /// The LF of a chunk-size line.
    SizeLf,
    /// Of a chunk's data, this many bytes are still to come.
    Data(u64),
    /// The CR, then the LF, after a chunk's data.
    DataCr,
    DataLf,
    /// The start of a line of the trailer section.
    TrailerLine,
    /// A trailer field's name, its value, the LF that ends its line.
    TrailerName,
    TrailerValue,
    TrailerLf,
    /// The LF of the empty line that ends the body.
    LastLf,
    /// The body has ended.
    Done,
}

impl Body {
    /// The body that follows a head framed as `framing`.
    pub fn new(framing: Framing) -> Body {
        let part = match framing {
            Framing::None | Framing::Length(0) => Part::Done,
            Framing::Length(n) => Part::Length(n),
            Framing::Chunked => Part::Size,
        };
        Body { part, size: 0, line: 0, trailer: 0, trailer_lines: 0 }
    }

    /// Whether the body has ended: from now on every byte is dropped.
    pub fn ended(&self) -> bool {
        self.part == Part::Done
    }

    /// Passes `bytes`, the next ones read from the client: keeps in place,
    /// at their start, those to forward, and returns how many. Bytes after
    /// the body's end, and a chunked body's trailer fields, are dropped.
    /// Bytes that break the framing are an [`Error::Protocol`]; the body
    /// must then go no further.
    pub fn pass(&mut self, bytes: &mut [u8]) -> Result<usize, Error> {
        let (mut read, mut kept) = (0, 0);
        while read < bytes.len() {
            match self.part {
                Part::Done => break,
                Part::Length(left) | Part::Data(left) => {
                    let n = left.min((bytes.len() - read) as u64);
                    let end = read + n as usize;
                    bytes.copy_within(read..end, kept);
                    kept += end - read;
                    read = end;
                    self.part = match (self.part, left - n) {
                        (Part::Length(_), 0) => Part::Done,
                        (Part::Length(_), left) => Part::Length(left),
                        (_, 0) => Part::DataCr,
                        (_, left) => Part::Data(left),
                    };
                }
                _ => {
                    let b = bytes[read];
                    read += 1;
                    if self.step(b)? {
                        bytes[kept] = b;
                        kept += 1;
                    }
                }
            }
        }
        Ok(kept)
    }

    /// Takes one byte of a chunked body's framing; returns whether it is forwarded.
    fn step(&mut self, b: u8) -> Result<bool, Error> {
        let was = self.part;
        match was {
            Part::Size | Part::SizeBlank | Part::Extension | Part::SizeLf => {
                self.line += 1;
                if self.line > CHUNK_LINE_MAX {
                    return Err(Error::Protocol("chunk-size line too long"));
                }
            }
            Part::TrailerLine | Part::TrailerName | Part::TrailerValue | Part::TrailerLf | Part::LastLf => {
                self.trailer += 1;
                if self.trailer > HEADERS_MAX {
                    return Err(Error::Protocol("trailer section too large"));
                }
            }
            _ => {}
        }
        let digits = self.line > 1;
        self.part = match (was, b) {
            (Part::Size, b) if b.is_ascii_hexdigit() => {
                let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(digit))
                    .filter(|&s| s <= BODY_LENGTH_MAX)
                    .ok_or(Error::Protocol("chunk size overflows"))?;
                Part::Size
            }
            (Part::Size, b' ' | b'\t') | (Part::SizeBlank, b' ' | b'\t') if digits => Part::SizeBlank,
            (Part::Size | Part::SizeBlank, b';') if digits => Part::Extension,
            (Part::Size, b'\r') if digits => Part::SizeLf,
            (Part::Extension, b'\r') => Part::SizeLf,
            (Part::Extension, b) if is_field_byte(b) => Part::Extension,
            (Part::SizeLf, b'\n') => {
                let size = std::mem::take(&mut self.size);
                self.line = 0;
                if size == 0 {
                    Part::TrailerLine
                } else {
                    Part::Data(size)
                }
            }
            (Part::DataCr, b'\r') => Part::DataLf,
            (Part::DataLf, b'\n') => Part::Size,
            (Part::TrailerLine, b'\r') => Part::LastLf,
            (Part::TrailerLine, b) if is_tchar(b) && self.trailer_lines < HEADER_LINES_MAX => {
                self.trailer_lines += 1;
                Part::TrailerName
            }
            (Part::TrailerName, b) if is_tchar(b) => Part::TrailerName,
            (Part::TrailerName, b':') => Part::TrailerValue,
            (Part::TrailerValue, b'\r') => Part::TrailerLf,
            (Part::TrailerValue, b) if is_field_byte(b) => Part::TrailerValue,
            (Part::TrailerLf, b'\n') => Part::TrailerLine,
            (Part::LastLf, b'\n') => Part::Done,
            (Part::DataCr | Part::DataLf, _) => {
                return Err(Error::Protocol("chunk data not followed by CRLF"))
            }
            (
                Part::TrailerLine | Part::TrailerName | Part::TrailerValue | Part::TrailerLf | Part::LastLf,
                _,
            ) => return Err(Error::Protocol("malformed trailer section")),
            _ => return Err(Error::Protocol("malformed chunk-size line")),
        };
        let trailer_field = |p| matches!(p, Part::TrailerName | Part::TrailerValue | Part::TrailerLf);
        Ok(!trailer_field(was) && !trailer_field(self.part))
    }
}

/// A byte a field value or a chunk extension may hold: visible ASCII, a
/// blank, or obs-text (RFC 9110 section 5.5); no control character.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
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
    use crate::proto::testing::{Counted, Duplex, OneByte};

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
        let Ok(Request::Forward { target, head, framing }) = res else { panic!("{res:?}") };
        assert_eq!(target, Target::Domain("Example.com".into(), 8080));
        assert_eq!(framing, Framing::Length(5));
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
            let Ok(Request::Forward { target, head, framing }) = res else { panic!("{res:?}") };
            assert_eq!((target, framing), (Target::Domain("h.example".into(), 80), Framing::None));
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
        let text = std::str::from_utf8(SILENT_TUNNEL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())), "{text}");
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

    /// The framing `headers` give a POST in `version`, or its status line.
    fn framing_of(version: &str, headers: &str) -> Result<Framing, String> {
        let (res, out, _) = run(format!("POST http://h/ {version}\r\n{headers}\r\n").as_bytes());
        match res {
            Ok(Request::Forward { framing, .. }) => Ok(framing),
            other => Err(format!("{other:?} {}", out.split("\r\n").next().unwrap_or(""))),
        }
    }

    #[test]
    fn body_framing_follows_rfc_9112_section_6_3() {
        for (headers, want) in [
            ("", Framing::None),
            ("Content-Length: 0\r\n", Framing::Length(0)),
            ("Content-Length: 005\r\n", Framing::Length(5)),
            ("Content-Length: 5\r\ncontent-length: 5\r\n", Framing::Length(5)),
            ("Content-Length: 5, 5\r\n", Framing::Length(5)),
            ("Content-Length: 9223372036854775807\r\n", Framing::Length(BODY_LENGTH_MAX)),
            ("Transfer-Encoding: chunked\r\n", Framing::Chunked),
            ("transfer-encoding: CHUNKED\r\n", Framing::Chunked),
            ("Transfer-Encoding: gzip, chunked\r\n", Framing::Chunked),
            ("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", Framing::Chunked),
            ("Transfer-Encoding: , chunked ,\r\n", Framing::Chunked),
        ] {
            assert_eq!(framing_of("HTTP/1.1", headers), Ok(want), "{headers:?}");
        }
        assert_eq!(framing_of("HTTP/1.0", "Content-Length: 3\r\n"), Ok(Framing::Length(3)));
        for headers in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "Transfer-Encoding: identity\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5, 6\r\n",
            "Content-Length: 5,\r\n",
            "Content-Length: \r\n",
            "Content-Length: -1\r\n",
            "Content-Length: +1\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length: 1 0\r\n",
            "Content-Length: 1.0\r\n",
            "Content-Length: 9223372036854775808\r\n",
            "Content-Length: 99999999999999999999999\r\n",
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunked, chunked\r\n",
            "Transfer-Encoding: chunked;q=1\r\n",
            "Transfer-Encoding: \"chunked\"\r\n",
            "Transfer-Encoding: chunked x\r\n",
            "Transfer-Encoding: xchunked\r\n",
            "Transfer-Encoding:\r\n",
        ] {
            let got = framing_of("HTTP/1.1", headers).unwrap_err();
            assert!(got.ends_with("HTTP/1.1 400 Bad Request"), "{headers:?}: {got}");
        }
        let got = framing_of("HTTP/1.0", "Transfer-Encoding: chunked\r\n").unwrap_err();
        assert!(got.ends_with("HTTP/1.1 400 Bad Request"), "{got}");
        // A CONNECT's framing headers say nothing: its bytes are the tunnel's.
        let (res, _, rest) =
            run(b"CONNECT h:443 HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy");
        assert!(res.is_ok() && rest == b"xy", "{res:?}");
    }

    #[test]
    fn the_forwarded_head_carries_the_framing_as_decided_once() {
        let head = |headers: &str| {
            let (res, _, _) = run(format!("POST http://h/ HTTP/1.1\r\n{headers}X: 1\r\n\r\n").as_bytes());
            let Ok(Request::Forward { head, .. }) = res else { panic!("{res:?}") };
            String::from_utf8(head).unwrap()
        };
        let want = |framing: &str| {
            format!("POST / HTTP/1.1\r\nHost: h\r\n{framing}X: 1\r\nConnection: close\r\n\r\n")
        };
        assert_eq!(head("Content-Length: 005, 5\r\ncontent-length: 5\r\n"), want("Content-Length: 5\r\n"));
        assert_eq!(
            head(
                "Transfer-Encoding: gzip\r\nConnection: transfer-encoding\r\n\
transfer-encoding: , Chunked\r\n"
            ),
            want("Transfer-Encoding: gzip, Chunked\r\n")
        );
        assert_eq!(head(""), want(""));
    }

    /// `input` through a body framed as `framing`, `split` bytes per pass:
    /// what it keeps, whether it ended, and where it failed.
    fn pass(framing: Framing, input: &[u8], split: usize) -> (Vec<u8>, bool, Option<String>) {
        let mut body = Body::new(framing);
        let mut kept = Vec::new();
        for part in input.chunks(split) {
            let mut part = part.to_vec();
            match body.pass(&mut part) {
                Ok(n) => kept.extend_from_slice(&part[..n]),
                Err(e) => return (kept, body.ended(), Some(e.to_string())),
            }
        }
        (kept, body.ended(), None)
    }

    #[test]
    fn a_content_length_body_ends_after_its_bytes_and_nothing_after_them_passes() {
        for split in [1, 3, 1000] {
            let (kept, ended, err) = pass(Framing::Length(5), b"helloGET http://h/ HTTP/1.1\r\n\r\n", split);
            assert_eq!((kept.as_slice(), ended, err), (&b"hello"[..], true, None), "split {split}");
            assert_eq!(pass(Framing::Length(5), b"hel", split), (b"hel".to_vec(), false, None));
            assert_eq!(
                pass(Framing::None, b"GET http://h/ HTTP/1.1\r\n\r\n", split),
                (Vec::new(), true, None)
            );
            assert_eq!(pass(Framing::Length(0), b"x", split), (Vec::new(), true, None));
        }
    }

    #[test]
    fn a_chunked_body_passes_as_sent_without_its_trailer_fields_or_what_follows() {
        let body = b"5;a=1 ; b=\"x y\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0000\r\n";
        let input =
            [&body[..], b"X-Sum: 1\r\nProxy-Authorization: Basic eDp5\r\n\r\nGET http://h/ HTTP/1.1\r\n\r\n"]
                .concat();
        let want = [&body[..], b"\r\n"].concat();
        for split in [1, 2, 7, 1000] {
            assert_eq!(pass(Framing::Chunked, &input, split), (want.clone(), true, None), "split {split}");
        }
        // No trailer fields; a chunk's data holding what looks like framing.
        let plain = b"3\r\n0\r\n\r\n0\r\n\r\n";
        assert_eq!(pass(Framing::Chunked, &[&plain[..], b"more"].concat(), 1), (plain.to_vec(), true, None));
        // Cut short: what came so far, not ended.
        assert_eq!(pass(Framing::Chunked, b"5\r\nhel", 1), (b"5\r\nhel".to_vec(), false, None));
        let max = format!("{BODY_LENGTH_MAX:x}\r\nx");
        assert_eq!(pass(Framing::Chunked, max.as_bytes(), 1), (max.into_bytes(), false, None));
    }

    #[test]
    fn broken_chunked_framing_is_refused_where_it_breaks() {
        let long_size = format!("{}1\r\n", "0".repeat(CHUNK_LINE_MAX));
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "v".repeat(HEADERS_MAX));
        let many_trailers = format!("0\r\n{}\r\n", "X: 1\r\n".repeat(HEADER_LINES_MAX + 1));
        for (input, why) in [
            ("11111111111111111\r\n", "chunk size overflows"),
            ("8000000000000000\r\n", "chunk size overflows"),
            ("\r\n", "malformed chunk-size line"),
            ("x\r\n", "malformed chunk-size line"),
            ("-1\r\n", "malformed chunk-size line"),
            ("0x5\r\n", "malformed chunk-size line"),
            ("5\nhello\r\n", "malformed chunk-size line"),
            ("5\r\rhello\r\n", "malformed chunk-size line"),
            ("5 \r\nhello\r\n", "malformed chunk-size line"),
            (" 5\r\nhello\r\n", "malformed chunk-size line"),
            ("5 x\r\nhello\r\n", "malformed chunk-size line"),
            ("5;a\nb\r\nhello\r\n", "malformed chunk-size line"),
            ("5;a\x00\r\nhello\r\n", "malformed chunk-size line"),
            ("5\r\nhello\n0\r\n\r\n", "chunk data not followed by CRLF"),
            ("5\r\nhelloX\r\n", "chunk data not followed by CRLF"),
            ("5\r\nhello\r0\r\n\r\n", "chunk data not followed by CRLF"),
            ("0\r\n\n", "malformed trailer section"),
            ("0\r\n\r\r", "malformed trailer section"),
            ("0\r\n folded: x\r\n\r\n", "malformed trailer section"),
            ("0\r\nno colon\r\n\r\n", "malformed trailer section"),
            ("0\r\nX: a\nb\r\n\r\n", "malformed trailer section"),
            ("0\r\nX: 1\n\r\n", "malformed trailer section"),
            (&long_size, "chunk-size line too long"),
            (&long_trailer, "trailer section too large"),
            (&many_trailers, "malformed trailer section"),
        ] {
            for split in [1, 1000] {
                let (_, ended, err) = pass(Framing::Chunked, input.as_bytes(), split);
                assert_eq!(
                    (ended, err),
                    (false, Some(format!("protocol: {why}"))),
                    "{input:?} split {split}"
                );
            }
        }
    }

    #[test]
    fn a_head_is_read_a_window_at_a_time_and_never_past_its_end() {
        let mut input = b"GET http://h/ HTTP/1.1\r\n".to_vec();
        for i in 0..64 {
            input.extend_from_slice(format!("X-{i:02}: {}\r\n", "v".repeat(246)).as_bytes());
        }
        input.extend_from_slice(b"\r\nbody");
        let head = input.len() - 4;
        assert!(head > 16_000);
        let mut src = Counted { input: &input, calls: 0 };
        let lines = read_request_line(&mut src).map(|_| read_headers(&mut src));
        assert!(matches!(lines, Ok(Ok(ref h)) if h.len() == 64));
        assert_eq!(src.input, b"body", "the body stays unread");
        // A peek and a read per window, and one of each for the request line.
        assert!(src.calls <= 2 * (1 + head / WINDOW + 1), "{} reads and peeks for {head} bytes", src.calls);
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
