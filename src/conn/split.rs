//! One rustls connection shared by two threads: a reading half and a
//! writing half, each used by the copy thread of one direction.
//!
//! rustls has no split API, and a blocking read on a `StreamOwned` would hold
//! the connection while it waits. So the `rustls::Connection` sits behind a
//! mutex that no thread holds while it blocks on the socket:
//!
//! - The reading half reads raw bytes from the socket *without* the lock,
//!   then locks to feed them to rustls and to drain the plaintext.
//! - The writing half locks to encrypt into a buffer of its own, then writes
//!   that buffer to the socket after unlocking.
//! - TLS bytes must reach the socket in the order rustls produced them. The
//!   socket's writing side is therefore reachable only through `Ordered`,
//!   whose lock is taken while the connection lock is still held and kept
//!   until the bytes are written; the one function that sends
//!   (`Inner::send`) takes the connection's guard and gives it up only
//!   then. TLS output that reading produces (alerts, KeyUpdate replies) goes
//!   out the same way.
//!
//! The reading half keeps almost nothing between bursts (the relay's copy
//! threads read in bursts): a burst's raw and plaintext buffers are its own.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rustls::Connection;

use crate::net::deadline::Deadline;

use super::end::Silent;

fn lock<T>(m: &Mutex<T>) -> io::Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| io::Error::other("tls state poisoned by a panic"))
}

/// The writing side of the socket: the only way to put TLS bytes on it.
struct Ordered(Arc<TcpStream>);

/// What the two halves of one TLS connection share.
struct Inner {
    conn: Mutex<Connection>,
    /// Taken before the connection lock is let go, held until the bytes are
    /// on the socket: records keep the order rustls gave them.
    wire: Mutex<Ordered>,
    /// A TCP EOF without close_notify ends the stream like close_notify does
    /// (as web servers take it), instead of counting as a truncation.
    bare_eof_ends: bool,
}

impl Inner {
    /// Sends whatever TLS output `conn` has queued, through `out`. The
    /// connection lock is released before the socket write, after the write
    /// order is taken.
    fn send(&self, mut conn: MutexGuard<'_, Connection>, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        while conn.wants_write() {
            conn.write_tls(out)?;
        }
        if out.is_empty() {
            return Ok(());
        }
        let wire = lock(&self.wire)?;
        drop(conn);
        (&*wire.0).write_all(out)
    }
}

/// Splits a TLS connection whose handshake is complete, over `sock`. With
/// `bare_eof_ends`, a TCP EOF without close_notify reads as a clean end.
pub fn split(sock: Arc<TcpStream>, conn: Connection, bare_eof_ends: bool) -> (ReadHalf, WriteHalf) {
    let shared = Arc::new(Inner {
        conn: Mutex::new(conn),
        wire: Mutex::new(Ordered(Arc::clone(&sock))),
        bare_eof_ends,
    });
    let read = ReadHalf { shared: Arc::clone(&shared), sock, eof: false, eof_told: false, out: Vec::new() };
    (read, WriteHalf { shared, out: Vec::new() })
}

/// The reading half, with what it keeps between bursts.
pub struct ReadHalf {
    shared: Arc<Inner>,
    /// Read from without the lock; never written to.
    sock: Arc<TcpStream>,
    /// The socket reached EOF; rustls has to be told once.
    eof: bool,
    eof_told: bool,
    /// TLS output that reading produces (alerts, KeyUpdate replies).
    out: Vec<u8>,
}

impl ReadHalf {
    /// A reader for one burst, reading up to `raw_capacity` raw bytes from
    /// the socket at once into a buffer of its own.
    pub fn burst(&mut self, raw_capacity: usize) -> Burst<'_> {
        let sock: &TcpStream = &self.sock;
        let raw = BufReader::with_capacity(raw_capacity, sock);
        Burst {
            half: HalfState {
                shared: &self.shared,
                eof: &mut self.eof,
                eof_told: &mut self.eof_told,
                out: &mut self.out,
            },
            raw,
        }
    }

    /// Frees what the half keeps for TLS output, once its direction is quiet.
    pub fn release(&mut self) {
        self.out = Vec::new();
    }

    /// Waits until `by` for the peer's answer to a key update asked of it:
    /// any record that is not a TLS 1.3 session ticket (which a server
    /// sends unasked after a handshake) counts, and so does an end. An
    /// answer without data is followed by one more record, sent with it:
    /// blocking-server's own request for a key update, which says that it
    /// answers at once, or the data OpenSSL sends its answer with. Records
    /// are read whole, one at a time, without the lock, and given to rustls
    /// as they come, so the copy that follows finds their plaintext there
    /// (rustls answers the peer's request with this side's next data).
    /// Returns whether the peer asked for a key update, or `None` when it
    /// ended first or, unless `enforce`, did not answer by `by`; with
    /// `enforce`, fails with [`Silent`] then. Each ticket is taken to come
    /// in a record of its own, as rustls and OpenSSL send them.
    pub fn await_answer(&mut self, by: Instant, enforce: bool) -> io::Result<Option<bool>> {
        let late = |e: io::Error| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock if enforce => Err(Silent::error()),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        };
        let mut io = Deadline::new(&self.sock, by);
        let mut record = Vec::new();
        let mut answered = false;
        loop {
            let mut head = [0u8; RECORD_HEADER];
            match read_or_end(&mut io, &mut head) {
                Ok(false) => return Ok(None), // an end: the copy reads it
                Ok(true) => {}
                Err(_) if answered => return Ok(Some(false)),
                Err(e) => return late(e),
            }
            record.clear();
            record.extend_from_slice(&head);
            record.resize(RECORD_HEADER + usize::from(u16::from_be_bytes([head[3], head[4]])), 0);
            if let Err(e) = io.read_exact(&mut record[RECORD_HEADER..]) {
                // Cut short: nothing is lost by failing, the record is broken.
                return late(e).and(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            let mut conn = lock(&self.shared.conn)?;
            let tickets = tickets_received(&conn);
            // rustls takes a few KiB per call: a whole record may take more.
            let mut rest = &record[..];
            while !rest.is_empty() && conn.read_tls(&mut rest)? > 0 {}
            let state = match conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    let _ = self.shared.send(conn, &mut self.out);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let data_or_end = state.plaintext_bytes_to_read() > 0 || state.peer_has_closed();
            let not_ticket = tickets_received(&conn) == tickets;
            // Output that reading produced (an alert); an answer to a key
            // update the peer asks for waits for this side's next data.
            self.shared.send(conn, &mut self.out)?;
            if data_or_end {
                return Ok(Some(false));
            }
            if not_ticket && answered {
                // A second handshake message, no data: blocking-server's request.
                return Ok(Some(true));
            }
            answered |= not_ticket;
        }
    }
}

/// A TLS record header: content type (1), version (2), length (2).
const RECORD_HEADER: usize = 5;

/// Fills `buf`, or finds the stream ended before its first byte (`false`).
fn read_or_end(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The session tickets a client has received (a server receives none).
fn tickets_received(conn: &Connection) -> u32 {
    match conn {
        Connection::Client(c) => c.tls13_tickets_received(),
        Connection::Server(_) => 0,
    }
}

/// The parts of a [`ReadHalf`] a burst works on (the socket is borrowed by its buffer).
struct HalfState<'a> {
    shared: &'a Inner,
    eof: &'a mut bool,
    eof_told: &'a mut bool,
    out: &'a mut Vec<u8>,
}

/// The reading half during one burst.
pub struct Burst<'a> {
    half: HalfState<'a>,
    /// Raw bytes off the socket not yet given to rustls. Over `&TcpStream`,
    /// so the buffer is filled without being zeroed first. It is empty
    /// whenever a read blocks, so a burst never ends with bytes in it.
    raw: BufReader<&'a TcpStream>,
}

impl Read for Burst<'_> {
    /// Fills `buf` with what plaintext is ready, blocking (without the lock)
    /// only while there is none.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut filled = 0;
        loop {
            let st = &mut self.half;
            let mut conn = lock(&st.shared.conn)?;
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
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && st.shared.bare_eof_ends => {
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
                } else if *st.eof && !*st.eof_told {
                    *st.eof_told = true;
                    conn.read_tls(&mut io::empty())?;
                } else if processed {
                    // Nothing more without the socket: return what there is, or block for more.
                    break (filled > 0).then_some(Ok(filled));
                }
                processed = true;
                if let Err(e) = conn.process_new_packets() {
                    // rustls has queued an alert for the peer: send it, then fail.
                    let _ = st.shared.send(conn, st.out);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            if conn.wants_write() {
                st.shared.send(conn, st.out)?;
            } else {
                drop(conn);
            }
            if let Some(done) = got {
                return done;
            }
            // No lock is held while blocking on the socket.
            *st.eof = self.raw.fill_buf()?.is_empty();
        }
    }
}

/// The writing half: every write is encrypted and on the socket before it returns.
pub struct WriteHalf {
    shared: Arc<Inner>,
    out: Vec<u8>,
}

impl Write for WriteHalf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut conn = lock(&self.shared.conn)?;
        let n = conn.writer().write(data)?;
        self.shared.send(conn, &mut self.out)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // every write is on the socket before it returns
    }
}

impl WriteHalf {
    /// Frees the output buffer, once its direction is quiet.
    pub fn release(&mut self) {
        self.out = Vec::new();
    }

    /// Ends this direction: close_notify, then `shutdown(Write)`.
    pub fn close(&mut self) -> io::Result<()> {
        let mut conn = lock(&self.shared.conn)?;
        conn.send_close_notify();
        self.shared.send(conn, &mut self.out)?;
        lock(&self.shared.wire)?.0.shutdown(Shutdown::Write)
    }

    /// Runs `f` on the connection under its lock, then sends what it queued
    /// (a KeyUpdate, say).
    pub fn with_connection(&mut self, f: impl FnOnce(&mut Connection)) -> io::Result<()> {
        let mut conn = lock(&self.shared.conn)?;
        f(&mut conn);
        self.shared.send(conn, &mut self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;
    use std::time::Duration;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConnection, ServerConnection};

    use crate::tls::config::{client_config, server_config, Identity, Trust};

    const TIMEOUT: Duration = Duration::from_secs(20);

    /// A handshaken client and server over loopback, each split in two.
    fn pair() -> ((ReadHalf, WriteHalf), (ReadHalf, WriteHalf)) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let config = server_config(&Identity::TestCertificate, &[], None).unwrap().config;
            let mut conn = ServerConnection::new(config).unwrap();
            handshake(&sock, &mut conn);
            split(Arc::new(sock), conn.into(), false)
        });
        let sock = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/ca.pem");
        let config = client_config(&Trust::CaFile(ca.into()), &[]).unwrap();
        let mut conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
        handshake(&sock, &mut conn);
        let client = split(Arc::new(sock), conn.into(), false);
        (client, server.join().unwrap())
    }

    fn handshake<S: rustls::SideData>(sock: &TcpStream, conn: &mut rustls::ConnectionCommon<S>) {
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        sock.set_write_timeout(Some(TIMEOUT)).unwrap();
        let mut io = sock;
        while conn.is_handshaking() {
            conn.complete_io(&mut io).unwrap();
        }
        while conn.wants_write() {
            conn.write_tls(&mut io).unwrap();
        }
    }

    /// Sends `n` patterned bytes in `chunk`-sized writes, asking for a
    /// KeyUpdate every `key_update_every` writes; then close_notify.
    fn send(mut w: WriteHalf, n: usize, seed: u8, key_update_every: usize) {
        let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        for (i, chunk) in data.chunks(16 * 1024 + 7).enumerate() {
            w.write_all(chunk).unwrap();
            if key_update_every > 0 && i % key_update_every == key_update_every - 1 {
                w.with_connection(|c| c.refresh_traffic_keys().unwrap()).unwrap();
            }
        }
        w.close().unwrap();
    }

    fn receive(mut r: ReadHalf, n: usize, seed: u8) {
        let mut got = Vec::with_capacity(n);
        r.burst(16 * 1024).read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), n);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i as u8).wrapping_mul(31).wrapping_add(seed)));
    }

    #[test]
    fn bulk_both_ways_at_once_arrives_whole() {
        let ((cr, cw), (sr, sw)) = pair();
        const N: usize = 8 << 20;
        let threads = [
            thread::spawn(move || send(cw, N, 1, 0)),
            thread::spawn(move || send(sw, N, 2, 0)),
            thread::spawn(move || receive(sr, N, 1)),
            thread::spawn(move || receive(cr, N, 2)),
        ];
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn key_updates_in_both_directions_during_bulk_keep_every_byte() {
        // Each KeyUpdate makes the peer's reading half answer with one of
        // its own, written while the peer's writing half is busy: the
        // answer must not land inside one of its records.
        let ((cr, cw), (sr, sw)) = pair();
        const N: usize = 4 << 20;
        let threads = [
            thread::spawn(move || send(cw, N, 3, 5)),
            thread::spawn(move || send(sw, N, 4, 7)),
            thread::spawn(move || receive(sr, N, 3)),
            thread::spawn(move || receive(cr, N, 4)),
        ];
        for t in threads {
            t.join().unwrap();
        }
    }
}
