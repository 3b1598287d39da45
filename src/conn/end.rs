//! How a connection ended, as a value: the step or end where it happened
//! and what happened there. Its `Display` is the close line's `end=` text
//! (operators parse it: the texts do not change), and [`End::class`] is the
//! class `blocking_proxy_connections_closed_total` counts it under.
//!
//! Every way a connection can end is one variant here, made where it
//! happens and carried up as the `Err` of the per-connection functions; the
//! relay and a UDP association report theirs in their [`Outcome`](super::report::Outcome).
//! docs/REFERENCE.md lists the texts; the tests below pin each one and its class.

use std::fmt;
use std::io;
use std::net::IpAddr;

use crate::error::Error;
use crate::metrics::Closed;
use crate::proto::addr::Target;

use super::admission::Refused;

/// How a connection ended.
#[derive(Debug)]
pub enum End {
    /// Both directions of the relay reached their end: `eof`.
    Eof,
    /// The first side reset (or was found gone) once the second had ended
    /// and everything it sent had been passed on: an orderly end, as when a
    /// client closes with bytes it has not read (Python's ssl, say, after
    /// `Connection: close`, leaves the site's close_notify unread):
    /// `eof (client reset after target closed)`.
    ResetAfterEnd(Side, Side),
    /// No byte either way for the idle time: `idle timeout`.
    Idle,
    /// One direction ended and the other stayed quiet for the linger time: `linger timeout`.
    Linger,
    /// No datagram either way for the UDP timeout: `udp timeout`.
    UdpIdle,
    /// Nothing said how it ended (its thread stopped early): `aborted`.
    Aborted,
    /// The client closed before its first byte: `client closed before its first byte`.
    ClosedBeforeRequest,
    /// The client's first byte names no protocol the local serves:
    /// `unknown protocol: first byte 0x16`.
    UnknownProtocol(u8),
    /// A step before the relay failed: `socks5: protocol: not socks5`, `tls handshake: …`.
    Failed(Step, Error),
    /// The next hop could not be reached (or take the first bytes):
    /// `target: Connection refused (os error 111)`, `server HOST:PORT: …`.
    Unreachable(Hop, Error),
    /// The relay ended on one side: `client reset`, `server closed without close_notify`.
    Broke(Side, Break),
    /// The second side ended before it sent a byte, and the first side got
    /// the answer for that: `target closed before any byte`, `server reset before any byte`.
    NoReply(Side, Option<Break>),
    /// Ending one direction failed: `closing client: Broken pipe (os error 32)`.
    Closing(Side, io::Error),
    /// A copy thread could not start: `cannot start copy thread: …`.
    NoThread(io::Error),
    /// The server's TLS state could not be made: `tls: …`.
    Tls(rustls::Error),
    /// A PROXY protocol header came from an address outside `--proxy-from`:
    /// `proxy protocol: 192.0.2.1 is not in --proxy-from`.
    NotBalancer(IpAddr),
    /// The source a PROXY protocol header named has too many pending: `refused: …`.
    Refused(Refused),
    /// A balancer's health check: a `LOCAL` header, then a close: `health check`.
    HealthCheck,
    /// A seed-format client closed before its first header byte:
    /// `header: client closed before its first byte`.
    ClosedBeforeHeader,
    /// A trojan-format client ended before its first record:
    /// `header: client closed before its first record`.
    ClosedBeforeRecord,
    /// The fallback sent something or closed before the client said anything:
    /// `header: the fallback spoke first`.
    FallbackFirst,
    /// A UDP association's client closed its control connection (the usual
    /// end): `client closed the control connection`.
    ControlClosed,
    /// A UDP association's client sent bytes on its control connection:
    /// `client sent bytes on the control connection`.
    ControlBytes,
    /// A UDP association could not be set up: `udp: needs a password on
    /// both sides (the trojan format carries it), or no address`.
    NoUdp,
    /// The server began to drain before the client's header arrived, and
    /// closed it with close_notify: `draining: closed before its header`.
    Draining,
    /// The local's ACL blocks the target (`[block_list]`); the client got
    /// its protocol's refusal: `blocked by the acl`.
    Blocked,
    /// A local's forward stopped serving UDP (the local is stopping), which
    /// ends the flow of each of its clients: `stopped`.
    Stopped,
}

/// A step before the relay, named first in its end: `socks5: …`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Reading or answering the client outside its protocol's parser.
    Client,
    /// Writing the header to the server.
    Server,
    /// The client's SOCKS5 greeting, login and request.
    Socks5,
    /// The client's SOCKS4 or SOCKS4a request.
    Socks4,
    /// The client's HTTP proxy request.
    Http,
    /// A load balancer's PROXY protocol header.
    ProxyProtocol,
    /// The server's TLS handshake.
    TlsHandshake,
    /// The server reading the header.
    Header,
    /// A UDP socket of an association.
    Udp,
    /// The TLS stream that carries an association's frames.
    Stream,
    /// A UDP association's SOCKS5 control connection.
    Control,
    /// The accepted socket itself.
    Socket,
    /// Waiting on an association's sockets.
    Wait,
    /// The local's own descriptors or memory, out while it opened a link to
    /// a server (see [`Error::is_exhaustion`]).
    Local,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Client => "client",
            Step::Server => "server",
            Step::Socks5 => "socks5",
            Step::Socks4 => "socks4",
            Step::Http => "http",
            Step::ProxyProtocol => "proxy protocol",
            Step::TlsHandshake => "tls handshake",
            Step::Header => "header",
            Step::Udp => "udp",
            Step::Stream => "stream",
            Step::Control => "control connection",
            Step::Socket => "socket",
            Step::Wait => "wait",
            Step::Local => "local",
        }
    }
}

/// The next hop a connection is opened to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hop {
    /// The server's onward connection.
    Target,
    /// The server's fallback site.
    Fallback,
    /// One of the local's servers, by address.
    Server(Target),
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hop::Target => f.write_str("target"),
            Hop::Fallback => f.write_str("fallback"),
            Hop::Server(addr) => write!(f, "server {addr}"),
        }
    }
}

/// One side of a relay, as its end names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The application (local) or the local (server).
    Client,
    /// The local's server.
    Server,
    /// The server's target.
    Target,
    /// The server's fallback site.
    Fallback,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Server => "server",
            Side::Target => "target",
            Side::Fallback => "fallback",
        })
    }
}

/// How one side of a relay broke off.
#[derive(Debug)]
pub enum Break {
    /// It reset the connection: `reset`.
    Reset,
    /// Writing to it found it gone (a broken pipe): `gone`.
    Gone,
    /// Its TCP stream ended without TLS's close_notify: `closed without close_notify`.
    NoCloseNotify,
    /// A write to it waited longer than the idle time: `write timed out`.
    WriteTimedOut,
    /// A server sent nothing at all, not even the answer its TLS owes to a
    /// key update, within the connect timeout: `silent`.
    Silent,
    /// Anything else: `: ` and the error.
    Error(Error),
}

/// The error a relay direction fails with when its source owed an answer
/// and sent nothing in time (see [`Break::Silent`]).
#[derive(Debug)]
pub struct Silent;

impl fmt::Display for Silent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no answer in time")
    }
}

impl std::error::Error for Silent {}

impl Silent {
    /// The error: a timeout, which says why.
    pub fn error() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, Silent)
    }

    /// Whether `e` is this error.
    pub fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<Silent>())
    }
}

impl Break {
    /// The break an I/O error on a side's socket or TLS stream means.
    pub fn of(e: io::Error) -> Break {
        // rustls reports a bad record or alert as InvalidData wrapping its error.
        if let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            return Break::Error(Error::Tls(tls.clone()));
        }
        if Silent::is(&e) {
            return Break::Silent;
        }
        match e.kind() {
            io::ErrorKind::UnexpectedEof => Break::NoCloseNotify,
            io::ErrorKind::ConnectionReset => Break::Reset,
            io::ErrorKind::BrokenPipe => Break::Gone,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Break::WriteTimedOut,
            _ => Break::Error(Error::Io(e)),
        }
    }

    fn class(&self) -> Closed {
        match self {
            Break::Reset | Break::Gone | Break::NoCloseNotify => Closed::Reset,
            Break::WriteTimedOut | Break::Silent => Closed::Timeout,
            Break::Error(e) => class_of(e),
        }
    }

    fn fmt_after(&self, side: Side, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::Reset => write!(f, "{side} reset"),
            Break::Gone => write!(f, "{side} gone"),
            Break::NoCloseNotify => write!(f, "{side} closed without close_notify"),
            Break::WriteTimedOut => write!(f, "{side} write timed out"),
            Break::Silent => write!(f, "{side} silent"),
            Break::Error(e) => write!(f, "{side}: {e}"),
        }
    }
}

impl End {
    /// The class the metrics count this end under. A connection handed to
    /// the fallback counts as that instead, however it ended (see
    /// [`Report::handed_over`](super::report::Report::handed_over)).
    pub fn class(&self) -> Closed {
        match self {
            End::Eof
            | End::ResetAfterEnd(..)
            | End::ClosedBeforeRequest
            | End::ClosedBeforeHeader
            | End::ClosedBeforeRecord
            | End::ControlClosed
            | End::NoReply(_, None) => Closed::Eof,
            End::Idle | End::Linger | End::UdpIdle => Closed::Timeout,
            End::UnknownProtocol(_) | End::NotBalancer(_) | End::FallbackFirst | End::ControlBytes => {
                Closed::Protocol
            }
            End::Tls(_) => Closed::TlsError,
            End::Blocked => Closed::Denied,
            End::Failed(_, e) => class_of(e),
            End::Unreachable(_, e) => match e {
                Error::Denied(_) => Closed::Denied,
                Error::Tls(_) => Closed::TlsError,
                _ => Closed::Unreachable,
            },
            End::Broke(_, b) | End::NoReply(_, Some(b)) => b.class(),
            End::Closing(_, e) => io_class(e),
            End::Aborted
            | End::NoThread(_)
            | End::Refused(_)
            | End::HealthCheck
            | End::NoUdp
            | End::Draining
            | End::Stopped => Closed::Other,
        }
    }

    /// The level its close line is logged at: `debug` for a client that
    /// closed after its TLS handshake without a header (a local's ready
    /// connection that aged out unused, many a minute, counted in
    /// `blocking_proxy_unused_connections_total`), `info` for every other end.
    pub fn level(&self) -> log::Level {
        match self {
            End::ClosedBeforeHeader | End::ClosedBeforeRecord => log::Level::Debug,
            _ => log::Level::Info,
        }
    }
}

/// The class of a failure by its error: a refusal by policy, TLS, a
/// protocol error, or by the I/O error's kind.
fn class_of(e: &Error) -> Closed {
    match e {
        Error::Denied(_) => Closed::Denied,
        Error::Tls(_) => Closed::TlsError,
        Error::Protocol(_) => Closed::Protocol,
        Error::Io(e) => io_class(e),
        Error::Config(_) => Closed::Other,
    }
}

/// A deadline is a timeout; a reset, a broken pipe or a stream cut short is a reset.
fn io_class(e: &io::Error) -> Closed {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Closed::Timeout,
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
            Closed::Reset
        }
        _ => Closed::Other,
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Eof => f.write_str("eof"),
            End::ResetAfterEnd(reset, ended) => write!(f, "eof ({reset} reset after {ended} closed)"),
            End::Idle => f.write_str("idle timeout"),
            End::Linger => f.write_str("linger timeout"),
            End::UdpIdle => f.write_str("udp timeout"),
            End::Aborted => f.write_str("aborted"),
            End::ClosedBeforeRequest => f.write_str("client closed before its first byte"),
            End::UnknownProtocol(byte) => write!(f, "unknown protocol: first byte {byte:#04x}"),
            End::Failed(step, e) => write!(f, "{}: {e}", step.name()),
            End::Unreachable(hop, e) => write!(f, "{hop}: {e}"),
            End::Broke(side, b) => b.fmt_after(*side, f),
            End::NoReply(Side::Server, None) => f.write_str(
                "server closed before any byte (the target closed, refused or is unknown, or the server's rules deny it: the server's log says which)",
            ),
            End::NoReply(side, None) => write!(f, "{side} closed before any byte"),
            End::NoReply(side, Some(b)) => {
                b.fmt_after(*side, f)?;
                f.write_str(" before any byte")?;
                match (side, b) {
                    (Side::Server, Break::NoCloseNotify | Break::Reset) => f.write_str(
                        " (does the password match the server's? a server cuts a header it does not take)",
                    ),
                    _ => Ok(()),
                }
            }
            End::Closing(side, e) => write!(f, "closing {side}: {e}"),
            End::NoThread(e) => write!(f, "cannot start copy thread: {e}"),
            End::Tls(e) => write!(f, "tls: {e}"),
            End::NotBalancer(ip) => write!(f, "proxy protocol: {ip} is not in --proxy-from"),
            End::Refused(why) => write!(f, "refused: {why}"),
            End::HealthCheck => f.write_str("health check"),
            End::Draining => f.write_str("draining: closed before its header"),
            End::Blocked => f.write_str("blocked by the acl"),
            End::ClosedBeforeHeader => f.write_str("header: client closed before its first byte"),
            End::ClosedBeforeRecord => f.write_str("header: client closed before its first record"),
            End::FallbackFirst => f.write_str("header: the fallback spoke first"),
            End::ControlClosed => f.write_str("client closed the control connection"),
            End::ControlBytes => f.write_str("client sent bytes on the control connection"),
            End::NoUdp => f.write_str("udp: needs a password on both sides (the trojan format carries it), or no address"),
            End::Stopped => f.write_str("stopped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::admission::Source;

    fn io(kind: io::ErrorKind, text: &str) -> io::Error {
        io::Error::new(kind, text)
    }

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    /// Every end the code makes, the text its close line says, and its class.
    fn every_end() -> Vec<(End, &'static str, Closed)> {
        use io::ErrorKind::*;
        let tls = || rustls::Error::General("cannot decrypt peer's message".into());
        let server = || Target::parse("127.0.0.1:9012").unwrap();
        vec![
            (End::Eof, "eof", Closed::Eof),
            (End::Idle, "idle timeout", Closed::Timeout),
            (End::Linger, "linger timeout", Closed::Timeout),
            (End::UdpIdle, "udp timeout", Closed::Timeout),
            (End::Aborted, "aborted", Closed::Other),
            (End::ClosedBeforeRequest, "client closed before its first byte", Closed::Eof),
            (End::UnknownProtocol(0x16), "unknown protocol: first byte 0x16", Closed::Protocol),
            (
                End::Failed(Step::Client, Error::Io(io(TimedOut, "deadline passed"))),
                "client: deadline passed",
                Closed::Timeout,
            ),
            (
                End::Failed(Step::Client, Error::Io(os(104))),
                "client: Connection reset by peer (os error 104)",
                Closed::Reset,
            ),
            (
                End::Failed(Step::Server, Error::Io(os(32))),
                "server: Broken pipe (os error 32)",
                Closed::Reset,
            ),
            (
                End::Failed(Step::Server, Error::Tls(tls())),
                "server: tls: unexpected error: cannot decrypt peer's message",
                Closed::TlsError,
            ),
            (
                End::Failed(Step::Socks5, Error::Io(io(TimedOut, "deadline passed"))),
                "socks5: deadline passed",
                Closed::Timeout,
            ),
            (
                End::Failed(Step::Socks5, Error::Io(io(UnexpectedEof, "failed to fill whole buffer"))),
                "socks5: failed to fill whole buffer",
                Closed::Reset,
            ),
            (
                End::Failed(Step::Socks5, Error::Protocol("not socks5")),
                "socks5: protocol: not socks5",
                Closed::Protocol,
            ),
            (
                End::Failed(Step::Socks5, Error::Denied("login failed for user alice".into())),
                "socks5: denied: login failed for user alice",
                Closed::Denied,
            ),
            (
                End::Failed(Step::Socks4, Error::Protocol("bind is not supported")),
                "socks4: protocol: bind is not supported",
                Closed::Protocol,
            ),
            (
                End::Failed(Step::Http, Error::Denied("no proxy credentials".into())),
                "http: denied: no proxy credentials",
                Closed::Denied,
            ),
            (
                End::Failed(Step::ProxyProtocol, Error::Protocol("no PROXY protocol header")),
                "proxy protocol: protocol: no PROXY protocol header",
                Closed::Protocol,
            ),
            (
                End::Failed(Step::ProxyProtocol, Error::Io(io(TimedOut, "deadline passed"))),
                "proxy protocol: deadline passed",
                Closed::Timeout,
            ),
            (
                End::Failed(Step::TlsHandshake, Error::Tls(tls())),
                "tls handshake: tls: unexpected error: cannot decrypt peer's message",
                Closed::TlsError,
            ),
            (
                End::Failed(Step::TlsHandshake, Error::Io(io(TimedOut, "deadline passed"))),
                "tls handshake: deadline passed",
                Closed::Timeout,
            ),
            (
                End::Failed(Step::TlsHandshake, Error::Io(io(UnexpectedEof, "tls handshake eof"))),
                "tls handshake: tls handshake eof",
                Closed::Reset,
            ),
            (
                End::Failed(Step::Header, Error::Protocol("not a trojan header")),
                "header: protocol: not a trojan header",
                Closed::Protocol,
            ),
            (
                End::Failed(Step::Header, Error::Io(io(TimedOut, "deadline passed"))),
                "header: deadline passed",
                Closed::Timeout,
            ),
            (
                End::Failed(Step::Udp, Error::Io(os(98))),
                "udp: Address already in use (os error 98)",
                Closed::Other,
            ),
            (
                End::Failed(Step::Stream, Error::Tls(tls())),
                "stream: tls: unexpected error: cannot decrypt peer's message",
                Closed::TlsError,
            ),
            (
                End::Failed(Step::Stream, Error::Protocol("malformed udp frame")),
                "stream: protocol: malformed udp frame",
                Closed::Protocol,
            ),
            (
                End::Failed(Step::Control, Error::Io(os(104))),
                "control connection: Connection reset by peer (os error 104)",
                Closed::Reset,
            ),
            (
                End::Failed(Step::Socket, Error::Io(os(107))),
                "socket: Transport endpoint is not connected (os error 107)",
                Closed::Other,
            ),
            (
                End::Failed(Step::Wait, Error::Io(os(9))),
                "wait: Bad file descriptor (os error 9)",
                Closed::Other,
            ),
            (
                End::Failed(Step::Local, Error::Io(os(24))),
                "local: Too many open files (os error 24)",
                Closed::Other,
            ),
            (
                End::Refused(Refused::Fds(536)),
                "refused: out of descriptors (536 for connections)",
                Closed::Other,
            ),
            (
                End::Unreachable(Hop::Target, Error::Io(os(111))),
                "target: Connection refused (os error 111)",
                Closed::Unreachable,
            ),
            (
                End::Unreachable(Hop::Target, Error::Io(io(TimedOut, "name resolution timed out"))),
                "target: name resolution timed out",
                Closed::Unreachable,
            ),
            (
                End::Unreachable(Hop::Target, Error::Denied("10.0.0.1:80 is not a public address".into())),
                "target: denied: 10.0.0.1:80 is not a public address",
                Closed::Denied,
            ),
            (
                End::Unreachable(Hop::Target, Error::Io(os(32))),
                "target: Broken pipe (os error 32)",
                Closed::Unreachable,
            ),
            (
                End::Unreachable(Hop::Fallback, Error::Io(os(111))),
                "fallback: Connection refused (os error 111)",
                Closed::Unreachable,
            ),
            (
                End::Unreachable(Hop::Server(server()), Error::Io(os(111))),
                "server 127.0.0.1:9012: Connection refused (os error 111)",
                Closed::Unreachable,
            ),
            (
                End::Unreachable(Hop::Server(server()), Error::Io(io(TimedOut, "connect timed out"))),
                "server 127.0.0.1:9012: connect timed out",
                Closed::Unreachable,
            ),
            (
                End::Unreachable(Hop::Server(server()), Error::Tls(tls())),
                "server 127.0.0.1:9012: tls: unexpected error: cannot decrypt peer's message",
                Closed::TlsError,
            ),
            (End::Broke(Side::Client, Break::Reset), "client reset", Closed::Reset),
            (
                End::ResetAfterEnd(Side::Client, Side::Target),
                "eof (client reset after target closed)",
                Closed::Eof,
            ),
            (
                End::ResetAfterEnd(Side::Client, Side::Fallback),
                "eof (client reset after fallback closed)",
                Closed::Eof,
            ),
            (End::Broke(Side::Target, Break::Gone), "target gone", Closed::Reset),
            (
                End::Broke(Side::Server, Break::NoCloseNotify),
                "server closed without close_notify",
                Closed::Reset,
            ),
            (End::Broke(Side::Client, Break::WriteTimedOut), "client write timed out", Closed::Timeout),
            (
                End::Broke(Side::Client, Break::Error(Error::Tls(tls()))),
                "client: tls: unexpected error: cannot decrypt peer's message",
                Closed::TlsError,
            ),
            (
                End::Broke(Side::Fallback, Break::Error(Error::Io(os(113)))),
                "fallback: No route to host (os error 113)",
                Closed::Other,
            ),
            (End::NoReply(Side::Target, None), "target closed before any byte", Closed::Eof),
            (End::NoReply(Side::Target, Some(Break::Reset)), "target reset before any byte", Closed::Reset),
            (
                End::NoReply(Side::Server, Some(Break::Silent)),
                "server silent before any byte",
                Closed::Timeout,
            ),
            (
                End::NoReply(Side::Server, Some(Break::NoCloseNotify)),
                "server closed without close_notify before any byte (does the password match the server's? a server cuts a header it does not take)",
                Closed::Reset,
            ),
            (
                End::NoReply(Side::Server, None),
                "server closed before any byte (the target closed, refused or is unknown, or the server's rules deny it: the server's log says which)",
                Closed::Eof,
            ),
            (End::Closing(Side::Client, os(32)), "closing client: Broken pipe (os error 32)", Closed::Reset),
            (
                End::NoThread(os(11)),
                "cannot start copy thread: Resource temporarily unavailable (os error 11)",
                Closed::Other,
            ),
            (
                End::Tls(rustls::Error::NoCertificatesPresented),
                "tls: peer sent no certificates",
                Closed::TlsError,
            ),
            (
                End::NotBalancer("192.0.2.1".parse().unwrap()),
                "proxy protocol: 192.0.2.1 is not in --proxy-from",
                Closed::Protocol,
            ),
            (
                End::Refused(Refused::PerSource(Source::of("192.0.2.1".parse().unwrap()), 2)),
                "refused: 2 connections from 192.0.2.1 already pending",
                Closed::Other,
            ),
            (End::HealthCheck, "health check", Closed::Other),
            (End::Draining, "draining: closed before its header", Closed::Other),
            (End::Blocked, "blocked by the acl", Closed::Denied),
            (End::ClosedBeforeHeader, "header: client closed before its first byte", Closed::Eof),
            (End::ClosedBeforeRecord, "header: client closed before its first record", Closed::Eof),
            (End::FallbackFirst, "header: the fallback spoke first", Closed::Protocol),
            (End::ControlClosed, "client closed the control connection", Closed::Eof),
            (End::ControlBytes, "client sent bytes on the control connection", Closed::Protocol),
            (End::NoUdp, "udp: needs a password on both sides (the trojan format carries it), or no address", Closed::Other),
            (End::Stopped, "stopped", Closed::Other),
        ]
    }

    #[test]
    fn every_end_says_its_text_and_falls_in_its_class() {
        for (end, text, class) in every_end() {
            assert_eq!(end.to_string(), text);
            assert_eq!(end.class(), class, "{text}");
        }
    }

    #[test]
    fn only_a_client_that_closed_before_its_header_is_logged_at_debug() {
        for (end, text, _) in every_end() {
            let quiet = matches!(end, End::ClosedBeforeHeader | End::ClosedBeforeRecord);
            let want = if quiet { log::Level::Debug } else { log::Level::Info };
            assert_eq!(end.level(), want, "{text}");
        }
    }

    #[test]
    fn io_errors_become_the_breaks_the_relay_names() {
        use io::ErrorKind::*;
        let said = |e: io::Error| End::Broke(Side::Server, Break::of(e)).to_string();
        assert_eq!(said(io(UnexpectedEof, "x")), "server closed without close_notify");
        assert_eq!(said(os(104)), "server reset");
        assert_eq!(said(os(32)), "server gone");
        assert_eq!(said(io(WouldBlock, "x")), "server write timed out");
        assert_eq!(said(io(TimedOut, "x")), "server write timed out");
        assert_eq!(said(Silent::error()), "server silent");
        let tls = io::Error::new(InvalidData, rustls::Error::DecryptError);
        assert_eq!(said(tls), "server: tls: cannot decrypt peer's message");
        assert_eq!(said(os(113)), "server: No route to host (os error 113)");
    }
}
