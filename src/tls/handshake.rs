//! Driving a rustls connection over a blocking socket under a deadline:
//! the handshake (counted in the metrics), the close, and a reader that
//! hands rustls one record at a time.
//!
//! A handshake that fails sends its alert before the socket closes, as a
//! web server does. The server reads the ClientHello first ([`accept`]) and
//! refuses two kinds of client the way nginx (OpenSSL) does, before any
//! ServerHello, where rustls would answer otherwise: one that offers ALPN
//! but none of the server's protocols gets no_application_protocol in the
//! clear (rustls sends it after its ServerHello, encrypted), and one that
//! speaks TLS 1.1 at most gets protocol_version in a record of its own
//! version (rustls says handshake_failure when such a client sends no
//! signature_algorithms, and writes every record as TLS 1.2).

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::server::{Accepted, Acceptor};
use rustls::{ConnectionCommon, HandshakeKind, ServerConfig, ServerConnection, SideData};

use crate::error::Error;
use crate::metrics::{self, Handshake};
use crate::net::deadline::Deadline;
use crate::proto::hello;

/// Runs a TLS handshake over `io` (a socket under a [`Deadline`]) to
/// completion, and counts it in the metrics: its kind, or its failure.
pub fn handshake<S: SideData>(
    conn: &mut ConnectionCommon<S>,
    io: &mut (impl Read + Write),
) -> Result<(), Error> {
    let done = complete(conn, io);
    count(done.is_ok(), conn.handshake_kind());
    done
}

/// The server's side of a handshake over `io` (a socket under a
/// [`Deadline`], read one record at a time): reads the ClientHello, refuses
/// a client as a web server would (see the module's header), and otherwise
/// completes the handshake with `config`. Counted in the metrics as by
/// [`handshake`].
pub fn accept(config: &Arc<ServerConfig>, io: &mut Records<'_>) -> Result<ServerConnection, Error> {
    let done = hello_then_handshake(config, io);
    count(done.is_ok(), done.as_ref().ok().and_then(|c| c.handshake_kind()));
    done
}

fn count(done: bool, kind: Option<HandshakeKind>) {
    match (done, kind) {
        (false, _) => metrics::HANDSHAKE_FAILURES.inc(),
        (true, Some(HandshakeKind::Resumed)) => metrics::handshake(Handshake::Resumed),
        (true, _) => metrics::handshake(Handshake::Full),
    }
}

fn hello_then_handshake(config: &Arc<ServerConfig>, io: &mut Records<'_>) -> Result<ServerConnection, Error> {
    let mut acceptor = Acceptor::default();
    let accepted = loop {
        if acceptor.read_tls(io)? == 0 {
            return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        match acceptor.accept() {
            Ok(None) => {}
            Ok(Some(accepted)) => break accepted,
            Err((e, mut alert)) => return Err(refuse(io, e, |io| alert.write_all(io))),
        }
    };
    // OpenSSL looks at the version first: an old client gets protocol_version, whatever its ALPN.
    if old_client(io).is_none() && !speaks_an_offered_protocol(config, &accepted) {
        let _ = io.write_all(&alert(hello::TLS12, NO_APPLICATION_PROTOCOL));
        return Err(Error::Tls(rustls::Error::NoApplicationProtocol));
    }
    let mut conn = accepted
        .into_connection(Arc::clone(config))
        .map_err(|(e, mut alert)| refuse(io, e, |io| alert.write_all(io)))?;
    complete(&mut conn, io)?;
    Ok(conn)
}

/// Answers a ClientHello that rustls refused: with protocol_version in the
/// client's own version if it speaks TLS 1.1 at most and rustls refused it
/// for that (no TLS 1.2 offered, or no signature_algorithms, which only
/// TLS 1.2 brought), else with rustls's alert (`write_alert`). Returns the error.
fn refuse(
    io: &mut Records<'_>,
    e: rustls::Error,
    write_alert: impl FnOnce(&mut Records<'_>) -> io::Result<()>,
) -> Error {
    use rustls::PeerIncompatible::{
        SignatureAlgorithmsExtensionRequired, Tls12NotOffered, Tls12NotOfferedOrEnabled,
    };
    let for_its_version = matches!(
        e,
        rustls::Error::PeerIncompatible(
            SignatureAlgorithmsExtensionRequired | Tls12NotOffered | Tls12NotOfferedOrEnabled
        )
    );
    // A write that fails changes nothing: the connection ends either way.
    let _ = match old_client(io).filter(|_| for_its_version) {
        Some(version) => io.write_all(&alert(version, PROTOCOL_VERSION)),
        None => write_alert(io),
    };
    Error::Tls(e)
}

/// The version of a client that asks for TLS 1.1 or older in its ClientHello.
fn old_client(io: &Records<'_>) -> Option<u16> {
    hello::legacy_version(io.start()).filter(|v| *v < hello::TLS12)
}

/// Whether the client offers no ALPN, or a protocol of the server's; a
/// server with no protocols takes any client (rustls's rule, RFC 7301).
fn speaks_an_offered_protocol(config: &ServerConfig, accepted: &Accepted) -> bool {
    match accepted.client_hello().alpn() {
        None => true,
        Some(_) if config.alpn_protocols.is_empty() => true,
        Some(mut offered) => offered.any(|p| config.alpn_protocols.iter().any(|ours| ours.as_slice() == p)),
    }
}

/// Alert descriptions (RFC 8446, RFC 7301).
const PROTOCOL_VERSION: u8 = 70;
const NO_APPLICATION_PROTOCOL: u8 = 120;

/// A fatal alert in a plaintext record of `version`.
fn alert(version: u16, description: u8) -> [u8; 7] {
    let [hi, lo] = version.to_be_bytes();
    [ALERT, hi, lo, 0, 2, FATAL, description]
}

/// The record type of an alert, and the level of a fatal one.
const ALERT: u8 = 21;
const FATAL: u8 = 2;

fn complete<S: SideData>(conn: &mut ConnectionCommon<S>, io: &mut (impl Read + Write)) -> Result<(), Error> {
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(io) {
            // rustls writes one chunk of what it queued before it returns
            // the error: a TLS 1.3 server that refuses after its ServerHello
            // still holds the alert. The peer is owed it before the close.
            flush(conn, io);
            return Err(e.into());
        }
    }
    // A TLS 1.3 server queues its session tickets after the client's Finished.
    while conn.wants_write() {
        conn.write_tls(io)?;
    }
    Ok(())
}

/// Writes what `conn` has queued, until it is written or the socket refuses.
fn flush<S: SideData>(conn: &mut ConnectionCommon<S>, io: &mut impl Write) {
    while conn.wants_write() {
        match conn.write_tls(io) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Ends a TLS connection on our side: close_notify, written to `io` (a
/// socket under a [`Deadline`]). The peer then reads a clean end, which says
/// this side gave up on purpose (an unreachable target, a health check done),
/// where a bare TCP close says it broke.
pub fn close<S: SideData>(conn: &mut ConnectionCommon<S>, io: &mut impl Write) -> Result<(), Error> {
    conn.send_close_notify();
    while conn.wants_write() {
        conn.write_tls(io)?;
    }
    Ok(())
}

/// A socket reader that never reads past the end of a TLS record, so that
/// rustls is given one record at a time and a server can tell where the
/// first application-data record ends. Writes pass straight through.
pub struct Records<'a> {
    inner: Deadline<'a>,
    /// The record header read so far (five bytes: type, version, length).
    head: [u8; RECORD_HEADER],
    head_len: usize,
    /// Bytes of the current record's body not yet read.
    body_left: usize,
    /// The first bytes read, up to [`hello::START`]: where a ClientHello's version is.
    start: [u8; hello::START],
    start_len: usize,
}

/// A TLS record header: content type (1), version (2), length (2).
const RECORD_HEADER: usize = 5;

impl<'a> Records<'a> {
    /// Reads records from `inner`.
    pub fn new(inner: Deadline<'a>) -> Self {
        Records {
            inner,
            head: [0; RECORD_HEADER],
            head_len: 0,
            body_left: 0,
            start: [0; hello::START],
            start_len: 0,
        }
    }

    /// The first bytes read from the socket, up to [`hello::START`] of them.
    pub fn start(&self) -> &[u8] {
        &self.start[..self.start_len]
    }

    /// Whether every record read so far has been read whole.
    pub fn between_records(&self) -> bool {
        self.head_len == 0 && self.body_left == 0
    }
}

impl Read for Records<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.next(buf)?;
        let keep = n.min(hello::START - self.start_len);
        self.start[self.start_len..self.start_len + keep].copy_from_slice(&buf[..keep]);
        self.start_len += keep;
        Ok(n)
    }
}

impl Records<'_> {
    /// Reads from the current record's header or body, never past either.
    fn next(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.body_left > 0 {
            let n = buf.len().min(self.body_left);
            let n = self.inner.read(&mut buf[..n])?;
            self.body_left -= n;
            return Ok(n);
        }
        let n = buf.len().min(RECORD_HEADER - self.head_len);
        let n = self.inner.read(&mut buf[..n])?;
        self.head[self.head_len..self.head_len + n].copy_from_slice(&buf[..n]);
        self.head_len += n;
        if self.head_len == RECORD_HEADER {
            self.body_left = usize::from(u16::from_be_bytes([self.head[3], self.head[4]]));
            self.head_len = 0;
        }
        Ok(n)
    }
}

impl Write for Records<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.inner.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::thread;
    use std::time::Instant;

    use rustls::pki_types::ServerName;
    use rustls::ClientConnection;

    use super::*;
    use crate::net::testing::{socket_pair, TIMEOUT};
    use crate::tls::config::{client_config, server_config, Identity, Trust};

    /// A TLS 1.3 server that refuses after its ServerHello (here, an ALPN
    /// it lacks: rustls checks it there) has queued the ServerHello, a
    /// ChangeCipherSpec and the alert; rustls writes only the first before
    /// it returns the error. Every one reaches the client before the close.
    #[test]
    fn a_failed_handshake_sends_every_record_queued_before_the_close() {
        let (client_sock, server_sock) = socket_pair();
        let served = server_config(&Identity::TestCertificate, &[b"http/1.1".to_vec()], None).unwrap();
        let server = thread::spawn(move || {
            let mut conn = ServerConnection::new(served.config).unwrap();
            let e = handshake(&mut conn, &mut Deadline::new(&server_sock, Instant::now() + TIMEOUT));
            // The socket stays open until the client has read: a close with
            // the client's ChangeCipherSpec unread would be a reset, which
            // may overtake the alert.
            (e.map_err(|e| e.to_string()), server_sock)
        });
        let config = client_config(&Trust::Insecure, &[b"h2".to_vec()]).unwrap();
        let mut client = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut sock = &client_sock;
        let seen = loop {
            if let Err(e) = client.complete_io(&mut sock) {
                break Error::from(e).to_string();
            }
        };
        let (refused, _server_sock) = server.join().unwrap();
        assert_eq!(refused, Err("tls: peer doesn't support any known protocol".to_owned()));
        assert_eq!(seen, "tls: received fatal alert: NoApplicationProtocol");
    }

    /// Where a ClientHello's version is read from: the first bytes, kept
    /// whether they arrive one per read or with a whole record in one.
    #[test]
    fn records_keep_the_first_bytes_read_one_by_one_or_all_at_once() {
        let hello = [22u8, 3, 1, 0, 9, 1, 0, 0, 5, 3, 2, 0xaa, 0xbb, 0xcc, 22, 3, 1, 0, 1, 0xff];
        for per_read in [1, 64] {
            let (mut peer, sock) = socket_pair();
            peer.write_all(&hello).unwrap();
            let mut records = Records::new(Deadline::new(&sock, Instant::now() + TIMEOUT));
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while got.len() < hello.len() {
                let n = records.read(&mut buf[..per_read]).unwrap();
                got.extend_from_slice(&buf[..n]);
                assert_eq!(records.start(), &got[..got.len().min(hello::START)], "{per_read} per read");
            }
            assert_eq!(got, hello);
            assert_eq!(hello::legacy_version(records.start()), Some(0x0302));
        }
    }
}
