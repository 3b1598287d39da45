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
