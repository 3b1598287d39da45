//! One connection from a local, from its first byte to the start of its
//! relay.
//!
//! On the connection's own setup thread: a balancer's PROXY protocol header
//! when one is expected ([`super::balancer`]), the TLS handshake under the
//! handshake deadline, read one record at a time; the header; the connect
//! to the target (every address the name resolves to that the egress policy
//! permits, in turn) under the connect deadline; then the relay. Bytes that
//! came after the header go to the target first.
//!
//! With passwords the header is a trojan header with a known hash, taken from
//! the first record that carries data ([`super::fallback`]). Any other first
//! record (a wrong password, a seed header, a browser's `GET /`, one byte) is
//! handed, with every byte, to the fallback site if there is one, so that a
//! prober sees an ordinary web site; otherwise the connection is closed. A
//! client that ends before its first record (a local's ready connection
//! that aged out unused) is not handed over: it is closed with close_notify,
//! as a web server closes it, and counted as an end, not a hand-over; its
//! close line is logged at `debug` (such closes would fill the log) and
//! counted in `blocking_proxy_unused_connections_total`. The close line of
//! a connection whose header came counts `time=` from the header, not from
//! the handshake: a local's ready connection may have waited long for it. A
//! client whose hash was right but whose request is not served (a malformed
//! rest) is closed with close_notify, never handed over with its hash: the
//! local reads that as "your request", not as a broken server.
//!
//! Without passwords the seed header is read with exact reads, across
//! records, under the handshake deadline.
//!
//! A header whose hash is a named user's (`--users`) opens the connection
//! for that user: its close line ends with `user=NAME`, and a user at its
//! `max_conns` or out of quota is refused there, with close_notify, as a
//! request that is not served. The user meters the relay ([`super::users`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use rustls::ServerConnection;

use crate::conn::admission::Fds;
use crate::conn::end::{End, Hop, Side, Step};
use crate::conn::relay::{self, Dir, Leg, Meter};
use crate::conn::report::Watch;
use crate::conn::udp::{self, Targets};
use crate::conn::{Report, Timeouts};
use crate::current::Current;
use crate::error::Error;
use crate::metrics;
use crate::net::deadline::{close_gently, Deadline};
use crate::net::dial;
use crate::net::drain::{self, Drain};
use crate::net::egress::{Cidr, Policy};
use crate::proto::addr::Target;
use crate::proto::wire::{self, Command};
use crate::tls::handshake::{self, Records};

use super::balancer;
use super::fallback::{self, First};
use super::keys::Keys;
use super::users::Session;

/// Everything a connection from a local needs.
pub struct Config {
    /// The certificate and passwords in force.
    pub keys: Arc<Current<Keys>>,
    /// Deadlines of each connection.
    pub timeouts: Timeouts,
    /// Where connections without a valid header are handed over.
    pub fallback: Option<Target>,
    /// Which target addresses may be reached.
    pub egress: Policy,
    /// Connections served at once; more are closed right after accept.
    pub max_conns: usize,
    /// The descriptors connections may hold between them, if counted.
    pub fds: Option<Fds>,
    /// Connections from one source (an IPv4 address, an IPv6 /64) that may
    /// be pending at once: in the TLS handshake or before a valid header.
    pub max_pending_per_source: usize,
    /// Every connection begins with a PROXY protocol header (version 1 or
    /// 2) from a load balancer, whose client stands for the connection's own address.
    pub proxy_protocol: bool,
    /// The sources a PROXY protocol header is taken from; others are
    /// closed. Empty: none (the command line's `any` is `0.0.0.0/0` and `::/0`).
    pub proxy_from: Vec<Cidr>,
    /// The connection to the fallback begins with a PROXY version 2 header naming the client.
    pub fallback_proxy_protocol: bool,
    /// Called with each close line, for a program that embeds the server.
    pub watch: Option<Watch>,
    /// The seed format, open to anyone: chosen once, at start, by the
    /// absence of every password flag and of `--users`; a reload that
    /// leaves no password (every user removed) never turns it on.
    pub seed: bool,
}

/// Serves one connection from a local, up to the start of its relay (which
/// then owns `report`): the entry point of every connection the server
/// accepts. Once `drain` has started, a connection still waiting for its
/// header is closed with close_notify instead.
pub fn serve(sock: TcpStream, cfg: &Config, drain: &Drain, mut report: Report) {
    let mut incoming = match accept(sock, cfg, &mut report) {
        Ok(incoming) => incoming,
        Err(end) => return report.end(end),
    };
    let next = if incoming.seed {
        seed_header(&mut incoming, cfg, drain, &report)
    } else {
        trojan_header(&mut incoming, cfg, drain, &report)
    };
    let session = match (&next, incoming.user.take()) {
        (Ok(Next::Target(..) | Next::Udp(_)), Some(user)) => {
            report.user(Arc::clone(&user.name));
            match user.open(report.id) {
                Ok(session) => Some(session),
                Err(why) => {
                    log::debug!("#{} refused: {why}", report.id);
                    goodbye(&incoming.sock, &mut incoming.conn, cfg);
                    return report.end(End::Failed(Step::Header, Error::Denied(why)));
                }
            }
        }
        _ => None,
    };
    match next {
        Ok(Next::Target(target, early)) => {
            report.restart_clock();
            report.place().authenticated();
            let mut io = Deadline::new(&incoming.sock, incoming.until);
            if let Err(e) = answer_key_update(&mut incoming.conn, &mut io) {
                return report.end(End::Failed(Step::Header, Error::Io(e)));
            }
            to_target(incoming, &target, &early, cfg, report, session)
        }
        Ok(Next::Udp(early)) => {
            report.restart_clock();
            report.place().authenticated();
            associate(incoming, early, cfg, report, session)
        }
        Ok(Next::Fallback { out, seen, site }) => to_fallback(incoming, &seen, out, site, cfg, report),
        Err(End::Draining) => {
            goodbye(&incoming.sock, &mut incoming.conn, cfg);
            report.end(End::Draining)
        }
        Err(end) => report.end(end),
    }
}

/// A connection whose TLS handshake is done, waiting for its header.
struct Incoming {
    sock: TcpStream,
    conn: ServerConnection,
    /// The handshake deadline, which the header shares.
    until: Instant,
    /// Where the client connected to: here, or at the balancer its header names.
    to: SocketAddr,
    /// Without passwords when the handshake began: the seed format.
    seed: bool,
    /// The named user whose password the header gave.
    user: Option<Arc<super::users::User>>,
}

/// What a connection's header asks for.
enum Next<'a> {
    /// A tunnel to the target, and the bytes that came with the header.
    Target(Target, Vec<u8>),
    /// A UDP association, and the frames that came with the header.
    Udp(Vec<u8>),
    /// Not a valid header: the connection goes to the fallback `site` over
    /// `out`, starting with every byte the client sent (`seen`).
    Fallback { out: TcpStream, seen: Vec<u8>, site: &'a Target },
}

/// A balancer's PROXY header if one is expected, then the TLS handshake.
fn accept(sock: TcpStream, cfg: &Config, report: &mut Report) -> Result<Incoming, End> {
    let id = report.id;
    let until = Instant::now() + cfg.timeouts.handshake;
    let mut to = sock.local_addr().map_err(|e| End::Failed(Step::Socket, Error::Io(e)))?;
    if cfg.proxy_protocol {
        match balancer::read_header(&sock, &cfg.proxy_from, report, until) {
            Ok(Some(destination)) => to = destination,
            Ok(None) => {}
            Err(end) => {
                if !matches!(end, End::HealthCheck) {
                    log::debug!("#{id} closed before tls: {end}");
                }
                return Err(end);
            }
        }
    }
    if cfg.egress.refuses_client(report.peer().ip()) {
        log::debug!("#{id} client {} blocked by the acl", report.peer());
        return Err(End::Blocked);
    }
    let keys = cfg.keys.get();
    // Record by record, so that nothing after the handshake is read yet.
    let conn = match handshake::accept(&keys.tls, &mut Records::new(Deadline::new(&sock, until))) {
        Ok(conn) => conn,
        Err(e) => {
            log::debug!("#{id} tls handshake failed: {e}");
            return Err(End::Failed(Step::TlsHandshake, e));
        }
    };
    Ok(Incoming { sock, conn, until, to, seed: cfg.seed, user: None })
}

/// The seed format: the header is read with exact reads, across records,
/// under the handshake deadline (the seed format predates probe resistance).
/// A header that is wrong, or cut short and then silent, goes to the
/// fallback; a client that closed, broke TLS or never sent a byte is closed.
fn seed_header<'c>(
    incoming: &mut Incoming,
    cfg: &'c Config,
    drain: &Drain,
    report: &Report,
) -> Result<Next<'c>, End> {
    let Incoming { sock, conn, until, to, .. } = incoming;
    let mut io = Deadline::new(sock, *until).or_drain(drain);
    let mut header = Recorder { inner: rustls::Stream::new(conn, &mut io), seen: Vec::new() };
    let parsed = wire::read_seed(&mut header);
    let seen = header.seen;
    let e = match parsed {
        Ok(target) => return Ok(Next::Target(target, Vec::new())),
        Err(e) => e,
    };
    if matches!(&e, Error::Io(e) if drain::is_draining(e)) {
        return Err(End::Draining);
    }
    log::debug!("#{} bad header: {e}", report.id);
    // A client that closed before its first byte (a local's unused pooled
    // connection, say) sent no header at all.
    if seen.is_empty() && matches!(&e, Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof) {
        metrics::UNUSED.inc();
        return Err(End::ClosedBeforeHeader);
    }
    metrics::HEADER_FAILURES.inc();
    let worth_a_fallback = match &e {
        Error::Protocol(_) => true,
        Error::Io(e) => {
            !seen.is_empty() && matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
        }
        _ => false,
    };
    match &cfg.fallback {
        Some(site) if worth_a_fallback => match open_fallback(site, cfg, report, *to) {
            Ok(out) => Ok(Next::Fallback { out, seen, site }),
            Err(e) => Err(End::Unreachable(Hop::Fallback, e)),
        },
        _ => {
            if worth_a_fallback {
                goodbye(sock, conn, cfg);
            }
            Err(End::Failed(Step::Header, e))
        }
    }
}

/// Ends a connection whose client the server will not serve although it
/// may (a valid password, or the seed format, open to anyone) with
/// close_notify, then closes it gently: the local reads a clean end and
/// knows that its request was refused, not that this server broke (which
/// would mark it down). Probes are not told: they go to the fallback, or
/// are cut without close_notify.
fn goodbye(sock: &TcpStream, conn: &mut ServerConnection, cfg: &Config) {
    let until = Instant::now() + cfg.timeouts.handshake;
    if handshake::close(conn, &mut Deadline::new(sock, until)).is_ok() {
        close_gently(sock);
    }
}

/// The trojan format, decided on the first application-data record (see
/// [`super::fallback`]). With a fallback, its connection is opened first,
/// so that a silent client meets the site's own timeouts, up to the idle time.
fn trojan_header<'c>(
    incoming: &mut Incoming,
    cfg: &'c Config,
    drain: &Drain,
    report: &Report,
) -> Result<Next<'c>, End> {
    let id = report.id;
    let fallback =
        cfg.fallback.as_ref().and_then(|site| match open_fallback(site, cfg, report, incoming.to) {
            Ok(out) => Some((site, out)),
            Err(e) => {
                log::warn!("#{id} cannot reach the fallback {site}: {e}");
                None
            }
        });
    let wait_until = match fallback {
        Some(_) => Instant::now() + cfg.timeouts.idle,
        None => incoming.until,
    };
    let first = fallback::first_record(
        &incoming.sock,
        &mut incoming.conn,
        fallback.as_ref().map(|(_, out)| out),
        drain,
        wait_until,
    );
    let (seen, why) = match first {
        Ok(First::Data(bytes)) => {
            // The passwords in force now: one revoked by a reload while this
            // connection waited (a local's pooled one) no longer opens it.
            let keys = cfg.keys.get();
            let passwords = &keys.passwords[..];
            let mut rest = &bytes[..];
            let request = wire::read_trojan_request(&mut rest, passwords, true);
            if request.is_ok() {
                incoming.user = keys.user(&bytes);
            }
            match request {
                Ok((Command::Connect, target)) => return Ok(Next::Target(target, rest.to_vec())),
                Ok((Command::UdpAssociate, _)) => return Ok(Next::Udp(rest.to_vec())),
                // A client that presented a valid password is never handed
                // over: the fallback would receive its hash in the clear.
                Err(e) if wire::trojan_hash_known(&bytes, passwords) => {
                    log::debug!("#{id} bad header after a valid password: {e}");
                    metrics::HEADER_FAILURES.inc();
                    goodbye(&incoming.sock, &mut incoming.conn, cfg);
                    return Err(End::Failed(Step::Header, e));
                }
                Err(e) => {
                    log::debug!("#{id} first record is not a valid header: {e}");
                    metrics::HEADER_FAILURES.inc();
                    (bytes, End::Failed(Step::Header, cut_short(e)))
                }
            }
        }
        // Not a hand-over: a local's ready connection that aged out unused
        // ends this way, many a minute. The site's connection is dropped
        // unused, and the client gets the close a web server gives it.
        Ok(First::End) => {
            goodbye(&incoming.sock, &mut incoming.conn, cfg);
            metrics::UNUSED.inc();
            return Err(End::ClosedBeforeRecord);
        }
        Ok(First::FallbackSpoke) => {
            metrics::HEADER_FAILURES.inc();
            (Vec::new(), End::FallbackFirst)
        }
        Err(Error::Io(e)) if drain::is_draining(&e) => return Err(End::Draining),
        Err(e) => {
            log::debug!("#{id} no first record: {e}");
            metrics::HEADER_FAILURES.inc();
            return Err(End::Failed(Step::Header, e));
        }
    };
    match fallback {
        Some((site, out)) => Ok(Next::Fallback { out, seen, site }),
        None => Err(why),
    }
}

/// Answers at once a key update the client asked for before its header, and
/// asks for one back. rustls (like OpenSSL) would send the answer with the
/// first data, after the target has answered; a blocking-local asks before
/// every header and, from a server that asks back, expects the answer
/// within its connect timeout, so it can tell a server gone silent from a
/// slow target. A client that asked for nothing gets nothing.
fn answer_key_update(conn: &mut ServerConnection, io: &mut impl Write) -> io::Result<()> {
    // An empty write puts a pending answer in the queue to send.
    let nothing = conn.writer().write(&[])?;
    debug_assert_eq!(nothing, 0);
    if conn.wants_write() {
        // TLS 1.2 has no key update, and then nothing was pending either.
        let _ = conn.refresh_traffic_keys();
    }
    while conn.wants_write() {
        conn.write_tls(io)?;
    }
    Ok(())
}

/// A header cut short is called that, rather than the end of the input it was read from.
fn cut_short(e: Error) -> Error {
    match e {
        Error::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            Error::Protocol("first record is not a whole header")
        }
        e => e,
    }
}

/// Opens the connection to the fallback `site` under the connect deadline,
/// with a PROXY v2 header naming the client when `--fallback-proxy-protocol` asks.
fn open_fallback(site: &Target, cfg: &Config, report: &Report, to: SocketAddr) -> Result<TcpStream, Error> {
    let until = Instant::now() + cfg.timeouts.connect;
    let proxy_header = cfg.fallback_proxy_protocol.then_some((report.peer(), to));
    fallback::open(site, until, proxy_header, report.place())
}

/// Connects to `target` and relays, starting with `early`: bytes that came
/// in the same record as the header.
fn to_target(
    incoming: Incoming,
    target: &Target,
    early: &[u8],
    cfg: &Config,
    mut report: Report,
    session: Option<Session>,
) {
    let Incoming { sock, mut conn, .. } = incoming;
    let id = report.id;
    log::debug!("#{id} connect {target}");
    report.target(target);
    let until = Instant::now() + cfg.timeouts.connect;
    let out = match dial::connect(target, until, Some(&cfg.egress), report.place()) {
        Ok(s) => s,
        Err(e) => {
            log::debug!("#{id} cannot reach {target}: {e}");
            // A clean end tells the local that this server works and the target does not.
            goodbye(&sock, &mut conn, cfg);
            return report.end(End::Unreachable(Hop::Target, e));
        }
    };
    if !early.is_empty() {
        // The bytes that came with the header count against the user's
        // quota and rate like every byte after them.
        if let Some(session) = &session {
            match session.user().pass(Dir::Up, early.len()) {
                Ok(wait) => std::thread::sleep(wait),
                Err(why) => return report.end(End::Failed(Step::Stream, Error::Denied(why))),
            }
        }
        if let Err(e) = Deadline::new(&out, until).write_all(early) {
            return report.end(End::Unreachable(Hop::Target, Error::Io(e)));
        }
        report.up = early.len() as u64;
    }
    let (client, target) = (Leg::tls(sock, conn).counting(report.relaying()), Leg::tcp(out));
    let sides = [Side::Client, Side::Target];
    let Some(session) = session else {
        return relay::relay(client, target, sides, &cfg.timeouts, move |out| report.finish(out));
    };
    let meter: Arc<dyn Meter> = Arc::clone(session.user()) as Arc<dyn Meter>;
    let user = Arc::clone(session.user());
    let id = report.id;
    let cut = relay::relay_metered(client, target, sides, &cfg.timeouts, meter, move |out| {
        session.closed(report.up + out.up, out.down);
        report.finish(out);
        drop(session);
    });
    user.relaying(id, cut);
}

/// Serves a UDP association: datagrams framed in the stream, each sent to
/// its target through a UDP socket of the association (see
/// [`crate::conn::udp`]). `early` holds the first frames, which came with the header.
fn associate(incoming: Incoming, early: Vec<u8>, cfg: &Config, mut report: Report, session: Option<Session>) {
    report.udp();
    let udp = match udp::server_socket() {
        Ok(s) => s,
        Err(e) => return report.end(End::Failed(Step::Udp, Error::Io(e))),
    };
    log::debug!("#{} udp association", report.id);
    // Listed with its target; its bytes show in its close line.
    let _ = report.relaying();
    let targets = Targets { udp, policy: cfg.egress.clone(), place: report.place().clone() };
    udp::server(incoming.sock, incoming.conn, early, targets, &cfg.timeouts, move |out| {
        if let Some(session) = &session {
            session.closed(report.up + out.up, out.down);
        }
        report.finish(out);
        drop(session);
    });
}

/// Relays a connection that did not present a valid header to the fallback,
/// starting with every byte it sent. From then on the connection is the
/// fallback's: its answer, its timing and its way of closing; an end from
/// the client, with or without close_notify, reaches it as an EOF.
fn to_fallback(
    incoming: Incoming,
    seen: &[u8],
    out: TcpStream,
    site: &Target,
    cfg: &Config,
    mut report: Report,
) {
    log::debug!("#{} handing {} bytes to the fallback {site}", report.id, seen.len());
    metrics::FALLBACK_HANDOVERS.inc();
    report.handed_over(site);
    let until = Instant::now() + cfg.timeouts.connect;
    if let Err(e) = Deadline::new(&out, until).write_all(seen) {
        return report.end(End::Unreachable(Hop::Fallback, Error::Io(e)));
    }
    report.up = seen.len() as u64;
    let client = Leg::tls_web_client(incoming.sock, incoming.conn).counting(report.relaying());
    relay::relay(client, Leg::tcp(out), [Side::Client, Side::Fallback], &cfg.timeouts, move |out| {
        report.finish(out)
    });
}

/// A reader that keeps a copy of every byte it hands out.
struct Recorder<R> {
    inner: R,
    seen: Vec<u8>,
}

impl<R: Read> Read for Recorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}
