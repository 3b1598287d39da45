//! Driving a rustls connection over a blocking socket under a deadline:
//! the handshake (counted in the metrics), the close, and a reader that
//! hands rustls one record at a time.

use std::io::{self, Read, Write};

use rustls::{ConnectionCommon, HandshakeKind, SideData};

use crate::error::Error;
use crate::metrics::{self, Handshake};
use crate::net::deadline::Deadline;

/// Runs a TLS handshake over `io` (a socket under a [`Deadline`]) to
/// completion, and counts it in the metrics: its kind, or its failure.
pub fn handshake<S: SideData>(
    conn: &mut ConnectionCommon<S>,
    io: &mut (impl Read + Write),
) -> Result<(), Error> {
    let done = complete(conn, io);
    match (&done, conn.handshake_kind()) {
        (Err(_), _) => metrics::HANDSHAKE_FAILURES.inc(),
        (Ok(()), Some(HandshakeKind::Resumed)) => metrics::handshake(Handshake::Resumed),
        (Ok(()), _) => metrics::handshake(Handshake::Full),
    }
    done
}

fn complete<S: SideData>(conn: &mut ConnectionCommon<S>, io: &mut (impl Read + Write)) -> Result<(), Error> {
    while conn.is_handshaking() {
        conn.complete_io(io)?;
    }
    // A TLS 1.3 server queues its session tickets after the client's Finished.
    while conn.wants_write() {
        conn.write_tls(io)?;
    }
    Ok(())
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
}

/// A TLS record header: content type (1), version (2), length (2).
const RECORD_HEADER: usize = 5;

impl<'a> Records<'a> {
    /// Reads records from `inner`.
    pub fn new(inner: Deadline<'a>) -> Self {
        Records { inner, head: [0; RECORD_HEADER], head_len: 0, body_left: 0 }
    }

    /// Whether every record read so far has been read whole.
    pub fn between_records(&self) -> bool {
        self.head_len == 0 && self.body_left == 0
    }
}

impl Read for Records<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
