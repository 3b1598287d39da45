//! `--tproxy`'s UDP: datagrams a firewall's `tproxy`/`TPROXY` rule
//! delivers to the local's transparent UDP socket, for any address, each
//! with its original destination (`IP_RECVORIGDSTADDR`,
//! `IPV6_RECVORIGDSTADDR`, read with `recvmsg(2)`). Its TCP is
//! [`super::transparent`].
//!
//! One thread reads the socket and gives each client and destination a
//! flow of its own, routed by the ACL's IP rules for the destination, as
//! a SOCKS5 client's datagram to it would be: a proxied flow is a
//! [`Flow`], one trojan UDP association over its own link to a server
//! (made on a setup thread while the first datagrams wait), as a fixed
//! forward's; a direct flow sends from a socket of the local's own
//! (marked) connected to the destination; a blocked destination's
//! datagrams are dropped and counted. Replies reach the client from a
//! socket bound to the original destination (transparent, so that it may
//! be any address), so that the client sees them come from where it
//! wrote. A flow is a connection under the cap (without a place, its
//! datagram is dropped and the refusal counted), logs one close line
//! (`target=udp/DST proto=tproxy`), and ends after `--udp-timeout` with no
//! datagram either way, or when its link ends; the next datagram starts
//! another. A stop ends every flow at once (`end=stopped`).

use std::io::{self, IoSliceMut};
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrStorage,
};
use socket2::{Domain, SockRef, Type};

use crate::conn::accept::{Acceptor, Stopper};
use crate::conn::admission::{Gate, Refused};
use crate::conn::end::End;
use crate::conn::report::{Outcome, Watch};
use crate::conn::udp::Flow;
use crate::conn::Report;
use crate::error::Error;
use crate::metrics::{self, Way};
use crate::net::dial;
use crate::proto::acl::Route;
use crate::proto::addr::Target;
use crate::workers::{COPY_THREADS, SETUP_THREADS};

use super::client::Context;
use super::forward::{self, Quiet};
use super::route;

/// Its connections' `proto=` in logs.
const TPROXY: &str = "tproxy";

/// `--tproxy`'s UDP socket, bound beside the local's listener.
pub struct Bound {
    udp: UdpSocket,
    addr: SocketAddr,
    gate: Arc<Gate>,
}

/// Binds the transparent UDP socket on `addr` (the `--tproxy` listener's
/// address), beside `main`, whose gate and stop it shares.
pub fn bind(main: &Acceptor, addr: SocketAddr) -> Result<Bound, Error> {
    let udp = socket(addr)?;
    let addr = udp.local_addr().map_err(Error::Io)?;
    main.wake_on_stop(&udp).map_err(Error::Io)?;
    Ok(Bound { udp, addr, gate: Arc::clone(main.gate()) })
}

/// The transparent UDP socket on `addr`, which tells each datagram's
/// original destination.
fn socket(addr: SocketAddr) -> Result<UdpSocket, Error> {
    let fail = |e: &dyn std::fmt::Display| Error::Config(format!("cannot listen on {addr} (udp): {e}"));
    let udp = dial::udp_transparent(addr).map_err(|e| fail(&e))?;
    let asked = match addr {
        SocketAddr::V4(_) => setsockopt(&udp, sockopt::Ipv4OrigDstAddr, &true),
        // A dual-stack socket's IPv4 datagrams carry IPv4's option.
        SocketAddr::V6(_) => setsockopt(&udp, sockopt::Ipv6OrigDstAddr, &true)
            .and_then(|()| setsockopt(&udp, sockopt::Ipv4OrigDstAddr, &true).or(Ok(()))),
    };
    asked.map_err(|e| fail(&format!("cannot ask for original destinations: {e}")))?;
    Ok(udp)
}

impl Bound {
    /// Starts the thread that reads the socket; it returns once `stop` is stopped.
    pub fn start(
        self,
        ctx: &Arc<Context>,
        watch: Option<Watch>,
        stop: Stopper,
    ) -> io::Result<JoinHandle<()>> {
        let Bound { udp, addr, gate } = self;
        let flows = Flows { udp, addr, gate, ctx: Arc::clone(ctx), watch };
        let thread = thread::Builder::new().name(format!("tproxy udp {addr}")).stack_size(THREAD_STACK);
        thread.spawn(move || flows.run(&stop))
    }
}

/// The stack of the thread that reads the socket.
const THREAD_STACK: usize = 256 * 1024;

/// The largest datagram a UDP socket hands over.
const DATAGRAM_MAX: usize = 65_535;

/// What the thread serves the flows with.
struct Flows {
    udp: UdpSocket,
    addr: SocketAddr,
    gate: Arc<Gate>,
    ctx: Arc<Context>,
    watch: Option<Watch>,
}

/// A flow: a client's datagrams to one destination.
enum Entry {
    Proxied(Arc<Flow>),
    Direct(Arc<Direct>),
}

impl Quiet for Entry {
    /// Takes a datagram, counted by its route; false once the flow has ended.
    fn offer(&self, payload: &[u8], frame: &mut Vec<u8>) -> bool {
        let (taken, route) = match self {
            Entry::Proxied(flow) => (flow.offer(payload, frame), Route::Proxy),
            Entry::Direct(flow) => (flow.offer(payload), Route::Direct),
        };
        if taken {
            route::count_datagram(route);
        }
        taken
    }

    fn idle_left(&self) -> Duration {
        match self {
            Entry::Proxied(flow) => flow.idle_left(),
            Entry::Direct(flow) => flow.idle_left(),
        }
    }

    fn end(&self, why: End) {
        match self {
            Entry::Proxied(flow) => flow.end(why),
            Entry::Direct(flow) => flow.end(why),
        }
    }
}

impl Flows {
    /// Reads the socket until `stop`: each datagram to its flow, or to a
    /// new one ([`forward::serve_flows`]); one without an original
    /// destination (not a tproxy rule's) is dropped.
    fn run(&self, stop: &Stopper) {
        let name = format!("tproxy udp on {}", self.addr);
        let start = |(from, dst): (SocketAddr, Option<SocketAddr>), first: &[u8], frame: &mut Vec<u8>| {
            let Some(dst) = dst else {
                return Err(format!(
                    "a datagram from {from} without its original destination (not sent by a tproxy rule): dropped"
                ));
            };
            self.start(from, dst, first, frame)
                .map_err(|why| format!("{why}: dropping a datagram from {from} to {dst}"))
        };
        let receive =
            |udp: &UdpSocket, buf: &mut [u8]| receive(udp, buf).map(|(n, from, dst)| (n, (from, dst)));
        forward::serve_flows(&self.udp, stop, self.ctx.timeouts.udp, &name, receive, start);
    }

    /// Starts the flow of `from` to `dst` with its first datagram, under
    /// the cap, where the ACL sends it; `None` when it is blocked (dropped
    /// and counted).
    fn start(
        &self,
        from: SocketAddr,
        dst: SocketAddr,
        first: &[u8],
        frame: &mut Vec<u8>,
    ) -> Result<Option<Entry>, String> {
        if dst.port() == self.addr.port() && dial::is_local_address(dst.ip()) {
            return Err(format!(
                "the original destination {dst} is this local's own socket (a loop, or not a tproxy rule)"
            ));
        }
        if dial::is_own(from, dst) {
            return Err(format!(
                "this datagram to {dst} is the local's own, sent back by a firewall rule (a loop: give the local --mark N and let packets marked N pass)"
            ));
        }
        let target = Target::Ip(dst);
        let route = self.ctx.router.route(&target, Instant::now(), &());
        if route == Route::Block {
            route::count_datagram(route);
            log::debug!("tproxy udp from {from} to {dst}: blocked by the acl, dropped");
            metrics::DATAGRAMS_DROPPED.inc();
            return Ok(None);
        }
        route::count_datagram(route);
        if route == Route::Proxy && self.ctx.secrets.get().password.is_none() {
            return Err(
                "udp through the server needs a password on both sides (the trojan format)".to_owned()
            );
        }
        let place = self.gate.enter(from.ip()).map_err(|why: Refused| {
            metrics::refused((&why).into());
            why.to_string()
        })?;
        let reply = dial::udp_transparent(dst).map_err(|e| format!("no socket to reply from {dst}: {e}"))?;
        let mut report = Report::new(from, place, self.watch.clone());
        report.proto(TPROXY);
        report.udp_to(&target);
        report.route(route.name());
        // Listed with its target; its bytes show in its close line.
        let _ = report.relaying();
        let (id, place) = (report.id, report.place().clone());
        log::debug!("#{id} tproxy udp from {from} to {dst}, {}", route.name());
        if route == Route::Direct {
            return Direct::start(reply, from, dst, self.ctx.timeouts.udp, report, first)
                .map(|d| Some(Entry::Direct(d)));
        }
        let flow = Flow::new(Arc::new(reply), from, target.clone(), &self.ctx.timeouts, move |out| {
            report.finish(out)
        });
        flow.offer(first, frame);
        let (linking, ctx) = (Arc::clone(&flow), Arc::clone(&self.ctx));
        if let Err(e) = SETUP_THREADS.spawn(move || forward::link(&linking, &ctx, &target, &place, id)) {
            flow.failed(End::NoThread(e), flow.waiting());
        }
        Ok(Some(Entry::Proxied(flow)))
    }
}

/// Receives one datagram: its length, where it came from, and its
/// original destination (none when no tproxy rule delivered it).
fn receive(udp: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<SocketAddr>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(libc::sockaddr_in6);
    let msg = recvmsg::<SockaddrStorage>(udp.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
        .map_err(io::Error::from)?;
    // A dual-stack socket's IPv4 datagrams come from IPv4-mapped addresses.
    let from = msg.address.as_ref().and_then(socket_addr).map(dial::unmapped);
    let mut dst = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv4OrigDstAddr(a) => dst = Some(SocketAddr::from(SockaddrIn::from(a))),
            ControlMessageOwned::Ipv6OrigDstAddr(a) => dst = Some(SocketAddr::from(SockaddrIn6::from(a))),
            _ => {}
        }
    }
    let from = from.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a datagram with no source"))?;
    Ok((msg.bytes, from, dst))
}

/// A socket address nix read, as std's.
fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

/// A direct flow: the client's datagrams sent to the destination from a
/// socket of the local's own (marked, connected to it, so that only its
/// replies come back), and those replies sent to the client from `reply`,
/// bound to the destination. Its thread reads the replies and reports.
struct Direct {
    out: UdpSocket,
    timeout: Duration,
    /// When a datagram last went either way.
    last: Mutex<Instant>,
    /// Bytes up, bytes down, datagrams up, datagrams down, dropped.
    counts: [AtomicU64; 5],
    ended: AtomicBool,
    why: Mutex<Option<End>>,
}

const BYTES_UP: usize = 0;
const BYTES_DOWN: usize = 1;
const SENT_UP: usize = 2;
const SENT_DOWN: usize = 3;
const DROPPED: usize = 4;

impl Direct {
    /// Starts a direct flow from `client` to `dst` with its `first`
    /// datagram; its thread reports to `report`.
    fn start(
        reply: UdpSocket,
        client: SocketAddr,
        dst: SocketAddr,
        timeout: Duration,
        report: Report,
        first: &[u8],
    ) -> Result<Arc<Direct>, String> {
        let out = dial::socket(Domain::for_address(dst), Type::DGRAM)
            .and_then(|s| s.connect(&dst.into()).map(|()| UdpSocket::from(s)))
            .map_err(|e| format!("no socket of the local's own to {dst}: {e}"))?;
        let _ = out.set_read_timeout(Some(timeout));
        if let Ok(from) = out.local_addr() {
            dial::note_own(from, dst);
        }
        let flow = Arc::new(Direct {
            out,
            timeout,
            last: Mutex::new(Instant::now()),
            counts: Default::default(),
            ended: AtomicBool::new(false),
            why: Mutex::new(None),
        });
        let down = Arc::clone(&flow);
        let spawned = COPY_THREADS.spawn(move || {
            let end = down.down(&reply, client);
            let c = |i: usize| down.counts[i].load(Ordering::Relaxed);
            let datagrams = Some([c(SENT_UP), c(SENT_DOWN), c(DROPPED)]);
            report.finish(Outcome { up: c(BYTES_UP), down: c(BYTES_DOWN), end, datagrams });
        });
        spawned.map_err(|e| format!("no thread for the flow: {e}"))?;
        flow.offer(first);
        Ok(flow)
    }

    /// Sends the client's datagram on; false once the flow has ended.
    fn offer(&self, payload: &[u8]) -> bool {
        if self.ended.load(Ordering::Relaxed) {
            return false;
        }
        match self.out.send(payload) {
            Ok(_) => {
                self.moved(BYTES_UP, SENT_UP, payload.len());
                metrics::datagram(Way::Up);
            }
            Err(e) => {
                log::debug!("tproxy udp direct: {e}");
                self.dropped();
            }
        }
        true
    }

    fn moved(&self, bytes: usize, sent: usize, len: usize) {
        self.counts[bytes].fetch_add(len as u64, Ordering::Relaxed);
        self.counts[sent].fetch_add(1, Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn dropped(&self) {
        self.counts[DROPPED].fetch_add(1, Ordering::Relaxed);
        metrics::DATAGRAMS_DROPPED.inc();
    }

    /// How long until it has been quiet for the UDP timeout; zero once ended.
    fn idle_left(&self) -> Duration {
        if self.ended.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let last = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        self.timeout.saturating_sub(last.elapsed())
    }

    /// Ends the flow with `why` (the first reason stays): its thread wakes and reports.
    fn end(&self, why: End) {
        self.why.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(why);
        self.ended.store(true, Ordering::Relaxed);
        let _ = SockRef::from(&self.out).shutdown(Shutdown::Read);
    }

    /// Its thread: replies to the client until the flow ends; returns why.
    fn down(&self, reply: &UdpSocket, client: SocketAddr) -> End {
        let mut buf = vec![0u8; DATAGRAM_MAX];
        while !self.ended.load(Ordering::Relaxed) {
            match self.out.recv(&mut buf) {
                Ok(n) if !self.ended.load(Ordering::Relaxed) => match reply.send_to(&buf[..n], client) {
                    Ok(_) => {
                        self.moved(BYTES_DOWN, SENT_DOWN, n);
                        metrics::datagram(Way::Down);
                    }
                    Err(e) => {
                        log::debug!("tproxy udp to the client {client}: {e}");
                        self.dropped();
                    }
                },
                Ok(_) => break,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if self.idle_left().is_zero() {
                        self.end(End::UdpIdle);
                    }
                }
                // An ICMP error from the destination (port unreachable): it may still answer later.
                Err(e) => log::debug!("tproxy udp direct: {e}"),
            }
        }
        self.why.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or(End::Eof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::testing::TIMEOUT;

    /// A datagram to `to`'s socket from a socket of its own on `from`: what `receive` reads.
    fn sent_and_received(
        to: &str,
        from: &str,
    ) -> Option<(Vec<u8>, SocketAddr, SocketAddr, Option<SocketAddr>)> {
        let udp = match socket(to.parse().unwrap()) {
            Ok(udp) => udp,
            Err(e) => {
                eprintln!("skipped: {e}");
                return None;
            }
        };
        udp.set_read_timeout(Some(TIMEOUT)).unwrap();
        let port = udp.local_addr().unwrap().port();
        let sender = UdpSocket::bind(from).unwrap();
        sender.send_to(b"a datagram", SocketAddr::new(sender.local_addr().unwrap().ip(), port)).unwrap();
        let mut buf = [0u8; 64];
        let (n, source, dst) = receive(&udp, &mut buf).unwrap();
        Some((buf[..n].to_vec(), source, sender.local_addr().unwrap(), dst))
    }

    #[test]
    fn a_datagram_comes_with_its_source_and_its_original_destination() {
        let Some((payload, source, sender, dst)) = sent_and_received("127.0.0.1:0", "127.0.0.1:0") else {
            return;
        };
        assert_eq!((payload.as_slice(), source), (&b"a datagram"[..], sender));
        assert_eq!(dst.map(|d| d.ip()), Some(sender.ip()), "sent to the sender's own address");
    }

    #[test]
    fn a_dual_stack_socket_tells_ipv4_addresses_as_ipv4() {
        let Some((_, source, sender, dst)) = sent_and_received("[::]:0", "127.0.0.1:0") else { return };
        assert_eq!(source, sender, "unmapped");
        assert!(dst.is_some_and(|d| d.is_ipv4()), "{dst:?}");
        if let Some((_, source, sender, dst)) = sent_and_received("[::]:0", "[::1]:0") {
            assert_eq!(source, sender);
            assert!(dst.is_some_and(|d| d.is_ipv6()), "{dst:?}");
        }
    }
}
