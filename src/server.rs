//! blocking-server: accepts TLS connections from blocking-local, reads the
//! target from the header and relays to it.
//!
//! Per connection, on its own thread: the TLS handshake under the handshake
//! deadline, read one record at a time; the header; the connect to the target
//! (every address the name resolves to that the egress policy permits, in
//! turn) under the connect deadline; then the relay. Bytes that came after the
//! header go to the target first.
//!
//! With passwords the header is a trojan header with a known hash, taken from
//! the first record that carries data, as trojan takes it. Any other first
//! record (a wrong password, a seed header, a browser's `GET /`, one byte) is
//! handed, with every byte, to the fallback site if there is one, so that a
//! prober sees an ordinary web site; otherwise the connection is closed. The
//! fallback's connection is opened as soon as the handshake is done, so that
//! a client that says nothing meets the site's own header timeout. A client
//! whose hash was right but whose request is not served (UDP ASSOCIATE, a
//! malformed rest) is closed, never handed over with its hash.
//!
//! Without passwords the seed header is read with exact reads, across
//! records, under the handshake deadline.
//!
//! Behind a load balancer (`--proxy-protocol`), every connection begins with
//! a PROXY protocol header, read before TLS with exact reads under the same
//! handshake deadline, so that no TLS byte is taken with it. A connection
//! from outside `--proxy-from`, or without a valid header, is closed. The
//! client the header names is the client from then on: in the close line,
//! and in the per-source pending limit, which the accept loop leaves to
//! this thread (every connection comes from the balancer's address) and
//! which may refuse the connection here. A version 2 `LOCAL` header (a
//! health check) or a version 1 `UNKNOWN` keeps the connection's own
//! address; a `LOCAL` connection closed before its first TLS byte ends as
//! `health check`. With `--fallback-proxy-protocol` the connection to the
//! fallback begins with a PROXY version 2 header naming that client and the
//! address it connected to (the server's, or the balancer's from the header).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::{ServerConfig, ServerConnection};

use crate::accept::{Acceptor, Report, Stopper};
use crate::addr::Target;
use crate::current::Current;
use crate::egress::{Cidr, Policy};
use crate::error::Error;
use crate::metrics;
use crate::net::{self, wait, Deadline, Ready, Timeouts};
use crate::proxy_protocol::{self, Header};
use crate::relay::{self, Half};
use crate::tls::{self, Records};
use crate::udp;
use crate::wire::{self, Command, TrojanHash};

/// The `end=` of a balancer's health check: a `LOCAL` header, then a close.
const HEALTH_CHECK: &str = "health check";

/// What a reload replaces: the certificate and the passwords. A connection
/// takes the certificate (its TLS configuration) when it starts; its header
/// is checked against the passwords in force when the header arrives, so a
/// password revoked by a reload opens no connection after it.
pub struct Keys {
    /// Built by [`crate::tls::server_config`].
    pub tls: Arc<ServerConfig>,
    /// Known trojan password hashes; empty means the seed format, open to anyone.
    pub passwords: Vec<TrojanHash>,
    /// When the certificate expires, if that could be read.
    pub expires: Option<SystemTime>,
}

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
    /// Connections from one source (an IPv4 address, an IPv6 /64) that may
    /// be pending at once: in the TLS handshake or before a valid header.
    pub max_pending_per_source: usize,
    /// Every connection begins with a PROXY protocol header (version 1 or
    /// 2) from a load balancer, whose client stands for the connection's own address.
    pub proxy_protocol: bool,
    /// The sources a PROXY protocol header is taken from; others are
    /// closed. Empty: any source.
    pub proxy_from: Vec<Cidr>,
    /// The connection to the fallback begins with a PROXY version 2 header naming the client.
    pub fallback_proxy_protocol: bool,
}

/// A bound blocking-server, ready to [`run`](Server::run).
pub struct Server {
    acceptor: Acceptor,
    cfg: Arc<Config>,
}

impl Server {
    /// Binds the TLS listener.
    pub fn bind(listen: &str, cfg: Config) -> Result<Server, Error> {
        let mut acceptor = Acceptor::bind(listen, cfg.max_conns, Some(cfg.max_pending_per_source))?;
        if cfg.proxy_protocol {
            // Every connection comes from the balancer: its header names the source to count.
            acceptor = acceptor.source_known_later();
        }
        Ok(Server { acceptor, cfg: Arc::new(cfg) })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.acceptor.local_addr()
    }

    /// A handle that makes [`run`](Server::run) stop accepting and drain.
    pub fn stopper(&self) -> io::Result<Stopper> {
        self.acceptor.stopper()
    }

    /// Serves connections until stopped, then drains; returns the connections still open.
    pub fn run(self) -> usize {
        let cfg = Arc::clone(&self.cfg);
        let handler = move |sock, report| connection(sock, &cfg, report);
        // Over the cap there is nothing to say before TLS: just close.
        self.acceptor.run(self.cfg.timeouts.drain, handler, drop)
    }
}

/// One connection from a local, up to the start of its relay (which then owns `report`).
fn connection(sock: TcpStream, cfg: &Config, mut report: Report) {
    let id = report.id;
    let _ = sock.set_nodelay(true);
    let until = Instant::now() + cfg.timeouts.handshake;
    // Where the client connected to: here, or at the balancer its header names.
    let mut to = match sock.local_addr() {
        Ok(a) => a,
        Err(e) => {
            report.end = format!("socket: {e}");
            return;
        }
    };
    if cfg.proxy_protocol {
        match balanced(&sock, cfg, &mut report, until) {
            Ok(Some(destination)) => to = destination,
            Ok(None) => {}
            Err(end) => {
                if end != HEALTH_CHECK {
                    log::debug!("#{id} closed before tls: {end}");
                }
                report.end = end;
                return;
            }
        }
    }
    let keys = cfg.keys.get();
    let mut conn = match ServerConnection::new(Arc::clone(&keys.tls)) {
        Ok(c) => c,
        Err(e) => {
            report.end = format!("tls: {e}");
            return;
        }
    };
    // Record by record, so that nothing after the handshake is read yet.
    if let Err(e) = tls::handshake(&mut conn, &mut Records::new(Deadline::new(&sock, until))) {
        log::debug!("#{id} tls handshake failed: {e}");
        report.end = format!("tls handshake: {e}");
        return;
    }
    if keys.passwords.is_empty() {
        seed_header(sock, conn, cfg, report, until, to);
    } else {
        trojan_header(sock, conn, cfg, report, until, to);
    }
}

/// Reads the PROXY protocol header of a connection from a load balancer and
/// makes the client it names the connection's client, pending against its
/// source. Returns the address that client connected to, or `None` when the
/// connection's own addresses stand (a `LOCAL` or `UNKNOWN` header); `Err`
/// holds why the connection is to be closed, for its `end=`.
fn balanced(
    sock: &TcpStream,
    cfg: &Config,
    report: &mut Report,
    until: Instant,
) -> Result<Option<SocketAddr>, String> {
    let peer = report.peer();
    if !from_balancer(&cfg.proxy_from, peer.ip()) {
        return Err(format!("proxy protocol: {} is not in --proxy-from", peer.ip()));
    }
    let mut io = Deadline::new(sock, until);
    let header = proxy_protocol::read(&mut io).map_err(|e| format!("proxy protocol: {e}"))?;
    match header {
        Header::Proxied { source, destination } => {
            log::debug!("#{} PROXY header from {peer}: client {source}, to {destination}", report.id);
            report.proxied(source);
            report.place().pending_from(source.ip()).map_err(|why| format!("refused: {why}"))?;
            Ok(Some(destination))
        }
        Header::Local => {
            report.place().pending_from(peer.ip()).map_err(|why| format!("refused: {why}"))?;
            // A health check: the balancer connects, sends the header and closes (or resets).
            match io.peek(&mut [0u8; 1]) {
                Ok(0) => Err(HEALTH_CHECK.into()),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(HEALTH_CHECK.into()),
                _ => Ok(None),
            }
        }
    }
}

/// Whether a PROXY protocol header is taken from `ip`: any address when
/// `from` is empty; an IPv4-mapped IPv6 address matches as its IPv4 address.
fn from_balancer(from: &[Cidr], ip: IpAddr) -> bool {
    from.is_empty() || from.iter().any(|net| net.contains(ip) || net.contains(ip.to_canonical()))
}

/// The seed format: the header is read with exact reads, across records,
/// under the handshake deadline (the seed format predates probe resistance).
fn seed_header(
    sock: TcpStream,
    mut conn: ServerConnection,
    cfg: &Config,
    mut report: Report,
    until: Instant,
    to: SocketAddr,
) {
    let mut io = Deadline::new(&sock, until);
    let mut header = Recorder { inner: rustls::Stream::new(&mut conn, &mut io), seen: Vec::new() };
    let parsed = wire::read_seed(&mut header);
    let seen = header.seen;
    match parsed {
        Ok(target) => {
            report.place().authenticated();
            to_target(sock, conn, &target, &[], cfg, report)
        }
        Err(e) => {
            log::debug!("#{} bad header: {e}", report.id);
            // A client that closed before its first byte (a local's unused
            // pooled connection, say) sent no header at all.
            if seen.is_empty() && matches!(&e, Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof) {
                report.end = "header: client closed before its first byte".into();
            } else {
                report.end = format!("header: {e}");
                metrics::HEADER_FAILURES.inc();
            }
            if let (Some(fallback), true) = (&cfg.fallback, worth_a_fallback(&e, &seen)) {
                match connect_fallback(fallback, cfg, &report, to) {
                    Ok(out) => to_fallback(sock, conn, &seen, out, fallback, cfg, report),
                    Err(e) => report.end = format!("fallback: {e}"),
                }
            }
        }
    }
}

/// A seed header that is wrong, or cut short and then silent, goes to the
/// fallback. A client that closed, broke TLS or never sent a byte is closed.
fn worth_a_fallback(e: &Error, seen: &[u8]) -> bool {
    match e {
        Error::Protocol(_) => true,
        Error::Io(e) => {
            !seen.is_empty() && matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
        }
        _ => false,
    }
}

/// The trojan format, decided on the first application-data record, as
/// trojan decides it: the local always sends the whole header in its first
/// record. With a fallback, its connection is opened as soon as the TLS
/// handshake is done, so that from the first moment the client meets the
/// site's own behaviour: a first record that is not a complete valid header
/// goes there at once with every byte, and a client that says nothing is
/// closed when (and as) the site closes it.
fn trojan_header(
    sock: TcpStream,
    mut conn: ServerConnection,
    cfg: &Config,
    mut report: Report,
    until: Instant,
    to: SocketAddr,
) {
    let id = report.id;
    let fallback = cfg.fallback.as_ref().and_then(|f| match connect_fallback(f, cfg, &report, to) {
        Ok(out) => Some((f, out)),
        Err(e) => {
            log::warn!("#{id} cannot reach the fallback {f}: {e}");
            None
        }
    });
    // With a fallback the site's own timeouts govern a silent client, up to the idle time.
    let wait_until = match fallback {
        Some(_) => Instant::now() + cfg.timeouts.idle,
        None => until,
    };
    let first = first_record(&sock, &mut conn, fallback.as_ref().map(|(_, out)| out), wait_until);
    let seen = match first {
        Ok(First::Data(bytes)) => {
            // The passwords in force now: one revoked by a reload while this
            // connection waited (a local's pooled one) no longer opens it.
            let keys = cfg.keys.get();
            let passwords = &keys.passwords[..];
            let mut rest = &bytes[..];
            match wire::read_trojan_request(&mut rest, passwords, true) {
                Ok((command, target)) => {
                    report.place().authenticated();
                    drop(fallback);
                    return match command {
                        Command::Connect => to_target(sock, conn, &target, rest, cfg, report),
                        Command::UdpAssociate => associate(sock, conn, rest.to_vec(), cfg, report),
                    };
                }
                // A client that presented a valid password is never handed
                // over: the fallback would receive its hash in the clear.
                Err(e) if wire::trojan_hash_known(&bytes, passwords) => {
                    log::debug!("#{id} bad header after a valid password: {e}");
                    report.end = format!("header: {e}");
                    metrics::HEADER_FAILURES.inc();
                    return;
                }
                Err(e) => {
                    log::debug!("#{id} first record is not a valid header: {e}");
                    report.end = format!("header: {}", first_record_error(e));
                    metrics::HEADER_FAILURES.inc();
                    bytes
                }
            }
        }
        Ok(First::End) => {
            report.end = "header: client closed before its first record".into();
            Vec::new()
        }
        Ok(First::FallbackSpoke) => {
            report.end = "header: the fallback spoke first".into();
            metrics::HEADER_FAILURES.inc();
            Vec::new()
        }
        Err(e) => {
            log::debug!("#{id} no first record: {e}");
            report.end = format!("header: {e}");
            metrics::HEADER_FAILURES.inc();
            return;
        }
    };
    if let Some((f, out)) = fallback {
        to_fallback(sock, conn, &seen, out, f, cfg, report);
    }
}

/// A header cut short is called that, rather than the end of the input it was read from.
fn first_record_error(e: Error) -> Error {
    match e {
        Error::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            Error::Protocol("first record is not a whole header")
        }
        e => e,
    }
}

/// How a connection's first record came, or did not.
enum First {
    /// The plaintext of the first record that carried any.
    Data(Vec<u8>),
    /// The client ended (close_notify or a bare FIN) before sending any.
    End,
    /// The fallback sent something or closed before the client said anything.
    FallbackSpoke,
}

/// Reads records until one carries plaintext, and returns all of it. While
/// waiting, a `fallback` that speaks or closes first ends the wait: its
/// reaction to a silent client (a header timeout, say) is passed on as it is.
fn first_record(
    sock: &TcpStream,
    conn: &mut ServerConnection,
    fallback: Option<&TcpStream>,
    until: Instant,
) -> Result<First, Error> {
    let mut io = Records::new(Deadline::new(sock, until));
    loop {
        if let Some(out) = fallback {
            if !client_first(sock, out, until)? {
                return Ok(First::FallbackSpoke);
            }
        }
        if conn.read_tls(&mut io)? == 0 {
            return Ok(First::End);
        }
        let state = conn.process_new_packets();
        // Alerts, or a reply to a KeyUpdate.
        while conn.wants_write() {
            conn.write_tls(&mut io)?;
        }
        let state = state?;
        if !io.between_records() {
            continue;
        }
        let n = state.plaintext_bytes_to_read();
        if n > 0 {
            let mut bytes = vec![0; n];
            conn.reader().read_exact(&mut bytes)?;
            return Ok(First::Data(bytes));
        }
        if state.peer_has_closed() {
            return Ok(First::End);
        }
    }
}

/// Waits until the client or the fallback has something to read (data, an
/// end or an error); true when the client has, which is looked at first.
fn client_first(client: &TcpStream, fallback: &TcpStream, until: Instant) -> Result<bool, Error> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Io(io::Error::new(io::ErrorKind::TimedOut, "deadline passed")));
        }
        match wait(client, fallback, true, left)? {
            Ready::First => return Ok(true),
            Ready::Second => return Ok(false),
            Ready::Neither => {}
        }
    }
}

/// Connects to `target` and relays, starting with `early`: bytes that came
/// in the same record as the header.
fn to_target(
    sock: TcpStream,
    mut conn: ServerConnection,
    target: &Target,
    early: &[u8],
    cfg: &Config,
    mut report: Report,
) {
    let id = report.id;
    log::debug!("#{id} connect {target}");
    report.target = Some(target.to_string());
    let until = Instant::now() + cfg.timeouts.connect;
    let out = match net::connect(target, until, Some(&cfg.egress), Some(report.place())) {
        Ok(s) => s,
        Err(e) => {
            log::debug!("#{id} cannot reach {target}: {e}");
            report.end = format!("target: {e}");
            // A clean end tells the local that this server works and the target does not.
            let goodbye = Instant::now() + cfg.timeouts.handshake;
            if tls::close(&mut conn, &mut Deadline::new(&sock, goodbye)).is_ok() {
                net::close_gently(&sock);
            }
            return;
        }
    };
    if !early.is_empty() {
        if let Err(e) = Deadline::new(&out, until).write_all(early) {
            report.end = format!("target: {e}");
            return;
        }
        report.up = early.len() as u64;
    }
    relay::relay(Half::tls(sock, conn), Half::tcp(out), ["client", "target"], &cfg.timeouts, move |out| {
        report.relayed(out)
    });
}

/// Serves a UDP association: datagrams framed in the stream, each sent to
/// its target through a UDP socket of the association (see [`crate::udp`]).
/// `early` holds the first frames, which came with the header.
fn associate(sock: TcpStream, conn: ServerConnection, early: Vec<u8>, cfg: &Config, mut report: Report) {
    report.target = Some("udp".into());
    let udp = match udp::server_socket() {
        Ok(s) => s,
        Err(e) => {
            report.end = format!("udp: {e}");
            return;
        }
    };
    log::debug!("#{} udp association", report.id);
    let place = report.place().clone();
    udp::server(sock, conn, early, udp, cfg.egress.clone(), place, &cfg.timeouts, move |out| {
        report.associated(out)
    });
}

/// Opens the plain TCP connection to the fallback site; with
/// `--fallback-proxy-protocol` it begins with a PROXY version 2 header
/// saying that the client connected to `to`.
fn connect_fallback(
    fallback: &Target,
    cfg: &Config,
    report: &Report,
    to: SocketAddr,
) -> Result<TcpStream, Error> {
    let until = Instant::now() + cfg.timeouts.connect;
    let out = net::connect(fallback, until, None, Some(report.place()))?;
    if cfg.fallback_proxy_protocol {
        let mut header = Vec::with_capacity(64);
        proxy_protocol::write_v2(report.peer(), to, &mut header);
        Deadline::new(&out, until).write_all(&header)?;
    }
    Ok(out)
}

/// Relays a connection that did not present a valid header to the fallback,
/// starting with every byte it sent. From then on the connection is the
/// fallback's: its answer, its timing and its way of closing; an end from
/// the client, with or without close_notify, reaches it as an EOF.
fn to_fallback(
    sock: TcpStream,
    conn: ServerConnection,
    seen: &[u8],
    out: TcpStream,
    fallback: &Target,
    cfg: &Config,
    mut report: Report,
) {
    log::debug!("#{} handing {} bytes to the fallback {fallback}", report.id, seen.len());
    metrics::FALLBACK_HANDOVERS.inc();
    report.target = Some(format!("fallback/{fallback}"));
    let until = Instant::now() + cfg.timeouts.connect;
    if let Err(e) = Deadline::new(&out, until).write_all(seen) {
        report.end = format!("fallback: {e}");
        return;
    }
    report.up = seen.len() as u64;
    let client = Half::tls_web_client(sock, conn);
    relay::relay(client, Half::tcp(out), ["client", "fallback"], &cfg.timeouts, move |out| {
        report.relayed(out)
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

/// How long before its certificate expires the server starts to warn.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// A warning for a certificate that `expires` within [`EXPIRY_WARNING`] of
/// `now`, or has expired; None while it has longer to go.
pub fn expiry_warning(expires: SystemTime, now: SystemTime) -> Option<String> {
    const DAY: u64 = 86_400;
    match expires.duration_since(now) {
        Ok(left) if left >= EXPIRY_WARNING => None,
        Ok(left) => Some(format!(
            "the certificate expires in {} days ({} hours): renew it; SIGHUP loads the new one",
            left.as_secs() / DAY,
            left.as_secs() / 3600
        )),
        Err(past) => Some(format!(
            "the certificate expired {} days ago: clients refuse it; renew it and send SIGHUP",
            past.duration().as_secs() / DAY
        )),
    }
}

/// Warns at start and then once a day while the certificate in force is
/// within [`EXPIRY_WARNING`] of its end (on a thread of its own).
pub fn watch_expiry(keys: Arc<Current<Keys>>) {
    let check = move || loop {
        if let Some(warning) = keys.get().expires.and_then(|t| expiry_warning(t, SystemTime::now())) {
            log::warn!("{warning}");
        }
        std::thread::sleep(Duration::from_secs(86_400));
    };
    let spawned =
        std::thread::Builder::new().name("expiry".into()).stack_size(crate::workers::COPY_STACK).spawn(check);
    if let Err(e) = spawned {
        log::warn!("cannot start the certificate expiry check: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_balancer_is_matched_by_its_network_and_an_ipv4_mapped_one_as_ipv4() {
        let from: Vec<Cidr> = ["127.0.0.3/32", "2001:db8::/32"].iter().map(|c| c.parse().unwrap()).collect();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(from_balancer(&from, ip("127.0.0.3")));
        assert!(from_balancer(&from, ip("::ffff:127.0.0.3")), "a dual-stack listener's IPv4 peer");
        assert!(from_balancer(&from, ip("2001:db8::7")));
        assert!(!from_balancer(&from, ip("127.0.0.1")));
        assert!(!from_balancer(&from, ip("::ffff:127.0.0.1")));
        assert!(!from_balancer(&from, ip("2001:db9::1")));
        assert!(from_balancer(&[], ip("192.0.2.1")), "no --proxy-from: anyone");
    }

    #[test]
    fn a_certificate_is_warned_about_in_its_last_fourteen_days_and_after() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        assert_eq!(expiry_warning(now + 15 * day, now), None);
        assert_eq!(expiry_warning(now + 14 * day, now), None);
        let soon = expiry_warning(now + 13 * day, now).unwrap();
        assert!(soon.starts_with("the certificate expires in 13 days"), "{soon}");
        let gone = expiry_warning(now - 3 * day, now).unwrap();
        assert!(gone.starts_with("the certificate expired 3 days ago"), "{gone}");
    }
}
