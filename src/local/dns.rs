//! blocking-local's DNS server (`--dns LISTEN`): names resolved where the
//! ACL sends their connections, so that a proxied site's name never reaches
//! the local network's resolver.
//!
//! Queries come over UDP and TCP on one address. Each is answered from a
//! cache, or asked of an upstream: a name the ACL sends through a server
//! (every name, without an ACL) is asked of `--dns-remote` as DNS over TCP
//! through a tunnel, one TLS connection that the queries in flight share
//! (each with an ID of its own, the answers read by a thread of the tunnel);
//! a name the ACL sends direct, and the servers' own names, are asked of the
//! direct resolvers (`--dns-direct`, or the system's from
//! `/etc/resolv.conf`) over UDP, and over TCP when the answer is
//! truncated; a name the ACL blocks gets REFUSED.
//!
//! The cache is keyed by name (lower case), type and class, keeps an answer
//! for its TTL (a negative one for its SOA's, RFC 2308), and is bounded in
//! entries and bytes. Identical queries in flight at once wait for one
//! upstream request. A UDP answer larger than the client takes is cut to
//! its question with TC set (RFC 1035, RFC 6891).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Type};

use crate::conn::split::{self, WriteHalf};
use crate::current::Current;
use crate::error::Error;
use crate::metrics;
use crate::net::dial;
use crate::proto::acl::{Acl, Route};
use crate::proto::addr::Target;
use crate::proto::dns::{self, Query};
use crate::proto::wire::{self, TrojanHash, HEADER_MAX};
use crate::text::Escaped;
use crate::workers::SETUP_THREADS;

use super::pool::Pool;
use super::upstream::Upstreams;

/// The most queries answered at once; more get SERVFAIL (UDP) or wait (TCP).
const IN_FLIGHT_MAX: usize = 256;
/// The most answers the cache holds,
const CACHE_ENTRIES_MAX: usize = 10_000;
/// and the most bytes.
const CACHE_BYTES_MAX: usize = 8 << 20;
/// How long a TCP client may stay quiet between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// `--dns`, `--dns-remote` and `--dns-direct`, as the command line gives them.
#[derive(Clone, Debug)]
pub struct DnsArgs {
    /// `--dns`.
    pub listen: SocketAddr,
    /// `--dns-remote`.
    pub remote: Target,
    /// `--dns-direct`; empty: the system's resolvers.
    pub direct: Vec<SocketAddr>,
}

impl DnsArgs {
    /// The direct resolvers: `--dns-direct`, or the system's, but never
    /// `--dns` itself (a system pointed at it would ask itself in a loop).
    pub fn direct_resolvers(&self) -> Vec<SocketAddr> {
        let all = match self.direct.is_empty() {
            true => system_resolvers(),
            false => self.direct.clone(),
        };
        let own = |a: &SocketAddr| {
            *a == self.listen || (a.port() == self.listen.port() && self.listen.ip().is_unspecified())
        };
        let kept: Vec<SocketAddr> = all.iter().copied().filter(|a| !own(a)).collect();
        if kept.len() < all.len() {
            log::warn!("--dns {}: not asking itself as a direct resolver; give --dns-direct", self.listen);
        }
        kept
    }
}

/// The DNS server's sockets, bound at start.
pub struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

/// Binds the DNS server's UDP and TCP sockets on `listen`.
pub fn bind(listen: SocketAddr) -> Result<Sockets, Error> {
    let bind = |e: io::Error| Error::Config(format!("cannot listen for DNS on {listen}: {e}"));
    let udp = UdpSocket::bind(listen).map_err(bind)?;
    // TCP on the port UDP got (port 0 picks one for both).
    let tcp = TcpListener::bind(udp.local_addr().map_err(bind)?).map_err(bind)?;
    Ok(Sockets { udp, tcp })
}

/// What the DNS server needs: where to listen and ask, and what decides.
pub struct Settings {
    /// `--dns-remote`: the resolver asked through a server.
    pub remote: Target,
    /// `--dns-direct`, or the system's resolvers; a reload replaces them.
    pub direct: Arc<Current<Vec<SocketAddr>>>,
    /// The ACL in force (shared with the proxy's routing).
    pub acl: Arc<Current<Option<Acl>>>,
    /// The servers' hosts, whose names are always resolved directly.
    pub servers: Vec<Target>,
    /// The password in force, for the tunnel's header.
    pub password: Arc<dyn Fn() -> Option<TrojanHash> + Send + Sync>,
    /// How long an upstream may take.
    pub timeout: Duration,
}

/// A running DNS server's shared state.
struct Dns {
    settings: Settings,
    cache: Mutex<Cache>,
    pending: Mutex<HashMap<Key, Arc<Pending>>>,
    tunnel: Tunnel,
    in_flight: Mutex<usize>,
}

type Key = (String, u16, u16);

/// Serves the DNS server's sockets on threads of their own, which run
/// until the process ends.
pub fn serve(
    sockets: Sockets,
    settings: Settings,
    upstreams: Arc<Upstreams>,
    pool: Option<Arc<Pool>>,
) -> Result<(), Error> {
    let Sockets { udp, tcp } = sockets;
    let listen = udp.local_addr().map_err(Error::Io)?;
    let remote = settings.remote.to_string();
    let dns = Arc::new(Dns {
        tunnel: Tunnel::new(upstreams, pool, settings.remote.clone(), settings.timeout),
        settings,
        cache: Mutex::new(Cache::default()),
        pending: Mutex::new(HashMap::new()),
        in_flight: Mutex::new(0),
    });
    let for_udp = Arc::clone(&dns);
    thread::Builder::new()
        .name("dns-udp".into())
        .spawn(move || serve_udp(&udp, &for_udp))
        .map_err(Error::Io)?;
    thread::Builder::new().name("dns-tcp".into()).spawn(move || serve_tcp(&tcp, &dns)).map_err(Error::Io)?;
    log::info!("dns served on {listen}, udp and tcp; names through a server asked of {remote}");
    Ok(())
}

/// The UDP side: a blocked name or a cached answer answered at once, any
/// other query on a worker thread; each answer sent back to its client,
/// cut to the client's limit.
fn serve_udp(udp: &UdpSocket, dns: &Arc<Dns>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, from) = match udp.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("dns: udp: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let msg = buf[..n].to_vec();
        let query = match dns::parse_query(&msg) {
            Ok(q) => q,
            Err(e) => {
                log::debug!("dns: udp query from {from}: {e}");
                if let Some(answer) = dns::error_response(&msg, e.rcode()) {
                    let _ = udp.send_to(&answer, from);
                }
                continue;
            }
        };
        // A blocked name or a cached answer is answered here, with no hand-off.
        let upstream = match dns.at_once(&query, &msg) {
            Ok(answer) => {
                let _ = udp.send_to(&dns::truncate_for_udp(&answer, query.udp_limit), from);
                continue;
            }
            Err(upstream) => upstream,
        };
        let Some(slot) = dns.enter(false) else {
            if let Some(answer) = dns::error_response(&msg, dns::RCODE_SERVFAIL) {
                let _ = udp.send_to(&answer, from);
            }
            continue;
        };
        let (dns, udp) = (Arc::clone(dns), udp.try_clone());
        let Ok(udp) = udp else { continue };
        let spawned = SETUP_THREADS.spawn(move || {
            let key = dns::cache_key(&query.question);
            let answer = dns.fitted(dns.ask_once(&key, upstream, &query).ok(), &msg);
            drop(slot);
            let answer = dns::truncate_for_udp(&answer, query.udp_limit);
            let _ = udp.send_to(&answer, from);
        });
        if let Err(e) = spawned {
            log::warn!("dns: cannot start a thread: {e}");
        }
    }
}

/// The most TCP clients served at once; another is closed at once.
const TCP_CLIENTS_MAX: usize = 64;

/// The TCP side: a thread per client connection, its queries answered in
/// turn, at most [`TCP_CLIENTS_MAX`] at once.
fn serve_tcp(listener: &TcpListener, dns: &Arc<Dns>) {
    let clients = Arc::new(Mutex::new(0usize));
    for sock in listener.incoming() {
        let Ok(sock) = sock else { continue };
        {
            let mut n = clients.lock().unwrap_or_else(PoisonError::into_inner);
            if *n >= TCP_CLIENTS_MAX {
                log::debug!("dns: {TCP_CLIENTS_MAX} tcp clients already: one more closed");
                continue;
            }
            *n += 1;
        }
        let (dns, held) = (Arc::clone(dns), Arc::clone(&clients));
        let spawned = SETUP_THREADS.spawn(move || {
            let _leave = Leave(held);
            let _ = sock.set_read_timeout(Some(TCP_IDLE));
            let _ = sock.set_write_timeout(Some(TCP_IDLE));
            let mut reader = &sock;
            while let Ok(Some(msg)) = dns::read_tcp(&mut reader) {
                let answer = match dns::parse_query(&msg) {
                    Ok(query) => {
                        let slot = dns.enter(true);
                        let answer = dns.answer(&query, &msg);
                        drop(slot);
                        answer
                    }
                    Err(e) => match dns::error_response(&msg, e.rcode()) {
                        Some(answer) => answer,
                        None => break,
                    },
                };
                if dns::write_tcp(&mut &sock, &answer).is_err() {
                    break;
                }
            }
        });
        if let Err(e) = spawned {
            log::warn!("dns: cannot start a thread: {e}");
        }
    }
}

/// One TCP client served, given back when dropped.
struct Leave(Arc<Mutex<usize>>);

impl Drop for Leave {
    fn drop(&mut self) {
        let mut n = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *n = n.saturating_sub(1);
    }
}

/// One query answered at once, given back when dropped.
struct Slot(Arc<Dns>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut n = self.0.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        *n = n.saturating_sub(1);
    }
}

/// Where a query's name is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upstream {
    Remote,
    Direct,
    Refused,
}

impl Dns {
    /// A place for one more query, unless [`IN_FLIGHT_MAX`] are in flight
    /// and `always` is not set (a TCP client waits for its answers in turn,
    /// so its queries are bounded by its thread).
    fn enter(self: &Arc<Self>, always: bool) -> Option<Slot> {
        let mut n = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        if *n >= IN_FLIGHT_MAX && !always {
            return None;
        }
        *n += 1;
        Some(Slot(Arc::clone(self)))
    }

    /// The answer to `query` (whose message is `msg`): from the cache, or
    /// from its upstream, fitted to the query (its ID, flags and the case
    /// of its name); SERVFAIL when no upstream answered.
    fn answer(&self, query: &Query, msg: &[u8]) -> Vec<u8> {
        match self.at_once(query, msg) {
            Ok(answer) => answer,
            Err(upstream) => {
                let key = dns::cache_key(&query.question);
                let answer = self.ask_once(&key, upstream, query);
                self.fitted(answer.ok(), msg)
            }
        }
    }

    /// The answer to `query` when it needs no upstream: REFUSED for a
    /// blocked name, or the cache's; else where to ask.
    fn at_once(&self, query: &Query, msg: &[u8]) -> Result<Vec<u8>, Upstream> {
        let upstream = self.upstream_of(&query.question.name);
        log::debug!("dns: {} {} ({upstream:?})", Escaped(&query.question.name), query.question.qtype);
        if upstream == Upstream::Refused {
            metrics::dns(metrics::DnsSource::Refused);
            return Ok(dns::error_response(msg, dns::RCODE_REFUSED).unwrap_or_default());
        }
        match self.cached(&dns::cache_key(&query.question)) {
            Some(answer) => {
                metrics::dns(metrics::DnsSource::Cache);
                Ok(self.fitted(Some(answer), msg))
            }
            None => Err(upstream),
        }
    }

    /// `answer` fitted to the query `msg` (its ID, flags and the case of
    /// its name), or SERVFAIL when there is none or it does not fit.
    fn fitted(&self, answer: Option<Vec<u8>>, msg: &[u8]) -> Vec<u8> {
        let fitted = answer.and_then(|mut answer| dns::fit_to_query(&mut answer, msg).ok().map(|()| answer));
        fitted.unwrap_or_else(|| {
            metrics::dns(metrics::DnsSource::Failed);
            dns::error_response(msg, dns::RCODE_SERVFAIL).unwrap_or_default()
        })
    }

    /// Where `name` is asked: the remote resolver through a server, the
    /// direct ones, or nowhere, as the ACL routes a connection to it.
    fn upstream_of(&self, name: &str) -> Upstream {
        let bare = name.trim_end_matches('.');
        if self.settings.servers.iter().any(|s| s.host().eq_ignore_ascii_case(bare)) {
            return Upstream::Direct;
        }
        let acl = self.settings.acl.get();
        let Some(acl) = acl.as_ref() else { return Upstream::Remote };
        match acl.route_name(bare).unwrap_or_else(|| acl.default_route()) {
            Route::Proxy => Upstream::Remote,
            Route::Direct => Upstream::Direct,
            Route::Block => Upstream::Refused,
        }
    }

    /// The cached answer for `key`, aged by the time it has been kept.
    fn cached(&self, key: &Key) -> Option<Vec<u8>> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.get(key)
    }

    /// Asks `upstream` for `query`, unless the same question is in flight
    /// already: then waits for that one's answer.
    fn ask_once(&self, key: &Key, upstream: Upstream, query: &Query) -> Result<Vec<u8>, Error> {
        let (pending, mine) = {
            let mut all = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            match all.get(key) {
                Some(p) => (Arc::clone(p), false),
                None => {
                    let p = Arc::new(Pending::default());
                    all.insert(key.clone(), Arc::clone(&p));
                    (p, true)
                }
            }
        };
        if !mine {
            log::debug!("dns: {} {} joins the same question in flight", Escaped(&key.0), key.1);
            metrics::dns(metrics::DnsSource::Joined);
            return pending.wait(Instant::now() + self.settings.timeout);
        }
        let asked = self.ask(upstream, query);
        if let Ok(answer) = &asked {
            if let Ok(info) = dns::parse_answer(answer) {
                if let Some(ttl) = info.ttl.filter(|t| *t > 0 && !info.truncated) {
                    self.cache.lock().unwrap_or_else(PoisonError::into_inner).put(
                        key.clone(),
                        answer.clone(),
                        ttl,
                    );
                }
            }
        }
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
        pending.done(asked.as_ref().map(Clone::clone).map_err(|e| e.to_string()));
        asked
    }

    /// One upstream request for `query`, with an ID of its own.
    fn ask(&self, upstream: Upstream, query: &Query) -> Result<Vec<u8>, Error> {
        let until = Instant::now() + self.settings.timeout;
        let (asked, source) = match upstream {
            Upstream::Remote => (
                self.tunnel.ask(&query.question, until, &*self.settings.password),
                metrics::DnsSource::Remote,
            ),
            _ => {
                (ask_direct(&self.settings.direct.get(), &query.question, until), metrics::DnsSource::Direct)
            }
        };
        // A failure is counted once, as `failed`, by the caller.
        if asked.is_ok() {
            metrics::dns(source);
        }
        asked
    }
}

/// An upstream request others wait for.
#[derive(Default)]
struct Pending {
    answer: Mutex<Option<Result<Vec<u8>, String>>>,
    ready: Condvar,
}

impl Pending {
    fn done(&self, answer: Result<Vec<u8>, String>) {
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(answer);
        self.ready.notify_all();
    }

    fn wait(&self, until: Instant) -> Result<Vec<u8>, Error> {
        let mut answer = self.answer.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(a) = answer.as_ref() {
                return a.clone().map_err(Error::Config);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Io(io::Error::new(io::ErrorKind::TimedOut, "dns: no answer in time")));
            }
            answer = self.ready.wait_timeout(answer, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

/// Asks the direct resolvers in turn over UDP (over TCP when the answer is
/// truncated), until one answers or `until`.
fn ask_direct(servers: &[SocketAddr], question: &dns::Question, until: Instant) -> Result<Vec<u8>, Error> {
    let id = next_id();
    let msg = dns::query(id, question, true).map_err(|e| Error::Config(e.to_string()))?;
    let mut last = Error::Config("no direct resolver".to_owned());
    for server in servers {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let share = left / u32::try_from(servers.len()).unwrap_or(1).max(1);
        match udp_exchange(*server, &msg, id, share) {
            Ok(answer) if dns::parse_answer(&answer).is_ok_and(|a| a.truncated) => {
                match tcp_exchange(*server, &msg, id, until) {
                    Ok(answer) => return Ok(answer),
                    Err(e) => last = Error::Io(e),
                }
            }
            Ok(answer) => return Ok(answer),
            Err(e) => last = Error::Io(e),
        }
    }
    Err(last)
}

/// One query over UDP: the first datagram from `server` with the query's ID.
fn udp_exchange(server: SocketAddr, msg: &[u8], id: u16, within: Duration) -> io::Result<Vec<u8>> {
    let bind: SocketAddr =
        if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (IpAddr::from([0u16; 8]), 0).into() };
    let sock = dial::socket(Domain::for_address(server), Type::DGRAM)?;
    sock.bind(&bind.into())?;
    let sock = UdpSocket::from(sock);
    sock.connect(server)?;
    sock.send(msg)?;
    let until = Instant::now() + within;
    let mut buf = vec![0u8; 65_535];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer"));
        }
        sock.set_read_timeout(Some(left))?;
        let n = sock.recv(&mut buf)?;
        if dns::parse_answer(&buf[..n]).is_ok_and(|a| a.id == id) {
            return Ok(buf[..n].to_vec());
        }
    }
}

/// One query over TCP to `server`.
fn tcp_exchange(server: SocketAddr, msg: &[u8], id: u16, until: Instant) -> io::Result<Vec<u8>> {
    let left = until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let sock = dial::socket(Domain::for_address(server), Type::STREAM)?;
    sock.connect_timeout(&server.into(), left)?;
    let mut sock = TcpStream::from(sock);
    sock.set_read_timeout(Some(left))?;
    sock.set_write_timeout(Some(left))?;
    dns::write_tcp(&mut sock, msg)?;
    loop {
        match dns::read_tcp(&mut sock)? {
            Some(answer) if dns::parse_answer(&answer).is_ok_and(|a| a.id == id) => return Ok(answer),
            Some(_) => continue,
            None => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before its answer")),
        }
    }
}

/// IDs for upstream queries, each its own.
fn next_id() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The tunnel to `--dns-remote`: one TLS connection through a server,
/// carrying DNS over TCP, shared by the queries in flight. A thread reads
/// the answers and hands each to the query with its ID; a failure ends the
/// tunnel, and the next query opens another.
struct Tunnel {
    upstreams: Arc<Upstreams>,
    pool: Option<Arc<Pool>>,
    remote: Target,
    timeout: Duration,
    open: Mutex<Option<Arc<Open>>>,
}

/// An open tunnel: its writing half, and the queries waiting for answers.
struct Open {
    writer: Mutex<WriteHalf>,
    waiting: Mutex<HashMap<u16, Sender<Vec<u8>>>>,
    alive: std::sync::atomic::AtomicBool,
}

impl Tunnel {
    fn new(upstreams: Arc<Upstreams>, pool: Option<Arc<Pool>>, remote: Target, timeout: Duration) -> Tunnel {
        Tunnel { upstreams, pool, remote, timeout, open: Mutex::new(None) }
    }

    /// Asks the remote resolver `question` through the tunnel, opening it
    /// first if there is none. A query the tunnel ended under (the
    /// resolver closes a connection after so many queries, or when idle) is
    /// asked again on a new one, once.
    fn ask(
        &self,
        question: &dns::Question,
        until: Instant,
        password: &(dyn Fn() -> Option<TrojanHash> + Send + Sync),
    ) -> Result<Vec<u8>, Error> {
        let mut last = Error::Config("dns: no tunnel".to_owned());
        for _ in 0..2 {
            match self.ask_on(question, until, password) {
                Ok(Some(answer)) => return Ok(answer),
                Ok(None) => last = Error::Config("dns: the tunnel ended before the answer".to_owned()),
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// One try on the open tunnel: the answer, or `None` when the tunnel
    /// ended before it.
    fn ask_on(
        &self,
        question: &dns::Question,
        until: Instant,
        password: &(dyn Fn() -> Option<TrojanHash> + Send + Sync),
    ) -> Result<Option<Vec<u8>>, Error> {
        let open = self.current(until, password)?;
        let id = next_id();
        let msg = dns::query(id, question, true).map_err(|e| Error::Config(e.to_string()))?;
        let (tx, rx): (Sender<Vec<u8>>, Receiver<Vec<u8>>) = mpsc::channel();
        open.waiting.lock().unwrap_or_else(PoisonError::into_inner).insert(id, tx);
        // The reader marks the tunnel dead before it drops the senders: a
        // query added after that sees it here.
        if !open.alive.load(Ordering::Relaxed) {
            open.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            return Ok(None);
        }
        let sent = {
            let mut writer = open.writer.lock().unwrap_or_else(PoisonError::into_inner);
            dns::write_tcp(&mut *writer, &msg)
        };
        if sent.is_err() {
            open.alive.store(false, Ordering::Relaxed);
            open.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            return Ok(None);
        }
        let got = rx.recv_timeout(until.saturating_duration_since(Instant::now()));
        open.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        match got {
            Ok(answer) => Ok(Some(answer)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Ok(None),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(Error::Io(io::Error::new(io::ErrorKind::TimedOut, "dns: no answer through the tunnel")))
            }
        }
    }

    /// The open tunnel, or a new one.
    fn current(
        &self,
        until: Instant,
        password: &(dyn Fn() -> Option<TrojanHash> + Send + Sync),
    ) -> Result<Arc<Open>, Error> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(o) = open.as_ref().filter(|o| o.alive.load(Ordering::Relaxed)) {
            return Ok(Arc::clone(o));
        }
        let ready = self.pool.as_deref().and_then(Pool::take);
        let mut link = ready.map_or_else(|| self.upstreams.connect(None), Ok).map_err(|u| u.error)?;
        let mut header = Vec::with_capacity(HEADER_MAX);
        wire::encode_connect(password().as_ref(), &self.remote, &mut header);
        link.send(&[&header], until)?;
        let _ = link.sock.set_read_timeout(None);
        let _ = link.sock.set_write_timeout(Some(self.timeout));
        let sock = Arc::new(link.sock);
        let (mut reader, writer) = split::split(Arc::clone(&sock), link.conn.into(), false);
        let fresh = Arc::new(Open {
            writer: Mutex::new(writer),
            waiting: Mutex::new(HashMap::new()),
            alive: std::sync::atomic::AtomicBool::new(true),
        });
        let reading = Arc::clone(&fresh);
        let spawned = thread::Builder::new().name("dns-tunnel".into()).spawn(move || {
            let mut burst = reader.burst(16 * 1024 + 256);
            while let Ok(Some(answer)) = dns::read_tcp(&mut burst) {
                let Ok(info) = dns::parse_answer(&answer) else { continue };
                let to = reading.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(&info.id);
                if let Some(to) = to {
                    let _ = to.send(answer);
                }
            }
            reading.alive.store(false, Ordering::Relaxed);
            // The queries still waiting get their failure now, not at their deadline.
            reading.waiting.lock().unwrap_or_else(PoisonError::into_inner).clear();
            let _ = sock.shutdown(std::net::Shutdown::Both);
        });
        spawned.map_err(Error::Io)?;
        log::debug!("dns: a tunnel to {} through a server", self.remote);
        *open = Some(Arc::clone(&fresh));
        Ok(fresh)
    }
}

/// Cached answers, oldest first for eviction.
#[derive(Default)]
struct Cache {
    entries: HashMap<Key, Entry>,
    order: VecDeque<Key>,
    bytes: usize,
}

struct Entry {
    answer: Vec<u8>,
    stored: Instant,
    ttl: u32,
}

impl Cache {
    /// The answer for `key` if it is still fresh, aged by the time kept.
    fn get(&mut self, key: &Key) -> Option<Vec<u8>> {
        let entry = self.entries.get(key)?;
        let kept = entry.stored.elapsed().as_secs();
        if kept >= u64::from(entry.ttl) {
            return None;
        }
        let mut answer = entry.answer.clone();
        dns::age(&mut answer, u32::try_from(kept).unwrap_or(u32::MAX)).ok()?;
        Some(answer)
    }

    /// Keeps `answer` for `ttl` seconds, making room first.
    fn put(&mut self, key: Key, answer: Vec<u8>, ttl: u32) {
        if let Some(old) = self.entries.remove(&key) {
            self.bytes -= old.answer.len();
            self.order.retain(|k| *k != key);
        }
        while !self.order.is_empty()
            && (self.entries.len() >= CACHE_ENTRIES_MAX || self.bytes + answer.len() > CACHE_BYTES_MAX)
        {
            if let Some(oldest) = self.order.pop_front() {
                if let Some(e) = self.entries.remove(&oldest) {
                    self.bytes -= e.answer.len();
                }
            }
        }
        self.bytes += answer.len();
        self.order.push_back(key.clone());
        self.entries.insert(key, Entry { answer, stored: Instant::now(), ttl });
    }
}

/// The system's resolvers, from `/etc/resolv.conf` (`nameserver` lines).
pub fn system_resolvers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(name: &str, ttl: u32) -> Vec<u8> {
        // A header with one question and one A record, built by hand.
        let q = dns::Question { name: name.to_owned(), qtype: dns::TYPE_A, qclass: dns::CLASS_IN };
        let mut msg = dns::query(7, &q, true).unwrap();
        msg[2] |= 0x80;
        msg[7] = 1;
        msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        msg.extend_from_slice(&ttl.to_be_bytes());
        msg.extend_from_slice(&[0, 4, 192, 0, 2, 1]);
        msg
    }

    fn key(name: &str) -> Key {
        (name.to_owned(), dns::TYPE_A, dns::CLASS_IN)
    }

    #[test]
    fn the_cache_keeps_an_answer_for_its_ttl_and_makes_room_oldest_first() {
        let mut cache = Cache::default();
        cache.put(key("a.test"), answer("a.test", 60), 60);
        let got = cache.get(&key("a.test")).unwrap();
        assert_eq!(dns::parse_answer(&got).unwrap().ttl, Some(60));
        cache.put(key("gone.test"), answer("gone.test", 0), 0);
        assert!(cache.get(&key("gone.test")).is_none(), "a TTL of 0 is not kept");
        for i in 0..CACHE_ENTRIES_MAX + 5 {
            let name = format!("n{i}.test");
            cache.put(key(&name), answer(&name, 60), 60);
        }
        assert_eq!(cache.entries.len(), CACHE_ENTRIES_MAX);
        assert!(cache.get(&key("a.test")).is_none(), "the oldest went first");
        assert!(cache.get(&key(&format!("n{}.test", CACHE_ENTRIES_MAX + 4))).is_some());
        assert_eq!(cache.bytes, cache.entries.values().map(|e| e.answer.len()).sum::<usize>());
    }

    #[test]
    fn the_direct_resolvers_never_include_the_server_itself() {
        let args = DnsArgs {
            listen: "127.0.0.1:53".parse().unwrap(),
            remote: Target::parse("1.1.1.1:53").unwrap(),
            direct: vec!["127.0.0.1:53".parse().unwrap(), "127.0.0.1:5300".parse().unwrap()],
        };
        assert_eq!(args.direct_resolvers(), ["127.0.0.1:5300".parse::<SocketAddr>().unwrap()]);
    }
}
