//! The servers a local connects to: which of them are up, which one a new
//! client goes to, failover with back-off, and the background check that
//! brings a server back.
//!
//! `--server` may be given several times, in order of preference. A server
//! is marked down when a TCP connect or TLS handshake to it fails (but not
//! when the local itself is out of descriptors or memory: see
//! [`Error::is_exhaustion`]), or when it
//! breaks a client's connection off before any reply byte (the local's
//! client flow reads that from the relay's end); it stays down for a back-off
//! of 1 s, doubling up to 60 s each time its check fails. While it is down no
//! client is sent to it, so a dead server costs one failed attempt, not one
//! per client. A client whose attempt fails is tried once more on the next
//! server, within its connect deadline and before any byte went upstream.
//! When every server is down, a client still gets an attempt: on the server
//! whose back-off ends first.
//!
//! The check runs on a thread of its own: when a down server's back-off
//! ends, it opens one TCP connection and TLS handshake to it and closes them
//! cleanly. Success marks the server up, so it comes back without a client
//! paying for the probe. A client that tries a down server after its
//! back-off and fails doubles the back-off as a failed check does. Each
//! change of state is logged at `info`: `server HOST:PORT down: REASON` and
//! `server HOST:PORT up`.
//!
//! The pool (see [`super::pool`]) follows the same state: it connects only
//! while a server is up, and otherwise waits for the check to bring one
//! back ([`Upstreams::wait_up`]), so a server that is down or refuses the
//! handshake sees one attempt per back-off, not one per second.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::conn::admission::Place;
use crate::current::Current;
use crate::error::Error;
use crate::metrics::{self, Kind};
use crate::net::deadline::Deadline;
use crate::net::dial;
use crate::proto::addr::Target;
use crate::tls::handshake;
use crate::workers::SETUP_STACK;

/// How long a server stays down after its first failure.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest back-off: a server that stays dead is checked once a minute.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// One `--server`: where it is and the name its certificate is verified against.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `host:port`.
    pub addr: Target,
    /// Sent in SNI and verified: `--sni`, or the host of `addr`.
    pub name: ServerName<'static>,
}

/// Which server a new client goes to (`--balance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    /// The first server that is up, in the order given.
    First,
    /// The servers that are up, in turn.
    RoundRobin,
}

impl Balance {
    /// Parses `first` or `round-robin`.
    pub fn parse(s: &str) -> Option<Balance> {
        match s {
            "first" => Some(Balance::First),
            "round-robin" => Some(Balance::RoundRobin),
            _ => None,
        }
    }
}

/// A server marked down.
struct Down {
    /// When the check tries it again.
    retry_at: Instant,
    /// How long it waits after this retry, if the retry fails too.
    backoff: Duration,
}

/// The servers, their state, and how to connect to them.
pub struct Upstreams {
    servers: Vec<Upstream>,
    balance: Balance,
    tls: Arc<Current<ClientConfig>>,
    connect: Duration,
    /// Clients sent so far, for round-robin.
    turn: AtomicUsize,
    /// By server: `Some` while it is down.
    down: Mutex<Vec<Option<Down>>>,
    /// Wakes the check when a server goes down, or the local stops.
    changed: Condvar,
    /// The local has stopped: the check leaves.
    stopped: AtomicBool,
    /// Failed connects and handshakes, by server (clients, the pool and the check).
    failures: Vec<AtomicU64>,
}

/// A TLS connection to one of the servers, handshake done.
pub struct Link {
    /// The server's index in the `--server` list.
    pub server: usize,
    /// The TCP connection under it.
    pub sock: TcpStream,
    /// The TLS client.
    pub conn: ClientConnection,
    /// The configuration it was made with: a ready connection made before
    /// a reload of `--ca` is not handed out after it.
    tls: Arc<ClientConfig>,
}

impl Link {
    /// Writes `records` (a header, and whatever goes with it) to the server
    /// before `until`, each in TLS records of its own (one, up to 16 KiB),
    /// in one flush.
    pub fn send(&mut self, records: &[&[u8]], until: Instant) -> Result<(), Error> {
        for record in records.iter().filter(|r| !r.is_empty()) {
            self.conn.writer().write_all(record)?;
        }
        let mut io = Deadline::new(&self.sock, until);
        while self.conn.wants_write() {
            self.conn.write_tls(&mut io)?;
        }
        Ok(())
    }

    /// Whether it was made with the TLS configuration `tls`.
    pub fn made_with(&self, tls: &Arc<ClientConfig>) -> bool {
        Arc::ptr_eq(&self.tls, tls)
    }
}

/// A failed attempt to reach a server: which one (the last tried) and why.
pub struct Unreachable {
    /// The last server tried, `host:port`.
    pub server: Target,
    /// Why it could not be reached.
    pub error: Error,
}

impl Upstreams {
    /// The servers in order of preference (at least one), connected to with
    /// the `tls` configuration in force (a reload may replace it) under the
    /// `connect` deadline; every one starts up.
    pub fn new(
        servers: Vec<Upstream>,
        balance: Balance,
        tls: Arc<Current<ClientConfig>>,
        connect: Duration,
    ) -> Upstreams {
        let down = Mutex::new(servers.iter().map(|_| None).collect());
        let failures = servers.iter().map(|_| AtomicU64::new(0)).collect();
        let turn = AtomicUsize::new(0);
        Upstreams {
            servers,
            balance,
            tls,
            connect,
            turn,
            down,
            changed: Condvar::new(),
            stopped: AtomicBool::new(false),
            failures,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Option<Down>>> {
        self.down.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The server at `index` (as in [`Link::server`]).
    pub fn server(&self, index: usize) -> &Upstream {
        &self.servers[index]
    }

    /// Whether the server at `index` is up.
    pub fn is_up(&self, index: usize) -> bool {
        self.lock().get(index).is_some_and(Option::is_none)
    }

    /// Whether any server is up.
    pub fn any_up(&self) -> bool {
        self.lock().iter().any(Option::is_none)
    }

    /// The servers a new client tries, at most two: the servers that are
    /// up, in the `--balance` order, then those down, the one whose back-off
    /// ends first first.
    fn candidates(&self) -> Vec<usize> {
        let down = self.lock();
        let mut up: Vec<usize> = (0..self.servers.len()).filter(|&i| down[i].is_none()).collect();
        if self.balance == Balance::RoundRobin && !up.is_empty() {
            let turn = self.turn.fetch_add(1, Ordering::Relaxed) % up.len();
            up.rotate_left(turn);
        }
        let mut rest: Vec<(Instant, usize)> =
            down.iter().enumerate().filter_map(|(i, d)| d.as_ref().map(|d| (d.retry_at, i))).collect();
        rest.sort();
        up.extend(rest.into_iter().map(|(_, i)| i));
        up.truncate(2);
        up
    }

    /// Whether a ready connection may still be handed out: it was made with
    /// the TLS configuration in force, and its server is up and is one a new
    /// client would be sent to now.
    pub fn wanted(&self, link: &Link) -> bool {
        link.made_with(&self.tls.get()) && self.wanted_server(link.server)
    }

    /// Whether a new client may be sent to the server at `index` now.
    fn wanted_server(&self, index: usize) -> bool {
        let down = self.lock();
        match self.balance {
            Balance::First => down.iter().position(Option::is_none) == Some(index),
            Balance::RoundRobin => down.get(index).is_some_and(Option::is_none),
        }
    }

    /// Opens TCP and completes TLS to a server, both before the connect
    /// deadline: the first candidate, and if it fails, the next one. With a
    /// second candidate, the first gets half the deadline, so that a server
    /// that does not answer at all leaves time for the other. A client's
    /// connection shares its `place` with the name lookup.
    pub fn connect(&self, place: Option<&Place>) -> Result<Link, Unreachable> {
        let until = Instant::now() + self.connect;
        let candidates = self.candidates();
        let mut failed = None;
        for (n, &index) in candidates.iter().enumerate() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let by = if n + 1 < candidates.len() { Instant::now() + left / 2 } else { until };
            match self.open(index, by, place) {
                Ok(link) => {
                    self.up(index);
                    return Ok(link);
                }
                // The local's own descriptors or memory ran out: no server
                // is to blame, and the next would fare no better.
                Err(error) if error.is_exhaustion() => {
                    return Err(Unreachable { server: self.servers[index].addr.clone(), error })
                }
                Err(error) => {
                    let server = &self.servers[index].addr;
                    log::debug!("server {server}: {error}");
                    self.failed(index, &error.to_string());
                    failed = Some(Unreachable { server: server.clone(), error });
                }
            }
        }
        Err(failed.unwrap_or_else(|| Unreachable {
            server: self.servers[0].addr.clone(),
            error: Error::Io(io::ErrorKind::TimedOut.into()),
        }))
    }

    /// One TCP connection and TLS handshake to the server at `index`.
    fn open(&self, index: usize, until: Instant, place: Option<&Place>) -> Result<Link, Error> {
        let server = &self.servers[index];
        // A lookup that outlives its deadline holds the client's place, if there is a client.
        let connected = match place {
            Some(place) => dial::connect(&server.addr, until, None, place),
            None => dial::connect(&server.addr, until, None, &()),
        };
        let opened = connected.and_then(|sock| {
            let tls = self.tls.get();
            let mut conn = ClientConnection::new(Arc::clone(&tls), server.name.clone())?;
            handshake::handshake(&mut conn, &mut Deadline::new(&sock, until))?;
            log::trace!("tls to server: {:?} {:?}", conn.handshake_kind(), conn.negotiated_cipher_suite());
            Ok(Link { server: index, sock, conn, tls })
        });
        if opened.as_ref().is_err_and(|e| !e.is_exhaustion()) {
            self.failures[index].fetch_add(1, Ordering::Relaxed);
        }
        opened
    }

    /// Marks the server at `index` down for `reason`. If it is already down,
    /// a failure after its back-off ended doubles the back-off, as a failed
    /// check does; one before (a client sent there because every server is
    /// down) leaves it to the check.
    pub fn failed(&self, index: usize, reason: &str) {
        let mut down = self.lock();
        let now = Instant::now();
        match down[index].as_mut() {
            None => {
                log::info!("server {} down: {reason}", self.servers[index].addr);
                down[index] = Some(Down { retry_at: now + BACKOFF_FIRST, backoff: BACKOFF_FIRST });
                self.changed.notify_all();
            }
            Some(d) if d.retry_at <= now => {
                d.backoff = (d.backoff * 2).min(BACKOFF_MAX);
                d.retry_at = now + d.backoff;
                let (server, next) = (&self.servers[index].addr, d.backoff.as_secs());
                log::debug!("server {server} still down: {reason}; next check in {next}s");
            }
            Some(_) => {}
        }
    }

    /// Marks the server at `index` up.
    fn up(&self, index: usize) {
        let mut down = self.lock();
        if down[index].take().is_some() {
            log::info!("server {} up", self.servers[index].addr);
            self.changed.notify_all();
        }
    }

    /// Waits until a server is up, the local stops, or `most` has passed;
    /// returns whether a server is up. The pool waits here while every
    /// server is down, for the check (or a client) to bring one back.
    pub fn wait_up(&self, most: Duration) -> bool {
        let down = self.lock();
        let (down, _) = self
            .changed
            .wait_timeout_while(down, most, |d| {
                d.iter().all(Option::is_some) && !self.stopped.load(Ordering::SeqCst)
            })
            .unwrap_or_else(PoisonError::into_inner);
        down.iter().any(Option::is_none)
    }

    /// Writes each server's state and failures as metrics (see [`metrics::add_collector`]).
    pub fn write_metrics(&self, out: &mut String) {
        let up: Vec<bool> = self.lock().iter().map(Option::is_none).collect();
        let names: Vec<String> = self.servers.iter().map(|s| s.addr.to_string()).collect();
        let name = "blocking_proxy_upstream_up";
        metrics::family(out, name, Kind::Gauge, "Whether each --server is up (1) or marked down (0).");
        for (server, up) in names.iter().zip(up) {
            metrics::sample(out, name, &[("server", server)], u8::from(up));
        }
        let name = "blocking_proxy_upstream_connect_failures_total";
        let help = "Failed TCP connects and TLS handshakes to each --server (clients, pool and check).";
        metrics::family(out, name, Kind::Counter, help);
        for (server, failed) in names.iter().zip(&self.failures) {
            metrics::sample(out, name, &[("server", server)], failed.load(Ordering::Relaxed));
        }
    }

    /// Starts the thread that checks down servers when their back-off ends.
    /// With one server and no pool there is nothing to fail over to, and its
    /// clients try it anyway: no check runs. A pool waits for the check, so
    /// with a pool (`for_pool`) it runs for one server too.
    pub fn start_check(self: &Arc<Self>, for_pool: bool) {
        if self.servers.len() < 2 && !for_pool {
            return;
        }
        let me = Arc::clone(self);
        let spawned =
            thread::Builder::new().name("check".into()).stack_size(SETUP_STACK).spawn(move || me.check());
        if let Err(e) = spawned {
            log::warn!("cannot start the server check: {e}; a down server comes back when a client tries it");
        }
    }

    /// Stops the check.
    pub fn stop(&self) {
        let _down = self.lock();
        self.stopped.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// The check's loop: sleeps until the first back-off ends, then tries
    /// each server whose back-off has ended; leaves when the local stops.
    fn check(&self) {
        loop {
            let due: Vec<usize> = {
                let mut down = self.lock();
                loop {
                    if self.stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    let now = Instant::now();
                    let due: Vec<usize> = (0..down.len())
                        .filter(|&i| down[i].as_ref().is_some_and(|d| d.retry_at <= now))
                        .collect();
                    if !due.is_empty() {
                        break due;
                    }
                    let next = down.iter().flatten().map(|d| d.retry_at).min();
                    down = match next {
                        Some(at) => {
                            self.changed
                                .wait_timeout(down, at - now)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0
                        }
                        None => self.changed.wait(down).unwrap_or_else(PoisonError::into_inner),
                    };
                }
            };
            for index in due {
                let until = Instant::now() + self.connect;
                match self.open(index, until, None) {
                    Ok(mut link) => {
                        let _ = handshake::close(&mut link.conn, &mut Deadline::new(&link.sock, until));
                        self.up(index);
                    }
                    Err(e) => self.failed(index, &e.to_string()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Balance, Upstream, Upstreams, BACKOFF_FIRST};
    use crate::current::Current;
    use crate::proto::addr::Target;
    use crate::tls::config::{self, Trust};
    use std::sync::Arc;
    use std::time::Duration;

    fn three(balance: Balance) -> Upstreams {
        let servers = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
            .iter()
            .map(|s| Upstream {
                addr: Target::parse(s).unwrap(),
                name: config::server_name("localhost").unwrap(),
            })
            .collect();
        let tls = config::client_config(&Trust::Insecure, &[]).unwrap();
        Upstreams::new(servers, balance, Arc::new(Current::new(tls)), Duration::from_secs(1))
    }

    #[test]
    fn first_goes_to_the_first_server_up_and_the_next_as_its_retry() {
        let u = three(Balance::First);
        assert_eq!(u.candidates(), [0, 1]);
        u.failed(0, "test");
        assert_eq!(u.candidates(), [1, 2]);
        assert!(!u.wanted_server(0) && u.wanted_server(1) && !u.wanted_server(2));
        u.up(0);
        assert_eq!(u.candidates(), [0, 1]);
    }

    #[test]
    fn round_robin_takes_the_servers_up_in_turn() {
        let u = three(Balance::RoundRobin);
        let firsts: Vec<usize> = (0..6).map(|_| u.candidates()[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
        u.failed(1, "test");
        let firsts: Vec<usize> = (0..4).map(|_| u.candidates()[0]).collect();
        assert!(firsts.iter().all(|&i| i != 1), "{firsts:?}");
        assert!(u.wanted_server(0) && !u.wanted_server(1) && u.wanted_server(2));
    }

    #[test]
    fn when_every_server_is_down_the_one_back_soonest_is_tried() {
        let u = three(Balance::First);
        for i in 0..3 {
            u.failed(i, "test");
        }
        let mut down = u.lock();
        assert!(down.iter().flatten().all(|d| d.backoff == BACKOFF_FIRST));
        let soon = down[0].as_ref().unwrap().retry_at - Duration::from_millis(500);
        down[2].as_mut().unwrap().retry_at = soon;
        drop(down);
        assert_eq!(u.candidates(), [2, 0]);
    }

    #[test]
    fn balance_names_parse() {
        assert_eq!(Balance::parse("first"), Some(Balance::First));
        assert_eq!(Balance::parse("round-robin"), Some(Balance::RoundRobin));
        assert_eq!(Balance::parse("random"), None);
    }
}
