//! The counts themselves: process-wide statics, each an atomic added to
//! with `Relaxed` ordering, and the fixed label sets that index the arrays
//! of the labelled families.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A count that only goes up.
pub struct Counter(AtomicU64);

impl Counter {
    /// A count at zero.
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count now.
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
    /// A gauge at zero.
    pub const fn new() -> Gauge {
        Gauge(AtomicI64::new(0))
    }

    /// Sets it to `v`.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds one until the [`Held`] it returns is dropped.
    pub fn hold(&'static self) -> Held {
        self.0.fetch_add(1, Ordering::Relaxed);
        Held(self)
    }

    /// The value now.
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
    /// Every class, in the order of their counters.
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

    /// Its label value.
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
    /// Every reason, in the order of their counters.
    pub const ALL: [Refusal; 2] = [Refusal::Cap, Refusal::PerSource];

    /// Its label value.
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
    /// A full handshake, with or without a HelloRetryRequest.
    Full,
    /// Resumed from a session ticket.
    Resumed,
}

impl Handshake {
    /// Both kinds, in the order of their counters.
    pub const ALL: [Handshake; 2] = [Handshake::Full, Handshake::Resumed];

    /// Its label value.
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
    /// From the client towards the target.
    Up,
    /// From the target back to the client.
    Down,
}

impl Way {
    /// Both directions, in the order of their counters.
    pub const ALL: [Way; 2] = [Way::Up, Way::Down];

    /// Its label value.
    pub fn label(self) -> &'static str {
        match self {
            Way::Up => "up",
            Way::Down => "down",
        }
    }
}

/// Where the local sent a connection or a datagram, by its ACL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed {
    /// Straight to the target, from the local itself.
    Direct,
    /// Through a server.
    Proxy,
    /// Nowhere: refused (a connection) or dropped (a datagram).
    Block,
}

impl Routed {
    /// Every route, in the order of their counters.
    pub const ALL: [Routed; 3] = [Routed::Direct, Routed::Proxy, Routed::Block];

    /// Its label value.
    pub fn label(self) -> &'static str {
        match self {
            Routed::Direct => "direct",
            Routed::Proxy => "proxy",
            Routed::Block => "block",
        }
    }
}

/// How the local's DNS server answered a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsSource {
    /// From the cache.
    Cache,
    /// Asked of the remote resolver through the tunnel.
    Remote,
    /// Asked of a direct resolver.
    Direct,
    /// Waited for the same question in flight.
    Joined,
    /// REFUSED: the ACL blocks the name.
    Refused,
    /// SERVFAIL: no upstream answered.
    Failed,
}

impl DnsSource {
    /// Every source, in the order of their counters.
    pub const ALL: [DnsSource; 6] = [
        DnsSource::Cache,
        DnsSource::Remote,
        DnsSource::Direct,
        DnsSource::Joined,
        DnsSource::Refused,
        DnsSource::Failed,
    ];

    /// Its label value.
    pub fn label(self) -> &'static str {
        match self {
            DnsSource::Cache => "cache",
            DnsSource::Remote => "remote",
            DnsSource::Direct => "direct",
            DnsSource::Joined => "joined",
            DnsSource::Refused => "refused",
            DnsSource::Failed => "failed",
        }
    }
}

/// Which binary serves the metrics: it decides which families are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// blocking-server.
    Server,
    /// blocking-local.
    Local,
}

impl Role {
    /// Its `role` label.
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
pub(super) static REFUSED: [Counter; 2] = [const { Counter::new() }; 2];
/// Admitted connections closed, by [`Closed`].
pub(super) static CLOSED: [Counter; 9] = [const { Counter::new() }; 9];
/// Payload bytes of closed connections, by [`Way`].
pub(super) static BYTES: [Counter; 2] = [const { Counter::new() }; 2];
/// Completed TLS handshakes, by [`Handshake`].
pub(super) static HANDSHAKES: [Counter; 2] = [const { Counter::new() }; 2];
/// TLS handshakes that failed.
pub static HANDSHAKE_FAILURES: Counter = Counter::new();
/// Name lookups running now (a lookup past its deadline counts until it returns).
pub static LOOKUPS_IN_FLIGHT: Gauge = Gauge::new();
/// UDP associations started.
pub static UDP_ASSOCIATIONS: Counter = Counter::new();
/// UDP datagrams relayed, by [`Way`].
pub(super) static DATAGRAMS: [Counter; 2] = [const { Counter::new() }; 2];
/// UDP datagrams dropped.
pub static DATAGRAMS_DROPPED: Counter = Counter::new();
/// Server: connections whose TLS was fine but whose header was not.
pub static HEADER_FAILURES: Counter = Counter::new();
/// Server: connections handed to the fallback site.
pub static FALLBACK_HANDOVERS: Counter = Counter::new();
/// Server: connections that closed after their TLS handshake without a
/// header (a local's ready connections that aged out unused).
pub static UNUSED: Counter = Counter::new();
/// Server: connections and datagrams refused by the egress policy.
pub static EGRESS_DENIALS: Counter = Counter::new();
/// Local: connections, by the route taken ([`Routed`]).
pub(super) static ROUTED: [Counter; 3] = [const { Counter::new() }; 3];
/// Local: UDP datagrams from clients, by the route taken ([`Routed`]).
pub(super) static ROUTED_DATAGRAMS: [Counter; 3] = [const { Counter::new() }; 3];
/// Local: DNS queries, by how they were answered ([`DnsSource`]).
pub(super) static DNS: [Counter; 6] = [const { Counter::new() }; 6];
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

/// The local sent a connection `route`.
pub fn routed(route: Routed) {
    ROUTED[route as usize].inc();
}

/// The local sent a client's datagram `route`.
pub fn routed_datagram(route: Routed) {
    ROUTED_DATAGRAMS[route as usize].inc();
}

/// The local's DNS server answered a query from `source` (an upstream
/// request counts here too, besides the query's own failure if it fails).
pub fn dns(source: DnsSource) {
    DNS[source as usize].inc();
}

/// A UDP datagram was relayed one way.
pub fn datagram(way: Way) {
    DATAGRAMS[way as usize].inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_label_set_lists_its_values_in_the_order_of_their_counters() {
        assert!(Closed::ALL.iter().enumerate().all(|(i, c)| *c as usize == i));
        assert!(Refusal::ALL.iter().enumerate().all(|(i, r)| *r as usize == i));
        assert!(Handshake::ALL.iter().enumerate().all(|(i, h)| *h as usize == i));
        assert!(Way::ALL.iter().enumerate().all(|(i, w)| *w as usize == i));
        assert!(Routed::ALL.iter().enumerate().all(|(i, r)| *r as usize == i));
        assert!(DnsSource::ALL.iter().enumerate().all(|(i, d)| *d as usize == i));
    }
}
