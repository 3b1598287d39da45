//! Moving bytes: one TLS connection shared by two threads, the two copy
//! threads of a connection, half-close and every timeout.
//!
//! rustls has no split API, so a connection is split here by hand
//! ([`Half::tls`]): the `rustls::Connection` sits behind a mutex that no thread
//! holds while it blocks on the socket.
//!
//! - The reader reads raw bytes from the socket *without* the lock, then locks
//!   to feed them to rustls and to drain the plaintext.
//! - The writer locks to encrypt into a buffer of its own, then writes that
//!   buffer to the socket after unlocking.
//! - TLS bytes must reach the socket in the order rustls produced them, so
//!   whoever has bytes to send takes the socket's write lock (`order`) before
//!   it lets go of the connection lock, always in that order. TLS output that
//!   reading produces (alerts, KeyUpdate replies) goes out the same way.
//!
//! [`relay`] then runs `std::io::copy` in each direction on a thread of its
//! own, with a small stack. The copy buffer is a heap `BufReader` (which
//! `io::copy` reads into directly, so the thread's stack stays small), and
//! it lives only for a *burst*: once a direction has been quiet for [`QUIET`],
//! its buffers are freed and the thread waits for the next byte with a
//! one-byte `peek`, holding none. An idle connection costs its two threads'
//! stacks and rustls's state, not buffers.
//! A direction that reaches EOF half-closes its destination (close_notify and
//! `shutdown(Write)` for TLS) and the other goes on; once it has been quiet
//! for the linger time it is closed too. An error in either direction closes
//! both at once. No byte in either direction for the idle time ends both.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustls::{Connection, ConnectionCommon, SideData};
use socket2::SockRef;

use crate::{Error, Timeouts, COPY_THREADS};

/// The copy buffer of a direction that reads plain TCP: four TLS records'
/// worth per write.
pub const COPY_BUF: usize = 64 * 1024;

/// The copy buffer of a direction that reads TLS: the plaintext of the two
/// records one raw read holds, written to the socket at once.
const PLAIN_BUF: usize = 32 * 1024;

/// Raw TLS bytes read from the socket at once: two whole records.
const RAW_BUF: usize = 2 * (16 * 1024 + 256);

/// How long a direction is quiet before its buffers are freed. Within a
/// burst the buffers stay, so a steady stream pays nothing for this.
pub const QUIET: Duration = Duration::from_millis(10);

/// A socket wrapper whose reads and writes fail once `until` has passed.
///
/// The socket timeout is set to what is left, so a peer that trickles one
/// byte at a time cannot stretch a handshake past its deadline. It is set
/// again only when [`REARM`] has passed since the last time, which bounds the
/// overshoot by that much and spares a system call per read.
pub struct Deadline<'a> {
    sock: &'a TcpStream,
    until: Instant,
    read_armed: Option<Instant>,
    write_armed: Option<Instant>,
}

/// How stale a deadline's socket timeout may get before it is set again.
const REARM: Duration = Duration::from_millis(50);

impl<'a> Deadline<'a> {
    /// Wraps `sock` with a deadline at `until`.
    pub fn new(sock: &'a TcpStream, until: Instant) -> Self {
        Deadline { sock, until, read_armed: None, write_armed: None }
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
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_armed = self.arm(self.read_armed, TcpStream::set_read_timeout)?;
        self.sock.read(buf).map_err(timed_out)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_armed = self.arm(self.write_armed, TcpStream::set_write_timeout)?;
        self.sock.write(buf).map_err(timed_out)
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

/// Runs a TLS handshake over `io` (a socket under a [`Deadline`]) to completion.
pub fn handshake<S: SideData>(
    conn: &mut ConnectionCommon<S>,
    io: &mut (impl Read + Write),
) -> Result<(), Error> {
    while conn.is_handshaking() {
        conn.complete_io(io)?;
    }
    // A TLS 1.3 server queues its session tickets after the client's Finished.
    while conn.wants_write() {
        conn.write_tls(io)?;
    }
    Ok(())
}

/// Which of two sockets [`wait`] found ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// The first has bytes, an end or an error to read.
    First,
    /// The second has an error or has hung up (or, when asked, bytes).
    Second,
    /// Neither, before the timeout (or a signal came).
    Neither,
}

/// Waits up to `timeout` until `first` has something to read (bytes, an
/// end or an error), or `second` has an error or has hung up, or, with
/// `second_data`, has bytes or an end too. `first` wins a tie. One
/// `poll(2)`: how a blocking thread watches a second socket while it waits
/// on its own.
pub fn wait(
    first: &TcpStream,
    second: &TcpStream,
    second_data: bool,
    timeout: Duration,
) -> io::Result<Ready> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let second_events = if second_data { PollFlags::POLLIN } else { PollFlags::empty() };
    let mut fds = [PollFd::new(first.as_fd(), PollFlags::POLLIN), PollFd::new(second.as_fd(), second_events)];
    // Rounded up, so that a wait never ends a little early and spins.
    let ms = timeout.as_micros().div_ceil(1000);
    let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(Ready::Neither),
        Ok(_) if fds[0].any().unwrap_or(true) => Ok(Ready::First),
        Ok(_) => Ok(Ready::Second),
        Err(e) => Err(e.into()),
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

fn lock<T>(m: &Mutex<T>) -> io::Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| io::Error::other("tls state poisoned by a panic"))
}

/// What the two halves of one TLS connection share.
pub struct TlsShared {
    conn: Mutex<Connection>,
    /// Held from encryption until the bytes are on the socket, so records keep their order.
    order: Mutex<()>,
    sock: Arc<TcpStream>,
    /// A TCP EOF without close_notify ends the stream like close_notify does
    /// (as web servers take it), instead of counting as a truncation.
    bare_eof_ends: bool,
}

impl TlsShared {
    /// Sends whatever TLS output `conn` has queued. The connection lock is
    /// released before the socket write, after the order lock is taken.
    fn send(&self, mut conn: MutexGuard<'_, Connection>, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        while conn.wants_write() {
            conn.write_tls(out)?;
        }
        if out.is_empty() {
            return Ok(());
        }
        let _order = lock(&self.order)?;
        drop(conn);
        (&*self.sock).write_all(out)
    }
}

/// What the reading half of a TLS connection keeps between bursts.
struct TlsState {
    sh: Arc<TlsShared>,
    /// The socket reached EOF; rustls has to be told once.
    eof: bool,
    eof_told: bool,
    /// TLS output that reading produces (alerts, KeyUpdate replies).
    out: Vec<u8>,
}

/// The reading half of a TLS connection during one burst.
struct TlsReader<'a> {
    st: &'a mut TlsState,
    /// Raw bytes off the socket not yet given to rustls. Over `&TcpStream`,
    /// so the buffer is filled without being zeroed first. It is empty
    /// whenever a read blocks, so a burst never ends with bytes in it.
    raw: BufReader<&'a TcpStream>,
}

impl Read for TlsReader<'_> {
    /// Fills `buf` with what plaintext is ready, blocking (without the lock)
    /// only while there is none.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut filled = 0;
        loop {
            let st = &mut *self.st;
            let mut conn = lock(&st.sh.conn)?;
            let mut processed = false;
            let got = loop {
                match conn.reader().read(&mut buf[filled..]) {
                    // close_notify; after plaintext, it is reported on the next read.
                    Ok(0) => break Some(Ok(filled)),
                    Ok(n) => {
                        filled += n;
                        if filled == buf.len() {
                            break Some(Ok(filled));
                        }
                        processed = false; // more may be decrypted from what is buffered
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // UnexpectedEof: a TCP EOF without close_notify.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && st.sh.bare_eof_ends => {
                        break Some(Ok(filled))
                    }
                    Err(_) if filled > 0 => break Some(Ok(filled)),
                    Err(e) => break Some(Err(e)),
                }
                let pending = self.raw.buffer();
                if !pending.is_empty() {
                    let mut rest = pending;
                    match conn.read_tls(&mut rest) {
                        // After close_notify nothing more counts.
                        Ok(0) => {
                            let all = pending.len();
                            self.raw.consume(all);
                        }
                        Ok(n) => self.raw.consume(n),
                        Err(e) => break Some(Err(e)),
                    }
                } else if st.eof && !st.eof_told {
                    st.eof_told = true;
                    conn.read_tls(&mut io::empty())?;
                } else if processed {
                    // Nothing more without the socket: return what there is, or block for more.
                    break (filled > 0).then_some(Ok(filled));
                }
                processed = true;
                if let Err(e) = conn.process_new_packets() {
                    // rustls has queued an alert for the peer: send it, then fail.
                    let _ = st.sh.send(conn, &mut st.out);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            if conn.wants_write() {
                st.sh.send(conn, &mut st.out)?;
            } else {
                drop(conn);
            }
            if let Some(done) = got {
                return done;
            }
            // No lock is held while blocking on the socket.
            st.eof = self.raw.fill_buf()?.is_empty();
        }
    }
}

/// The writing half of a TLS connection.
pub struct TlsWriter {
    sh: Arc<TlsShared>,
    out: Vec<u8>,
}

impl Write for TlsWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut conn = lock(&self.sh.conn)?;
        let n = conn.writer().write(data)?;
        self.sh.send(conn, &mut self.out)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // every write is on the socket before it returns
    }
}

/// The source side of one direction.
pub enum Reader {
    /// A plain TCP socket (the one under the relay's end).
    Tcp,
    /// The reading half of a TLS connection.
    Tls(Arc<TlsShared>),
}

/// The destination side of one direction.
pub enum Writer {
    /// A plain TCP socket.
    Tcp(Arc<TcpStream>),
    /// The writing half of a TLS connection.
    Tls(TlsWriter),
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Writer::Tcp(s) => (&**s).write(buf),
            Writer::Tls(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Writer {
    /// Frees the buffer of a TLS writer whose direction has gone quiet.
    fn release(&mut self) {
        if let Writer::Tls(w) = self {
            w.out = Vec::new();
        }
    }

    /// Ends this direction: close_notify for TLS, then `shutdown(Write)`.
    pub fn close_write(&mut self) -> io::Result<()> {
        match self {
            Writer::Tcp(s) => s.shutdown(Shutdown::Write),
            Writer::Tls(w) => {
                let mut conn = lock(&w.sh.conn)?;
                conn.send_close_notify();
                w.sh.send(conn, &mut w.out)?;
                w.sh.sock.shutdown(Shutdown::Write)
            }
        }
    }
}

/// One end of a relayed connection: a reader, a writer and the socket under both.
pub struct Half {
    /// Where bytes from this end come from.
    pub reader: Reader,
    /// Where bytes for this end go.
    pub writer: Writer,
    sock: Arc<TcpStream>,
}

impl Half {
    /// A plain TCP end.
    pub fn tcp(sock: TcpStream) -> Half {
        let sock = Arc::new(sock);
        Half { reader: Reader::Tcp, writer: Writer::Tcp(Arc::clone(&sock)), sock }
    }

    /// A TLS end whose handshake is complete. A TCP EOF that comes without
    /// close_notify is an error: a transfer cut short must not look complete.
    pub fn tls(sock: TcpStream, conn: impl Into<Connection>) -> Half {
        Half::tls_ending(sock, conn.into(), false)
    }

    /// A TLS end whose peer is a web client, relayed to the fallback site: a
    /// TCP EOF without close_notify ends its direction as cleanly as
    /// close_notify does, and is passed on as an EOF, as a web server takes it.
    pub fn tls_web_client(sock: TcpStream, conn: impl Into<Connection>) -> Half {
        Half::tls_ending(sock, conn.into(), true)
    }

    fn tls_ending(sock: TcpStream, conn: Connection, bare_eof_ends: bool) -> Half {
        let sock = Arc::new(sock);
        let sh = Arc::new(TlsShared {
            conn: Mutex::new(conn),
            order: Mutex::new(()),
            sock: Arc::clone(&sock),
            bare_eof_ends,
        });
        Half {
            reader: Reader::Tls(Arc::clone(&sh)),
            writer: Writer::Tls(TlsWriter { sh, out: Vec::new() }),
            sock,
        }
    }
}

/// How a relayed connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Both directions reached EOF.
    Eof,
    /// No byte in either direction for the idle time.
    Idle,
    /// One direction ended and the other stayed quiet for the linger time.
    Linger,
    /// An error in one direction; the text says where.
    Error(String),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Eof => f.write_str("eof"),
            End::Idle => f.write_str("idle timeout"),
            End::Linger => f.write_str("linger timeout"),
            End::Error(e) => f.write_str(e),
        }
    }
}

/// What a relay moved and how it ended.
#[derive(Debug)]
pub struct Outcome {
    /// Bytes read from the first end and sent to the second.
    pub up: u64,
    /// Bytes read from the second end and sent to the first.
    pub down: u64,
    /// How it ended.
    pub end: End,
}

/// What runs when a relay has ended.
type OnDone = Box<dyn FnOnce(Outcome) + Send>;

/// What the two copy threads of one connection share.
struct Shared {
    socks: [Arc<TcpStream>; 2],
    names: [&'static str; 2],
    timeouts: Timeouts,
    start: Instant,
    /// Milliseconds from `start` to the last byte read in either direction.
    last: AtomicU64,
    /// Bytes read from each end.
    bytes: [AtomicU64; 2],
    finished: Mutex<u8>,
    wake: Condvar,
    aborted: AtomicBool,
    /// Whether a copy thread is inside a write to each end.
    writing: [AtomicBool; 2],
    end: Mutex<Option<End>>,
    /// Called with the outcome by whichever direction ends last.
    done: Mutex<Option<OnDone>>,
}

impl Shared {
    fn touch(&self) {
        self.last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Closes both ends at once; the first reason given is the one reported.
    ///
    /// Both ends are reset, never closed cleanly: a peer must not see a
    /// clean end of stream (a transfer cut short would look complete), and a
    /// peer stuck behind a full socket of its own notices a reset while it
    /// waits (see [`bursts`]), where a FIN would wait for it to read. SO_LINGER
    /// 0 makes the close send RST, and shutting down only the read side wakes
    /// our reader without a FIN. A write of ours blocked on an end (a peer
    /// that stopped reading, its window full) is woken by shutting the write
    /// side down too: that FIN queues behind the unsent data and is never
    /// sent, since the close that follows resets the connection and drops the
    /// queue. A write not yet begun sees `aborted` and does not start.
    fn abort(&self, why: End) {
        self.end.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(why);
        self.aborted.store(true, Ordering::SeqCst);
        for (s, writing) in self.socks.iter().zip(&self.writing) {
            let _ = SockRef::from(&**s).set_linger(Some(Duration::ZERO));
            let _ = s.shutdown(Shutdown::Read);
            if writing.load(Ordering::SeqCst) {
                let _ = s.shutdown(Shutdown::Write);
            }
        }
        self.wake.notify_all();
    }

    /// Called by each direction when it ends. The first to end waits while
    /// the other still moves bytes, and closes it once it has been quiet for
    /// the linger time; the last reports the outcome.
    fn finish(&self) {
        let mut done = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
        *done += 1;
        if *done == 2 {
            self.wake.notify_all();
            drop(done);
            self.report();
            return;
        }
        self.touch();
        let linger = self.timeouts.linger;
        while *done < 2 && !self.aborted.load(Ordering::Relaxed) {
            let quiet = self.quiet_for();
            if quiet >= linger {
                drop(done);
                self.abort(End::Linger);
                return;
            }
            done = self.wake.wait_timeout(done, linger - quiet).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn report(&self) {
        let end = self.end.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or(End::Eof);
        let [up, down] = [0, 1].map(|i| self.bytes[i].load(Ordering::Relaxed));
        if let Some(done) = self.done.lock().unwrap_or_else(PoisonError::into_inner).take() {
            done(Outcome { up, down, end });
        }
    }
}

/// A writer that counts the bytes it delivers and records the activity.
struct Counted<'a> {
    inner: Writer,
    sh: &'a Shared,
    from: usize,
    failed: bool,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Marked before `aborted` is read, and `abort` sets `aborted` before
        // it reads the mark (both SeqCst): either this write does not start,
        // or `abort` knows to wake it.
        let writing = &self.sh.writing[1 - self.from];
        writing.store(true, Ordering::SeqCst);
        let written = if self.sh.aborted.load(Ordering::SeqCst) {
            Err(io::Error::new(io::ErrorKind::ConnectionAborted, "aborted"))
        } else {
            self.inner.write(buf)
        };
        writing.store(false, Ordering::SeqCst);
        match written {
            Ok(n) => {
                self.sh.bytes[self.from].fetch_add(n as u64, Ordering::Relaxed);
                self.sh.touch();
                Ok(n)
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies one direction, from end `from` to the other, until EOF or error.
fn pump(reader: Reader, writer: Writer, sh: Arc<Shared>, from: usize) {
    let names = sh.names;
    let sock = Arc::clone(&sh.socks[from]);
    let mut dst = Counted { inner: writer, sh: &sh, from, failed: false };
    // Each burst has buffers of its own: `io::copy` reads straight into the
    // BufReader's heap buffer, and they are all freed when the burst ends.
    let copied = match reader {
        Reader::Tcp => {
            bursts(&sock, &mut dst, |dst| io::copy(&mut BufReader::with_capacity(COPY_BUF, &*sock), dst))
        }
        Reader::Tls(sh) => {
            let mut st = TlsState { sh, eof: false, eof_told: false, out: Vec::new() };
            bursts(&sock, &mut dst, |dst| {
                let raw = BufReader::with_capacity(RAW_BUF, &*sock);
                let tls = TlsReader { st: &mut st, raw };
                let copied = io::copy(&mut BufReader::with_capacity(PLAIN_BUF, tls), dst);
                st.out = Vec::new();
                copied
            })
        }
    };
    match copied {
        // Woken by an abort: the end is a reset, not an EOF to pass on.
        Ok(()) if sh.aborted.load(Ordering::SeqCst) => {}
        Ok(()) => {
            if let Err(e) = dst.inner.close_write() {
                sh.abort(End::Error(format!("closing {}: {e}", names[1 - from])));
            }
        }
        Err(e) => {
            let side = if dst.failed { names[1 - from] } else { names[from] };
            sh.abort(End::Error(describe(side, &e)));
        }
    }
    drop(dst);
    sh.finish();
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Runs `burst` (an `io::copy` from `sock`, with buffers of its own) until
/// EOF. A burst reads with a [`QUIET`] timeout; when it times out, its
/// buffers are gone, and this waits for the next byte with [`wait`], holding
/// no buffer at all. A read that times out only says this direction was
/// quiet: the copy goes on unless both have been quiet for the idle time.
///
/// While it waits it also watches the destination: an error or a hang-up
/// there (a reset) ends the connection at once. The other direction, which
/// reads that end, may be stuck writing to a peer that stopped reading, and
/// would not see it.
fn bursts(
    sock: &TcpStream,
    dst: &mut Counted<'_>,
    mut burst: impl FnMut(&mut Counted<'_>) -> io::Result<u64>,
) -> io::Result<()> {
    let to = 1 - dst.from;
    let dst_sock = Arc::clone(&dst.sh.socks[to]);
    loop {
        sock.set_read_timeout(Some(QUIET))?;
        match burst(dst) {
            Ok(_) => return Ok(()),
            Err(e) if !dst.failed && is_timeout(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        dst.inner.release();
        loop {
            let quiet = dst.sh.quiet_for();
            let idle = dst.sh.timeouts.idle;
            if quiet >= idle {
                dst.sh.abort(End::Idle);
                return Err(io::Error::new(io::ErrorKind::TimedOut, "idle"));
            }
            match wait(sock, &dst_sock, false, idle - quiet)? {
                // A byte, an end or an error: the next burst reads it.
                Ready::First => break,
                Ready::Second => {
                    let e = dst_sock
                        .take_error()
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| io::ErrorKind::ConnectionReset.into());
                    dst.failed = true;
                    return Err(e);
                }
                Ready::Neither => {}
            }
        }
    }
}

fn describe(side: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => format!("{side} closed without close_notify"),
        io::ErrorKind::ConnectionReset => format!("{side} reset"),
        io::ErrorKind::BrokenPipe => format!("{side} gone"),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!("{side} write timed out"),
        _ => format!("{side}: {e}"),
    }
}

/// Starts relaying between `a` and `b` and returns at once: one new thread
/// copies a → b, another b → a, and whichever ends last calls `done` with
/// the outcome. `names` label the two ends ("client", "target"). If a copy
/// thread cannot be started, the connection is closed and `done` still runs.
pub fn relay(
    a: Half,
    b: Half,
    names: [&'static str; 2],
    timeouts: &Timeouts,
    done: impl FnOnce(Outcome) + Send + 'static,
) {
    for s in [&a.sock, &b.sock] {
        let _ = s.set_read_timeout(Some(timeouts.idle));
        let _ = s.set_write_timeout(Some(timeouts.idle));
    }
    let sh = Arc::new(Shared {
        socks: [a.sock, b.sock],
        names,
        timeouts: *timeouts,
        start: Instant::now(),
        last: AtomicU64::new(0),
        bytes: [AtomicU64::new(0), AtomicU64::new(0)],
        finished: Mutex::new(0),
        wake: Condvar::new(),
        aborted: AtomicBool::new(false),
        writing: [AtomicBool::new(false), AtomicBool::new(false)],
        end: Mutex::new(None),
        done: Mutex::new(Some(Box::new(done))),
    });
    for (from, (reader, writer)) in [(0, (a.reader, b.writer)), (1, (b.reader, a.writer))] {
        let sh2 = Arc::clone(&sh);
        let spawned = COPY_THREADS.spawn(move || pump(reader, writer, sh2, from));
        if let Err(e) = spawned {
            // This direction never runs: close everything and count it as ended.
            sh.abort(End::Error(format!("cannot start copy thread: {e}")));
            sh.finish();
        }
    }
}
