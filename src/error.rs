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
            Error::Tls(rustls::Error::InvalidCertificate(e)) => certificate(f, e),
            Error::Tls(e) => write!(f, "tls: {e}"),
            Error::Protocol(what) => write!(f, "protocol: {what}"),
            Error::Config(what) => f.write_str(what),
            Error::Denied(what) => write!(f, "denied: {what}"),
        }
    }
}

/// Why a server's certificate was refused, for a person: what is wrong
/// with it and how to make the local trust the server, with rustls's own
/// word for it in brackets.
fn certificate(f: &mut fmt::Formatter<'_>, e: &rustls::CertificateError) -> fmt::Result {
    use rustls::CertificateError as Cert;
    const TRUST: &str = "trust it with --pin and the fingerprint blocking-server logs at start, or with --ca and the certificate of the CA that signed it";
    let days = |a: rustls::pki_types::UnixTime, b: rustls::pki_types::UnixTime| {
        a.as_secs().saturating_sub(b.as_secs()).div_ceil(86_400)
    };
    match e {
        Cert::UnknownIssuer => {
            write!(f, "tls: the server's certificate is not signed by a CA this local trusts (self-signed, or a private CA's): {TRUST} [UnknownIssuer]")
        }
        Cert::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => {
            write!(f, "tls: the server's certificate is self-signed (a CA certificate used as the server's own): {TRUST} [CaUsedAsEndEntity]")
        }
        Cert::ExpiredContext { time, not_after } => write!(
            f,
            "tls: the server's certificate expired {} day(s) ago: renew it on the server, or check this machine's clock [Expired]",
            days(*time, *not_after)
        ),
        Cert::Expired => {
            write!(f, "tls: the server's certificate has expired: renew it on the server, or check this machine's clock [Expired]")
        }
        Cert::NotValidYetContext { time, not_before } => write!(
            f,
            "tls: the server's certificate is not valid for another {} day(s): check the clock of this machine and of the server [NotValidYet]",
            days(*not_before, *time)
        ),
        Cert::NotValidYet => {
            write!(f, "tls: the server's certificate is not valid yet: check the clock of this machine and of the server [NotValidYet]")
        }
        Cert::NotValidForNameContext { expected, presented } => write!(
            f,
            "tls: the server's certificate is not for {} but for {}: give --server a name it holds, or --sni one [NotValidForName]",
            expected.to_str(),
            presented.iter().map(|p| bare(p)).collect::<Vec<_>>().join(", ")
        ),
        Cert::NotValidForName => {
            write!(f, "tls: the server's certificate is not for the name asked for: give --server a name it holds, or --sni one [NotValidForName]")
        }
        Cert::ApplicationVerificationFailure => write!(
            f,
            "tls: the server's certificate is not the one --pin names: compare with the fingerprint blocking-server logs at start (a renewed certificate with a new key has a new one) [pin]"
        ),
        e => write!(f, "tls: invalid peer certificate: {e}"),
    }
}

/// A name as rustls presents it (`DnsName("localhost")`, `IpAddress(0::1)`), bare.
fn bare(presented: &str) -> &str {
    presented
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map_or(presented, |inner| inner.trim_matches('"'))
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
    fn certificate_failures_are_written_for_people() {
        use rustls::pki_types::UnixTime;
        use rustls::CertificateError as Cert;
        use std::time::Duration;
        let at = |days: u64| UnixTime::since_unix_epoch(Duration::from_secs(days * 86_400));
        let said = |e: Cert| Error::Tls(rustls::Error::InvalidCertificate(e)).to_string();
        let expired = said(Cert::ExpiredContext { time: at(20_000), not_after: at(19_997) });
        assert!(expired.contains("expired 3 day(s) ago: renew it on the server"), "{expired}");
        let early = said(Cert::NotValidYetContext { time: at(20_000), not_before: at(20_002) });
        assert!(early.contains("not valid for another 2 day(s): check the clock"), "{early}");
        assert!(said(Cert::UnknownIssuer).contains("--pin"));
        assert!(said(Cert::Revoked).contains("invalid peer certificate"), "the rest as rustls says");
        assert_eq!(bare("DnsName(\"localhost\")"), "localhost");
        assert_eq!(bare("IpAddress(0::1)"), "0::1");
        assert_eq!(bare("plain"), "plain");
    }

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
