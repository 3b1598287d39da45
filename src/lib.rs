//! blocking-proxy: a SOCKS5 proxy pair that carries every connection over TLS,
//! in plain blocking Rust with one OS thread per direction.
//!
//! ```text
//! app ──SOCKS5──▶ blocking-local ══TLS: header + payload══▶ blocking-server ──TCP──▶ target
//! ```
//!
//! From the top:
//!
//! - [`local`] is `blocking-local`: it accepts SOCKS5 clients, opens a TLS
//!   connection to the server per client and sends the target first.
//! - [`server`] is `blocking-server`: it accepts TLS, reads the target,
//!   connects to it and relays.
//! - [`socks5`] parses and answers RFC 1928 on any `Read + Write`.
//! - [`wire`] encodes and reads the header the local sends the server.
//! - [`tls`] is the one place that builds rustls configurations and loads PEM.
//! - [`egress`] decides which addresses the server may connect to.
//! - [`relay`] splits one TLS connection between two threads, copies each
//!   direction with `std::io::copy`, and handles half-close and timeouts.
//! - [`cli`] holds what the two binaries share: options, logging, exit codes.
//! - [`escape`] writes text a peer controls into a log line without letting
//!   it forge a field or a line.
//! - [`signals`] turns SIGTERM and SIGINT into a graceful shutdown.
//! - [`workers`] keeps finished threads parked for the next connection.
//! - [`sys`] is the one place the process calls libc directly: it bounds
//!   glibc's malloc arenas so memory stays flat under sustained load.
//!
//! This file holds what both processes share at run time: the [`Error`] type,
//! the [`Timeouts`] of a connection, and the [`Acceptor`]: the accept loop with
//! its admission control ([`Gate`]) and its way to stop ([`Stopper`]).

#![deny(unsafe_code)]

pub mod cli;
pub mod egress;
pub mod escape;
pub mod local;
pub mod relay;
pub mod server;
pub mod signals;
pub mod socks5;
pub mod sys;
pub mod tls;
pub mod wire;
pub mod workers;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};

use crate::wire::Target;

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
            Error::Tls(e) => write!(f, "tls: {e}"),
            Error::Protocol(what) => write!(f, "protocol: {what}"),
            Error::Config(what) => f.write_str(what),
            Error::Denied(what) => write!(f, "denied: {what}"),
        }
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

/// The deadlines of one connection. Every phase before the relay has one;
/// the relay itself ends after `idle` with no byte in either direction.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// SOCKS5 greeting and request (local); TLS handshake and header (server).
    pub handshake: Duration,
    /// TCP connect and TLS handshake to the server (local); connect to the target (server).
    pub connect: Duration,
    /// No byte in either direction for this long ends the relay.
    pub idle: Duration,
    /// After one direction has ended, the other is closed once it has been quiet this long.
    pub linger: Duration,
    /// On shutdown, how long open connections may go on before the process exits.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(10),
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(300),
            linger: Duration::from_secs(30),
            drain: Duration::from_secs(5),
        }
    }
}

/// Stack of a connection's setup thread: SOCKS5 or the TLS handshake, name
/// resolution, connect, logging. Short-lived; more than four times
/// [`COPY_STACK`], so glibc never hands one of these deep stacks to a copy thread.
pub const SETUP_STACK: usize = 512 * 1024;

/// Stack of the two copy threads of a connection, which live as long as it
/// does. Their buffers are on the heap, so they stay shallow.
pub const COPY_STACK: usize = 64 * 1024;

/// The setup threads of both binaries.
pub static SETUP_THREADS: workers::Workers = workers::Workers::new("setup", SETUP_STACK);
/// The copy threads of both binaries.
pub static COPY_THREADS: workers::Workers = workers::Workers::new("copy", COPY_STACK);

/// How long the accept loop rests after a resource error (EMFILE, a failed spawn).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Descriptors a process keeps for itself (stdio, listener, logging, the odd file).
const RESERVED_FDS: u64 = 64;
/// Descriptors one connection holds: the client's socket and the onward one.
pub const FDS_PER_CONNECTION: u64 = 2;

/// Raises the soft descriptor limit to the hard one and returns the limit in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 1024 };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// The connection cap that `fd_limit` descriptors allow, at `per_connection` each.
pub fn connection_cap(fd_limit: u64, per_connection: u64) -> usize {
    let cap = fd_limit.saturating_sub(RESERVED_FDS) / per_connection.max(1);
    usize::try_from(cap).unwrap_or(usize::MAX).max(1)
}

/// Threads one connection may need at once: its setup thread and a name
/// lookup, or its two copy threads, plus a lookup that outlived its deadline.
pub const THREADS_PER_CONNECTION: u64 = 4;

/// Threads a process keeps for itself: the accept loop, the signal thread,
/// pool fillers, and the parked threads of both worker sets.
pub const RESERVED_THREADS: u64 = 16 + 2 * workers::MAX_IDLE as u64;

/// The connection cap that `thread_limit` threads allow.
pub fn thread_cap(thread_limit: u64) -> usize {
    let cap = thread_limit.saturating_sub(RESERVED_THREADS) / THREADS_PER_CONNECTION;
    usize::try_from(cap).unwrap_or(usize::MAX).max(1)
}

/// The tightest limit on this process's threads, and its name: the
/// RLIMIT_NPROC soft limit (raised to the hard one first), the cgroup's
/// `pids.max` (of this cgroup and every one above it) and the system's
/// `kernel.threads-max`. None when none is set.
pub fn thread_limit() -> Option<(u64, &'static str)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
    let mut limits: Vec<(u64, &'static str)> = Vec::new();
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NPROC) {
        let limit =
            if soft < hard && setrlimit(Resource::RLIMIT_NPROC, hard, hard).is_ok() { hard } else { soft };
        if limit != RLIM_INFINITY {
            limits.push((limit, "RLIMIT_NPROC"));
        }
    }
    let read = |p: &std::path::Path| std::fs::read_to_string(p).ok();
    if let Some(cgroups) = read(std::path::Path::new("/proc/self/cgroup")) {
        if let Some(max) = cgroup_pids_max(&cgroups, read) {
            limits.push((max, "the cgroup's pids.max"));
        }
    }
    let threads_max = read(std::path::Path::new("/proc/sys/kernel/threads-max"));
    if let Some(max) = threads_max.and_then(|t| t.trim().parse().ok()) {
        limits.push((max, "kernel.threads-max"));
    }
    limits.into_iter().min_by_key(|(limit, _)| *limit)
}

/// The smallest `pids.max` that applies to the cgroups listed in
/// `proc_self_cgroup` (the text of `/proc/self/cgroup`): for the cgroup v2
/// path and the v1 `pids` hierarchy, the file of the cgroup and of every one
/// above it, up to the mount point; `max` means no limit.
pub fn cgroup_pids_max(
    proc_self_cgroup: &str,
    read: impl Fn(&std::path::Path) -> Option<String>,
) -> Option<u64> {
    let mut found: Option<u64> = None;
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let mounts: &[&str] = match controllers {
            "" => &["/sys/fs/cgroup", "/sys/fs/cgroup/unified"],
            c if c.split(',').any(|c| c == "pids") => &["/sys/fs/cgroup/pids"],
            _ => continue,
        };
        for mount in mounts {
            let mut dir = std::path::PathBuf::from(mount);
            dir.push(path.trim_start_matches('/'));
            loop {
                let limit = read(&dir.join("pids.max")).and_then(|t| t.trim().parse::<u64>().ok());
                if let Some(limit) = limit {
                    found = Some(found.map_or(limit, |f| f.min(limit)));
                }
                if dir.as_os_str() == *mount || !dir.pop() {
                    break;
                }
            }
        }
    }
    found
}

/// Admission control: at most `cap` connections at once; once half the
/// places are taken, at most `per_source` of them from one source still
/// pending (not yet past their header); and a way to wait until none is left.
///
/// The per-source limit waits for pressure so that a busy client (one local
/// opening a burst of connections) is not turned away from a server with
/// room to spare, while no source can take the places that are left.
pub struct Gate {
    state: Mutex<Admitted>,
    changed: Condvar,
    cap: usize,
    per_source: Option<usize>,
}

/// What a [`Gate`] counts.
struct Admitted {
    active: usize,
    /// Pending connections per source (see [`Source`]).
    pending: HashMap<Source, usize>,
}

/// Where a connection comes from, for the per-source limit: an IPv4
/// address, or the /64 network of an IPv6 address (one host usually has a
/// whole /64 to choose from).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address (IPv4-mapped IPv6 included).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl Source {
    /// The source an address belongs to.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(a) => Source::V4(a.octets()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let o = a.octets();
                    Source::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Source::V4(o) => write!(f, "{}", std::net::Ipv4Addr::from(o)),
            Source::V6(o) => {
                let mut full = [0u8; 16];
                full[..8].copy_from_slice(&o);
                write!(f, "{}/64", std::net::Ipv6Addr::from(full))
            }
        }
    }
}

/// Why the [`Gate`] turned a connection away.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The cap was reached.
    Cap(usize),
    /// Its source has this many pending connections already.
    PerSource(Source, usize),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Cap(cap) => write!(f, "at capacity ({cap} connections)"),
            Refused::PerSource(src, n) => write!(f, "{n} connections from {src} already pending"),
        }
    }
}

/// One admitted connection. It is shared ([`Place`]) by whatever still
/// works for the connection (a name lookup that outlives its deadline, say),
/// and its place under the cap is given back when the last share is dropped.
pub struct Ticket {
    gate: Arc<Gate>,
    /// The source it still counts against, until it is past its header.
    pending: Mutex<Option<Source>>,
}

/// A share of a connection's [`Ticket`].
#[derive(Clone)]
pub struct Place(Arc<Ticket>);

impl Place {
    /// The connection is past its header: it no longer counts as pending
    /// against its source (its place under the cap stays).
    pub fn authenticated(&self) {
        let source = self.0.pending.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(source) = source {
            self.0.gate.leave_pending(source);
        }
    }
}

impl Gate {
    /// A gate for `cap` connections, and with `per_source`, at most that
    /// many pending from one source.
    pub fn new(cap: usize, per_source: Option<usize>) -> Arc<Gate> {
        let state = Mutex::new(Admitted { active: 0, pending: HashMap::new() });
        Arc::new(Gate { state, changed: Condvar::new(), cap, per_source })
    }

    fn count(&self) -> std::sync::MutexGuard<'_, Admitted> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits one more connection from `peer`, unless a limit is reached.
    pub fn enter(self: &Arc<Self>, peer: IpAddr) -> Result<Place, Refused> {
        let mut n = self.count();
        if n.active >= self.cap {
            return Err(Refused::Cap(self.cap));
        }
        let pressed = n.active >= self.cap / 2;
        let pending = match self.per_source {
            Some(limit) => {
                let source = Source::of(peer);
                let count = n.pending.entry(source).or_insert(0);
                if pressed && *count >= limit {
                    return Err(Refused::PerSource(source, *count));
                }
                *count += 1;
                Some(source)
            }
            None => None,
        };
        n.active += 1;
        Ok(Place(Arc::new(Ticket { gate: Arc::clone(self), pending: Mutex::new(pending) })))
    }

    fn leave_pending(&self, source: Source) {
        let mut n = self.count();
        if let Some(count) = n.pending.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                n.pending.remove(&source);
            }
        }
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.count().active
    }

    /// Waits until no connection is open or `timeout` has passed; returns how many are left.
    pub fn wait_idle(&self, timeout: Duration) -> usize {
        let n = self.count();
        let (n, _) = self
            .changed
            .wait_timeout_while(n, timeout, |n| n.active > 0)
            .unwrap_or_else(PoisonError::into_inner);
        n.active
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let source = self.pending.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(source) = source {
            self.gate.leave_pending(source);
        }
        self.gate.count().active -= 1;
        self.gate.changed.notify_all();
    }
}

/// Stops an [`Acceptor`] from another thread (the signal thread).
pub struct Stopper {
    stop: Arc<AtomicBool>,
    listener: TcpListener,
}

impl Stopper {
    /// Makes the accept loop return; connections already accepted go on.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Shutting a listening socket down wakes a thread blocked in accept().
        let _ = SockRef::from(&self.listener).shutdown(std::net::Shutdown::Read);
    }
}

/// A listening socket with its admission control.
pub struct Acceptor {
    listener: TcpListener,
    gate: Arc<Gate>,
    stop: Arc<AtomicBool>,
}

impl Acceptor {
    /// Binds `addr` (the error names it) for at most `max_conns` connections
    /// at once, and with `per_source`, at most that many pending from one source.
    pub fn bind(addr: &str, max_conns: usize, per_source: Option<usize>) -> Result<Acceptor, Error> {
        Ok(Acceptor {
            listener: listen(addr)?,
            gate: Gate::new(max_conns, per_source),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that stops [`run`](Acceptor::run) from another thread.
    pub fn stopper(&self) -> io::Result<Stopper> {
        Ok(Stopper { stop: Arc::clone(&self.stop), listener: self.listener.try_clone()? })
    }

    /// Accepts until stopped, running `handler(stream, report)` on a setup
    /// thread for each client; the [`Report`] holds the client's
    /// place under the cap until it is dropped. Over the cap, `refuse(stream)` answers
    /// the client inline instead. Resource errors and refusals are logged at
    /// most once a second and accept errors are backed off: the loop never
    /// spins and never panics. Once stopped, the listener is closed (new
    /// clients are refused) and open connections get up to `drain` to finish;
    /// returns how many were still open.
    pub fn run<F, R>(self, drain: Duration, handler: F, refuse: R) -> usize
    where
        F: Fn(TcpStream, Report) + Send + Sync + 'static,
        R: Fn(TcpStream),
    {
        let handler = Arc::new(handler);
        let mut last_warning: Option<Instant> = None;
        let mut warn_limited = |what: String| {
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                log::warn!("{what}");
                last_warning = Some(Instant::now());
            }
        };
        while !self.stop.load(Ordering::SeqCst) {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(_) if self.stop.load(Ordering::SeqCst) => break,
                Err(e) if is_transient_accept_error(&e) => continue,
                Err(e) => {
                    warn_limited(format!("accept failed: {e}; backing off"));
                    thread::sleep(ACCEPT_BACKOFF);
                    continue;
                }
            };
            let ticket = match self.gate.enter(peer.ip()) {
                Ok(ticket) => ticket,
                Err(why) => {
                    warn_limited(format!("{why}: refusing {peer}"));
                    refuse(stream);
                    continue;
                }
            };
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let h = Arc::clone(&handler);
            let report = Report::new(id, peer, ticket);
            let spawned = SETUP_THREADS.spawn(move || h(stream, report));
            if let Err(e) = spawned {
                // The closure, and the client socket with it, is dropped: the client sees a close.
                warn_limited(format!("#{id} cannot start a thread for {peer}: {e}; backing off"));
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
        drop(self.listener);
        let open = self.gate.active();
        if open > 0 {
            log::info!("listener closed; waiting up to {:.1}s for {open} connections", drain.as_secs_f64());
        }
        let left = self.gate.wait_idle(drain);
        if left > 0 {
            log::warn!("drain timeout: exiting with {left} connections open");
        }
        left
    }
}

/// Errors that concern one aborted client, not the listener: try the next one at once.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Pending connections the kernel may queue before the accept loop takes them.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds a listening socket; the error names the address.
pub fn listen(addr: &str) -> Result<TcpListener, Error> {
    let fail = |e: &dyn fmt::Display| Error::Config(format!("cannot listen on {addr}: {e}"));
    let sa = addr.to_socket_addrs().map_err(|e| fail(&e))?.next().ok_or_else(|| fail(&"no such address"))?;
    let sock = Socket::new(Domain::for_address(sa), Type::STREAM, None).map_err(|e| fail(&e))?;
    sock.set_reuse_address(true).map_err(|e| fail(&e))?;
    sock.bind(&sa.into()).map_err(|e| fail(&e))?;
    sock.listen(LISTEN_BACKLOG).map_err(|e| fail(&e))?;
    Ok(sock.into())
}

/// Connects to `target`, trying each address it resolves to until one
/// answers; resolution and all attempts together end at `until`. With a
/// `policy`, only the addresses it permits are tried, and none is a
/// [`Error::Denied`]. A name lookup that outlives `until` keeps holding
/// `place` (the connection's place under the cap) until it returns.
pub fn connect(
    target: &Target,
    until: Instant,
    policy: Option<&egress::Policy>,
    place: Option<&Place>,
) -> Result<TcpStream, Error> {
    let mut addrs: Vec<SocketAddr> = match target {
        Target::Ip(a) => vec![*a],
        Target::Domain(name, port) => resolve(name, *port, until, place)?,
    };
    if let Some(policy) = policy {
        let resolved = addrs.len();
        addrs.retain(|a| policy.permits(a.ip()));
        if addrs.is_empty() && resolved > 0 {
            return Err(Error::Denied(format!("{target} is not a public address")));
        }
    }
    let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
    for (i, addr) in addrs.iter().enumerate() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
            break;
        }
        // Each address gets its share of what is left, so one that never
        // answers (an AAAA without a route, say) does not starve the rest.
        let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
        match TcpStream::connect_timeout(addr, share) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(Error::Io(last))
}

/// Resolves `name` with the system resolver, giving up at `until`. The
/// lookup runs on a worker thread, since getaddrinfo cannot be interrupted;
/// a late answer is dropped. That thread holds `place` until getaddrinfo
/// returns, so lookups that never end (a resolver that does not answer)
/// keep their connections' places and cannot pile up past the cap.
fn resolve(name: &str, port: u16, until: Instant, place: Option<&Place>) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = name.to_owned();
    let held = place.cloned();
    SETUP_THREADS.spawn(move || {
        let found = (owned.as_str(), port).to_socket_addrs().map(Iterator::collect::<Vec<_>>);
        let _ = tx.send(found);
        drop(held);
    })?;
    match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        Ok(found) => Ok(found?),
        Err(_) => Err(Error::Io(io::Error::new(io::ErrorKind::TimedOut, "name resolution timed out"))),
    }
}

/// One connection's account: what it did, logged as a single `info` line
/// when it is dropped, and its place under the cap, given back then.
pub struct Report {
    /// The connection's number in this process, the `#id` of its log lines.
    pub id: u64,
    peer: SocketAddr,
    start: Instant,
    place: Place,
    /// Where the client asked to go (or was sent), once known.
    pub target: Option<String>,
    /// Bytes from the client towards the target.
    pub up: u64,
    /// Bytes from the target towards the client.
    pub down: u64,
    /// How it ended.
    pub end: String,
}

impl Report {
    /// Starts the report of connection `id` from `peer`, admitted with `place`.
    pub fn new(id: u64, peer: SocketAddr, place: Place) -> Report {
        Report {
            id,
            peer,
            start: Instant::now(),
            place,
            target: None,
            up: 0,
            down: 0,
            end: "aborted".to_owned(),
        }
    }

    /// The connection's place under the cap, to share with work that may outlive it.
    pub fn place(&self) -> &Place {
        &self.place
    }

    /// Adds what a relay moved and how it ended.
    pub fn relayed(&mut self, out: relay::Outcome) {
        self.up += out.up;
        self.down += out.down;
        self.end = out.end.to_string();
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        let target = self.target.as_deref().unwrap_or("-");
        log::info!(
            "#{} closed client={} target={} up={} down={} time={:.3}s end={}",
            self.id,
            self.peer,
            target,
            self.up,
            self.down,
            self.start.elapsed().as_secs_f64(),
            self.end
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn pids_max_is_the_smallest_of_the_cgroup_and_those_above_it() {
        let files = |p: &Path| match p.to_str()? {
            "/sys/fs/cgroup/system.slice/proxy.service/pids.max" => Some("max\n".into()),
            "/sys/fs/cgroup/system.slice/pids.max" => Some("4096\n".into()),
            "/sys/fs/cgroup/pids/user.slice/pids.max" => Some("10000\n".into()),
            "/sys/fs/cgroup/pids/pids.max" => Some("2000\n".into()),
            _ => None,
        };
        assert_eq!(cgroup_pids_max("0::/system.slice/proxy.service\n", files), Some(4096));
        assert_eq!(cgroup_pids_max("5:pids:/user.slice\n1:cpu:/\n", files), Some(2000));
        assert_eq!(cgroup_pids_max("0::/other\n4:memory:/x\n", files), None);
        assert_eq!(cgroup_pids_max("", files), None);
    }

    #[test]
    fn four_threads_per_connection_must_fit_under_the_thread_limit() {
        assert_eq!(thread_cap(1000), (1000 - RESERVED_THREADS as usize) / 4);
        assert_eq!(thread_cap(10), 1, "never below one connection");
        assert_eq!(connection_cap(1024, 2), 480);
    }

    #[test]
    fn one_source_may_hold_only_so_many_pending_places_once_half_are_taken() {
        let gate = Gate::new(10, Some(2));
        // Half the places first, from elsewhere: from then on the per-source limit holds.
        let _others: Vec<Place> =
            (1..=5).map(|i| gate.enter(IpAddr::from([198, 51, 100, i])).unwrap()).collect();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        let first = gate.enter(a).unwrap();
        let _second = gate.enter(a).unwrap();
        assert_eq!(gate.enter(a).err(), Some(Refused::PerSource(Source::of(a), 2)));
        // A place past its header no longer counts as pending: its source may open another.
        first.authenticated();
        let third = gate.enter(a).unwrap();
        assert_eq!(gate.enter(a).err(), Some(Refused::PerSource(Source::of(a), 2)));
        // An IPv6 /64 is one source; an IPv4-mapped address is its IPv4 address.
        let _v6 = (gate.enter(b).unwrap(), gate.enter(same_64).unwrap());
        assert!(gate.enter(b).is_err());
        assert!(gate.enter("::ffff:192.0.2.1".parse().unwrap()).is_err());
        assert_eq!(gate.active(), 10);
        drop(third);
        assert_eq!(gate.active(), 9);
        assert!(gate.enter(a).is_ok(), "a dropped place frees its source too");
    }

    #[test]
    fn with_room_to_spare_one_source_may_have_many_pending() {
        let gate = Gate::new(10, Some(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let five: Vec<Place> = (0..5).map(|_| gate.enter(a).unwrap()).collect();
        assert_eq!(gate.enter(a).err(), Some(Refused::PerSource(Source::of(a), 5)));
        assert!(gate.enter("192.0.2.2".parse().unwrap()).is_ok(), "another source still gets in");
        drop(five);
    }

    #[test]
    fn a_shared_place_is_given_back_when_the_last_share_goes() {
        let gate = Gate::new(1, None);
        let place = gate.enter("127.0.0.1".parse().unwrap()).unwrap();
        let lookup = place.clone();
        drop(place);
        assert_eq!(gate.enter("127.0.0.1".parse().unwrap()).err(), Some(Refused::Cap(1)));
        drop(lookup);
        assert!(gate.enter("127.0.0.1".parse().unwrap()).is_ok());
    }
}
