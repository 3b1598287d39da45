//! Fixed forwards (`--forward LISTEN=HOST:PORT`): ports that lead to one
//! target through a server, for clients that speak no proxy protocol at
//! all (a resolver pointed at a DNS server, a router's port).
//!
//! Each forward listens on LISTEN for TCP and, with a password (UDP
//! travels in trojan's framing), for UDP on the same address. Its TCP
//! listener is a sibling of the local's own ([`Acceptor::sibling`]): behind
//! the same gate, so one cap counts the connections of every port, stopped
//! with it, and drained with it. Each connection then goes as a proxied
//! SOCKS5 client's does, without a request ([`client::forward`]).
//!
//! UDP has no connections: one thread per forward reads its socket and
//! gives each client address a flow of its own ([`Flow`]), one trojan UDP
//! association to the target over its own link to a server, made on a
//! setup thread while the first datagrams wait. A flow is a connection
//! under the cap (it takes a place from the same gate as it starts;
//! without one its datagram is dropped and the refusal counted), logs one
//! close line, and ends after `--udp-timeout` with no datagram either way,
//! which this thread keeps, or when its link ends; the client's next
//! datagram starts another. A stop ends every flow at once (`end=stopped`).
//! The ACL does not apply: a forward's target is fixed, and always reached
//! through a server.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::conn::accept::{Acceptor, Stopper};
use crate::conn::admission::{Gate, Place, Refused};
use crate::conn::end::{End, Step};
use crate::conn::report::Watch;
use crate::conn::udp::Flow;
use crate::conn::Report;
use crate::error::Error;
use crate::metrics;
use crate::net::dial::listen;
use crate::proto::acl::Route;
use crate::proto::addr::Target;
use crate::proto::wire::{self, Command, HEADER_MAX};
use crate::workers::SETUP_THREADS;

use super::client::{self, Context, FORWARD};
use super::upstream::Link;

/// One `--forward`: where it listens, and where what comes there goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// `ADDR:PORT`, for TCP and UDP alike.
    pub listen: String,
    /// `HOST:PORT`, reached through a server.
    pub target: Target,
}

impl Forward {
    /// Parses `LISTEN=HOST:PORT`: LISTEN an address and port (a name, IPv4
    /// or `[IPv6]`; port 0 takes a free one), the target's port not 0.
    pub fn parse(s: &str) -> Option<Forward> {
        let (listen, target) = s.split_once('=')?;
        Target::parse(listen)?;
        let target = Target::parse(target).filter(|t| t.port() != 0)?;
        Some(Forward { listen: listen.to_owned(), target })
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.listen, self.target)
    }
}

/// A forward's sockets, bound: its TCP listener, a sibling of the local's,
/// and with UDP its UDP socket on the same address.
pub struct Bound {
    target: Target,
    addr: SocketAddr,
    acceptor: Acceptor,
    udp: Option<UdpSocket>,
}

/// How many times a forward on port 0 looks for a port free for TCP and UDP alike.
const PORT_TRIES: usize = 8;

/// Binds `forward` beside `main`, whose gate and stop it shares: a TCP
/// listener and, with `udp`, a UDP socket on the address the listener got
/// (on port 0, a port free for both).
pub fn bind(main: &Acceptor, forward: &Forward, udp: bool) -> Result<Bound, Error> {
    let any_port = Target::parse(&forward.listen).is_some_and(|t| t.port() == 0);
    let mut tries = 0;
    let (listener, addr, socket) = loop {
        let listener = listen(&forward.listen)?;
        let addr = listener.local_addr().map_err(Error::Io)?;
        if !udp {
            break (listener, addr, None);
        }
        match UdpSocket::bind(addr) {
            Ok(socket) => break (listener, addr, Some(socket)),
            Err(e) if any_port && e.kind() == io::ErrorKind::AddrInUse && tries + 1 < PORT_TRIES => {
                tries += 1
            }
            Err(e) => return Err(Error::Config(format!("cannot listen on {} (udp): {e}", forward.listen))),
        }
    };
    let acceptor = main.sibling(listener)?;
    if let Some(socket) = &socket {
        acceptor.wake_on_stop(socket).map_err(Error::Io)?;
    }
    Ok(Bound { target: forward.target.clone(), addr, acceptor, udp: socket })
}

impl Bound {
    /// The address it listens on, for TCP and, with UDP, for UDP.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it serves UDP too.
    pub fn udp(&self) -> bool {
        self.udp.is_some()
    }

    /// Where what comes to it goes.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Starts its threads: the TCP accept loop and, with UDP, the thread
    /// that reads the UDP socket. Both return once `stop` is stopped.
    pub fn start(
        self,
        ctx: &Arc<Context>,
        watch: Option<Watch>,
        stop: Stopper,
    ) -> io::Result<Vec<JoinHandle<()>>> {
        let Bound { target, addr, acceptor, udp } = self;
        let mut threads = Vec::new();
        if let Some(udp) = udp {
            let flows = Flows {
                udp: Arc::new(udp),
                gate: Arc::clone(acceptor.gate()),
                target: target.clone(),
                ctx: Arc::clone(ctx),
                watch: watch.clone(),
            };
            let thread = thread::Builder::new().name(format!("forward udp {addr}")).stack_size(THREAD_STACK);
            threads.push(thread.spawn(move || flows.run(&stop))?);
        }
        let ctx = Arc::clone(ctx);
        let admit = move |app, peer, place| {
            let (ctx, target, report) =
                (Arc::clone(&ctx), target.clone(), Report::new(peer, place, watch.clone()));
            move || client::forward(app, &target, &ctx, report)
        };
        let refuse = |app: TcpStream, why: &Refused| {
            metrics::refused(why.into());
            drop(app);
        };
        let thread = thread::Builder::new().name(format!("forward {addr}")).stack_size(THREAD_STACK);
        threads.push(thread.spawn(move || acceptor.serve(admit, refuse))?);
        Ok(threads)
    }
}

/// The stack of a forward's two threads.
const THREAD_STACK: usize = 256 * 1024;

/// The largest datagram a UDP socket hands over.
const DATAGRAM_MAX: usize = 65_535;

/// What a forward's UDP thread serves its clients with.
struct Flows {
    udp: Arc<UdpSocket>,
    gate: Arc<Gate>,
    target: Target,
    ctx: Arc<Context>,
    watch: Option<Watch>,
}

impl Flows {
    /// Reads the forward's UDP socket until `stop`: each datagram to its
    /// client's flow, or to a new one ([`serve_flows`]).
    fn run(&self, stop: &Stopper) {
        let name = format!("forward to {}", self.target);
        let receive = |udp: &UdpSocket, buf: &mut [u8]| udp.recv_from(buf);
        let start = |from: SocketAddr, first: &[u8], frame: &mut Vec<u8>| {
            self.start(from, first, frame)
                .map(Some)
                .map_err(|why| format!("{why}: dropping a datagram from {from}"))
        };
        serve_flows(&self.udp, stop, self.ctx.timeouts.udp, &name, receive, start);
    }

    /// Starts the flow of a new client, `from`, under the cap, with its
    /// first datagram, `first`: its account, and its link made on a setup
    /// thread.
    fn start(&self, from: SocketAddr, first: &[u8], frame: &mut Vec<u8>) -> Result<Arc<Flow>, String> {
        let place = self.gate.enter(from.ip()).map_err(|why| {
            metrics::refused((&why).into());
            why.to_string()
        })?;
        let mut report = Report::new(from, place, self.watch.clone());
        report.proto(FORWARD);
        report.udp_to(&self.target);
        report.route(Route::Proxy.name());
        // Listed with its target; its bytes show in its close line.
        let _ = report.relaying();
        let (id, place) = (report.id, report.place().clone());
        log::debug!("#{id} forward udp from {from} to {}", self.target);
        let timeouts = &self.ctx.timeouts;
        let flow = Flow::new(Arc::clone(&self.udp), from, self.target.clone(), timeouts, move |out| {
            report.finish(out)
        });
        flow.offer(first, frame);
        let (linking, ctx, target) = (Arc::clone(&flow), Arc::clone(&self.ctx), self.target.clone());
        if let Err(e) = SETUP_THREADS.spawn(move || link(&linking, &ctx, &target, &place, id)) {
            flow.failed(End::NoThread(e), flow.waiting());
        }
        Ok(flow)
    }
}

/// A flow a UDP thread keeps ([`serve_flows`]): a fixed forward's, or
/// one of `--tproxy`'s.
pub trait Quiet {
    /// Takes a datagram; false once the flow has ended, and the caller
    /// starts another for the datagram.
    fn offer(&self, payload: &[u8], frame: &mut Vec<u8>) -> bool;
    /// How long until it has been quiet for the UDP timeout: zero once it has ended.
    fn idle_left(&self) -> Duration;
    /// Ends it with `why` (its quiet time is up, the local stops).
    fn end(&self, why: End);
}

impl Quiet for Arc<Flow> {
    fn offer(&self, payload: &[u8], frame: &mut Vec<u8>) -> bool {
        Flow::offer(self, payload, frame)
    }

    fn idle_left(&self) -> Duration {
        Flow::idle_left(self)
    }

    fn end(&self, why: End) {
        Flow::end(self, why);
    }
}

/// A UDP thread's loop, until `stop`: `receive` reads a datagram from `udp`
/// and names its flow; each datagram goes to its flow, or `start` starts
/// one with it (`None`: the datagram goes nowhere; an error, logged after
/// `name` at most once a second: it is dropped and counted). Every flow
/// quiet for `quiet` (the UDP timeout) is ended and forgotten; at the stop,
/// every flow is ended. The socket's read timeout wakes the thread for the
/// next flow due to go quiet, set again only when that changes.
pub fn serve_flows<K: Hash + Eq + Copy, F: Quiet>(
    udp: &UdpSocket,
    stop: &Stopper,
    quiet: Duration,
    name: &str,
    mut receive: impl FnMut(&UdpSocket, &mut [u8]) -> io::Result<(usize, K)>,
    mut start: impl FnMut(K, &[u8], &mut Vec<u8>) -> Result<Option<F>, String>,
) {
    let mut flows: HashMap<K, F> = HashMap::new();
    let mut buf = vec![0u8; DATAGRAM_MAX];
    let mut frame = Vec::new();
    // When the flows are next looked at for their quiet time, and the
    // read timeout that waits for it.
    let mut sweep: Option<Instant> = None;
    let mut waiting: Option<Duration> = None;
    let mut last_warning: Option<Instant> = None;
    let mut warn_limited = |what: String| {
        if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            log::warn!("{name}: {what}");
            last_warning = Some(Instant::now());
        }
    };
    while !stop.stopped() {
        let now = Instant::now();
        if sweep.is_some_and(|at| at <= now) {
            sweep = ended_quiet(&mut flows);
        }
        // The socket's own timeout: one system call when it changes, none per datagram.
        let wait = sweep.map(|at| at.saturating_duration_since(now).max(Duration::from_millis(1)));
        if wait != waiting && udp.set_read_timeout(wait).is_ok() {
            waiting = wait;
        }
        let (n, key) = match receive(udp, &mut buf) {
            Ok(got) => got,
            Err(_) if stop.stopped() => break,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                warn_limited(format!("udp: {e}; backing off"));
                thread::sleep(BACKOFF);
                continue;
            }
        };
        if stop.stopped() {
            break;
        }
        if flows.get(&key).is_some_and(|flow| flow.offer(&buf[..n], &mut frame)) {
            continue;
        }
        match start(key, &buf[..n], &mut frame) {
            Ok(Some(flow)) => {
                flows.insert(key, flow);
                let at = now + quiet;
                sweep = Some(sweep.map_or(at, |s| s.min(at)));
            }
            Ok(None) => {}
            Err(why) => {
                warn_limited(why);
                metrics::DATAGRAMS_DROPPED.inc();
            }
        }
    }
    for flow in flows.values() {
        flow.end(End::Stopped);
    }
}

/// How long a UDP thread rests after an error of its socket.
const BACKOFF: Duration = Duration::from_millis(100);

/// Ends the flows quiet for their timeout and forgets those that have
/// ended; returns when the next one would be quiet for its timeout.
fn ended_quiet<K, F: Quiet>(flows: &mut HashMap<K, F>) -> Option<Instant> {
    let now = Instant::now();
    let mut next: Option<Instant> = None;
    flows.retain(|_, flow| {
        let left = flow.idle_left();
        if left.is_zero() {
            flow.end(End::UdpIdle);
            return false;
        }
        let at = now + left;
        next = Some(next.map_or(at, |n| n.min(at)));
        true
    });
    next
}

/// A flow's link, on a setup thread: a link to a server (from the pool or
/// new), the trojan header that asks for UDP to `target` with the
/// datagrams that came meanwhile, then the flow is open. A fixed forward's
/// and a `--tproxy` UDP flow's.
pub fn link(flow: &Arc<Flow>, ctx: &Context, target: &Target, place: &Place, id: u64) {
    let Some(hash) = ctx.secrets.get().password else {
        return flow.failed(End::NoUdp, flow.waiting());
    };
    let mut link = match client::reach(ctx, place, id, false) {
        Ok(link) => link,
        Err((end, _)) => return flow.failed(end, flow.waiting()),
    };
    let sent = flow.waiting();
    let mut first = Vec::with_capacity(HEADER_MAX + sent.frames.len());
    wire::encode_trojan_request(&hash, Command::UdpAssociate, target, &mut first);
    first.extend_from_slice(&sent.frames);
    if let Err(e) = link.send(&[&first], Instant::now() + ctx.timeouts.handshake) {
        return flow.failed(End::Failed(Step::Server, e), sent);
    }
    let Link { sock, conn, .. } = link;
    flow.opened(sock, conn, sent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_is_a_listen_address_and_a_target() {
        let f = Forward::parse("127.0.0.1:5353=1.1.1.1:53").unwrap();
        assert_eq!((f.listen.as_str(), f.target.to_string()), ("127.0.0.1:5353", "1.1.1.1:53".into()));
        let f = Forward::parse("[::1]:8080=example.com:80").unwrap();
        assert_eq!((f.listen.as_str(), &f.target), ("[::1]:8080", &Target::Domain("example.com".into(), 80)));
        assert_eq!(f.to_string(), "[::1]:8080=example.com:80");
        assert!(Forward::parse("localhost:0=[2001:db8::1]:443").is_some(), "port 0: a free one");
        for bad in [
            "",
            "=",
            "127.0.0.1:53",
            "127.0.0.1:53=",
            "=1.1.1.1:53",
            "5353=1.1.1.1:53",
            "127.0.0.1:53=1.1.1.1",
        ] {
            assert_eq!(Forward::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Forward::parse("127.0.0.1:53=1.1.1.1:0"), None, "a target on port 0");
    }
}
