//! What the process has done, counted for operators and served as
//! `GET /metrics` in the Prometheus text exposition format (`--metrics`).
//!
//! The logs say what happened to each connection; a scraper wants totals it
//! can graph and alert on without parsing them. Every count is a process-wide
//! static (an atomic added to with `Relaxed` ordering): an event costs one
//! atomic add, with no lock and no allocation, so the modules that count
//! (almost all of them) pay nothing they would notice. A family with a fixed
//! set of labels ([`Closed`], [`Refusal`], [`Handshake`], [`Way`]) is an
//! array indexed by its enum.
//!
//! Series known only at run time (one per upstream server, say) come from
//! collectors that higher modules register with [`add_collector`]; they
//! write their families with [`family`] and [`sample`], which escape label
//! values as the format requires.
//!
//! [`serve`] answers scrapes on a thread of its own, at most
//! [`MAX_SCRAPES`] at once, each under [`REQUEST_TIME`] to send its request
//! head; it never touches the accept loops. The format is a few lines of
//! text, written here by hand.
//!
//! This module sits near the bottom of the crate and uses no other module
//! of it, so that any module may count.

use std::fmt::{self, Write as _};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// A count that only goes up.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// A value that goes up and down.
pub struct Gauge(AtomicI64);

impl Gauge {
    pub const fn new() -> Gauge {
        Gauge(AtomicI64::new(0))
    }

    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds one until the [`Held`] it returns is dropped.
    pub fn hold(&'static self) -> Held {
        self.0.fetch_add(1, Ordering::Relaxed);
        Held(self)
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Gauge::new()
    }
}

/// One unit of a [`Gauge`], given back when dropped.
pub struct Held(&'static Gauge);

impl Drop for Held {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a connection ended, as the `end` label of
/// `blocking_proxy_connections_closed_total`. The close line's `end=` text
/// is the detail; this is its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// Ended by a clean close (EOF or close_notify), relayed or not.
    Eof,
    /// A deadline passed: the handshake, the idle or linger time, a write, a UDP association's quiet time.
    Timeout,
    /// A peer reset the connection, went away, or closed in the middle of a message or without close_notify.
    Reset,
    /// TLS failed: a handshake, a certificate, a record.
    TlsError,
    /// A client broke its protocol: a bad request or header, an unknown first byte.
    Protocol,
    /// Refused by policy: a failed login, a target the egress rule forbids.
    Denied,
    /// The onward connection could not be made: the target (server) or the server (local).
    Unreachable,
    /// Handed to the fallback site (server only), however it then ended.
    Fallback,
    /// Anything else (a thread that could not start, say).
    Other,
}

impl Closed {
    pub const ALL: [Closed; 9] = [
        Closed::Eof,
        Closed::Timeout,
        Closed::Reset,
        Closed::TlsError,
        Closed::Protocol,
        Closed::Denied,
        Closed::Unreachable,
        Closed::Fallback,
        Closed::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Closed::Eof => "eof",
            Closed::Timeout => "timeout",
            Closed::Reset => "reset",
            Closed::TlsError => "tls_error",
            Closed::Protocol => "protocol_error",
            Closed::Denied => "denied",
            Closed::Unreachable => "unreachable",
            Closed::Fallback => "fallback",
            Closed::Other => "other",
        }
    }
}

/// Why the accept loop turned a connection away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The connection cap was reached.
    Cap,
    /// Its source had too many connections pending (server only).
    PerSource,
}

impl Refusal {
    pub const ALL: [Refusal; 2] = [Refusal::Cap, Refusal::PerSource];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Cap => "cap",
            Refusal::PerSource => "per_source",
        }
    }
}

/// A completed TLS handshake: in full (with a HelloRetryRequest or not) or resumed from a ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    Full,
    Resumed,
}

impl Handshake {
    pub const ALL: [Handshake; 2] = [Handshake::Full, Handshake::Resumed];

    pub fn label(self) -> &'static str {
        match self {
            Handshake::Full => "full",
            Handshake::Resumed => "resumed",
        }
    }
}

/// A direction: up is from the client towards the target, down is back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    Up,
    Down,
}

impl Way {
    pub const ALL: [Way; 2] = [Way::Up, Way::Down];

    pub fn label(self) -> &'static str {
        match self {
            Way::Up => "up",
            Way::Down => "down",
        }
    }
}

/// Which binary serves the metrics: it decides which families are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Local,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Local => "local",
        }
    }
}

/// Connections admitted past the cap (each gets a close line).
pub static ACCEPTED: Counter = Counter::new();
/// Connections turned away at accept, by [`Refusal`].
static REFUSED: [Counter; 2] = [const { Counter::new() }; 2];
/// Admitted connections closed, by [`Closed`].
static CLOSED: [Counter; 9] = [const { Counter::new() }; 9];
/// Payload bytes of closed connections, by [`Way`].
static BYTES: [Counter; 2] = [const { Counter::new() }; 2];
/// Completed TLS handshakes, by [`Handshake`].
static HANDSHAKES: [Counter; 2] = [const { Counter::new() }; 2];
/// TLS handshakes that failed.
pub static HANDSHAKE_FAILURES: Counter = Counter::new();
/// Name lookups running now (a lookup past its deadline counts until it returns).
pub static LOOKUPS_IN_FLIGHT: Gauge = Gauge::new();
/// UDP associations started.
pub static UDP_ASSOCIATIONS: Counter = Counter::new();
/// UDP datagrams relayed, by [`Way`].
static DATAGRAMS: [Counter; 2] = [const { Counter::new() }; 2];
/// UDP datagrams dropped.
pub static DATAGRAMS_DROPPED: Counter = Counter::new();
/// Server: connections whose TLS was fine but whose header was not.
pub static HEADER_FAILURES: Counter = Counter::new();
/// Server: connections handed to the fallback site.
pub static FALLBACK_HANDOVERS: Counter = Counter::new();
/// Server: connections and datagrams refused by the egress policy.
pub static EGRESS_DENIALS: Counter = Counter::new();
/// Local: TLS connections ready in the pool.
pub static POOL_READY: Gauge = Gauge::new();
/// Local: ready connections taken from the pool by clients.
pub static POOL_TAKEN: Counter = Counter::new();

/// A connection was turned away at accept.
pub fn refused(why: Refusal) {
    REFUSED[why as usize].inc();
}

/// An admitted connection closed, `how`, having moved `up` and `down` bytes.
pub fn closed(how: Closed, up: u64, down: u64) {
    CLOSED[how as usize].inc();
    BYTES[Way::Up as usize].add(up);
    BYTES[Way::Down as usize].add(down);
}

/// A TLS handshake completed.
pub fn handshake(kind: Handshake) {
    HANDSHAKES[kind as usize].inc();
}

/// A UDP datagram was relayed one way.
pub fn datagram(way: Way) {
    DATAGRAMS[way as usize].inc();
}

/// What a collector writes at each scrape: whole families, with [`family`] and [`sample`].
pub type Collector = Box<dyn Fn(&mut String) + Send + Sync>;

static COLLECTORS: Mutex<Vec<Collector>> = Mutex::new(Vec::new());

/// Adds series known only at run time, written after the static families
/// at every scrape. A collector runs on the scrape's thread and should only
/// read (atomics, or a lock held briefly).
pub fn add_collector(c: Collector) {
    COLLECTORS.lock().unwrap_or_else(PoisonError::into_inner).push(c);
}

/// A family's type, as its `# TYPE` line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Starts a family: its `# HELP` (backslashes and newlines escaped) and `# TYPE` lines.
pub fn family(out: &mut String, name: &str, kind: Kind, help: &str) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// One sample: `name{label="value",…} value`, each label value escaped.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(v, out);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Writes `v` as a label value may hold it: backslash, double quote and
/// line feed escaped, as the text format requires.
pub fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A family with a fixed label set: one sample per `(value, count)` of `series`.
fn labelled(out: &mut String, name: &str, help: &str, label: &str, series: &[(&str, u64)]) {
    family(out, name, Kind::Counter, help);
    for (value, count) in series {
        sample(out, name, &[(label, value)], count);
    }
}

/// `(label, count)` for each value of a fixed label set.
fn counts<L: Copy, const N: usize>(
    all: [L; N],
    label: fn(L) -> &'static str,
    counters: &[Counter],
) -> [(&'static str, u64); N] {
    let mut i = 0;
    all.map(|v| {
        let c = (label(v), counters[i].get());
        i += 1;
        c
    })
}

/// The whole exposition for `role`: every family that applies to it, then the collectors'.
pub fn render(role: Role) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let o = &mut out;
    family(
        o,
        "blocking_proxy_build_info",
        Kind::Gauge,
        "Always 1; the labels name the version and the role.",
    );
    sample(
        o,
        "blocking_proxy_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("role", role.label())],
        1,
    );
    // The closed counts are read before the accepted one, so that within one
    // scrape accepted = open + closed, and open is never negative.
    let closed = counts(Closed::ALL, Closed::label, &CLOSED);
    let accepted = ACCEPTED.get();
    let n = "blocking_proxy_connections_accepted_total";
    family(o, n, Kind::Counter, "Connections admitted under the cap; each is logged when it closes.");
    sample(o, n, &[], accepted);
    labelled(
        o,
        "blocking_proxy_connections_refused_total",
        "Connections turned away at accept: over the cap, or too many pending from one source.",
        "reason",
        &counts(Refusal::ALL, Refusal::label, &REFUSED),
    );
    let n = "blocking_proxy_connections_open";
    family(o, n, Kind::Gauge, "Admitted connections not yet closed.");
    sample(o, n, &[], accepted.saturating_sub(closed.iter().map(|(_, c)| c).sum()));
    labelled(
        o,
        "blocking_proxy_connections_closed_total",
        "Admitted connections closed, by how they ended.",
        "end",
        &closed,
    );
    labelled(
        o,
        "blocking_proxy_relayed_bytes_total",
        "Payload bytes of closed connections; up is from the client towards the target.",
        "direction",
        &counts(Way::ALL, Way::label, &BYTES),
    );
    labelled(
        o,
        "blocking_proxy_tls_handshakes_total",
        "Completed TLS handshakes, in full or resumed from a session ticket.",
        "kind",
        &counts(Handshake::ALL, Handshake::label, &HANDSHAKES),
    );
    let n = "blocking_proxy_tls_handshake_failures_total";
    family(o, n, Kind::Counter, "TLS handshakes that failed or ran out of time.");
    sample(o, n, &[], HANDSHAKE_FAILURES.get());
    let n = "blocking_proxy_name_lookups_in_flight";
    family(o, n, Kind::Gauge, "Name lookups running now, including those past their deadline.");
    sample(o, n, &[], LOOKUPS_IN_FLIGHT.get());
    let n = "blocking_proxy_udp_associations_total";
    family(o, n, Kind::Counter, "UDP associations started.");
    sample(o, n, &[], UDP_ASSOCIATIONS.get());
    labelled(
        o,
        "blocking_proxy_udp_datagrams_total",
        "UDP datagrams relayed; up is from the client towards the targets.",
        "direction",
        &counts(Way::ALL, Way::label, &DATAGRAMS),
    );
    let n = "blocking_proxy_udp_datagrams_dropped_total";
    family(o, n, Kind::Counter, "UDP datagrams dropped: from a stranger, a fragment, denied, unsendable.");
    sample(o, n, &[], DATAGRAMS_DROPPED.get());
    match role {
        Role::Server => {
            let n = "blocking_proxy_header_failures_total";
            family(
                o,
                n,
                Kind::Counter,
                "Connections whose TLS handshake completed but whose header was not valid.",
            );
            sample(o, n, &[], HEADER_FAILURES.get());
            let n = "blocking_proxy_fallback_handovers_total";
            family(o, n, Kind::Counter, "Connections handed to the fallback site.");
            sample(o, n, &[], FALLBACK_HANDOVERS.get());
            let n = "blocking_proxy_egress_denials_total";
            family(o, n, Kind::Counter, "Connections and datagrams refused by the egress policy.");
            sample(o, n, &[], EGRESS_DENIALS.get());
        }
        Role::Local => {
            let n = "blocking_proxy_pool_ready";
            family(o, n, Kind::Gauge, "TLS connections to the server ready in the pool.");
            sample(o, n, &[], POOL_READY.get());
            let n = "blocking_proxy_pool_taken_total";
            family(o, n, Kind::Counter, "Ready connections taken from the pool by clients.");
            sample(o, n, &[], POOL_TAKEN.get());
        }
    }
    for c in COLLECTORS.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        c(&mut out);
    }
    out
}

/// Scrapes answered at once; more are answered 503 and closed.
pub const MAX_SCRAPES: usize = 4;
/// How long a scraper has to send its request head.
pub const REQUEST_TIME: Duration = Duration::from_secs(3);
/// How long one write of the answer may wait for a scraper that does not read.
const WRITE_TIME: Duration = Duration::from_secs(5);
/// The longest request head read; a longer one is answered 400.
const HEAD_MAX: usize = 8 * 1024;
/// A scrape thread's stack: the answer is built on the heap.
const SCRAPE_STACK: usize = 256 * 1024;
/// How long the metrics accept loop rests after a resource error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `GET /metrics` for `role` on `listener`, from a thread of its
/// own, which hands each scrape to a thread of its own, at most
/// [`MAX_SCRAPES`] at once. Fails only when the first thread cannot start.
pub fn serve(listener: TcpListener, role: Role) -> io::Result<()> {
    thread::Builder::new()
        .name("metrics".into())
        .stack_size(SCRAPE_STACK)
        .spawn(move || accept_scrapes(&listener, role))
        .map(drop)
}

fn accept_scrapes(listener: &TcpListener, role: Role) {
    let busy = Arc::new(AtomicUsize::new(0));
    loop {
        let sock = match listener.accept() {
            Ok((sock, _)) => sock,
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted) => {
                continue
            }
            Err(e) => {
                log::debug!("metrics: accept failed: {e}; backing off");
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_SCRAPES {
            busy.fetch_sub(1, Ordering::SeqCst);
            too_busy(&sock);
            continue;
        }
        let slot = Slot(Arc::clone(&busy));
        let spawned =
            thread::Builder::new().name("metrics-scrape".into()).stack_size(SCRAPE_STACK).spawn(move || {
                answer(&sock, role);
                drop(slot);
            });
        if let Err(e) = spawned {
            log::debug!("metrics: cannot start a scrape thread: {e}");
        }
    }
}

/// A scrape's place among the [`MAX_SCRAPES`], given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Over [`MAX_SCRAPES`]: a 503 written without waiting, then a close.
fn too_busy(sock: &TcpStream) {
    let answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";
    if sock.set_nonblocking(true).is_ok() {
        let _ = (&*sock).write(answer);
    }
    let _ = sock.shutdown(Shutdown::Write);
}

/// Reads one request head and answers it, then closes.
fn answer(sock: &TcpStream, role: Role) {
    let _ = sock.set_write_timeout(Some(WRITE_TIME));
    let Some(head) = read_head(sock, Instant::now() + REQUEST_TIME) else { return };
    // HEAD gets the length of the body it would have had.
    let (status, body, len) = match route(&head) {
        Route::Metrics { with_body } => {
            let body = render(role);
            let len = body.len();
            ("200 OK", if with_body { body } else { String::new() }, len)
        }
        Route::Status(status) => (status, String::new(), 0),
    };
    let content_type = if status == "200 OK" { EXPOSITION } else { "text/plain; charset=utf-8" };
    let allow = if status.starts_with("405") { "Allow: GET, HEAD\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n{allow}Connection: close\r\n\r\n"
    );
    let sent = (&*sock).write_all(head.as_bytes()).and_then(|()| (&*sock).write_all(body.as_bytes()));
    if sent.is_ok() {
        let _ = sock.shutdown(Shutdown::Write);
    }
}

/// The media type of the text exposition format.
pub const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Reads until the end of the request head (a blank line), into at most
/// [`HEAD_MAX`] bytes, before `until`. None when the scraper closes, stalls
/// or sends more than that: it is closed without an answer.
fn read_head(sock: &TcpStream, until: Instant) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; HEAD_MAX];
    let mut len = 0;
    while len < buf.len() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        match (&*sock).read(&mut buf[len..]) {
            Ok(0) => return None,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
        let got = &buf[..len];
        if let Some(end) = head_end(got) {
            buf.truncate(end);
            return Some(buf);
        }
    }
    None
}

/// Where a request head ends: after its first empty line (CRLF or bare LF).
fn head_end(b: &[u8]) -> Option<usize> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// The exposition, without its body for HEAD.
    Metrics { with_body: bool },
    /// Anything else: this status, empty.
    Status(&'static str),
}

/// Routes a request head: `GET` or `HEAD` of `/metrics` (a query is
/// ignored); another method there is 405, another path 404, a request line
/// that is not HTTP/1.x 400.
fn route(head: &[u8]) -> Route {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else { return Route::Status("400 Bad Request") };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::Status("400 Bad Request");
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Route::Status("400 Bad Request");
    }
    let path = target.split('?').next().unwrap_or(target);
    match (path, method) {
        ("/metrics", "GET") => Route::Metrics { with_body: true },
        ("/metrics", "HEAD") => Route::Metrics { with_body: false },
        ("/metrics", _) => Route::Status("405 Method Not Allowed"),
        _ => Route::Status("404 Not Found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        let mut out = String::new();
        sample(&mut out, "m", &[("server", "a\\b\"c\nd"), ("x", "plain")], 3);
        assert_eq!(out, "m{server=\"a\\\\b\\\"c\\nd\",x=\"plain\"} 3\n");
        let mut out = String::new();
        sample(&mut out, "m_total", &[], 0);
        assert_eq!(out, "m_total 0\n");
    }

    #[test]
    fn every_family_has_help_and_type_and_every_sample_a_family() {
        add_collector(Box::new(|out| {
            family(out, "blocking_proxy_upstream_up", Kind::Gauge, "Whether an upstream server answers.");
            sample(out, "blocking_proxy_upstream_up", &[("server", "example.com:443")], 1);
        }));
        for role in [Role::Server, Role::Local] {
            let text = render(role);
            let mut typed = Vec::new();
            let mut helped = Vec::new();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# HELP ") {
                    helped.push(rest.split(' ').next().unwrap().to_owned());
                } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                    let (name, kind) = rest.split_once(' ').unwrap();
                    assert!(kind == "counter" || kind == "gauge", "{line}");
                    assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
                    typed.push(name.to_owned());
                } else {
                    let name = line.split(['{', ' ']).next().unwrap();
                    assert!(typed.iter().any(|t| t == name), "{name} has no # TYPE before it");
                    let value = line.rsplit(' ').next().unwrap();
                    assert!(value.parse::<f64>().is_ok(), "{line}");
                }
            }
            assert_eq!(helped, typed, "one # HELP and one # TYPE per family, in order");
            assert!(text.contains("blocking_proxy_upstream_up{server=\"example.com:443\"} 1\n"));
            let server_only = text.contains("blocking_proxy_header_failures_total");
            let local_only = text.contains("blocking_proxy_pool_ready");
            assert_eq!((server_only, local_only), (role == Role::Server, role == Role::Local), "{role:?}");
        }
    }

    #[test]
    fn each_label_set_lists_its_values_in_the_order_of_their_counters() {
        assert!(Closed::ALL.iter().enumerate().all(|(i, c)| *c as usize == i));
        assert!(Refusal::ALL.iter().enumerate().all(|(i, r)| *r as usize == i));
        assert!(Handshake::ALL.iter().enumerate().all(|(i, h)| *h as usize == i));
        assert!(Way::ALL.iter().enumerate().all(|(i, w)| *w as usize == i));
    }

    #[test]
    fn closing_counts_the_end_and_the_bytes() {
        let before = render(Role::Local);
        closed(Closed::Reset, 10, 20);
        let after = render(Role::Local);
        let value = |text: &str, series: &str| -> u64 {
            let line =
                text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' ')).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let reset = "blocking_proxy_connections_closed_total{end=\"reset\"}";
        let up = "blocking_proxy_relayed_bytes_total{direction=\"up\"}";
        let down = "blocking_proxy_relayed_bytes_total{direction=\"down\"}";
        assert!(value(&after, reset) > value(&before, reset));
        assert!(value(&after, up) >= value(&before, up) + 10);
        assert!(value(&after, down) >= value(&before, down) + 20);
    }

    #[test]
    fn requests_are_routed_by_method_and_path() {
        let r = |s: &str| route(s.as_bytes());
        assert_eq!(r("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Route::Metrics { with_body: true });
        assert_eq!(r("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics { with_body: true });
        assert_eq!(r("HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics { with_body: false });
        assert_eq!(r("POST /metrics HTTP/1.1\r\n\r\n"), Route::Status("405 Method Not Allowed"));
        assert_eq!(r("GET / HTTP/1.1\r\n\r\n"), Route::Status("404 Not Found"));
        assert_eq!(r("GET /metricsx HTTP/1.1\r\n\r\n"), Route::Status("404 Not Found"));
        for bad in [
            "GET /metrics\r\n\r\n",
            "GET /metrics SPDY/3\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "\u{1}\r\n\r\n",
        ] {
            assert_eq!(r(bad), Route::Status("400 Bad Request"), "{bad:?}");
        }
    }

    #[test]
    fn a_head_ends_at_its_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }
}
