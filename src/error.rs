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

impl Error {
    /// Whether this process ran out of something of its own: descriptors
    /// (EMFILE, ENFILE), memory or socket buffers (ENOMEM, ENOBUFS), local
    /// ports (EADDRNOTAVAIL). That is this side's problem, never the peer's:
    /// it says nothing about whether the peer is up.
    pub fn is_exhaustion(&self) -> bool {
        let Error::Io(e) = self else { return false };
        matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS | libc::EADDRNOTAVAIL)
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_memory_or_ports_is_exhaustion_and_a_peer_failing_is_not() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::ENOBUFS, libc::EADDRNOTAVAIL] {
            assert!(Error::Io(io::Error::from_raw_os_error(errno)).is_exhaustion(), "{errno}");
        }
        for errno in [libc::ECONNREFUSED, libc::ETIMEDOUT, libc::EAGAIN, libc::ECONNRESET, libc::EHOSTUNREACH]
        {
            assert!(!Error::Io(io::Error::from_raw_os_error(errno)).is_exhaustion(), "{errno}");
        }
        assert!(!Error::Io(io::ErrorKind::TimedOut.into()).is_exhaustion());
        assert!(!Error::Tls(rustls::Error::DecryptError).is_exhaustion());
    }
}
