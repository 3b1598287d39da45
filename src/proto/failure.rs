//! Why the local could not open a client's tunnel, in terms every client
//! protocol has an answer for: one failure, and for each protocol the one
//! place that answers it (SOCKS5's reply code, SOCKS4's rejection, an HTTP
//! status). std maps the errnos (ECONNREFUSED, ENETUNREACH, EHOSTUNREACH,
//! ETIMEDOUT, …) to the I/O error kinds read here.

use std::io;

use crate::error::Error;

/// Why a tunnel could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The next hop refused the connection.
    Refused,
    /// There is no route to the next hop's network.
    NetworkUnreachable,
    /// There is no route to the next hop.
    HostUnreachable,
    /// The next hop did not answer in time.
    TimedOut,
    /// The local's rules refuse the target (an ACL's `[block_list]`).
    NotAllowed,
    /// Anything else: a TLS failure, a refusal by the server's policy, a local error.
    General,
}

impl Failure {
    /// The failure an error to reach the next hop means.
    pub fn of(e: &Error) -> Failure {
        let Error::Io(e) = e else { return Failure::General };
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            io::ErrorKind::NetworkUnreachable => Failure::NetworkUnreachable,
            io::ErrorKind::HostUnreachable => Failure::HostUnreachable,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Failure::TimedOut,
            _ => Failure::General,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libc::{EHOSTUNREACH, ENETUNREACH, ETIMEDOUT};

    #[test]
    fn errnos_map_to_failures() {
        let of = |e: io::Error| Failure::of(&Error::Io(e));
        assert_eq!(of(io::ErrorKind::ConnectionRefused.into()), Failure::Refused);
        assert_eq!(of(io::Error::from_raw_os_error(ENETUNREACH)), Failure::NetworkUnreachable);
        assert_eq!(of(io::Error::from_raw_os_error(EHOSTUNREACH)), Failure::HostUnreachable);
        assert_eq!(of(io::Error::from_raw_os_error(ETIMEDOUT)), Failure::TimedOut);
        assert_eq!(of(io::ErrorKind::TimedOut.into()), Failure::TimedOut);
        assert_eq!(of(io::ErrorKind::PermissionDenied.into()), Failure::General);
        assert_eq!(Failure::of(&Error::Protocol("x")), Failure::General);
        assert_eq!(Failure::of(&Error::Tls(rustls::Error::DecryptError)), Failure::General);
    }
}
