//! UDP through a SOCKS5 proxy: a UDP echo target on 127.0.0.1:0, a UDP
//! ASSOCIATE client of the generator's own (RFC 1928, section 7), and the
//! two measurements: sequential round trips, and datagrams per second with a
//! window of datagrams in flight.
//!
//! Each datagram's payload begins with its sequence number (8 bytes, big
//! endian), so an echo is matched to what was sent, late echoes are told
//! apart, and losses are counted. Every socket has timeouts and every loop
//! is bounded in time; everything stays on loopback.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::loadgen::{other, tune, Via, CONNECT_TIMEOUT};

/// Payload sizes measured: a small datagram, and one near the size that
/// QUIC and DNS keep under to avoid fragmentation.
pub const UDP_SIZES: [usize; 2] = [64, 1200];
/// Datagrams in flight in the rate run.
pub const WINDOW: usize = 64;

/// Socket buffers of the generator's and the echo target's UDP sockets, so
/// that they are not where datagrams get lost.
const SOCKET_BUFFER: usize = 4 << 20;
/// How long a round trip may take before the datagram counts as lost.
const PING_TIMEOUT: Duration = Duration::from_millis(500);
/// In the rate run, a datagram not echoed within this time counts as lost
/// and another is sent in its place.
const LOSS_AFTER: Duration = Duration::from_millis(200);
/// The largest datagram the generator reads.
const MAX_DATAGRAM: usize = 65_535;

fn big_buffers(sock: &UdpSocket) {
    let s = socket2::SockRef::from(sock);
    // The kernel caps these at net.core.{r,w}mem_max; what it grants is enough.
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
}

/// A UDP echo target on 127.0.0.1:0: every datagram goes back to its sender.
/// Its thread stops when this is dropped.
pub struct Echo {
    pub addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Echo {
    pub fn start() -> io::Result<Echo> {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        big_buffers(&sock);
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let addr = match sock.local_addr()? {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => return Err(other(format!("not IPv4: {a}"))),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        thread::Builder::new().name("udp-echo".into()).stack_size(256 * 1024).spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        })?;
        Ok(Echo { addr, stop })
    }
}

/// A UDP association with one target: straight to it, or through a SOCKS5
/// proxy's UDP relay (with the TCP control connection held open, as RFC 1928
/// wants: the association ends with it).
pub struct Assoc {
    sock: UdpSocket,
    /// The SOCKS5 UDP request header naming the target; empty when direct.
    header: Vec<u8>,
    _control: Option<TcpStream>,
}

impl Assoc {
    pub fn open(via: Via, target: SocketAddrV4) -> io::Result<Assoc> {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        big_buffers(&sock);
        let Via::Socks(proxy) = via else {
            sock.connect(target)?;
            return Ok(Assoc { sock, header: vec![], _control: None });
        };
        let mut control = TcpStream::connect_timeout(&proxy, CONNECT_TIMEOUT)?;
        tune(&control)?;
        // Datagrams will come from the generator's socket: its address goes in the request.
        let SocketAddr::V4(from) = sock.local_addr()? else { return Err(other("UDP socket: not IPv4")) };
        let relay = socks5_associate(&mut control, from)?;
        // A relay on the unspecified address is on the proxy's own.
        let relay =
            if relay.ip().is_unspecified() { SocketAddr::new(proxy.ip(), relay.port()) } else { relay };
        if !relay.ip().is_loopback() {
            return Err(other(format!("UDP relay at {relay}, not on loopback")));
        }
        sock.connect(relay)?;
        let mut header = vec![0, 0, 0, 1];
        header.extend_from_slice(&target.ip().octets());
        header.extend_from_slice(&target.port().to_be_bytes());
        Ok(Assoc { sock, header, _control: Some(control) })
    }

    /// Sends datagram `seq` with a payload of `size` bytes (at least 8), built in `buf`.
    fn send(&self, seq: u64, size: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        buf.extend_from_slice(&self.header);
        buf.extend_from_slice(&seq.to_be_bytes());
        buf.extend((8..size).map(|i| (i % 251) as u8));
        let n = self.sock.send(buf)?;
        if n != buf.len() {
            return Err(other(format!("UDP: sent {n} of {} bytes", buf.len())));
        }
        Ok(())
    }

    /// Reads one datagram: the sequence number of a well-formed echo of a
    /// `size`-byte payload, `None` for anything else. Timeouts are errors.
    fn recv(&self, size: usize, buf: &mut [u8]) -> io::Result<Option<u64>> {
        let n = self.sock.recv(buf)?;
        let payload = if self.header.is_empty() {
            &buf[..n]
        } else {
            // The reply's header names the datagram's source: the target.
            if n < self.header.len() || buf[..self.header.len()] != self.header[..] {
                return Ok(None);
            }
            &buf[self.header.len()..n]
        };
        if payload.len() != size {
            return Ok(None);
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&payload[..8]);
        Ok(Some(u64::from_be_bytes(seq)))
    }
}

/// The client side of a SOCKS5 UDP ASSOCIATE: greeting offering "no
/// authentication", then UDP ASSOCIATE naming `from`, where the datagrams
/// will come from. Returns the relay's address from the reply.
fn socks5_associate(s: &mut TcpStream, from: SocketAddrV4) -> io::Result<SocketAddr> {
    s.write_all(&[5, 1, 0])?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice)?;
    if choice != [5, 0] {
        return Err(other(format!("socks5: method reply {choice:02x?}")));
    }
    let mut req = vec![5, 3, 0, 1];
    req.extend_from_slice(&from.ip().octets());
    req.extend_from_slice(&from.port().to_be_bytes());
    s.write_all(&req)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    if head[0] != 5 || head[1] != 0 {
        return Err(other(format!("socks5: UDP ASSOCIATE reply {:02x?}", &head[..2])));
    }
    match head[3] {
        1 => {
            let mut a = [0u8; 6];
            s.read_exact(&mut a)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(SocketAddr::from((ip, u16::from_be_bytes([a[4], a[5]]))))
        }
        4 => {
            let mut a = [0u8; 18];
            s.read_exact(&mut a)?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[..16]);
            Ok(SocketAddr::from((ip, u16::from_be_bytes([a[16], a[17]]))))
        }
        t => Err(other(format!("socks5: UDP ASSOCIATE reply address type {t}"))),
    }
}

/// Round trips one after another.
pub struct Pings {
    pub latencies: Vec<Duration>,
    pub lost: usize,
}

impl Pings {
    /// Nearest-rank percentile in microseconds.
    pub fn percentile_us(&self, p: f64) -> f64 {
        let mut v = self.latencies.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1].as_secs_f64() * 1e6
    }
}

/// `warm` then `n` round trips of a `size`-byte payload, one at a time: send,
/// wait for its echo (at most [`PING_TIMEOUT`], then it counts as lost).
/// Stops early after `cap`, or when every one of the first 20 is lost.
pub fn pings(a: &Assoc, size: usize, warm: usize, n: usize, cap: Duration) -> io::Result<Pings> {
    a.sock.set_read_timeout(Some(PING_TIMEOUT))?;
    let mut out = Pings { latencies: Vec::with_capacity(n), lost: 0 };
    let (mut tx, mut rx) = (Vec::with_capacity(size + 32), vec![0u8; MAX_DATAGRAM]);
    let start = Instant::now();
    for seq in 0..(warm + n) as u64 {
        if start.elapsed() > cap || (out.lost >= 20 && out.latencies.is_empty()) {
            break;
        }
        let sent = Instant::now();
        a.send(seq, size, &mut tx)?;
        let back = loop {
            match a.recv(size, &mut rx) {
                Ok(Some(s)) if s == seq => break Some(sent.elapsed()),
                // A late echo of an earlier one, or something else: keep waiting.
                Ok(_) if sent.elapsed() < PING_TIMEOUT => {}
                Ok(_) => break None,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    break None
                }
                Err(e) => return Err(e),
            }
        };
        if seq < warm as u64 {
            continue;
        }
        match back {
            Some(d) => out.latencies.push(d),
            None => out.lost += 1,
        }
    }
    Ok(out)
}

/// What a rate run counted.
pub struct Rate {
    pub sent: u64,
    /// Echoes received within the run.
    pub received: u64,
    /// Datagrams never echoed (nor within [`LOSS_AFTER`] of the run's end).
    pub lost: u64,
    pub secs: f64,
}

impl Rate {
    pub fn per_sec(&self) -> f64 {
        self.received as f64 / self.secs.max(1e-9)
    }

    pub fn lost_percent(&self) -> f64 {
        100.0 * self.lost as f64 / (self.sent.max(1)) as f64
    }
}

/// Datagrams of `size` bytes with `window` in flight for `run`: each echo
/// received sends the next; a datagram not echoed within [`LOSS_AFTER`]
/// counts as lost and is replaced, so the window stays full.
pub fn rate(a: &Assoc, size: usize, window: usize, run: Duration) -> io::Result<Rate> {
    a.sock.set_read_timeout(Some(Duration::from_millis(10)))?;
    let (mut tx, mut rx) = (Vec::with_capacity(size + 32), vec![0u8; MAX_DATAGRAM]);
    // In flight: in the order sent, and as a set (entries leave the set when answered).
    let mut order: VecDeque<(u64, Instant)> = VecDeque::with_capacity(window * 2);
    let mut waiting: HashSet<u64> = HashSet::with_capacity(window * 2);
    let (mut next, mut received, mut lost) = (0u64, 0u64, 0u64);
    let mut send = |order: &mut VecDeque<(u64, Instant)>, waiting: &mut HashSet<u64>| -> io::Result<()> {
        a.send(next, size, &mut tx)?;
        order.push_back((next, Instant::now()));
        waiting.insert(next);
        next += 1;
        Ok(())
    };
    let start = Instant::now();
    for _ in 0..window {
        send(&mut order, &mut waiting)?;
    }
    let mut refused = 0;
    while start.elapsed() < run {
        match a.recv(size, &mut rx) {
            Ok(Some(seq)) if waiting.remove(&seq) => {
                received += 1;
                send(&mut order, &mut waiting)?;
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            // ICMP port unreachable from a relay that went away: a few are
            // tolerated, as losses.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && refused < 100 => refused += 1,
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        while let Some(&(seq, at)) = order.front() {
            if !waiting.contains(&seq) {
                order.pop_front();
            } else if now.duration_since(at) > LOSS_AFTER {
                order.pop_front();
                waiting.remove(&seq);
                lost += 1;
                send(&mut order, &mut waiting)?;
            } else {
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // What is still in flight gets LOSS_AFTER to come back; it is not counted
    // in the rate, and what does not come back is lost.
    let drain = Instant::now();
    while !waiting.is_empty() && drain.elapsed() < LOSS_AFTER {
        if let Ok(Some(seq)) = a.recv(size, &mut rx) {
            waiting.remove(&seq);
        }
    }
    lost += waiting.len() as u64;
    Ok(Rate { sent: next, received, lost, secs })
}
