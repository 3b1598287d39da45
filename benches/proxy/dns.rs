//! DNS through the tunnel: `blocking-local --dns` answering from its cache
//! and asking a resolver through the server, next to that resolver asked
//! directly.
//!
//! The resolver is dnsmasq on a loopback port, answering every name under
//! [`ZONE`] from its configuration (`--address`, TTL 300 s), so that it
//! costs the same whichever way it is asked. The pair is `ours` with
//! `blocking-local --dns ADDR --dns-remote RESOLVER` and no ACL, so every
//! name is asked through the server, over one shared tunnel.
//!
//! The load generator is a UDP client of its own: a query for an A record
//! built with `blocking_proxy::proto::dns::query`, sent on a connected
//! socket, and the next sent once its answer (same ID, NOERROR, a record)
//! is back; one not back within [`QUERY_TIMEOUT`] is lost. Three columns:
//!
//! - **hit**: names the local has in its cache (asked during the warm-up
//!   of the round, fresh names each round);
//! - **miss**: a new name every query, so each goes through the tunnel to
//!   the resolver;
//! - **direct**: the resolver itself, also with a new name every query:
//!   the loopback baseline.
//!
//! The local's and the server's CPU are read from their CPU-time clocks
//! around each batch (exact: a hit costs well under a clock tick's worth
//! of /proc's 10 ms per batch of a few thousand). The local's metrics
//! (`blocking_proxy_dns_queries_total`), read around that, say where its
//! answers came from; a batch that was not all hits, or not all misses,
//! gets a note.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use blocking_proxy::proto::dns::{self, Question};

use crate::chains::{self, Chain, Workdir};
use crate::loadgen::{self, other, Batch};

/// The zone the resolver answers, every name in it with [`ADDRESS`].
pub const ZONE: &str = "bulk.test";
const ADDRESS: &str = "192.0.2.9";
/// How long a query may take before it counts as lost.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Names asked in the hit column, each cached during the warm-up.
pub const HIT_NAMES: usize = 64;
/// Sockets of the concurrent batch, each with one query in flight.
pub const SOCKETS: usize = 32;

/// The columns of the DNS table, in order.
pub const COLUMNS: [&str; 3] = ["hit", "miss", "direct"];

/// What a column asks, and of whom.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Hit,
    Miss,
    Direct,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Hit, Kind::Miss, Kind::Direct];

    /// Its column in the table.
    pub fn column(self) -> usize {
        match self {
            Kind::Hit => 0,
            Kind::Miss => 1,
            Kind::Direct => 2,
        }
    }
}

/// The resolver, the pair with `--dns`, and where each is asked.
pub struct Setup {
    /// dnsmasq, stopped when this is dropped.
    _resolver: Chain,
    /// The pair: its processes are the server's, then the local's.
    pub pair: Chain,
    pub resolver_addr: SocketAddr,
    /// The local's `--dns`.
    pub dns_addr: SocketAddr,
    /// The local's `--metrics`.
    metrics: SocketAddr,
    /// Names never asked before: `n<i>.bulk.test`.
    next: AtomicUsize,
    /// What the header of the report says about the pair.
    pub about: String,
}

/// A port free on 127.0.0.1 for UDP and TCP both a moment ago.
fn free_port() -> Result<u16, String> {
    for _ in 0..20 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("free port: {e}"))?;
        let port = udp.local_addr().map_err(|e| format!("free port: {e}"))?.port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err("free port: none free for both UDP and TCP".into())
}

/// Starts dnsmasq, then the pair with `local_args` and `--dns`, and checks
/// that a query is answered each way.
pub fn start(w: &Workdir, local_args: &[String]) -> Result<Setup, String> {
    let resolver_port = free_port()?;
    let resolver_args = [format!("--address=/{ZONE}/{ADDRESS}")];
    let resolver = chains::dnsmasq(w, "dns-resolver", resolver_port, &resolver_args)?;
    let resolver_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, resolver_port));
    let dns_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let mut args = local_args.to_vec();
    args.extend([
        "--dns".into(),
        dns_addr.to_string(),
        "--dns-remote".into(),
        resolver_addr.to_string(),
        "--metrics".into(),
        "127.0.0.1:0".into(),
    ]);
    let name = "ours-dns";
    let label = format!("{name}-local");
    let pair = chains::ours(w, name, &args, None, false)?;
    if pair.pids.len() != 2 {
        return Err(format!("{name}: {} processes, not a server and a local", pair.pids.len()));
    }
    if !w.logged(&label, "dns served on", Duration::from_secs(5)) {
        return Err(format!("{name}: no \"dns served on\" line in its local's log"));
    }
    let metrics = w
        .log_text(&label)
        .lines()
        .filter_map(|l| l.split("metrics served on http://").nth(1))
        .find_map(|rest| rest.split('/').next()?.parse().ok())
        .ok_or_else(|| format!("{name}: no \"metrics served on\" line in its local's log"))?;
    let extra = if local_args.is_empty() { String::new() } else { format!("{} ", local_args.join(" ")) };
    let about = format!(
        "blocking-local {extra}--dns {dns_addr} --dns-remote {resolver_addr} (no ACL: every name through \
         the server) → TLS → blocking-server → dnsmasq {}",
        chains::dnsmasq_version().unwrap_or_default()
    );
    let setup = Setup {
        _resolver: resolver,
        pair,
        resolver_addr,
        dns_addr,
        metrics,
        next: AtomicUsize::new(0),
        about,
    };
    for (to, what) in [(resolver_addr, "the resolver"), (dns_addr, "--dns")] {
        let sock = client_socket(to).map_err(|e| format!("a socket for {what}: {e}"))?;
        let name = setup.fresh_name();
        // The first query through the pair opens the tunnel.
        ask(&sock, 1, &name, Duration::from_secs(10)).map_err(|e| format!("{what}: {name}: {e}"))?;
    }
    Ok(setup)
}

impl Setup {
    /// A name never asked before.
    fn fresh_name(&self) -> String {
        fresh_name(&self.next)
    }

    /// Where a column's queries go.
    pub fn target(&self, kind: Kind) -> SocketAddr {
        match kind {
            Kind::Direct => self.resolver_addr,
            Kind::Hit | Kind::Miss => self.dns_addr,
        }
    }

    /// The server's and the local's PIDs.
    pub fn server_pid(&self) -> u32 {
        self.pair.pids[0]
    }

    pub fn local_pid(&self) -> u32 {
        self.pair.pids[1]
    }

    /// The local's answers so far, by where they came from (the `answer`
    /// label of `blocking_proxy_dns_queries_total`).
    pub fn answered(&self) -> Option<HashMap<String, u64>> {
        let mut s = TcpStream::connect_timeout(&self.metrics, loadgen::CONNECT_TIMEOUT).ok()?;
        s.set_read_timeout(Some(loadgen::IO_TIMEOUT)).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let prefix = "blocking_proxy_dns_queries_total{answer=\"";
        let counts: HashMap<String, u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|rest| {
                let (label, value) = rest.split_once("\"} ")?;
                Some((label.to_owned(), value.trim().parse().ok()?))
            })
            .collect();
        (!counts.is_empty()).then_some(counts)
    }

    /// `n` queries on each of `sockets` sockets at once, one in flight on
    /// each, to `kind`'s target: in `round`'s hit names for [`Kind::Hit`],
    /// names never asked before otherwise. Stops early at `cap`, or after
    /// too many losses.
    pub fn queries(&self, kind: Kind, round: usize, sockets: usize, n: usize, cap: Duration) -> Batch {
        let (to, next) = (self.target(kind), &self.next);
        let start = Instant::now();
        let results: Vec<(Vec<Duration>, usize, Option<String>)> = thread::scope(|scope| {
            let handles: Vec<_> = (0..sockets)
                .map(|t| {
                    scope.spawn(move || {
                        let mut lat = Vec::with_capacity(n);
                        let (mut errors, mut first) = (0usize, None);
                        let sock = match client_socket(to) {
                            Ok(s) => s,
                            Err(e) => return (lat, 1, Some(format!("socket: {e}"))),
                        };
                        for i in 0..n {
                            if start.elapsed() > cap || errors > 10 + n / 10 {
                                break;
                            }
                            let name = match kind {
                                Kind::Hit => hit_name(round, t * n + i),
                                Kind::Miss | Kind::Direct => fresh_name(next),
                            };
                            let id = (t * 2003 + i) as u16;
                            match ask(&sock, id, &name, QUERY_TIMEOUT) {
                                Ok(d) => lat.push(d),
                                Err(e) => {
                                    errors += 1;
                                    first.get_or_insert_with(|| format!("{name}: {e}"));
                                }
                            }
                        }
                        (lat, errors, first)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| (vec![], 1, Some("panic".into()))))
                .collect()
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
}

/// A name never asked before: the next of `next`.
fn fresh_name(next: &AtomicUsize) -> String {
    format!("n{}.{ZONE}", next.fetch_add(1, Ordering::Relaxed))
}

/// The `i`-th of round `round`'s hit names (there are [`HIT_NAMES`]).
fn hit_name(round: usize, i: usize) -> String {
    format!("h{}.r{round}.{ZONE}", i % HIT_NAMES)
}

/// A UDP socket on 127.0.0.1 connected to `to`.
fn client_socket(to: SocketAddr) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    sock.connect(to)?;
    sock.set_write_timeout(Some(QUERY_TIMEOUT))?;
    Ok(sock)
}

/// One query for `name`'s A record with `id`: the time from sending it to
/// its answer, which must carry the ID, NOERROR and a record. Answers with
/// another ID (late ones, to queries already counted lost) are skipped.
fn ask(sock: &UdpSocket, id: u16, name: &str, within: Duration) -> io::Result<Duration> {
    let q = Question { name: name.to_owned(), qtype: dns::TYPE_A, qclass: dns::CLASS_IN };
    let msg = dns::query(id, &q, true).map_err(|e| other(e.to_string()))?;
    let mut buf = [0u8; 1500];
    let start = Instant::now();
    sock.send(&msg)?;
    loop {
        let left = within.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(other(format!("no answer within {} ms", within.as_millis())));
        }
        sock.set_read_timeout(Some(left))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e),
        };
        let took = start.elapsed();
        let Ok(info) = dns::parse_answer(&buf[..n]) else { continue };
        if info.id != id {
            continue;
        }
        if info.rcode != dns::RCODE_NOERROR || info.truncated || info.ttl.is_none() {
            let rcode = match info.rcode {
                dns::RCODE_NOERROR => "NOERROR",
                dns::RCODE_SERVFAIL => "SERVFAIL",
                dns::RCODE_NXDOMAIN => "NXDOMAIN",
                dns::RCODE_REFUSED => "REFUSED",
                _ => "another RCODE",
            };
            return Err(other(format!(
                "{rcode} (RCODE {}){}{}",
                info.rcode,
                if info.truncated { ", TC" } else { "" },
                if info.ttl.is_none() { ", no TTL" } else { "" }
            )));
        }
        return Ok(took);
    }
}

/// How many queries, between two readings of the local's metrics, it
/// answered from where `kind` says (the cache for a hit) or asked where
/// `kind` says (through the tunnel for a miss), and what it names that
/// place; `None` for the direct column or without readings.
pub fn as_expected(
    kind: Kind,
    before: Option<&HashMap<String, u64>>,
    after: Option<&HashMap<String, u64>>,
) -> Option<(u64, &'static str)> {
    let (before, after) = (before?, after?);
    let delta = |label: &str| {
        after.get(label).copied().unwrap_or(0).saturating_sub(before.get(label).copied().unwrap_or(0))
    };
    match kind {
        Kind::Hit => Some((delta("cache"), "answered from the cache")),
        Kind::Miss => Some((delta("remote"), "asked through the tunnel")),
        Kind::Direct => None,
    }
}

/// The DNS table's heading: what each column asks, and how.
pub fn about(warm: usize, ops: usize, per_socket: usize) -> String {
    format!(
        "DNS through the tunnel: queries for A records over UDP, each sent once the one before is answered;\n\
         hit: {HIT_NAMES} names cached by the round's warm-up, asked of blocking-local --dns; miss: a new name\n\
         each query, asked of --dns, so each goes through the tunnel to dnsmasq; direct: a new name each\n\
         query, asked of dnsmasq itself (every name in {ZONE} answered from its configuration). c=1: {ops}\n\
         queries (after {warm}); c={SOCKETS}: {SOCKETS} sockets × {per_socket}. Failed: SERVFAIL, or no answer\n\
         within {} ms. CPU: the processes' CPU-time clocks around each batch, divided by the queries asked.\n\n",
        QUERY_TIMEOUT.as_millis()
    )
}
