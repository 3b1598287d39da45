//! The one error type of the crate, from a bad flag at start to a bad byte
//! on the wire.

use std::fmt;
use std::io;

/// Everything that can go wrong, from a bad flag at start to a bad byte on the wire.
#[derive(Debug)]
pub enum Error {
    /// A socket operation failed (connect, read, write, bind).
    Io(io::Error),
    /// The TLS layer refused: handshake failure, untrusted certificate, bad record.
    Tls(rustls::Error),
    /// The peer broke the protocol it is meant to speak (SOCKS5 or the wire header).
    Protocol(&'static str),
    /// A configuration that cannot work, found at start: the text names the file or address.
    Config(String),
    /// Refused by policy: a target the egress rule forbids, a failed login.
    Denied(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Tls(e) => write!(f, "tls: {e}"),
            Error::Protocol(what) => write!(f, "protocol: {what}"),
            Error::Config(what) => f.write_str(what),
            Error::Denied(what) => write!(f, "denied: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Tls(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        // rustls reports TLS failures met during blocking I/O as InvalidData wrapping its error.
        if e.kind() == io::ErrorKind::InvalidData {
            if let Some(tls) = e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()) {
                return Error::Tls(tls.clone());
            }
        }
        Error::Io(e)
    }
}

impl From<rustls::Error> for Error {
    fn from(e: rustls::Error) -> Self {
        Error::Tls(e)
    }
}
