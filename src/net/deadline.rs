//! Deadlines on blocking sockets: a wrapper whose reads and writes fail
//! once a moment has passed, a read of what has already arrived that never
//! waits, and the gentle close of a connection that failed before its relay.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use super::drain::{draining, Drain};
use super::poll::{wait, Ready};
use crate::proto::http::Peek;

/// A socket wrapper whose reads and writes fail once `until` has passed.
///
/// The socket timeout is set to what is left, so a peer that trickles one
/// byte at a time cannot stretch a handshake past its deadline. It is set
/// again only when `REARM` (50 ms) has passed since the last time, which bounds the
/// overshoot by that much and spares a system call per read.
pub struct Deadline<'a> {
    sock: &'a TcpStream,
    until: Instant,
    read_armed: Option<Instant>,
    write_armed: Option<Instant>,
    /// Reads also give up, with a [`Draining`](super::drain::Draining)
    /// error, once this drain starts.
    drain: Option<&'a Drain>,
}

/// How stale a deadline's socket timeout may get before it is set again.
const REARM: Duration = Duration::from_millis(50);

impl<'a> Deadline<'a> {
    /// Wraps `sock` with a deadline at `until`.
    pub fn new(sock: &'a TcpStream, until: Instant) -> Self {
        Deadline { sock, until, read_armed: None, write_armed: None, drain: None }
    }

    /// Makes reads give up, with a [`Draining`](super::drain::Draining)
    /// error, once `drain` has started: each read first waits for the
    /// socket or the drain, and the drain wins a tie. For a server's
    /// connections that wait for a header.
    pub fn or_drain(mut self, drain: &'a Drain) -> Self {
        self.drain = Some(drain);
        self
    }

    /// With a drain: waits until the socket has something to read, or fails
    /// once the drain has started or the deadline has passed.
    fn wait_unless_draining(&self) -> io::Result<()> {
        let Some(drain) = self.drain else { return Ok(()) };
        loop {
            if drain.started() {
                return Err(draining());
            }
            let left = self.until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
            }
            match wait(self.sock, drain.watch(), true, left)? {
                Ready::First if !drain.started() => return Ok(()),
                Ready::First | Ready::Second => return Err(draining()),
                Ready::Neither => {}
            }
        }
    }

    /// Sets a socket timeout to what is left, unless it was set less than [`REARM`] ago.
    fn arm(
        &self,
        armed: Option<Instant>,
        set: impl Fn(&TcpStream, Option<Duration>) -> io::Result<()>,
    ) -> io::Result<Option<Instant>> {
        let now = Instant::now();
        let left = self.until.saturating_duration_since(now);
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        if armed.is_some_and(|at| now < at + REARM) {
            return Ok(armed);
        }
        set(self.sock, Some(left))?;
        Ok(Some(now))
    }

    /// Reads what has arrived into `buf` without taking it off the socket,
    /// waiting for at least one byte (or an end) until the deadline. Returns
    /// 0 at the peer's end of stream. How a listener serving several
    /// protocols tells them apart before handing the socket to the parser.
    pub fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.wait_unless_draining()?;
        self.read_armed = self.arm(self.read_armed, TcpStream::set_read_timeout)?;
        self.sock.peek(buf).map_err(timed_out)
    }
}

/// The HTTP proxy's head reader looks through [`Deadline::peek`].
impl Peek for Deadline<'_> {
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Deadline::peek(self, buf)
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.wait_unless_draining()?;
        self.read_armed = self.arm(self.read_armed, TcpStream::set_read_timeout)?;
        self.sock.read(buf).map_err(timed_out)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_armed = self.arm(self.write_armed, TcpStream::set_write_timeout)?;
        self.sock.write(buf).map_err(timed_out)
    }

    /// One `writev` for every buffer: rustls hands a flight of records
    /// (ServerHello to Finished; a key update, the header and the first
    /// bytes) as one call, and they leave in one system call and one segment.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.write_armed = self.arm(self.write_armed, TcpStream::set_write_timeout)?;
        self.sock.write_vectored(bufs).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How much a [`Buffered`] reader takes at once: a SOCKS5 greeting (257
/// bytes at most) or request (262) whole.
pub const BUFFERED: usize = 512;

/// A reader that takes whatever has arrived, up to [`BUFFERED`] bytes, in
/// one read, and hands it out in the pieces a parser asks for: a SOCKS5
/// greeting or request, read field by field with exact reads, costs one
/// system call instead of one per field. What it read past the message is
/// [`Buffered::rest`], for the caller to pass on. Writes go straight through.
pub struct Buffered<S> {
    inner: S,
    buf: [u8; BUFFERED],
    at: usize,
    len: usize,
}

impl<S> Buffered<S> {
    /// Reads `inner` through a buffer.
    pub fn new(inner: S) -> Self {
        Buffered { inner, buf: [0; BUFFERED], at: 0, len: 0 }
    }

    /// The bytes read from the socket and not yet handed out.
    pub fn rest(&self) -> Vec<u8> {
        self.buf[self.at..self.len].to_vec()
    }
}

impl<S: Read> Read for Buffered<S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.len {
            if out.len() >= BUFFERED {
                return self.inner.read(out);
            }
            self.len = self.inner.read(&mut self.buf)?;
            self.at = 0;
        }
        let n = out.len().min(self.len - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl<S: Write> Write for Buffered<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A socket timeout shows up as EAGAIN; call it what it is.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "deadline passed")
    } else {
        e
    }
}

/// A reader of whatever `sock` has already received, without waiting: each
/// read is one `recv(MSG_DONTWAIT)`, which fails with `WouldBlock` when
/// nothing has arrived. The socket stays blocking for everyone else, and no
/// system call goes to switching it to non-blocking and back.
pub struct Arrived<'a>(pub &'a TcpStream);

impl Read for Arrived<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use nix::sys::socket::{recv, MsgFlags};
        use std::os::fd::AsRawFd;
        loop {
            match recv(self.0.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Err(nix::errno::Errno::EINTR) => continue,
                got => return got.map_err(io::Error::from),
            }
        }
    }
}

/// Closes a connection that failed before the relay without resetting it:
/// stop writing, then discard what the peer still sends for a moment, so a
/// reply already written is not lost to a RST.
pub fn close_gently(sock: &TcpStream) {
    let _ = sock.shutdown(Shutdown::Write);
    let until = Instant::now() + Duration::from_millis(500);
    let mut sink = [0u8; 512];
    let mut io = Deadline::new(sock, until);
    let mut left: usize = 64 * 1024;
    while left > 0 {
        match io.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::addr::Target;
    use crate::proto::socks5::{self, Request};
    use crate::proto::testing::{Counted, Duplex, OneByte};

    #[test]
    fn a_buffered_socks5_handshake_keeps_what_follows_and_takes_one_read_per_message() {
        let greeting = [5, 1, 0];
        let request = [&[5, 1, 0, 3, 4][..], b"a.io", &[0, 80]].concat();
        let input = [&greeting[..], &request, b"early"].concat();
        // One byte per read: the buffer holds what the parser asked for, no more.
        let mut peer = Duplex { input: OneByte(&input[..]), output: Vec::new() };
        let mut io = Buffered::new(&mut peer);
        let asked = socks5::accept_request(&mut io, &[], false).unwrap();
        let rest = io.rest();
        assert_eq!(asked, Request::Connect(Target::Domain("a.io".into(), 80)));
        let mut left = Vec::new();
        peer.read_to_end(&mut left).unwrap();
        assert_eq!([rest, left].concat(), b"early");
        assert_eq!(peer.output, [5, 0]);
        // Each message at once, as a client that waits for the method sends
        // them: read field by field, one read each; what follows is kept.
        for (message, fields) in [(&greeting[..], &[2, 1][..]), (&request, &[4, 1, 4, 2])] {
            let whole = [message, b"next"].concat();
            let mut peer = Counted { input: &whole, calls: 0 };
            let mut io = Buffered::new(&mut peer);
            let mut at = 0;
            let mut got = vec![0u8; message.len()];
            for len in fields {
                io.read_exact(&mut got[at..at + len]).unwrap();
                at += len;
            }
            assert_eq!((got.as_slice(), io.rest().as_slice()), (message, &b"next"[..]));
            assert_eq!(peer.calls, 1, "one read for {message:?}");
        }
    }
}
