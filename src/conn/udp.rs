//! UDP ASSOCIATE (RFC 1928, section 7), carried in trojan's UDP framing
//! inside one TLS connection per association.
//!
//! ```text
//! app ──UDP: SOCKS5 header + data──▶ blocking-local ══TLS: frames══▶ blocking-server ──UDP──▶ target
//! ```
//!
//! Each side runs an association on two threads, one per direction, as a TCP
//! connection runs on two copy threads:
//!
//! - On the local ([`local`]), the up thread waits on the application's UDP
//!   socket and on the SOCKS5 control connection at once: a datagram from the
//!   client (not a fragment) becomes a frame on the stream; the control
//!   connection's end ends the association. The client is the address and
//!   port the request named, or, when it named port 0 (as most clients do),
//!   the first source on the control connection's IP that sends: the
//!   association is bound to it, and anyone else's datagrams are dropped.
//!   With an ACL, each datagram goes where its target's route says: through
//!   the server as a frame, straight to the target from a UDP socket of the
//!   local's own (made at the first such datagram, and watched by the same
//!   thread, which passes its replies back to the client), or nowhere
//!   (dropped and counted). The down thread reads frames and sends each to
//!   that client alone, with the SOCKS5 UDP header.
//! - On the server ([`server`]), the up thread reads frames and sends each
//!   datagram to its target through one UDP socket of the association,
//!   after the egress check (a denied datagram is dropped and counted); the
//!   down thread waits on that socket and frames every reply with its source.
//!
//! - A local's fixed forward ([`Flow`]) has no SOCKS5: one thread reads the
//!   forward's UDP socket for every client and writes each client's
//!   datagrams as frames to the forward's target on that client's own link;
//!   the flow's one thread sends the replies' payloads back from the same
//!   socket, and the forward's thread ends the flows that have been quiet.
//!
//! A frame is read with exact reads; a datagram is never split or merged.
//! The association ends when the stream ends or the control connection
//! closes, and after `--udp-timeout` with no datagram either way. Whoever
//! waits on a UDP socket keeps that time; the thread reading the stream is
//! woken by shutting its socket down.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustls::Connection;
use socket2::{Domain, SockRef, Type};

use crate::error::Error;
use crate::metrics::{self, Way};
use crate::net::dial;
use crate::net::egress::{Policy, BLOCKED_BY_ACL};
use crate::net::poll::{wait, wait_any, Ready};
use crate::proto::acl::Route;
use crate::proto::addr::Target;
use crate::proto::{socks5, wire};
use crate::workers::COPY_THREADS;

use super::admission::Place;
use super::end::{Break, End, Side, Step};
use super::report::Outcome;
use super::split::{self, ReadHalf, WriteHalf};
use super::timeouts::Timeouts;

/// The local's side of an association: the application's control
/// connection, the UDP socket it was told to send to, whose datagrams
/// that socket takes, and, with an ACL, where each goes.
pub struct Client {
    /// The SOCKS5 connection that asked for the association; its end ends it.
    pub control: TcpStream,
    /// The socket whose address the client was given.
    pub udp: UdpSocket,
    /// Datagrams are taken only from this address,
    pub ip: IpAddr,
    /// and from this port; when it is 0, from the port of the first datagram.
    pub port: u16,
    /// With an ACL, where each datagram goes; `None`: all through the server.
    pub routing: Option<Routing>,
    /// The connection's place under the cap, which a name lookup holds.
    pub place: Place,
}

/// How an association with an ACL sends its datagrams.
pub struct Routing {
    /// Each datagram's route, by its target (and counted).
    pub route: RouteFn,
    /// A new link to a server, its header asking for UDP, for when the last
    /// one has ended (the server closes a link that carried nothing for its
    /// `--udp-timeout`, while direct datagrams may still flow).
    pub relink: Relink,
}

/// Decides a datagram's route by its target (and counts it).
pub type RouteFn = Box<dyn FnMut(&Target) -> Route + Send>;

/// Opens a new link to a server whose header asks for UDP.
pub type Relink = Box<dyn FnMut() -> Result<(TcpStream, Connection), Error> + Send>;

/// Runs a local's association and returns at once. `stream` and `conn` are
/// the TLS connection to the server, the trojan header already sent. `done`
/// gets the outcome.
///
/// Without an ACL the association is that link's: it ends when the link
/// ends. With one ([`Routing`]), a datagram routed direct leaves from a UDP
/// socket of the local's own, made at the first one, and only replies from
/// the addresses the association has sent to go back to the client; a
/// blocked one is dropped. The link to the server is then the
/// association's to replace: when it ends (the server's own quiet time,
/// while the direct datagrams flow), the association goes on, and the next
/// proxied datagram opens another.
pub fn local(
    client: Client,
    stream: TcpStream,
    conn: impl Into<Connection>,
    timeouts: &Timeouts,
    done: impl FnOnce(Outcome) + Send + 'static,
) {
    let (reader, writer, assoc) = start(stream, conn.into(), timeouts, done);
    let Client { control, udp, ip, port, routing, place } = client;
    let udp = Arc::new(udp);
    // The client's address and port: the one the request named, or else the
    // first source on the client's IP to use the socket. Datagrams are taken
    // from it alone, and replies go to it alone.
    let named = (port != 0).then(|| SocketAddr::new(ip, port));
    let replies_to: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(named));
    let link = Link { writer, stream: Arc::clone(&assoc.stream), alive: Arc::new(AtomicBool::new(true)) };
    let down = Down { udp: Arc::clone(&udp), replies_to: Arc::clone(&replies_to), routed: routing.is_some() };
    let down_too = down.clone();
    // This thread counts as running until both are started (see `start`), so
    // that neither can report the association before the other has begun.
    let (first, alive) = (Arc::clone(&assoc), Arc::clone(&link.alive));
    let connect = timeouts.connect;
    let timeouts = *timeouts;
    spawn(&assoc, move |a| {
        let replies_up = Arc::clone(&down.replies_to);
        let accept = |from: SocketAddr| {
            let mut bound = replies_up.lock().unwrap_or_else(PoisonError::into_inner);
            match *bound {
                Some(client) => from == client,
                None if from.ip() == ip => {
                    *bound = Some(from);
                    true
                }
                None => false,
            }
        };
        let mut up = Up { link, routing, place, connect, timeouts, down, direct: None, relinked: None };
        let why = local_up(a, &control, &udp, accept, &mut up);
        a.note(why);
        let _ = up.link.writer.close();
        let _ = up.link.stream.shutdown(Shutdown::Read);
        let _ = control.shutdown(Shutdown::Both);
    });
    spawn_down(&first, reader, alive, down_too);
    first.finish();
}

/// Starts a link's down thread: frames from the server to the client.
/// Without routing, the link's end is the association's; with it, only the
/// link's.
fn spawn_down(assoc: &Arc<Association>, reader: ReadHalf, alive: Arc<AtomicBool>, down: Down) {
    let (routed, dead) = (down.routed, Arc::clone(&alive));
    let spawned = try_spawn(assoc, move |a| {
        let why = local_down(a, reader, &down.udp, &down.replies_to);
        alive.store(false, Ordering::Relaxed);
        if down.routed && !a.ending() {
            log::debug!("udp association: its link to the server ended ({why}); the next proxied datagram opens another");
        } else {
            a.end_reading(why, &down.udp);
        }
    });
    if let Err(e) = spawned {
        // No thread reads the link: with routing, the next proxied datagram
        // tries another; without, the association ends.
        dead.store(false, Ordering::Relaxed);
        if !routed {
            assoc.note(End::NoThread(e));
            let _ = assoc.stream.shutdown(Shutdown::Both);
        }
    }
}

/// The link to a server the up thread writes to: its stream, and whether
/// its down thread still reads it.
struct Link {
    writer: WriteHalf,
    stream: Arc<TcpStream>,
    alive: Arc<AtomicBool>,
}

/// What a down thread needs: the client's socket and address, and whether
/// the association outlives its link.
#[derive(Clone)]
struct Down {
    udp: Arc<UdpSocket>,
    replies_to: Arc<Mutex<Option<SocketAddr>>>,
    routed: bool,
}

/// What the up thread keeps: the link, the routing, and the direct socket.
struct Up {
    link: Link,
    routing: Option<Routing>,
    place: Place,
    connect: Duration,
    timeouts: Timeouts,
    down: Down,
    direct: Option<Direct>,
    /// When the last attempt to replace the link failed.
    relinked: Option<Instant>,
}

/// The local's own UDP socket for direct datagrams, the addresses it has
/// sent to (only their replies are passed back), and the addresses names
/// resolved to.
struct Direct {
    udp: UdpSocket,
    sent_to: VecDeque<SocketAddr>,
    resolved: HashMap<(String, u16), SocketAddr>,
}

/// The most destinations and names an association's direct socket remembers.
const DIRECT_MEMORY: usize = 256;

/// How long after a failed attempt to replace the link to a server the
/// next proxied datagram is dropped without another.
const RELINK_BACKOFF: Duration = Duration::from_secs(1);

/// One client address's datagrams through a local's fixed forward
/// (`--forward`): an association whose client sends plain datagrams to the
/// forward's own UDP socket, all to one target.
///
/// The forward's one thread reads that socket for every client and hands
/// each datagram to its client's flow ([`Flow::offer`]), which writes it as
/// a frame to the target on the flow's link to a server. While the link is
/// being made, the frames wait (up to [`FLOW_WAITING_MAX`] bytes; more are
/// dropped) and go with the header ([`Flow::waiting`]). The flow's own
/// thread, its down thread, reads the frames back and sends each payload to
/// the client from the forward's socket, as a plain datagram (from an
/// address target, only the target's). The flow ends after `--udp-timeout`
/// with no datagram either way ([`Flow::idle_left`], [`Flow::end`], which
/// the forward's thread calls), or when its link ends; its client's next
/// datagram then starts another.
pub struct Flow {
    /// The forward's socket, which replies leave from,
    udp: Arc<UdpSocket>,
    /// to this client.
    client: SocketAddr,
    /// Where every datagram goes.
    target: Target,
    timeouts: Timeouts,
    state: Mutex<FlowState>,
}

/// Where a [`Flow`] is.
enum FlowState {
    /// The link to a server is being made. Frames wait, with their payloads'
    /// lengths; `dropped` did not fit; `done` reports the flow, and `ending`
    /// is why it was told to end meanwhile.
    Linking { frames: Vec<u8>, lens: Vec<usize>, dropped: u64, done: OnDone, ending: Option<End> },
    /// The link is up: the forward's thread writes, the down thread reads.
    Open { writer: WriteHalf, assoc: Arc<Association> },
    /// Over: the association reports once its down thread is done.
    Ended,
}

/// Frames, in bytes, that wait for a flow's link to a server; a datagram
/// that would pass it is dropped (one always fits in an empty queue).
pub const FLOW_WAITING_MAX: usize = 64 * 1024;

/// How long one write of a frame to a flow's link may wait: the forward's
/// one thread writes for every client, so a link that takes nothing for
/// this long ends its flow rather than holding up the others.
pub const FLOW_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The frames a flow held when its link came, sent after the header (in
/// its first record), and their payloads' lengths.
pub struct Waiting {
    /// The frames, one after another.
    pub frames: Vec<u8>,
    lens: Vec<usize>,
}

impl Flow {
    /// A flow of `client`'s datagrams to `target`, replies sent from `udp`;
    /// it waits for its link ([`Flow::opened`] or [`Flow::failed`]), and
    /// `done` gets its outcome.
    pub fn new(
        udp: Arc<UdpSocket>,
        client: SocketAddr,
        target: Target,
        timeouts: &Timeouts,
        done: impl FnOnce(Outcome) + Send + 'static,
    ) -> Arc<Flow> {
        let state = FlowState::Linking {
            frames: Vec::new(),
            lens: Vec::new(),
            dropped: 0,
            done: Box::new(done),
            ending: None,
        };
        Arc::new(Flow { udp, client, target, timeouts: *timeouts, state: Mutex::new(state) })
    }

    fn lock(&self) -> MutexGuard<'_, FlowState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the client's datagram `payload` (framed in `frame`, a buffer
    /// the caller reuses): written to the link, kept until the link is up,
    /// or dropped and counted. False when the flow has ended: the caller
    /// starts another for the datagram.
    pub fn offer(&self, payload: &[u8], frame: &mut Vec<u8>) -> bool {
        let mut state = self.lock();
        match &mut *state {
            FlowState::Ended | FlowState::Linking { ending: Some(_), .. } => false,
            FlowState::Linking { frames, lens, dropped, .. } => {
                let at = frames.len();
                wire::encode_udp(&self.target, payload, frames);
                if at > 0 && frames.len() > FLOW_WAITING_MAX {
                    frames.truncate(at);
                    metrics::DATAGRAMS_DROPPED.inc();
                    *dropped += 1;
                } else {
                    lens.push(payload.len());
                }
                true
            }
            FlowState::Open { writer, assoc } => {
                frame.clear();
                wire::encode_udp(&self.target, payload, frame);
                match writer.write_all(frame) {
                    Ok(()) => {
                        assoc.moved(UP, payload.len());
                        true
                    }
                    Err(e) => {
                        let why = End::Broke(Side::Server, Break::of(e));
                        self.close(state, why, Shutdown::Both);
                        false
                    }
                }
            }
        }
    }

    /// The frames that wait, to send with the header; they count as sent
    /// once [`opened`](Flow::opened) is called with them.
    pub fn waiting(&self) -> Waiting {
        match &mut *self.lock() {
            FlowState::Linking { frames, lens, .. } => {
                Waiting { frames: std::mem::take(frames), lens: std::mem::take(lens) }
            }
            _ => Waiting { frames: Vec::new(), lens: Vec::new() },
        }
    }

    /// The link is up (`stream` and `conn`), its header sent with `sent`:
    /// the frames that came meanwhile follow, and the down thread starts.
    /// A flow told to end meanwhile closes the link and reports.
    pub fn opened(self: &Arc<Self>, stream: TcpStream, conn: impl Into<Connection>, sent: Waiting) {
        let mut state = self.lock();
        let (frames, lens, dropped, done) = match std::mem::replace(&mut *state, FlowState::Ended) {
            FlowState::Linking { frames, lens, dropped, done, ending: None } => (frames, lens, dropped, done),
            FlowState::Linking { dropped, done, ending: Some(why), lens, .. } => {
                drop(state);
                close_link(&stream, conn.into());
                for _ in &sent.lens {
                    metrics::datagram(Way::Up);
                }
                let up: usize = sent.lens.iter().sum();
                let count = [sent.lens.len() as u64, 0, dropped + lens.len() as u64];
                return done(Outcome { up: up as u64, down: 0, end: why, datagrams: Some(count) });
            }
            other => {
                // Only a linking flow is opened.
                *state = other;
                return;
            }
        };
        let (reader, mut writer, assoc) = start(stream, conn.into(), &self.timeouts, done);
        let _ = assoc.stream.set_write_timeout(Some(FLOW_WRITE_TIMEOUT));
        assoc.counts[DROPPED].fetch_add(dropped, Ordering::Relaxed);
        for len in sent.lens {
            assoc.moved(UP, len);
        }
        if !frames.is_empty() {
            if let Err(e) = writer.write_all(&frames) {
                *state = FlowState::Open { writer, assoc };
                return self.close(state, End::Broke(Side::Server, Break::of(e)), Shutdown::Both);
            }
            for len in lens {
                assoc.moved(UP, len);
            }
        }
        let (flow, udp, client) = (Arc::clone(self), Arc::clone(&self.udp), self.client);
        let from = match &self.target {
            Target::Ip(addr) => Some(*addr),
            Target::Domain(..) => None,
        };
        let spawned = try_spawn(&assoc, move |a| {
            let why = flow_down(a, reader, &udp, client, from);
            flow.close(flow.lock(), why, Shutdown::Both);
        });
        *state = FlowState::Open { writer, assoc };
        if let Err(e) = spawned {
            self.close(state, End::NoThread(e), Shutdown::Both);
        }
    }

    /// No link could be made, or the header not sent: the flow ends with
    /// `end`, and the frames it held (`unsent` among them) are dropped.
    pub fn failed(&self, end: End, unsent: Waiting) {
        let mut state = self.lock();
        let FlowState::Linking { lens, dropped, done, ending, .. } =
            std::mem::replace(&mut *state, FlowState::Ended)
        else {
            return;
        };
        drop(state);
        let lost = (lens.len() + unsent.lens.len()) as u64;
        for _ in 0..lost {
            metrics::DATAGRAMS_DROPPED.inc();
        }
        let end = ending.unwrap_or(end);
        done(Outcome { up: 0, down: 0, end, datagrams: Some([0, 0, dropped + lost]) });
    }

    /// Ends the flow with `why` (its quiet time is up, the forward stops).
    /// A linking flow ends once its link is made or has failed.
    pub fn end(&self, why: End) {
        let mut state = self.lock();
        if let FlowState::Linking { ending, .. } = &mut *state {
            ending.get_or_insert(why);
            return;
        }
        self.close(state, why, Shutdown::Read);
    }

    /// How long until the flow has been quiet for the UDP timeout: zero
    /// once it has ended, the whole timeout while its link is being made.
    pub fn idle_left(&self) -> Duration {
        match &*self.lock() {
            FlowState::Linking { ending: None, .. } => self.timeouts.udp,
            FlowState::Linking { .. } | FlowState::Ended => Duration::ZERO,
            FlowState::Open { assoc, .. } => assoc.idle_left(),
        }
    }

    /// Ends an open flow with `why`, first reason first: close_notify to
    /// the server, then the link's socket shut down `how` (its read side
    /// wakes the down thread), and the flow's own share of the association
    /// given up (it reports once the down thread is done too).
    fn close(&self, mut state: MutexGuard<'_, FlowState>, why: End, how: Shutdown) {
        let FlowState::Open { mut writer, assoc } = std::mem::replace(&mut *state, FlowState::Ended) else {
            return;
        };
        drop(state);
        assoc.note(why);
        let _ = writer.close();
        let _ = assoc.stream.shutdown(how);
        assoc.finish();
    }
}

/// Closes a link that is no longer wanted: close_notify, under a short deadline.
fn close_link(stream: &TcpStream, mut conn: Connection) {
    let _ = stream.set_write_timeout(Some(FLOW_WRITE_TIMEOUT));
    conn.send_close_notify();
    while conn.wants_write() {
        if conn.write_tls(&mut &*stream).is_err() {
            break;
        }
    }
}

/// A flow's down thread: frames from the server, each payload sent to the
/// client as a plain datagram; with `from`, only those from that address.
fn flow_down(
    a: &Association,
    mut reader: ReadHalf,
    udp: &UdpSocket,
    client: SocketAddr,
    from: Option<SocketAddr>,
) -> End {
    let mut payload = Vec::new();
    let mut frames = reader.burst(RAW_BUF);
    loop {
        let source = match wire::read_udp(&mut frames, &mut payload) {
            Ok(Some(t)) => t,
            Ok(None) => return End::Eof,
            Err(e) => return a.stream_failed(e),
        };
        if let (Some(want), Target::Ip(got)) = (from, &source) {
            if unmapped(got.ip()) != unmapped(want.ip()) || got.port() != want.port() {
                log::debug!("udp from {source}, not the forward's target: dropped");
                a.dropped();
                continue;
            }
        }
        match udp.send_to(&payload, client) {
            Ok(_) => a.moved(DOWN, payload.len()),
            Err(e) => {
                log::debug!("udp to the client {client}: {e}");
                a.dropped();
            }
        }
    }
}

/// The server's side of an association: the UDP socket its datagrams leave
/// from, the egress policy each target is checked against, and the
/// connection's place, which a name lookup holds.
pub struct Targets {
    /// From [`server_socket`].
    pub udp: UdpSocket,
    /// Which target addresses may be reached.
    pub policy: Policy,
    /// The connection's place under the cap.
    pub place: Place,
}

/// Runs a server's association and returns at once. `stream` and `conn`
/// are the TLS connection from the local, whose header asked for UDP;
/// `early` are the bytes that came after the header (the first frames). A
/// target's name is looked up under the connect deadline.
pub fn server(
    stream: TcpStream,
    conn: impl Into<Connection>,
    early: Vec<u8>,
    targets: Targets,
    timeouts: &Timeouts,
    done: impl FnOnce(Outcome) + Send + 'static,
) {
    let (reader, mut writer, assoc) = start(stream, conn.into(), timeouts, done);
    let Targets { udp, policy, place } = targets;
    let udp = Arc::new(udp);
    let connect = timeouts.connect;
    let udp_up = Arc::clone(&udp);
    spawn(&assoc, move |a| {
        let why = server_up(a, reader, &early, &udp_up, &policy, &place, connect);
        a.end_reading(why, &udp_up);
    });
    spawn(&assoc, move |a| {
        let why = server_down(a, &mut writer, &udp);
        a.end_writing(why, &mut writer);
    });
    // Both started: this thread no longer counts (see `start`).
    assoc.finish();
}

/// A UDP socket for a server's association, or a local's direct datagrams:
/// IPv6 with IPv4 mapped in, so that one socket reaches both; IPv4 alone
/// where the host has no IPv6. A local's carries its `--mark`.
pub fn server_socket() -> io::Result<UdpSocket> {
    let dual = dial::socket(Domain::IPV6, Type::DGRAM).and_then(|s| {
        s.set_only_v6(false)?;
        s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
        Ok(s)
    });
    match dual {
        Ok(s) => Ok(s.into()),
        Err(_) => {
            let s = dial::socket(Domain::IPV4, Type::DGRAM)?;
            s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
            Ok(s.into())
        }
    }
}

/// The largest datagram a UDP socket hands over (IPv4's limit is 65,507
/// bytes of payload; a SOCKS5 header comes on top on the local).
const DATAGRAM_MAX: usize = 65_535;

/// Raw TLS bytes read at once by the thread that reads frames.
const RAW_BUF: usize = 16 * 1024 + 256;

/// The local's up thread: client datagrams into frames (or, routed direct,
/// out of the local's own socket, whose replies it also passes back),
/// until the control connection ends, the stream fails (without routing)
/// or the association is quiet too long.
fn local_up(
    a: &Arc<Association>,
    control: &TcpStream,
    udp: &UdpSocket,
    mut accept: impl FnMut(SocketAddr) -> bool,
    up: &mut Up,
) -> End {
    let mut buf = vec![0u8; DATAGRAM_MAX];
    let mut frame = Vec::new();
    let mut turn = false;
    loop {
        let left = a.idle_left();
        if left.is_zero() {
            return End::UdpIdle;
        }
        // The control connection first: a stream of datagrams cannot hide
        // its end. The two UDP sockets take turns at being looked at first,
        // so that neither's stream of datagrams hides the other's.
        turn = !turn;
        let ready = match &up.direct {
            Some(d) if turn => {
                wait_any(&[control.as_fd(), d.udp.as_fd(), udp.as_fd()], left).map(|r| match r {
                    Some(1) => Some(2),
                    Some(2) => Some(1),
                    other => other,
                })
            }
            Some(d) => wait_any(&[control.as_fd(), udp.as_fd(), d.udp.as_fd()], left),
            None => wait_any(&[control.as_fd(), udp.as_fd()], left),
        };
        match ready {
            Ok(None) => continue,
            Ok(Some(0)) => return control_ended(control),
            Ok(Some(1)) => {}
            Ok(Some(_)) => {
                if let Some(d) = &mut up.direct {
                    direct_reply(a, d, udp, &up.down.replies_to, &mut buf, &mut frame);
                }
                continue;
            }
            Err(e) => return End::Failed(Step::Wait, Error::Io(e)),
        }
        let (n, from) = match udp.recv_from(&mut buf) {
            // Shut down by the other thread at the end of the association.
            Ok((0, _)) if a.ending() => return End::Eof,
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return End::Failed(Step::Udp, Error::Io(e)),
        };
        if !accept(from) {
            log::debug!("udp datagram from {from}, not the client: dropped");
            a.dropped();
            continue;
        }
        let (target, at) = match socks5::read_udp_header(&buf[..n]) {
            Ok(got) => got,
            Err(e) => {
                log::debug!("udp datagram from {from}: {e}: dropped");
                a.dropped();
                continue;
            }
        };
        let payload = &buf[at..n];
        let route = up.routing.as_mut().map_or(Route::Proxy, |r| (r.route)(&target));
        match route {
            Route::Proxy => {
                frame.clear();
                wire::encode_udp(&target, payload, &mut frame);
                if let Some(why) = up.proxy(a, &frame) {
                    if up.routing.is_none() {
                        break why;
                    }
                    log::debug!("udp to {target} through the server: {why}: dropped");
                    a.dropped();
                    continue;
                }
                a.moved(UP, payload.len());
            }
            Route::Direct => match up.send_direct(&target, payload) {
                Ok(()) => a.moved(UP, payload.len()),
                Err(why) => {
                    log::debug!("udp to {target} direct: {why}: dropped");
                    a.dropped();
                }
            },
            Route::Block => {
                log::debug!("udp to {target}: blocked by the acl: dropped");
                a.dropped();
            }
        }
    }
}

impl Up {
    /// Writes a frame to the server, first replacing a link that has ended
    /// (with routing); the end or failure that stopped it, if it was not sent.
    fn proxy(&mut self, a: &Arc<Association>, frame: &[u8]) -> Option<End> {
        if !self.link.alive.load(Ordering::Relaxed) {
            if let Err(why) = self.relink(a) {
                return Some(why);
            }
        }
        match self.link.writer.write_all(frame) {
            Ok(()) => None,
            Err(e) => {
                // With routing, the next proxied datagram opens another link.
                self.link.alive.store(false, Ordering::Relaxed);
                Some(End::Failed(Step::Server, Error::Io(e)))
            }
        }
    }

    /// Opens a new link to a server in place of one that has ended, and
    /// starts its down thread; at most one attempt per [`RELINK_BACKOFF`].
    fn relink(&mut self, a: &Arc<Association>) -> Result<(), End> {
        let gone = || End::Failed(Step::Server, Error::Protocol("the link to the server has ended"));
        let Some(routing) = &mut self.routing else { return Err(gone()) };
        if self.relinked.is_some_and(|t| t.elapsed() < RELINK_BACKOFF) {
            return Err(gone());
        }
        let (stream, conn) = (routing.relink)().map_err(|e| {
            self.relinked = Some(Instant::now());
            End::Failed(Step::Server, e)
        })?;
        self.relinked = None;
        let (reader, writer, stream) = link_halves(stream, conn, &self.timeouts);
        let old = std::mem::replace(
            &mut self.link,
            Link { writer, stream, alive: Arc::new(AtomicBool::new(true)) },
        );
        drop(old);
        log::debug!("udp association: a new link to the server");
        spawn_down(a, reader, Arc::clone(&self.link.alive), self.down.clone());
        Ok(())
    }

    /// Sends a datagram routed direct from the local's own socket, made
    /// (and counted under the cap) at the first one; a name is resolved
    /// once per association, under the connect deadline.
    fn send_direct(&mut self, target: &Target, payload: &[u8]) -> Result<(), String> {
        if self.direct.is_none() {
            // One descriptor more than the association was counted with.
            self.place.hold(1).map_err(|why| why.to_string())?;
            let udp = server_socket().map_err(|e| format!("no socket of the local's own: {e}"))?;
            self.direct = Some(Direct { udp, sent_to: VecDeque::new(), resolved: HashMap::new() });
        }
        let Some(d) = &mut self.direct else { return Err("no socket".to_owned()) };
        let to = match target {
            Target::Ip(addr) => *addr,
            Target::Domain(name, port) => match d.resolved.get(&(name.clone(), *port)) {
                Some(addr) => *addr,
                None => {
                    let until = Instant::now() + self.connect;
                    let found = dial::resolve(name, *port, until, &self.place).map_err(|e| e.to_string())?;
                    let addr = found.first().copied().ok_or("name resolved to no address")?;
                    if d.resolved.len() >= DIRECT_MEMORY {
                        d.resolved.clear();
                    }
                    d.resolved.insert((name.clone(), *port), addr);
                    addr
                }
            },
        };
        let to = SocketAddr::from((to_v6(to.ip()), to.port()));
        if !d.sent_to.contains(&to) {
            if d.sent_to.len() >= DIRECT_MEMORY {
                d.sent_to.pop_front();
            }
            d.sent_to.push_back(to);
        }
        d.udp.send_to(payload, to).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Passes a reply that came to the local's own socket back to the client,
/// with the SOCKS5 UDP header naming its source, if it comes from an
/// address the association has sent to.
fn direct_reply(
    a: &Association,
    direct: &Direct,
    udp: &UdpSocket,
    replies_to: &Mutex<Option<SocketAddr>>,
    buf: &mut [u8],
    datagram: &mut Vec<u8>,
) {
    let (n, from) = match direct.udp.recv_from(buf) {
        Ok(got) => got,
        Err(e) => return log::debug!("udp direct socket: {e}"),
    };
    let from = SocketAddr::from((to_v6(from.ip()), from.port()));
    if !direct.sent_to.contains(&from) {
        log::debug!("udp from {from}, which the association has not sent to: dropped");
        return a.dropped();
    }
    let Some(to) = *replies_to.lock().unwrap_or_else(PoisonError::into_inner) else {
        return a.dropped();
    };
    datagram.clear();
    socks5::write_udp_header(&Target::Ip(SocketAddr::new(unmapped(from.ip()), from.port())), datagram);
    datagram.extend_from_slice(&buf[..n]);
    match udp.send_to(datagram, to) {
        Ok(_) => a.moved(DOWN, n),
        Err(e) => {
            log::debug!("udp to the client {to}: {e}");
            a.dropped();
        }
    }
}

/// Sends `payload` to `target` from `udp` (made by [`server_socket`]): a
/// name is resolved until `until` (the lookup holds `place`), and the
/// datagram goes to the first address the `policy` keeps that the socket
/// can reach. The error says why it was not sent.
fn send_to_target(
    udp: &UdpSocket,
    target: &Target,
    payload: &[u8],
    until: Instant,
    place: &Place,
    policy: &Policy,
) -> Result<(), String> {
    if policy.refuses_name(target) {
        return Err(format!("{DENIED}: {BLOCKED_BY_ACL}"));
    }
    let mut addrs = match target {
        Target::Ip(addr) => vec![*addr],
        Target::Domain(name, port) => dial::resolve(name, *port, until, place).map_err(|e| e.to_string())?,
    };
    if let Some(why) = policy.keep_permitted(target, &mut addrs) {
        return Err(format!("{DENIED}: {why}"));
    }
    let v6 = udp.local_addr().is_ok_and(|a| a.is_ipv6());
    let Some(to) = addrs.into_iter().find(|addr| v6 || addr.is_ipv4()) else {
        return Err("no IPv4 address, and no IPv6 here".to_owned());
    };
    let to = if v6 { SocketAddr::from((to_v6(to.ip()), to.port())) } else { to };
    udp.send_to(payload, to).map(|_| ()).map_err(|e| e.to_string())
}

/// What [`send_to_target`]'s error starts with when the policy refused every address.
const DENIED: &str = "denied";

/// Why the control connection woke its waiter: it ended (the usual way an
/// association ends), failed, or sent bytes it should not have (which ends
/// the association too: the control connection carries nothing after the
/// request).
fn control_ended(control: &TcpStream) -> End {
    let mut byte = [0u8; 1];
    match (&*control).read(&mut byte) {
        Ok(0) => End::ControlClosed,
        Ok(_) => End::ControlBytes,
        Err(e) => End::Failed(Step::Control, Error::Io(e)),
    }
}

/// The local's down thread: frames from the server to the client.
fn local_down(
    a: &Association,
    mut reader: ReadHalf,
    udp: &UdpSocket,
    replies_to: &Mutex<Option<SocketAddr>>,
) -> End {
    let mut payload = Vec::new();
    let mut datagram = Vec::new();
    let mut frames = reader.burst(RAW_BUF);
    loop {
        let source = match wire::read_udp(&mut frames, &mut payload) {
            Ok(Some(t)) => t,
            Ok(None) => return End::Eof,
            Err(e) => return a.stream_failed(e),
        };
        let Some(to) = *replies_to.lock().unwrap_or_else(PoisonError::into_inner) else {
            a.dropped();
            continue;
        };
        datagram.clear();
        socks5::write_udp_header(&source, &mut datagram);
        datagram.extend_from_slice(&payload);
        match udp.send_to(&datagram, to) {
            Ok(_) => a.moved(DOWN, payload.len()),
            Err(e) => {
                log::debug!("udp to the client {to}: {e}");
                a.dropped();
            }
        }
    }
}

/// The server's up thread: frames from the local to their targets.
fn server_up(
    a: &Association,
    mut reader: ReadHalf,
    early: &[u8],
    udp: &UdpSocket,
    policy: &Policy,
    place: &Place,
    connect: Duration,
) -> End {
    let mut payload = Vec::new();
    let mut frames = early.chain(reader.burst(RAW_BUF));
    loop {
        let target = match wire::read_udp(&mut frames, &mut payload) {
            Ok(Some(t)) => t,
            Ok(None) => return End::Eof,
            Err(e) => return a.stream_failed(e),
        };
        let until = Instant::now() + connect;
        match send_to_target(udp, &target, &payload, until, place, policy) {
            Ok(()) => a.moved(UP, payload.len()),
            Err(why) => {
                if why.starts_with(DENIED) {
                    metrics::EGRESS_DENIALS.inc();
                }
                log::debug!("udp to {target}: {why}: dropped");
                a.dropped();
            }
        }
    }
}

/// The server's down thread: replies to frames, until the association is
/// quiet too long or the other thread has ended it.
fn server_down(a: &Association, writer: &mut WriteHalf, udp: &UdpSocket) -> End {
    let mut buf = vec![0u8; DATAGRAM_MAX];
    let mut frame = Vec::new();
    loop {
        let (n, from) = match next_datagram(a, udp, &*a.stream, false, &mut buf) {
            Next::Datagram(n, from) => (n, from),
            // The stream failed or was shut down: the up thread reports why.
            Next::Other => break End::Eof,
            Next::End(why) => break why,
        };
        let from = SocketAddr::new(unmapped(from.ip()), from.port());
        frame.clear();
        wire::encode_udp(&Target::Ip(from), &buf[..n], &mut frame);
        if let Err(e) = writer.write_all(&frame) {
            break End::Failed(Step::Client, Error::Io(e));
        }
        a.moved(DOWN, n);
    }
}

/// What waiting for the next datagram gave.
enum Next {
    /// One of this length, from this address, is in the buffer.
    Datagram(usize, SocketAddr),
    /// The other socket woke the wait.
    Other,
    /// The association is over, for this reason.
    End(End),
}

/// Waits for the next datagram on `udp`, watching `other` too (for bytes as
/// well as errors, with `other_data`), within the association's timeout.
fn next_datagram(
    a: &Association,
    udp: &UdpSocket,
    other: &impl AsFd,
    other_data: bool,
    buf: &mut [u8],
) -> Next {
    loop {
        let left = a.idle_left();
        if left.is_zero() {
            return Next::End(End::UdpIdle);
        }
        match wait(udp, other, other_data, left) {
            // A busy UDP socket wins every tie: look at the other one too, so
            // that a stream of datagrams cannot hide the end of the control
            // connection.
            Ok(Ready::First)
                if other_data && matches!(wait(other, udp, false, Duration::ZERO), Ok(Ready::First)) =>
            {
                return Next::Other
            }
            Ok(Ready::First) => {}
            Ok(Ready::Second) => return Next::Other,
            Ok(Ready::Neither) => continue,
            Err(e) => return Next::End(End::Failed(Step::Wait, Error::Io(e))),
        }
        match udp.recv_from(buf) {
            // Shut down by the other thread at the end of the association.
            Ok((0, _)) if a.ending() => return Next::End(End::Eof),
            Ok((n, from)) => return Next::Datagram(n, from),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Next::End(End::Failed(Step::Udp, Error::Io(e))),
        }
    }
}

/// Splits the stream and sets up what an association's threads share.
fn start(
    stream: TcpStream,
    conn: Connection,
    timeouts: &Timeouts,
    done: impl FnOnce(Outcome) + Send + 'static,
) -> (ReadHalf, WriteHalf, Arc<Association>) {
    metrics::UDP_ASSOCIATIONS.inc();
    let (reader, writer, stream) = link_halves(stream, conn, timeouts);
    (reader, writer, Arc::new(Association::new(stream, timeouts.udp, Box::new(done))))
}

/// A link's two halves, and its socket. The deadlines of the handshake are
/// over: the reading thread blocks until the other one wakes it, and a
/// write gives up after the idle time.
fn link_halves(
    stream: TcpStream,
    conn: Connection,
    timeouts: &Timeouts,
) -> (ReadHalf, WriteHalf, Arc<TcpStream>) {
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(Some(timeouts.idle));
    let stream = Arc::new(stream);
    let (reader, writer) = split::split(Arc::clone(&stream), conn, false);
    (reader, writer, stream)
}

/// Starts `job` on a copy thread; if none can be started, the association
/// ends and the job counts as done.
fn spawn(assoc: &Arc<Association>, job: impl FnOnce(&Arc<Association>) + Send + 'static) {
    if let Err(e) = try_spawn(assoc, job) {
        assoc.note(End::NoThread(e));
        let _ = assoc.stream.shutdown(Shutdown::Both);
    }
}

/// Starts `job` on a copy thread, counted among the association's running
/// threads until it returns.
fn try_spawn(
    assoc: &Arc<Association>,
    job: impl FnOnce(&Arc<Association>) + Send + 'static,
) -> io::Result<()> {
    assoc.enter();
    let mine = Arc::clone(assoc);
    COPY_THREADS
        .spawn(move || {
            job(&mine);
            mine.finish();
        })
        .inspect_err(|_| assoc.finish())
}

/// What runs when an association has ended.
type OnDone = Box<dyn FnOnce(Outcome) + Send>;

/// An association's state, shared by its two threads.
struct Association {
    timeout: Duration,
    start: Instant,
    /// Milliseconds from `start` to the last datagram either way.
    last: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
    /// Datagrams up, down and dropped.
    counts: [AtomicU64; 3],
    /// The stream's socket: shut down to end the association.
    stream: Arc<TcpStream>,
    end: Mutex<Option<End>>,
    /// Threads running (and the one starting them, until it has), and what
    /// the last to finish calls with the outcome.
    done: Mutex<(usize, Option<OnDone>)>,
}

const UP: usize = 0;
const DOWN: usize = 1;
const DROPPED: usize = 2;

impl Association {
    fn new(stream: Arc<TcpStream>, timeout: Duration, done: OnDone) -> Association {
        Association {
            timeout,
            start: Instant::now(),
            last: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            counts: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            stream,
            end: Mutex::new(None),
            // The thread that starts the association counts until it has started its threads.
            done: Mutex::new((1, Some(done))),
        }
    }

    fn moved(&self, way: usize, bytes: usize) {
        metrics::datagram(if way == UP { Way::Up } else { Way::Down });
        let total = if way == UP { &self.up } else { &self.down };
        total.fetch_add(bytes as u64, Ordering::Relaxed);
        self.counts[way].fetch_add(1, Ordering::Relaxed);
        self.last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn dropped(&self) {
        metrics::DATAGRAMS_DROPPED.inc();
        self.counts[DROPPED].fetch_add(1, Ordering::Relaxed);
    }

    /// How long until the association has been quiet for its timeout.
    fn idle_left(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        (last + self.timeout).saturating_sub(self.start.elapsed())
    }

    /// Whether a reason to end has been given already (by the other thread).
    fn ending(&self) -> bool {
        self.end.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Records why the association ends; the first reason is the one reported.
    fn note(&self, why: End) {
        self.end.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(why);
    }

    /// How a stream that failed is reported: as the end already given (the
    /// other thread shut it down), or as the error.
    fn stream_failed(&self, e: Error) -> End {
        if self.ending() {
            return End::Eof;
        }
        End::Failed(Step::Stream, e)
    }

    /// Ends the association from the thread that writes the stream: the
    /// reason first, then close_notify, then the stream's read side is shut
    /// down, which wakes the thread reading it.
    fn end_writing(&self, why: End, writer: &mut WriteHalf) {
        self.note(why);
        let _ = writer.close();
        let _ = self.stream.shutdown(Shutdown::Read);
    }

    /// Ends the association from the thread that reads the stream: the
    /// reason first, then the UDP socket's read side is shut down, which
    /// wakes the thread waiting on it; that one ends the stream.
    fn end_reading(&self, why: End, udp: &UdpSocket) {
        self.note(why);
        let _ = SockRef::from(udp).shutdown(Shutdown::Read);
    }

    /// One more thread runs for the association.
    fn enter(&self) {
        self.done.lock().unwrap_or_else(PoisonError::into_inner).0 += 1;
    }

    /// Called by each thread when it is done; the last reports.
    fn finish(&self) {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        done.0 = done.0.saturating_sub(1);
        if done.0 > 0 {
            return;
        }
        let Some(report) = done.1.take() else { return };
        drop(done);
        let end = self.end.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or(End::Eof);
        report(Outcome {
            up: self.up.load(Ordering::Relaxed),
            down: self.down.load(Ordering::Relaxed),
            end,
            datagrams: Some([UP, DOWN, DROPPED].map(|i| self.counts[i].load(Ordering::Relaxed))),
        });
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::admission::Gate;
    use crate::net::testing::{socket_pair, TIMEOUT};
    use crate::tls::config::{client_config, server_config, Identity, Trust};
    use rustls::pki_types::ServerName;
    use rustls::{ClientConnection, ServerConnection, StreamOwned};
    use std::sync::mpsc;
    use std::thread;

    fn udp() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s
    }

    /// A handshaken TLS connection over loopback: the client's socket and
    /// state, and the server's as one blocking stream.
    fn tls_pair() -> ((TcpStream, ClientConnection), StreamOwned<ServerConnection, TcpStream>) {
        let (client, server) = socket_pair();
        let serving = thread::spawn(move || {
            let config = server_config(&Identity::TestCertificate, &[], None).unwrap().config;
            let mut conn = ServerConnection::new(config).unwrap();
            while conn.is_handshaking() {
                conn.complete_io(&mut &server).unwrap();
            }
            StreamOwned::new(conn, server)
        });
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/ca.pem");
        let config = client_config(&Trust::CaFile(ca.into()), &[]).unwrap();
        let mut conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut &client).unwrap();
        }
        ((client, conn), serving.join().unwrap())
    }

    fn association(timeout: Duration) -> Association {
        let (sock, _peer) = socket_pair();
        Association::new(Arc::new(sock), timeout, Box::new(|_| {}))
    }

    #[test]
    fn the_control_connection_ends_an_association_three_ways() {
        let (client, control) = socket_pair();
        drop(client);
        assert!(matches!(control_ended(&control), End::ControlClosed));
        let (mut client, control) = socket_pair();
        client.write_all(b"x").unwrap();
        assert!(matches!(control_ended(&control), End::ControlBytes));
        let (client, control) = socket_pair();
        SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
        drop(client);
        assert_eq!(
            control_ended(&control).to_string(),
            "control connection: Connection reset by peer (os error 104)"
        );
    }

    #[test]
    fn a_wait_for_a_datagram_ends_with_one_with_the_other_socket_or_with_the_quiet_time() {
        let (a, sock) = (association(TIMEOUT), udp());
        let (peer, other) = socket_pair();
        let mut buf = [0u8; 64];
        udp().send_to(b"hello", sock.local_addr().unwrap()).unwrap();
        assert!(matches!(next_datagram(&a, &sock, &other, true, &mut buf), Next::Datagram(5, _)));
        drop(peer);
        assert!(
            matches!(next_datagram(&a, &sock, &other, true, &mut buf), Next::Other),
            "the control connection ended"
        );
        let quiet = association(Duration::from_millis(50));
        let (_peer, other) = socket_pair();
        assert!(matches!(next_datagram(&quiet, &sock, &other, true, &mut buf), Next::End(End::UdpIdle)));
    }

    #[test]
    fn the_first_reason_to_end_is_the_one_reported_once_every_thread_is_done() {
        let (tx, rx) = mpsc::channel();
        let (sock, _peer) = socket_pair();
        let a = Association::new(Arc::new(sock), TIMEOUT, Box::new(move |out| tx.send(out).unwrap()));
        // Two threads, started; the one that started them is done.
        a.enter();
        a.enter();
        a.finish();
        a.moved(UP, 10);
        a.moved(DOWN, 7);
        a.dropped();
        assert_eq!(a.stream_failed(Error::Protocol("x")).to_string(), "stream: protocol: x");
        a.note(End::ControlClosed);
        a.note(End::UdpIdle);
        assert_eq!(
            a.stream_failed(Error::Protocol("x")).to_string(),
            "eof",
            "the stream was shut down to end it"
        );
        a.finish();
        assert!(rx.try_recv().is_err(), "one thread is still running");
        a.finish();
        let out = rx.try_recv().unwrap();
        assert_eq!((out.up, out.down, out.datagrams), (10, 7, Some([1, 1, 1])));
        assert!(matches!(out.end, End::ControlClosed));
    }

    #[test]
    fn ipv4_targets_go_mapped_on_a_dual_socket_and_replies_come_back_unmapped() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(to_v6(v4), "::ffff:192.0.2.1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(unmapped(IpAddr::V6(to_v6(v4))), v4);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(unmapped(v6), v6);
    }

    #[test]
    fn a_local_association_frames_the_clients_datagrams_and_unframes_the_replies() {
        let ((sock, conn), mut server) = tls_pair();
        let (client_control, control) = socket_pair();
        let (app, relay) = (udp(), udp());
        let relay_addr = relay.local_addr().unwrap();
        let place = Gate::new(1, None).enter(app.local_addr().unwrap().ip()).unwrap();
        let ip = app.local_addr().unwrap().ip();
        let client = Client { control, udp: relay, ip, port: 0, routing: None, place };
        let (tx, rx) = mpsc::channel();
        local(client, sock, conn, &Timeouts::default(), move |out| tx.send(out).unwrap());

        let target = Target::Domain("example.com".into(), 53);
        let mut datagram = Vec::new();
        socks5::write_udp_header(&target, &mut datagram);
        datagram.extend_from_slice(b"query");
        app.send_to(&datagram, relay_addr).unwrap();
        let mut payload = Vec::new();
        assert_eq!(wire::read_udp(&mut server, &mut payload).unwrap(), Some(target));
        assert_eq!(payload, b"query");

        let source = Target::Ip("192.0.2.53:53".parse().unwrap());
        let mut frame = Vec::new();
        wire::encode_udp(&source, b"answer", &mut frame);
        server.write_all(&frame).unwrap();
        let mut back = [0u8; 64];
        let (n, from) = app.recv_from(&mut back).unwrap();
        assert_eq!(from, relay_addr);
        assert_eq!(socks5::read_udp_header(&back[..n]).unwrap(), (source, n - 6));
        assert_eq!(&back[n - 6..n], b"answer");

        drop(client_control);
        let out = rx.recv_timeout(TIMEOUT).unwrap();
        assert!(matches!(out.end, End::ControlClosed), "{}", out.end);
        assert_eq!((out.up, out.down, out.datagrams), (5, 6, Some([1, 1, 0])));
    }

    #[test]
    fn a_server_association_sends_permitted_datagrams_and_drops_denied_ones() {
        let ((sock, conn), StreamOwned { conn: server_conn, sock: server_sock }) = tls_pair();
        let mut local_side = StreamOwned::new(conn, sock);
        let echo = udp();
        let echo_addr = echo.local_addr().unwrap();
        // Denied on loopback, so that a policy that failed would still reach nothing else.
        let policy = Policy::new(true, vec!["127.0.0.2/32".parse().unwrap()]).unwrap();
        let place = Gate::new(1, None).enter("127.0.0.1".parse().unwrap()).unwrap();
        let targets = Targets { udp: server_socket().unwrap(), policy, place };
        let mut early = Vec::new();
        wire::encode_udp(&Target::Ip("127.0.0.2:9".parse().unwrap()), b"denied", &mut early);
        wire::encode_udp(&Target::Ip(echo_addr), b"ping", &mut early);
        let (tx, rx) = mpsc::channel();
        server(server_sock, server_conn, early, targets, &Timeouts::default(), move |out| {
            tx.send(out).unwrap()
        });

        let mut buf = [0u8; 64];
        let (n, from) = echo.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        echo.send_to(b"pong", from).unwrap();
        let mut payload = Vec::new();
        assert_eq!(wire::read_udp(&mut local_side, &mut payload).unwrap(), Some(Target::Ip(echo_addr)));
        assert_eq!(payload, b"pong");

        local_side.conn.send_close_notify();
        local_side.flush().unwrap();
        let out = rx.recv_timeout(TIMEOUT).unwrap();
        assert!(matches!(out.end, End::Eof), "{}", out.end);
        assert_eq!((out.up, out.down, out.datagrams), (4, 4, Some([1, 1, 1])));
    }

    /// A flow of datagrams from `app` to `target`, through the forward's
    /// socket `forward`, reporting to `tx`.
    fn flow(forward: &UdpSocket, app: &UdpSocket, target: &Target, tx: mpsc::Sender<Outcome>) -> Arc<Flow> {
        let (udp, client) = (Arc::new(forward.try_clone().unwrap()), app.local_addr().unwrap());
        Flow::new(udp, client, target.clone(), &Timeouts::default(), move |out| tx.send(out).unwrap())
    }

    #[test]
    fn a_flow_holds_datagrams_until_its_link_then_frames_them_and_passes_the_targets_replies_back() {
        let ((sock, mut conn), mut server) = tls_pair();
        let (forward, app) = (udp(), udp());
        let target = Target::Ip("192.0.2.53:53".parse().unwrap());
        let (tx, rx) = mpsc::channel();
        let flow = flow(&forward, &app, &target, tx);
        let mut frame = Vec::new();
        assert!(flow.offer(b"first", &mut frame), "held while the link is made");
        // The link: what waited goes with the header (here alone), then the flow is open.
        let sent = flow.waiting();
        assert!(flow.offer(b"second", &mut frame), "came while the first went");
        conn.writer().write_all(&sent.frames).unwrap();
        while conn.wants_write() {
            conn.write_tls(&mut &sock).unwrap();
        }
        flow.opened(sock, conn, sent);
        assert!(flow.offer(b"third", &mut frame));
        let mut payload = Vec::new();
        for want in [&b"first"[..], b"second", b"third"] {
            assert_eq!(wire::read_udp(&mut server, &mut payload).unwrap(), Some(target.clone()));
            assert_eq!(payload, want);
        }
        // Replies from the target reach the client as plain datagrams, from the forward's address;
        // one from another source does not.
        let mut frames = Vec::new();
        wire::encode_udp(&Target::Ip("192.0.2.9:53".parse().unwrap()), b"stranger", &mut frames);
        wire::encode_udp(&target, b"answer", &mut frames);
        server.write_all(&frames).unwrap();
        let mut back = [0u8; 64];
        let (n, from) = app.recv_from(&mut back).unwrap();
        assert_eq!((&back[..n], from), (&b"answer"[..], forward.local_addr().unwrap()));
        assert!(!flow.idle_left().is_zero());
        // Ended (its quiet time up): close_notify to the server, then one report.
        flow.end(End::UdpIdle);
        assert_eq!(wire::read_udp(&mut server, &mut payload).unwrap(), None, "a clean end");
        let out = rx.recv_timeout(TIMEOUT).unwrap();
        assert!(matches!(out.end, End::UdpIdle), "{}", out.end);
        assert_eq!((out.up, out.down, out.datagrams), (16, 6, Some([3, 1, 1])));
        assert!(flow.idle_left().is_zero());
        assert!(
            !flow.offer(b"late", &mut frame),
            "an ended flow takes nothing: the next datagram starts another"
        );
    }

    #[test]
    fn a_flow_whose_link_fails_or_that_is_stopped_first_reports_its_datagrams_dropped() {
        let (forward, app) = (udp(), udp());
        let target = Target::Domain("dns.example".into(), 53);
        let (tx, rx) = mpsc::channel();
        let failing = flow(&forward, &app, &target, tx.clone());
        let mut frame = Vec::new();
        let big = vec![0u8; FLOW_WAITING_MAX];
        assert!(failing.offer(&big, &mut frame), "one always fits");
        assert!(failing.offer(b"over", &mut frame), "taken, and dropped: the queue is full");
        failing.failed(End::NoUdp, failing.waiting());
        let out = rx.recv_timeout(TIMEOUT).unwrap();
        assert_eq!(
            (out.end.to_string(), out.datagrams),
            (
                "udp: needs a password on both sides (the trojan format carries it), or no address".into(),
                Some([0, 0, 2])
            )
        );

        // Stopped while its link is made: the link, once up (the query went
        // with its header), is closed, and the stop reported.
        let stopped = flow(&forward, &app, &target, tx);
        assert!(stopped.offer(b"query", &mut frame));
        stopped.end(End::Stopped);
        assert!(stopped.idle_left().is_zero());
        assert!(!stopped.offer(b"more", &mut frame));
        let ((sock, conn), mut server) = tls_pair();
        stopped.opened(sock, conn, stopped.waiting());
        let out = rx.recv_timeout(TIMEOUT).unwrap();
        assert_eq!((out.end.to_string(), out.up, out.datagrams), ("stopped".into(), 5, Some([1, 0, 0])));
        let mut payload = Vec::new();
        assert_eq!(wire::read_udp(&mut server, &mut payload).unwrap(), None, "close_notify");
    }
}
