//! The life of a relayed connection: two copy threads, half-close, the
//! idle and linger timeouts, and the abort that ends both directions at once.
//!
//! [`relay`] runs `std::io::copy` in each direction ([`Dir`]) on a thread of
//! its own, with a small stack. The copy buffer is a heap `BufReader`, which
//! `io::copy` reads into directly, so the thread's stack stays small; and it
//! lives only for a *burst* (`bursts`): once a direction has been quiet for
//! [`QUIET`], its buffers are freed and the thread waits for the next byte
//! holding none. An idle connection costs its two threads' stacks and
//! rustls's state, not buffers. A TLS leg is one rustls connection split
//! between the two threads ([`super::split`]).
//!
//! A direction that reads plain TCP may read it through a [`Message`]
//! that knows where the peer's message ends (a forwarded HTTP request's
//! body): it forwards that message and drops what follows.
//!
//! A direction that reaches EOF half-closes its destination (close_notify and
//! `shutdown(Write)` for TLS) and the other goes on; once it has been quiet
//! for the linger time it is closed too. A TLS source whose TCP stream ends
//! without close_notify is passed on the same way, after every byte it sent
//! (the end still says "closed without close_notify"): a reset would make the
//! far end's kernel drop what its application has not read yet. An error in
//! either direction (a reset, a TLS error, a write that times out) closes
//! both at once, as a reset. A side that resets once the other has ended
//! and everything it sent has been passed on has closed in its own way (a
//! client that leaves the site's close_notify unread): both are still
//! reset, and the end says `eof (client reset after target closed)`. No byte in either direction for the idle time
//! ends both.
//!
//! A relay may be metered ([`relay_metered`], the server's named users):
//! before each write its [`Meter`] says how long to wait (a rate shared by
//! a user's connections) or that the connection must end (a quota
//! reached), and a [`Cut`] ends it from another thread (a user removed).
//!
//! A second end that owes an answer ([`Owed`]: the local's server, asked
//! for a key update before the header) is waited for on the calling setup
//! thread, after the first direction has started and before the second's
//! copy thread starts; no answer from a server known to answer at once
//! ends the connection as `server silent`.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use rustls::Connection;
use socket2::SockRef;

use crate::error::Error;
use crate::net::poll::{peer_finished, wait, Ready};
use crate::workers::COPY_THREADS;

use super::end::{Break, End, Side, Silent, Step};
use super::live::Bytes;
use super::report::Outcome;
use super::split::{self, ReadHalf, WriteHalf};
use super::timeouts::Timeouts;

/// Starts relaying between `a` and `b` and returns at once: one thread
/// copies a → b ([`Dir::Up`]), another b → a, and whichever ends last calls
/// `done` with the outcome. `sides` name the two legs' sides in its end (client, target).
/// A blocked write gives up after the idle time. If a copy thread cannot be
/// started, the connection is closed and `done` still runs.
pub fn relay(
    a: Leg,
    b: Leg,
    sides: [Side; 2],
    timeouts: &Timeouts,
    done: impl FnOnce(Outcome) + Send + 'static,
) {
    relay_answering_silence(a, b, sides, timeouts, None, done);
}

/// [`relay`], with an answer for the first end should the second end (with
/// an EOF or an error) before it has sent a single byte: `silence` is written
/// to the first end, which is then closed cleanly (not reset), so that it
/// reads the answer. The end reported says what the second end did. For a
/// forwarded HTTP request, whose client would otherwise see an empty reply.
pub fn relay_answering_silence(
    a: Leg,
    b: Leg,
    sides: [Side; 2],
    timeouts: &Timeouts,
    silence: Option<&'static [u8]>,
    done: impl FnOnce(Outcome) + Send + 'static,
) {
    relay_expecting_answer(a, b, sides, timeouts, silence, None, done);
}

/// The answer the second end owes by a moment: a TLS record other than a
/// session ticket, with data or not, before `by`. The local asks its
/// server's TLS for a key update before the header; blocking-server
/// answers it at once and asks for one back, which says so (`prompt` is set
/// then, and cleared by a server that answers only with its first data, as
/// OpenSSL does). For a server known to answer at once, no answer by `by`
/// ends the direction from it as [`Break::Silent`], answered with `answer`
/// if there is one (else as a reset); for any other, the relay just goes on.
#[derive(Clone)]
pub struct Owed {
    /// When the answer is due.
    pub by: Instant,
    /// Written to the first end if it does not come.
    pub answer: Option<&'static [u8]>,
    /// Whether the server is known to answer at once (see above).
    pub prompt: Arc<AtomicBool>,
}

/// [`relay_answering_silence`], with an answer `owed` by the second end.
pub fn relay_expecting_answer(
    a: Leg,
    b: Leg,
    sides: [Side; 2],
    timeouts: &Timeouts,
    silence: Option<&'static [u8]>,
    owed: Option<Owed>,
    done: impl FnOnce(Outcome) + Send + 'static,
) {
    let counters = a.counters.or(b.counters);
    let mut shared = Relay::between([a.sock, b.sock], counters, sides, timeouts, Box::new(done));
    shared.silence = silence;
    shared.owed = owed;
    let shared = Arc::new(shared);
    let (mut down_reader, down_writer) = (b.reader, a.writer);
    spawn_pump(&shared, Dir::Up, a.reader, b.writer);
    // What the second end owes is awaited here, on the calling (setup)
    // thread, while the first direction already runs: the key updates'
    // arithmetic would leave stack pages resident in a copy thread for as
    // long as the connection is open (4 KiB a connection, measured).
    if let Err(e) = await_owed(&mut down_reader, &shared) {
        let dst = Counted { inner: down_writer, shared: &shared, dir: Dir::Down, failed: false };
        end_direction(Err(e), dst);
        shared.finish();
        return;
    }
    spawn_pump(&shared, Dir::Down, down_reader, down_writer);
}

/// What a metered relay asks before each write (see [`relay_metered`]).
pub trait Meter: Send + Sync {
    /// `n` bytes are about to be written in `dir`: how long to wait first
    /// (zero for at once), or why the connection must end instead.
    fn pass(&self, dir: Dir, n: usize) -> Result<Duration, String>;
}

/// Ends a metered relay from another thread; does nothing once it has ended.
#[derive(Clone)]
pub struct Cut(Weak<Relay>);

impl Cut {
    /// Ends the relay at once, both ends reset, with the end
    /// `stream: denied: WHY`.
    pub fn cut(&self, why: String) {
        if let Some(relay) = self.0.upgrade() {
            relay.abort(End::Failed(Step::Stream, Error::Denied(why)));
        }
    }
}

/// The longest a write waits for its meter at once, between checks that the
/// relay still runs.
const METER_SLICE: Duration = Duration::from_millis(50);

/// [`relay`], with each write passed by `meter` first; returns what cuts it.
pub fn relay_metered(
    a: Leg,
    b: Leg,
    sides: [Side; 2],
    timeouts: &Timeouts,
    meter: Arc<dyn Meter>,
    done: impl FnOnce(Outcome) + Send + 'static,
) -> Cut {
    let counters = a.counters.or(b.counters);
    let mut shared = Relay::between([a.sock, b.sock], counters, sides, timeouts, Box::new(done));
    shared.meter = Some(meter);
    let shared = Arc::new(shared);
    let cut = Cut(Arc::downgrade(&shared));
    spawn_pump(&shared, Dir::Up, a.reader, b.writer);
    spawn_pump(&shared, Dir::Down, b.reader, a.writer);
    cut
}

/// Starts the copy thread of one direction.
fn spawn_pump(shared: &Arc<Relay>, dir: Dir, reader: Reader, writer: Writer) {
    let mine = Arc::clone(shared);
    if let Err(e) = COPY_THREADS.spawn(move || pump(reader, writer, mine, dir)) {
        // This direction never runs: close everything and count it as ended.
        shared.abort(End::NoThread(e));
        shared.finish();
    }
}

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

/// A direction of a relayed connection between a first end and a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the first end to the second (client to target: "up").
    Up,
    /// From the second end to the first.
    Down,
}

impl Dir {
    /// Its slot in per-direction arrays.
    fn index(self) -> usize {
        match self {
            Dir::Up => 0,
            Dir::Down => 1,
        }
    }

    /// The end it reads from, as an index into per-end arrays.
    fn source(self) -> usize {
        self.index()
    }

    /// The end it writes to.
    fn destination(self) -> usize {
        1 - self.index()
    }
}

/// The source side of one direction.
pub enum Reader {
    /// A plain TCP socket (the one under the end).
    Tcp,
    /// A plain TCP socket whose bytes go through a [`Message`], which says
    /// which of them to forward.
    Message(Box<dyn Message>),
    /// The reading half of a TLS connection.
    Tls(ReadHalf),
}

/// What a direction that reads plain TCP forwards of a message it knows
/// the end of (a forwarded HTTP request's body): the message's bytes, and
/// nothing the peer sends after it, which is read and dropped until the
/// peer's end, so that the direction still ends with it.
pub trait Message: Send {
    /// Keeps in place, at the start of `bytes` (just read), those to
    /// forward, and returns how many. An error ends the connection, both
    /// directions reset, as a broken peer does.
    fn pass(&mut self, bytes: &mut [u8]) -> io::Result<usize>;
}

/// A socket read through a [`Message`]: a read returns only bytes to
/// forward, and reads again when a read had none (0 is still the peer's end).
struct Passed<'a> {
    sock: &'a TcpStream,
    message: &'a mut dyn Message,
}

impl Read for Passed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.sock.read(buf)?;
            if n == 0 {
                return Ok(0);
            }
            let kept = self.message.pass(&mut buf[..n])?;
            if kept > 0 {
                return Ok(kept);
            }
        }
    }
}

/// The destination side of one direction.
pub enum Writer {
    /// A plain TCP socket.
    Tcp(Arc<TcpStream>),
    /// The writing half of a TLS connection.
    Tls(WriteHalf),
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
            w.release();
        }
    }

    /// Ends this direction: close_notify for TLS, then `shutdown(Write)`.
    pub fn close_write(&mut self) -> io::Result<()> {
        match self {
            Writer::Tcp(s) => s.shutdown(Shutdown::Write),
            Writer::Tls(w) => w.close(),
        }
    }
}

/// One leg of a relayed connection: a reader, a writer and the socket under both.
pub struct Leg {
    /// Where bytes from this end come from.
    pub reader: Reader,
    /// Where bytes for this end go.
    pub writer: Writer,
    sock: Arc<TcpStream>,
    /// Counters the relay adds its bytes to (see [`Leg::counting`]).
    counters: Option<Arc<Bytes>>,
}

impl Leg {
    /// This leg, with `counters` that the relay adds the bytes it moves
    /// to, up then down, as it writes them: a live view's (see
    /// [`super::live`]). A relay uses the first leg's, else the second's,
    /// else counters of its own.
    pub fn counting(mut self, counters: Arc<Bytes>) -> Leg {
        self.counters = Some(counters);
        self
    }

    /// A plain TCP end.
    pub fn tcp(sock: TcpStream) -> Leg {
        let sock = Arc::new(sock);
        Leg { reader: Reader::Tcp, writer: Writer::Tcp(Arc::clone(&sock)), sock, counters: None }
    }

    /// A plain TCP end whose bytes go through `message` (see [`Message`]).
    pub fn tcp_message(sock: TcpStream, message: Box<dyn Message>) -> Leg {
        let sock = Arc::new(sock);
        Leg { reader: Reader::Message(message), writer: Writer::Tcp(Arc::clone(&sock)), sock, counters: None }
    }

    /// A TLS end whose handshake is complete. A TCP EOF that comes without
    /// close_notify ends the relay as `closed without close_notify`, so a
    /// transfer cut short never looks complete in the log and the metrics;
    /// the EOF is still passed on after every byte (see the module header).
    pub fn tls(sock: TcpStream, conn: impl Into<Connection>) -> Leg {
        Leg::tls_ending(sock, conn.into(), false)
    }

    /// A TLS end whose peer is a web client, relayed to the fallback site: a
    /// TCP EOF without close_notify ends its direction as cleanly as
    /// close_notify does, and is passed on as an EOF, as a web server takes it.
    pub fn tls_web_client(sock: TcpStream, conn: impl Into<Connection>) -> Leg {
        Leg::tls_ending(sock, conn.into(), true)
    }

    fn tls_ending(sock: TcpStream, conn: Connection, bare_eof_ends: bool) -> Leg {
        let sock = Arc::new(sock);
        let (read, write) = split::split(Arc::clone(&sock), conn, bare_eof_ends);
        Leg { reader: Reader::Tls(read), writer: Writer::Tls(write), sock, counters: None }
    }
}

/// What runs when a relay has ended.
type OnDone = Box<dyn FnOnce(Outcome) + Send>;

/// A relay's state, shared by its two copy threads.
struct Relay {
    /// The sockets under the two legs, by [`Dir::source`] index.
    socks: [Arc<TcpStream>; 2],
    /// The sides the legs lead to, as ends name them (client, target), likewise.
    sides: [Side; 2],
    timeouts: Timeouts,
    start: Instant,
    /// Milliseconds from `start` to the last byte read in either direction.
    last: AtomicU64,
    /// Bytes moved in each direction, by [`Dir::index`]; shared with a live view.
    bytes: Arc<Bytes>,
    finished: Mutex<u8>,
    wake: Condvar,
    aborted: AtomicBool,
    /// Whether a copy thread is inside a write to each end, by end.
    writing: [AtomicBool; 2],
    /// Whether each end has finished sending (an EOF read from it), by end.
    ended: [AtomicBool; 2],
    /// Whether each end's socket error (a reset) was taken by the direction
    /// that writes to it, watching it while it waited (see [`bursts`]), by
    /// end: the other direction's read of it then ends as if cleanly, and
    /// must not pass that end on as one.
    reset: [AtomicBool; 2],
    end: Mutex<Option<End>>,
    /// Called with the outcome by whichever direction ends last.
    done: Mutex<Option<OnDone>>,
    /// Written to the first leg if the second ends before sending a byte.
    silence: Option<&'static [u8]>,
    /// What the second leg owes, and by when.
    owed: Option<Owed>,
    /// What passes each write first, for a metered relay.
    meter: Option<Arc<dyn Meter>>,
}

impl Relay {
    /// The state of a relay between `socks`, whose writes may wait up to
    /// the idle time, counting into `counters` when given (a live view's,
    /// see [`Leg::counting`]).
    fn between(
        socks: [Arc<TcpStream>; 2],
        counters: Option<Arc<Bytes>>,
        sides: [Side; 2],
        timeouts: &Timeouts,
        done: OnDone,
    ) -> Relay {
        for s in &socks {
            let _ = s.set_write_timeout(Some(timeouts.idle));
        }
        let mut relay = Relay::new(socks, sides, *timeouts, done);
        if let Some(counters) = counters {
            relay.bytes = counters;
        }
        relay
    }

    fn new(socks: [Arc<TcpStream>; 2], sides: [Side; 2], timeouts: Timeouts, done: OnDone) -> Relay {
        Relay {
            socks,
            sides,
            timeouts,
            start: Instant::now(),
            last: AtomicU64::new(0),
            bytes: Arc::default(),
            finished: Mutex::new(0),
            wake: Condvar::new(),
            aborted: AtomicBool::new(false),
            writing: [AtomicBool::new(false), AtomicBool::new(false)],
            ended: [AtomicBool::new(false), AtomicBool::new(false)],
            reset: [AtomicBool::new(false), AtomicBool::new(false)],
            end: Mutex::new(None),
            done: Mutex::new(Some(done)),
            silence: None,
            owed: None,
            meter: None,
        }
    }

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

    /// Ends the connection at the idle timeout; out of line, so that the
    /// waiting direction's frame holds no [`End`] (see [`end_direction`]).
    #[inline(never)]
    fn idle(&self) {
        self.abort(End::Idle);
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
        let [up, down] = [Dir::Up, Dir::Down].map(|d| self.bytes[d.index()].load(Ordering::Relaxed));
        if let Some(done) = self.done.lock().unwrap_or_else(PoisonError::into_inner).take() {
            done(Outcome { up, down, end, datagrams: None });
        }
    }
}

/// A writer that counts the bytes it delivers and records the activity.
struct Counted<'a> {
    inner: Writer,
    shared: &'a Relay,
    dir: Dir,
    /// The last error came from this writer, not from the reader.
    failed: bool,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Marked before `aborted` is read, and `abort` sets `aborted` before
        // it reads the mark (both SeqCst): either this write does not start,
        // or `abort` knows to wake it.
        if let Some(meter) = &self.shared.meter {
            metered(&**meter, self.shared, self.dir, buf.len()).inspect_err(|_| self.failed = true)?;
        }
        let writing = &self.shared.writing[self.dir.destination()];
        writing.store(true, Ordering::SeqCst);
        let written = if self.shared.aborted.load(Ordering::SeqCst) {
            Err(io::Error::new(io::ErrorKind::ConnectionAborted, "aborted"))
        } else {
            self.inner.write(buf)
        };
        writing.store(false, Ordering::SeqCst);
        match written {
            Ok(n) => {
                self.shared.bytes[self.dir.index()].fetch_add(n as u64, Ordering::Relaxed);
                self.shared.touch();
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

/// Waits as `meter` asks before `n` bytes go in `dir`, in slices, so that
/// an abort meanwhile is seen; ends the relay if the meter says so.
#[inline(never)]
fn metered(meter: &dyn Meter, shared: &Relay, dir: Dir, n: usize) -> io::Result<()> {
    let aborted = || io::Error::new(io::ErrorKind::ConnectionAborted, "aborted");
    let wait = match meter.pass(dir, n) {
        Ok(wait) => wait,
        Err(why) => {
            shared.abort(End::Failed(Step::Stream, Error::Denied(why)));
            return Err(aborted());
        }
    };
    let until = Instant::now() + wait;
    loop {
        if shared.aborted.load(Ordering::SeqCst) {
            return Err(aborted());
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(METER_SLICE));
    }
}

/// Copies one direction until EOF or error, then ends it.
fn pump(reader: Reader, writer: Writer, shared: Arc<Relay>, dir: Dir) {
    let sock = Arc::clone(&shared.socks[dir.source()]);
    let mut dst = Counted { inner: writer, shared: &shared, dir, failed: false };
    // Each burst has buffers of its own: `io::copy` reads straight into the
    // BufReader's heap buffer, and they are all freed when the burst ends.
    let copied = match reader {
        Reader::Tcp => {
            bursts(&sock, &mut dst, |dst| io::copy(&mut BufReader::with_capacity(COPY_BUF, &*sock), dst))
        }
        Reader::Message(mut message) => bursts(&sock, &mut dst, |dst| {
            let passed = Passed { sock: &sock, message: &mut *message };
            io::copy(&mut BufReader::with_capacity(COPY_BUF, passed), dst)
        }),
        Reader::Tls(mut half) => bursts(&sock, &mut dst, |dst| {
            let copied = io::copy(&mut BufReader::with_capacity(PLAIN_BUF, half.burst(RAW_BUF)), dst);
            half.release();
            copied
        }),
    };
    end_direction(copied, dst);
    shared.finish();
}

/// Before the copy from the second end (`reader`): waits for the answer it
/// owes (see [`Owed`]) and notes whether it came at once.
fn await_owed(reader: &mut Reader, shared: &Relay) -> io::Result<()> {
    let (Some(owed), Reader::Tls(half)) = (shared.owed.as_ref(), reader) else {
        return Ok(());
    };
    if let Some(asked) = half.await_answer(owed.by, owed.prompt.load(Ordering::Relaxed))? {
        owed.prompt.store(asked, Ordering::Relaxed);
    }
    Ok(())
}

/// Ends one direction once its copy has returned: passes an EOF on, answers
/// a second side that ended silent, or aborts on an error.
///
/// A function of its own, not part of [`pump`]: the copy's deepest calls (a
/// TLS record decrypted, say) sit on `pump`'s frame, and every stack page
/// they touch stays resident for as long as the connection is open; the
/// ends made here would make that frame larger.
#[inline(never)]
fn end_direction(copied: io::Result<()>, mut dst: Counted<'_>) {
    let (shared, dir) = (dst.shared, dst.dir);
    let sides = shared.sides;
    let to = sides[dir.destination()];
    let silent = dir == Dir::Down
        && !dst.failed
        && !shared.aborted.load(Ordering::SeqCst)
        && shared.bytes[dir.index()].load(Ordering::Relaxed) == 0;
    let owed_answer = match &copied {
        Err(e) if Silent::is(e) => shared.owed.as_ref().and_then(|o| o.answer),
        _ => shared.silence,
    };
    if let (true, Some(answer)) = (silent, owed_answer) {
        let from = sides[dir.source()];
        let why = End::NoReply(from, copied.err().map(Break::of));
        shared.end.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(why);
        if let Err(e) = dst.inner.write_all(answer).and_then(|()| dst.inner.close_write()) {
            shared.abort(End::Broke(to, Break::of(e)));
        }
        return;
    }
    // The source reset, and the other direction took the error while it
    // watched it: what looks like an end here is that reset, which the
    // other direction reports (and aborts on).
    let source_reset = shared.reset[dir.source()].load(Ordering::SeqCst);
    match copied {
        // Woken by an abort: the end is a reset, not an EOF to pass on.
        Ok(()) if shared.aborted.load(Ordering::SeqCst) || source_reset => {}
        Ok(()) => {
            shared.ended[dir.source()].store(true, Ordering::SeqCst);
            match dst.inner.close_write() {
                // A destination that had finished too and is gone by now (a
                // client that closed at once) closed normally: not an error.
                Err(e) if shared.ended[dir.destination()].load(Ordering::SeqCst) && is_gone(&e) => {}
                // A destination that reset before its end was passed on
                // (shutdown finds it not connected, ENOTCONN; a write, a
                // reset or a broken pipe): everything the source sent had
                // been written, so this is how the destination closed, not
                // a failure to close.
                Err(e) if is_gone(&e) => shared.abort(End::ResetAfterEnd(to, sides[dir.source()])),
                Err(e) => shared.abort(End::Closing(to, e)),
                Ok(()) => {}
            }
        }
        // A TLS source that ended without close_notify: every byte it sent
        // has been written on, so its end is passed on as an EOF, not a
        // reset, which would make the far kernel drop what its application
        // has not read yet. The end still says how the source closed.
        Err(e) if !dst.failed && e.kind() == io::ErrorKind::UnexpectedEof && source_reset => {}
        Err(e) if !dst.failed && e.kind() == io::ErrorKind::UnexpectedEof => {
            let from = sides[dir.source()];
            shared.ended[dir.source()].store(true, Ordering::SeqCst);
            shared
                .end
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(End::Broke(from, Break::of(e)));
            if let Err(e) = dst.inner.close_write() {
                shared.abort(End::Closing(to, e));
            }
        }
        // A source that resets after the other end had finished and its
        // end had been passed on to it: a client that closes with bytes
        // unread (the site's close_notify, say) resets the connection, and
        // that is its way of closing. Both ends are still reset, as for any
        // reset: what else it was sending is cut short.
        Err(e)
            if !dst.failed
                && e.kind() == io::ErrorKind::ConnectionReset
                && has_ended(shared, dir.destination()) =>
        {
            shared.abort(End::ResetAfterEnd(sides[dir.source()], to));
        }
        // Likewise seen from the other direction, waiting for the last of
        // its source (the tunnel's close_notify, say) while the destination resets.
        Err(e)
            if dst.failed
                && e.kind() == io::ErrorKind::ConnectionReset
                && has_ended(shared, dir.source()) =>
        {
            shared.abort(End::ResetAfterEnd(to, sides[dir.source()]));
        }
        Err(e) => {
            let side = if dst.failed { to } else { sides[dir.source()] };
            shared.abort(End::Broke(side, Break::of(e)));
        }
    }
}

/// The most a peer may have left unread before its end and still count as
/// finished in [`has_ended`]: a TLS alert record (close_notify: 24 bytes
/// in TLS 1.3, 31 in TLS 1.2 with AES-GCM), with room to spare.
const ALERT_RECORD: usize = 64;

/// How long a reset waits for the other end's FIN in [`has_ended`]: the
/// site's close_notify reaches the client just before the end of the
/// tunnel does, and a client that closes at once may reset in between.
const END_GRACE: Duration = Duration::from_millis(50);

/// Whether end `end` (by index) has finished sending: its end was read and
/// passed on, or (the copy thread that reads it has not got there yet) its
/// FIN arrives within [`END_GRACE`], with at most a TLS alert record before
/// it: the site's close_notify a client did not wait for.
fn has_ended(shared: &Relay, end: usize) -> bool {
    shared.ended[end].load(Ordering::SeqCst) || peer_finished(&shared.socks[end], ALERT_RECORD, END_GRACE)
}

/// Whether a write found its peer gone: reset, or no longer connected.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotConnected | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Copies one direction as a series of bursts, until EOF: the one place
/// where a direction's buffers are made and given back.
///
/// `burst` is an `io::copy` from `sock` into `dst` with buffers of its own.
/// It reads with a [`QUIET`] timeout; when that fires, the burst has ended
/// and its buffers are freed (the writer's too). The direction then waits for
/// its next byte with [`wait`], holding no buffer at all, and the next burst
/// starts when one comes. A quiet spell only says this direction was quiet:
/// the copy goes on unless both directions have been quiet for the idle time.
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
    let dst_sock = Arc::clone(&dst.shared.socks[dst.dir.destination()]);
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
            let quiet = dst.shared.quiet_for();
            let idle = dst.shared.timeouts.idle;
            if quiet >= idle {
                dst.shared.idle();
                return Err(io::Error::new(io::ErrorKind::TimedOut, "idle"));
            }
            match wait(sock, &dst_sock, false, idle - quiet)? {
                // A byte, an end or an error: the next burst reads it.
                Ready::First => break,
                Ready::Second => {
                    dst.shared.reset[dst.dir.destination()].store(true, Ordering::SeqCst);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::testing::socket_pair;
    use std::io::Read;
    use std::thread;

    #[test]
    fn quiet_pauses_end_bursts_and_every_byte_still_arrives() {
        // peer ── src (read by bursts) … dst ── sink
        let (mut peer, src) = socket_pair();
        let (dst, mut sink) = socket_pair();
        let (src, dst) = (Arc::new(src), Arc::new(dst));
        let timeouts = Timeouts::default();
        let shared = Relay::new(
            [Arc::clone(&src), Arc::clone(&dst)],
            [Side::Client, Side::Target],
            timeouts,
            Box::new(|_| {}),
        );
        let writer = thread::spawn(move || {
            for part in [&b"one"[..], b"two", b"three"] {
                peer.write_all(part).unwrap();
                // Longer than QUIET: the pattern under test, not a wait for an event.
                thread::sleep(QUIET * 5);
            }
        });
        let mut dst_writer =
            Counted { inner: Writer::Tcp(Arc::clone(&dst)), shared: &shared, dir: Dir::Up, failed: false };
        let mut bursts_run = 0;
        let copied = bursts(&src, &mut dst_writer, |d| {
            bursts_run += 1;
            io::copy(&mut BufReader::with_capacity(COPY_BUF, &*src), d)
        });
        copied.unwrap();
        writer.join().unwrap();
        dst.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        sink.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"onetwothree");
        assert!(bursts_run >= 2, "a pause ended a burst and gave its buffers back ({bursts_run} bursts)");
        assert_eq!(shared.bytes[Dir::Up.index()].load(Ordering::Relaxed), 11);
    }
}
