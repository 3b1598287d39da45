//! The load generator: a SOCKS5 client of its own (no authentication, CONNECT
//! to an IPv4 address), in-process targets on 127.0.0.1:0 (discard, source,
//! echo, and held connections accepted one by one), the measurements, and the
//! process figures read from /proc.
//!
//! Every socket has read and write timeouts, every loop is bounded in count
//! and in time, and nothing leaves loopback: targets listen on 127.0.0.1 and
//! the proxies are given only those addresses.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Read and write timeout of every socket the generator and its targets use.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Deadline of each TCP connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a listener's accept waits before looking at its stop flag again.
const ACCEPT_POLL: Duration = Duration::from_millis(200);
/// Chunk size of bulk transfers.
const CHUNK: usize = 256 * 1024;
/// Size of a request and of its response in the new-connection figures.
pub const MESSAGE: usize = 64;
/// Echo target worker threads (connections beyond this wait for a free worker).
const ECHO_WORKERS: usize = 64;

/// How the generator reaches a target: straight, or through a SOCKS5 proxy.
#[derive(Clone, Copy, Debug)]
pub enum Via {
    Direct,
    Socks(SocketAddr),
}

pub fn other(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// A listener on 127.0.0.1:0 with a backlog of 1024 and an accept timeout.
pub fn listen(accept_timeout: Duration) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    sock.listen(1024)?;
    // On Linux SO_RCVTIMEO bounds accept() too.
    sock.set_read_timeout(Some(accept_timeout))?;
    Ok(sock.into())
}

pub fn local_v4(l: &TcpListener) -> io::Result<SocketAddrV4> {
    match l.local_addr()? {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => Err(other(format!("not IPv4: {a}"))),
    }
}

/// Timeouts and TCP_NODELAY on a socket.
pub fn tune(s: &TcpStream) -> io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)
}

/// A connection to `target`, through `via`.
pub fn open(via: Via, target: SocketAddrV4) -> io::Result<TcpStream> {
    match via {
        Via::Direct => {
            let s = TcpStream::connect_timeout(&target.into(), CONNECT_TIMEOUT)?;
            tune(&s)?;
            Ok(s)
        }
        Via::Socks(proxy) => {
            let mut s = TcpStream::connect_timeout(&proxy, CONNECT_TIMEOUT)?;
            tune(&s)?;
            socks5_connect(&mut s, target)?;
            Ok(s)
        }
    }
}

/// The client side of SOCKS5 as applications speak it: greeting offering
/// "no authentication", wait for the choice, CONNECT to an IPv4 address, wait
/// for the reply (whose bound address is read and dropped).
pub fn socks5_connect(s: &mut TcpStream, target: SocketAddrV4) -> io::Result<()> {
    s.write_all(&[5, 1, 0])?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice)?;
    if choice != [5, 0] {
        return Err(other(format!("socks5: method reply {choice:02x?}")));
    }
    let mut req = [5, 1, 0, 1, 0, 0, 0, 0, 0, 0];
    req[4..8].copy_from_slice(&target.ip().octets());
    req[8..10].copy_from_slice(&target.port().to_be_bytes());
    s.write_all(&req)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    if head[0] != 5 || head[1] != 0 {
        return Err(other(format!("socks5: reply {:02x?}", &head[..2])));
    }
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut n = [0u8; 1];
            s.read_exact(&mut n)?;
            usize::from(n[0]) + 2
        }
        a => return Err(other(format!("socks5: reply address type {a}"))),
    };
    let mut skip = [0u8; 257];
    s.read_exact(&mut skip[..rest])
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Accepts on `l` until `stop`, handing each connection to `each`.
fn accept_loop(l: TcpListener, stop: Arc<AtomicBool>, mut each: impl FnMut(TcpStream)) {
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((s, _)) => {
                if tune(&s).is_ok() {
                    each(s);
                }
            }
            // Timeouts, and errors such as EMFILE: look again after a pause.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {}
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().name(name.into()).stack_size(256 * 1024).spawn(f)
}

/// What the discard target saw on one connection.
pub struct Discarded {
    pub bytes: u64,
    /// When the last byte arrived.
    pub last: Instant,
}

/// The in-process targets, on 127.0.0.1:0. Their threads stop when this is dropped.
pub struct Targets {
    pub discard: SocketAddrV4,
    pub source: SocketAddrV4,
    pub echo: SocketAddrV4,
    discarded: mpsc::Receiver<Discarded>,
    stop: Arc<AtomicBool>,
}

impl Drop for Targets {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Targets {
    pub fn start() -> io::Result<Targets> {
        let stop = Arc::new(AtomicBool::new(false));

        // discard: reads and drops; at EOF reports the byte count and when the last byte came.
        let l = listen(ACCEPT_POLL)?;
        let discard = local_v4(&l)?;
        let (tx, discarded) = mpsc::channel();
        let st = Arc::clone(&stop);
        spawn("discard", move || {
            accept_loop(l, st, |mut s| {
                let tx = tx.clone();
                let _ = spawn("discard-conn", move || {
                    let mut buf = vec![0u8; CHUNK];
                    let mut bytes = 0u64;
                    let mut last = Instant::now();
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        bytes += n as u64;
                        last = Instant::now();
                    }
                    let _ = tx.send(Discarded { bytes, last });
                });
            })
        })?;

        // source: reads an 8-byte big-endian count, writes that many bytes, closes.
        let l = listen(ACCEPT_POLL)?;
        let source = local_v4(&l)?;
        let st = Arc::clone(&stop);
        spawn("source", move || {
            accept_loop(l, st, |mut s| {
                let _ = spawn("source-conn", move || {
                    let mut n = [0u8; 8];
                    if s.read_exact(&mut n).is_err() {
                        return;
                    }
                    let mut left = u64::from_be_bytes(n);
                    let buf = pattern(CHUNK);
                    while left > 0 {
                        let k = left.min(CHUNK as u64) as usize;
                        if s.write_all(&buf[..k]).is_err() {
                            return;
                        }
                        left -= k as u64;
                    }
                    let _ = s.shutdown(Shutdown::Write);
                });
            })
        })?;

        // echo: a fixed pool of workers, so that no thread is spawned per request.
        let l = listen(ACCEPT_POLL)?;
        let echo = local_v4(&l)?;
        let (etx, erx) = mpsc::channel::<TcpStream>();
        let erx = Arc::new(Mutex::new(erx));
        for i in 0..ECHO_WORKERS {
            let erx = Arc::clone(&erx);
            spawn(&format!("echo-{i}"), move || loop {
                let next = erx.lock().map(|rx| rx.recv());
                let Ok(Ok(mut s)) = next else { return };
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            })?;
        }
        let st = Arc::clone(&stop);
        spawn("echo", move || {
            accept_loop(l, st, |s| {
                let _ = etx.send(s);
            })
        })?;

        Ok(Targets { discard, source, echo, discarded, stop })
    }
}

/// Upload: one connection writes `bytes` to the discard target. The time runs
/// from the first byte written (after the SOCKS5 reply) until the target has
/// received the last one.
pub fn upload(via: Via, t: &Targets, bytes: u64) -> io::Result<Duration> {
    while t.discarded.try_recv().is_ok() {}
    let mut s = open(via, t.discard)?;
    let buf = pattern(CHUNK);
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..k])?;
        left -= k as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let got = t.discarded.recv_timeout(IO_TIMEOUT).map_err(|_| other("discard target: no report"))?;
    // The proxy passes the target's close back; wait for it (bounded by the read timeout).
    let mut sink = [0u8; 1024];
    while let Ok(1..) = s.read(&mut sink) {}
    if got.bytes != bytes {
        return Err(other(format!("upload: the target received {} of {bytes} bytes", got.bytes)));
    }
    Ok(got.last.saturating_duration_since(start))
}

/// Download: the source target sends `bytes`; the time runs from the request
/// (after the SOCKS5 reply) until the client has read EOF.
pub fn download(via: Via, t: &Targets, bytes: u64) -> io::Result<Duration> {
    let mut s = open(via, t.source)?;
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    s.write_all(&bytes.to_be_bytes())?;
    let mut got = 0u64;
    loop {
        match s.read(&mut buf)? {
            0 => break,
            n => got += n as u64,
        }
    }
    let took = start.elapsed();
    if got != bytes {
        return Err(other(format!("download: received {got} of {bytes} bytes")));
    }
    Ok(took)
}

/// One request/response on a new connection: connect, handshake, send 64 B,
/// read the 64 B back, close. Returns the time from connect() to the last byte.
pub fn request(via: Via, echo: SocketAddrV4, fill: u8) -> io::Result<Duration> {
    let start = Instant::now();
    let mut s = open(via, echo)?;
    let msg = [fill; MESSAGE];
    s.write_all(&msg)?;
    let mut back = [0u8; MESSAGE];
    s.read_exact(&mut back)?;
    let took = start.elapsed();
    if back != msg {
        return Err(other("echo: wrong bytes back"));
    }
    Ok(took)
}

/// Latencies of a batch of requests.
pub struct Batch {
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub first_error: Option<String>,
    pub wall: Duration,
}

impl Batch {
    pub fn ops_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Nearest-rank percentile in microseconds.
    pub fn percentile_us(&self, p: f64) -> f64 {
        let mut v: Vec<Duration> = self.latencies.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1].as_secs_f64() * 1e6
    }
}

/// `per_thread` requests on each of `threads` threads at once, each thread
/// stopping early at `cap` time or after too many errors.
pub fn requests(via: Via, echo: SocketAddrV4, threads: usize, per_thread: usize, cap: Duration) -> Batch {
    let start = Instant::now();
    let results: Vec<(Vec<Duration>, usize, Option<String>)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut lat = Vec::with_capacity(per_thread);
                    let (mut errors, mut first) = (0usize, None);
                    for i in 0..per_thread {
                        if start.elapsed() > cap || errors > 10 + per_thread / 10 {
                            break;
                        }
                        match request(via, echo, (t * 31 + i) as u8) {
                            Ok(d) => lat.push(d),
                            Err(e) => {
                                errors += 1;
                                first.get_or_insert_with(|| e.to_string());
                                thread::sleep(Duration::from_millis(5));
                            }
                        }
                    }
                    (lat, errors, first)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| (vec![], 1, Some("panic".into())))).collect()
    });
    let wall = start.elapsed();
    let mut batch = Batch { latencies: vec![], errors: 0, first_error: None, wall };
    for (lat, errors, first) in results {
        batch.latencies.extend(lat);
        batch.errors += errors;
        if batch.first_error.is_none() {
            batch.first_error = first;
        }
    }
    batch
}

/// Time to first byte: from connect() to the SOCKS5 port until the first
/// byte of the echoed 64 B request arrives.
pub fn first_byte(via: Via, echo: SocketAddrV4) -> io::Result<Duration> {
    let start = Instant::now();
    let mut s = open(via, echo)?;
    s.write_all(&[0x42; MESSAGE])?;
    let mut back = [0u8; MESSAGE];
    s.read_exact(&mut back[..1])?;
    let took = start.elapsed();
    s.read_exact(&mut back[1..])?;
    Ok(took)
}

/// Connections held open: the application side and the target side of each.
pub struct Held {
    pub pairs: Vec<(TcpStream, TcpStream)>,
    /// Why opening stopped short of the number asked for.
    pub stopped: Option<String>,
}

/// Opens up to `n` connections through `via` to a listener of its own, one
/// after the other, and keeps both ends: as they are opened in turn, the i-th
/// connection accepted is the target side of the i-th opened. Each is checked
/// with a 1-byte echo (the target side answers). No thread per connection.
/// `guard` is asked every 50 connections whether to stop (it returns why).
pub fn hold(via: Via, n: usize, cap: Duration, guard: &dyn Fn(usize) -> Option<String>) -> Held {
    let mut held = Held { pairs: Vec::with_capacity(n), stopped: None };
    let l = match listen(CONNECT_TIMEOUT) {
        Ok(l) => l,
        Err(e) => {
            held.stopped = Some(format!("listen: {e}"));
            return held;
        }
    };
    let target = match local_v4(&l) {
        Ok(a) => a,
        Err(e) => {
            held.stopped = Some(e.to_string());
            return held;
        }
    };
    let start = Instant::now();
    for i in 0..n {
        if start.elapsed() > cap {
            held.stopped = Some(format!("time cap of {}s reached", cap.as_secs()));
            break;
        }
        if i % 50 == 0 {
            if let Some(why) = guard(i) {
                held.stopped = Some(why);
                break;
            }
        }
        match open_held(via, &l, target, i as u8) {
            Ok(pair) => held.pairs.push(pair),
            Err(e) => {
                held.stopped = Some(format!("connection {}: {e}", i + 1));
                break;
            }
        }
    }
    held
}

fn open_held(via: Via, l: &TcpListener, target: SocketAddrV4, b: u8) -> io::Result<(TcpStream, TcpStream)> {
    let mut c = open(via, target)?;
    // The byte goes first: some proxies connect to the target only once the
    // application has sent something.
    c.write_all(&[b])?;
    let (mut t, _) = l.accept().map_err(|e| other(format!("target side not accepted: {e}")))?;
    tune(&t)?;
    let mut one = [0u8; 1];
    t.read_exact(&mut one)?;
    if one[0] != b {
        return Err(other("held connection: wrong byte at the target"));
    }
    t.write_all(&one)?;
    c.read_exact(&mut one)?;
    if one[0] != b {
        return Err(other("held connection: wrong byte back"));
    }
    Ok((c, t))
}

/// A 1-byte echo on every held connection, in four passes so that the
/// connections are served at once rather than one round trip after another.
/// Returns how many answered.
pub fn echo_all(pairs: &mut [(TcpStream, TcpStream)]) -> usize {
    let mut ok = vec![true; pairs.len()];
    for (i, (c, _)) in pairs.iter_mut().enumerate() {
        ok[i] = c.write_all(&[0xEE]).is_ok();
    }
    let mut one = [0u8; 1];
    for (i, (_, t)) in pairs.iter_mut().enumerate() {
        ok[i] = ok[i] && t.read_exact(&mut one).is_ok() && one[0] == 0xEE && t.write_all(&one).is_ok();
    }
    for (i, (c, _)) in pairs.iter_mut().enumerate() {
        ok[i] = ok[i] && c.read_exact(&mut one).is_ok() && one[0] == 0xEE;
    }
    ok.iter().filter(|k| **k).count()
}

// ---- process figures from /proc -------------------------------------------

/// Clock ticks per second (`getconf CLK_TCK`), 100 if that cannot be run.
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// utime + stime of a process (all its threads, live and exited), in ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name in parentheses; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU time of a process (all its threads, live and exited), in
/// nanoseconds: its CPU-time clock (`clock_getcpuclockid`), exact where
/// [`cpu_ticks`] counts whole clock ticks.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    use nix::time::{clock_getcpuclockid, ClockId};
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).ok()?);
    let t = ClockId::now(clock_getcpuclockid(pid).ok()?).ok()?;
    Some(u64::try_from(t.tv_sec()).ok()? * 1_000_000_000 + u64::try_from(t.tv_nsec()).ok()?)
}

fn status_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Sum over `pids` of utime + stime, in ticks.
pub fn sum_cpu(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|p| cpu_ticks(*p)).sum()
}

/// Sum over `pids` of VmRSS, in KiB.
pub fn sum_rss_kib(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|p| status_field(*p, "VmRSS:")).sum()
}

/// Sum over `pids` of their thread counts.
pub fn sum_threads(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|p| status_field(*p, "Threads:")).sum()
}

/// Tasks (threads) on the whole system, from /proc/loadavg.
pub fn system_tasks() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok()
}

pub fn pid_max() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768)
}

/// MemAvailable, in KiB.
pub fn mem_available_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line["MemAvailable:".len()..].split_whitespace().next()?.parse().ok()
}

/// Waits (at most `cap`) until the processes are back to `threads` threads or
/// fewer, or their count has not changed for 300 ms (some keep a helper
/// thread started by their first connection).
pub fn settle(pids: &[u32], threads: u64, cap: Duration) {
    let start = Instant::now();
    let (mut last, mut since) = (None, Instant::now());
    while start.elapsed() < cap {
        match sum_threads(pids) {
            Some(now) if now > threads => {
                if last != Some(now) {
                    (last, since) = (Some(now), Instant::now());
                } else if since.elapsed() > Duration::from_millis(300) {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            _ => return,
        }
    }
}
