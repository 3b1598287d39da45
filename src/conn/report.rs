//! One connection's account: its one close line when it closes, its count
//! in the metrics, and its place under the cap, given back then.
//!
//! The line is written when the [`Report`] is dropped, whatever path the
//! connection took, so every admitted connection has exactly one, at the
//! level [`End::level`] gives (`info`, `debug` for a server's connection
//! that closed before its header). Fields
//! added later go after `end=`, so that the older ones keep their places:
//!
//! ```text
//! #12 closed client=127.0.0.1:50000 target=example.com:443 up=79 down=732 time=0.042s end=eof proto=socks5 route=proxy
//! #13 closed client=192.168.1.20:50001 target=example.com:443 up=517 down=4120 time=0.310s end=eof proto=tproxy route=proxy dst=93.184.215.14:443
//! #14 closed client=198.51.100.7:50002 target=example.com:443 up=517 down=4120 time=0.310s end=eof user=alice
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::{self, Closed};
use crate::proto::addr::Target;
use crate::text::Escaped;

use super::admission::Place;
use super::end::End;
use super::live::{self, Bytes, Registered};

/// Called with each close line as it is logged, and its class: how a
/// program that embeds the proxies (the tests) watches connections end.
pub type Watch = Arc<dyn Fn(&str, Closed) + Send + Sync>;

/// What a relay or a UDP association moved, and how it ended.
#[derive(Debug)]
pub struct Outcome {
    /// Bytes from the first side (the client) towards the second.
    pub up: u64,
    /// Bytes from the second side back to the first.
    pub down: u64,
    /// How it ended.
    pub end: End,
    /// For a UDP association: datagrams up and down, and those dropped.
    pub datagrams: Option<[u64; 3]>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One connection's account, logged as a single line when it is
/// dropped; it holds the connection's place under the cap until then.
pub struct Report {
    /// The connection's number in this process, the `#id` of its log lines.
    pub id: u64,
    peer: SocketAddr,
    start: Instant,
    place: Place,
    target: Option<String>,
    fallback: bool,
    /// Bytes from the client towards the target, before the relay's own.
    pub up: u64,
    down: u64,
    end: Option<End>,
    datagrams: Option<[u64; 3]>,
    proto: Option<&'static str>,
    route: Option<&'static str>,
    dst: Option<SocketAddr>,
    watch: Option<Watch>,
    /// The connection's entry in the live view, taken out when this drops.
    live: Registered,
    user: Option<Arc<str>>,
}

impl Report {
    /// Starts the report of a new connection from `peer`, admitted with
    /// `place`; it gets the next `#id`.
    pub fn new(peer: SocketAddr, place: Place, watch: Option<Watch>) -> Report {
        metrics::ACCEPTED.inc();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Report {
            id,
            peer,
            start: Instant::now(),
            place,
            target: None,
            fallback: false,
            up: 0,
            down: 0,
            end: None,
            datagrams: None,
            proto: None,
            route: None,
            dst: None,
            watch,
            live: live::Entry::register(id, peer),
            user: None,
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client is `source`, as a PROXY protocol header said: the address
    /// the connection's log lines name from now on.
    pub fn proxied(&mut self, source: SocketAddr) {
        self.peer = source;
    }

    /// The connection's place under the cap, to share with work that may outlive it.
    pub fn place(&self) -> &Place {
        &self.place
    }

    /// Where the client asked to go.
    pub fn target(&mut self, target: &Target) {
        self.target = Some(target.to_string());
    }

    /// The connection is a UDP association (`target=udp`).
    pub fn udp(&mut self) {
        self.target = Some("udp".to_owned());
    }

    /// The connection is a fixed forward's UDP flow to `target`
    /// (`target=udp/HOST:PORT`).
    pub fn udp_to(&mut self, target: &Target) {
        self.target = Some(format!("udp/{target}"));
    }

    /// The connection was handed to the fallback site (`target=fallback/HOST:PORT`);
    /// it counts as that in the metrics, however it ends.
    pub fn handed_over(&mut self, fallback: &Target) {
        self.target = Some(format!("fallback/{fallback}"));
        self.fallback = true;
    }

    /// The protocol the client spoke (`proto=`), when the listener serves more than one.
    pub fn proto(&mut self, name: &'static str) {
        self.proto = Some(name);
    }

    /// Where the local sent the connection (`route=`): `direct`, `proxy` or
    /// `block`; for a UDP association, the routes its datagrams took.
    pub fn route(&mut self, name: &'static str) {
        self.route = Some(name);
    }

    /// The connection's original destination (`dst=`), for one a firewall
    /// sent to a transparent listener: its target may be a name it carried.
    pub fn dst(&mut self, dst: SocketAddr) {
        self.dst = Some(dst);
    }

    /// Ends the report with `end`: the connection closes before its relay.
    pub fn end(mut self, end: End) {
        self.end = Some(end);
    }

    /// Ends the report with what a relay or an association moved, and how it ended.
    pub fn finish(mut self, out: Outcome) {
        self.up += out.up;
        self.down += out.down;
        self.datagrams = out.datagrams;
        self.end = Some(out.end);
    }

    /// Starts `time=` again now: the server has the connection's header,
    /// and a local's ready connection may have waited long before it.
    pub fn restart_clock(&mut self) {
        self.start = Instant::now();
    }

    /// The connection's entry in the live view ([`live`]).
    pub fn live(&self) -> &live::Entry {
        self.live.entry()
    }

    /// Names the user whose connection this is in the live view.
    pub fn live_user(&self, name: &str) {
        self.live().user(name);
    }

    /// The relay starts: the live view gets what the report knows so far
    /// (client, target, protocol, route, bytes before the relay), and the
    /// counters the relay is to add to ([`crate::conn::relay::Leg::counting`]).
    pub fn relaying(&self) -> Arc<Bytes> {
        self.live().describe(|a| {
            a.client = Some(self.peer);
            a.target.clone_from(&self.target);
            a.protocol = self.proto;
            a.route = self.route;
        });
        self.live().relaying(self.up, self.down)
    }

    /// The server's named user the connection belongs to (`user=`, escaped),
    /// also named in the live view.
    pub fn user(&mut self, name: Arc<str>) {
        self.live_user(&name);
        self.user = Some(name);
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        let end = self.end.take().unwrap_or(End::Aborted);
        let class = if self.fallback { Closed::Fallback } else { end.class() };
        // Counted before the line is logged: whoever reads the line finds it counted.
        metrics::closed(class, self.up, self.down);
        let line = Line { report: self, end: &end, secs: self.start.elapsed().as_secs_f64() };
        log::log!(end.level(), "{line}");
        if let Some(watch) = &self.watch {
            watch(&line.to_string(), class);
        }
    }
}

/// A report's close line, written as it is logged.
struct Line<'a> {
    report: &'a Report,
    end: &'a End,
    secs: f64,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        write!(
            f,
            "#{} closed client={} target={} up={} down={} time={:.3}s end={}",
            r.id,
            r.peer,
            r.target.as_deref().unwrap_or("-"),
            r.up,
            r.down,
            self.secs,
            self.end,
        )?;
        if let Some([up, down, dropped]) = r.datagrams {
            write!(f, " datagrams={up}/{down} dropped={dropped}")?;
        }
        if let Some(proto) = r.proto {
            write!(f, " proto={proto}")?;
        }
        if let Some(route) = r.route {
            write!(f, " route={route}")?;
        }
        if let Some(dst) = r.dst {
            write!(f, " dst={dst}")?;
        }
        if let Some(user) = &r.user {
            write!(f, " user={}", Escaped(user))?;
        }
        Ok(())
    }
}
