//! blocking-local: accepts SOCKS5, SOCKS4/4a and HTTP proxy clients on one
//! port and carries each one over its own TLS connection to blocking-server.
//!
//! Per client, on its own thread: the first byte, peeked under the handshake
//! deadline, names the protocol (0x05 SOCKS5, 0x04 SOCKS4, an ASCII letter
//! HTTP; anything else is closed), whose parser then reads the request from
//! the start: the SOCKS5 greeting, login (when users are configured) and
//! request, a SOCKS4 request, or an HTTP request head; a TLS connection to
//! a server, taken ready from the [`Pool`] when there is one, or TCP and
//! TLS to the server a new client goes to, and failing that to the next one,
//! under the connect deadline ([`crate::upstream`]; a failure becomes the
//! client protocol's answer for it); the success reply; then the header, in
//! one TLS record with whatever the application has already sent (after a
//! forwarded HTTP request's rewritten head), and the relay. After its
//! request the local never waits for the application to speak first, so
//! server-first protocols (SMTP, FTP, MySQL) work.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use crate::accept::{Acceptor, Report, Stopper};
use crate::addr::{Target, ATYP_IPV4};
use crate::current::Current;
use crate::error::Error;
use crate::http;
use crate::metrics;
use crate::net::{self, Deadline, Timeouts};
use crate::relay::{self, Half};
use crate::socks4;
use crate::socks5::{self, Request, User};
use crate::udp;
use crate::upstream::{Balance, Link, Pool, PoolSize, Server, Unreachable, Upstreams};
use crate::wire::{self, Command, TrojanHash};

/// The longest header: a trojan hash line, a command and a 255-byte name.
const HEADER_MAX: usize = 56 + 2 + 1 + 1 + 1 + 255 + 2 + 2;
/// The most application bytes sent along with the header in its first record.
const EARLY_DATA_MAX: usize = 16 * 1024 - HEADER_MAX;

/// Everything a client connection needs to reach the server.
pub struct Config {
    /// The servers, in order of preference (at least one).
    pub servers: Vec<Server>,
    /// Which server a new client goes to.
    pub balance: Balance,
    /// Built by [`crate::tls::client_config`]; a reload of `--ca` replaces it.
    pub tls: Arc<Current<ClientConfig>>,
    /// Deadlines of each connection.
    pub timeouts: Timeouts,
    /// The users and the password in force; a reload replaces them.
    pub secrets: Arc<Current<Secrets>>,
    /// Connections served at once; more are refused (see `refuse`).
    pub max_conns: usize,
    /// TLS connections to keep ready: a fixed number (0: none, each client
    /// waits for its own handshake), or as many as recent demand asks for.
    pub pool: PoolSize,
    /// A ready connection older than this is replaced; keep it below the
    /// server's handshake timeout, after which the server closes it.
    pub pool_age: Duration,
}

/// What a client's login is checked against and what the server is told,
/// as loaded at start or by the last reload. A connection takes them once,
/// when it starts.
pub struct Secrets {
    /// When not empty, clients must log in as one of these (SOCKS5, HTTP Basic).
    pub users: Vec<User>,
    /// With a password, the trojan header; without, the seed header.
    pub password: Option<TrojanHash>,
}

/// A bound blocking-local, ready to [`run`](Local::run).
pub struct Local {
    acceptor: Acceptor,
    cfg: Arc<Config>,
    upstreams: Arc<Upstreams>,
}

impl Local {
    /// Binds the SOCKS5 listener. From here on the servers' state is in the
    /// metrics (all up until a client or the pool finds otherwise).
    pub fn bind(listen: &str, cfg: Config) -> Result<Local, Error> {
        let acceptor = Acceptor::bind(listen, cfg.max_conns, None)?;
        let upstreams = Arc::new(Upstreams::new(
            cfg.servers.clone(),
            cfg.balance,
            Arc::clone(&cfg.tls),
            cfg.timeouts.connect,
        ));
        let shown = Arc::clone(&upstreams);
        metrics::add_collector(Box::new(move |out| shown.write_metrics(out)));
        Ok(Local { acceptor, cfg: Arc::new(cfg), upstreams })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.acceptor.local_addr()
    }

    /// A handle that makes [`run`](Local::run) stop accepting and drain.
    pub fn stopper(&self) -> io::Result<Stopper> {
        self.acceptor.stopper()
    }

    /// Serves clients until stopped, then drains; returns the connections still open.
    pub fn run(self) -> usize {
        let (cfg, upstreams) = (&self.cfg, self.upstreams);
        upstreams.start_check();
        let pool = Pool::start(&upstreams, cfg.pool, cfg.pool_age);
        let cfg = Arc::clone(&self.cfg);
        let handler = move |app, report| client(app, &cfg, &upstreams, pool.as_deref(), report);
        // A reload never empties the users (an empty user file is refused).
        let login = !self.cfg.secrets.get().users.is_empty();
        self.acceptor.run(self.cfg.timeouts.drain, handler, move |app| refuse(app, login))
    }
}

/// Over the cap: an answer in the client's protocol when its first byte has
/// already arrived, else none, then a close; nothing here waits, since the
/// accept loop runs it. SOCKS5 without users gets method 0x00 and a general
/// failure; with users, method 0xFF (no acceptable method): 0x00 is not what
/// such a local serves, and a client that offered only username/password
/// must not be answered with a method it did not offer. SOCKS4 gets
/// [`socks4::REQUEST_REJECTED`], HTTP `503 Service Unavailable`.
fn refuse(app: TcpStream, login: bool) {
    const NO_METHOD: [u8; 2] = [socks5::SOCKS_VERSION, socks5::METHOD_NO_ACCEPTABLE];
    const FAILURE: [u8; 12] = [
        socks5::SOCKS_VERSION,
        socks5::METHOD_NO_AUTH,
        socks5::SOCKS_VERSION,
        socks5::REP_GENERAL_FAILURE,
        0,
        ATYP_IPV4,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    const SOCKS4_REJECTED: [u8; 8] = [socks4::REPLY_VERSION, socks4::REQUEST_REJECTED, 0, 0, 0, 0, 0, 0];
    if app.set_nonblocking(true).is_err() {
        return;
    }
    let mut first = [0u8; 1];
    let busy;
    let answer: &[u8] = match app.peek(&mut first) {
        Ok(1) => match Proto::of(first[0]) {
            Some(Proto::Socks5) if login => &NO_METHOD,
            Some(Proto::Socks5) => &FAILURE,
            Some(Proto::Socks4) => &SOCKS4_REJECTED,
            Some(Proto::Http) => {
                busy = http::response(http::Status::ServiceUnavailable);
                &busy
            }
            None => &[],
        },
        _ => &[],
    };
    // Take what has arrived, so that the close is a FIN the client reads the
    // answer before, not a reset that may discard it.
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        if !matches!((&app).read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
    let _ = (&app).write(answer);
    let _ = app.shutdown(std::net::Shutdown::Write);
}

/// The protocols served on the one port, told apart by the client's first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    /// 0x05.
    Socks5,
    /// 0x04, SOCKS4 and SOCKS4a.
    Socks4,
    /// An ASCII letter: the first of a method.
    Http,
}

impl Proto {
    /// The protocol a client whose first byte is `first` speaks, if it is one served.
    fn of(first: u8) -> Option<Proto> {
        match first {
            socks5::SOCKS_VERSION => Some(Proto::Socks5),
            socks4::SOCKS4_VERSION => Some(Proto::Socks4),
            b if b.is_ascii_alphabetic() => Some(Proto::Http),
            _ => None,
        }
    }

    /// Its name in logs (`proto=` of the close line).
    fn name(self) -> &'static str {
        match self {
            Proto::Socks5 => "socks5",
            Proto::Socks4 => "socks4",
            Proto::Http => "http",
        }
    }
}

/// What a client asked for: a tunnel, or (SOCKS5 with a password) a UDP association.
enum Asked {
    Tunnel(Ask),
    /// UDP ASSOCIATE; datagrams will come from this address.
    Udp(Target),
}

/// A tunnel, as a client asked for it in its protocol: where to, how to
/// answer, and (a forwarded HTTP request) the head to send first.
enum Ask {
    Socks5(Target),
    Socks4(Target),
    Connect(Target),
    Forward(Target, Vec<u8>),
}

impl Ask {
    fn target(&self) -> &Target {
        match self {
            Ask::Socks5(t) | Ask::Socks4(t) | Ask::Connect(t) | Ask::Forward(t, _) => t,
        }
    }

    /// The answer once the tunnel is up (none for a forwarded request: the upstream answers).
    fn grant(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            Ask::Socks5(_) => socks5::reply(w, socks5::REP_SUCCEEDED),
            Ask::Socks4(_) => socks4::reply(w, socks4::REQUEST_GRANTED),
            Ask::Connect(_) => w.write_all(http::ESTABLISHED),
            Ask::Forward(..) => Ok(()),
        }
    }

    /// The answer when the server cannot be reached because of `e`.
    fn fail(&self, w: &mut impl Write, e: &Error) -> io::Result<()> {
        let code = socks5::reply_code(e);
        match self {
            Ask::Socks5(_) => socks5::reply(w, code),
            Ask::Socks4(_) => socks4::reply(w, socks4::REQUEST_REJECTED),
            Ask::Connect(_) | Ask::Forward(..) => {
                w.write_all(&http::response(if code == socks5::REP_TTL_EXPIRED {
                    http::Status::GatewayTimeout
                } else {
                    http::Status::BadGateway
                }))
            }
        }
    }
}

/// Reads the client's request in the protocol its first byte names, under
/// the handshake deadline. None when it is not served: the reason is in
/// `report` (and logged at warn for a refused login), an answer already
/// written where the protocol has one, and the caller closes.
fn handshake(app: &TcpStream, cfg: &Config, secrets: &Secrets, report: &mut Report) -> Option<Asked> {
    let id = report.id;
    let mut io = Deadline::new(app, Instant::now() + cfg.timeouts.handshake);
    let mut first = [0u8; 1];
    let proto = match io.peek(&mut first) {
        Ok(0) => {
            report.end = "client closed before its first byte".into();
            return None;
        }
        Ok(_) => Proto::of(first[0]),
        Err(e) => {
            report.end = format!("client: {e}");
            return None;
        }
    };
    let Some(proto) = proto else {
        log::debug!("#{id} unknown protocol: first byte {:#04x}", first[0]);
        report.end = format!("unknown protocol: first byte {:#04x}", first[0]);
        return None;
    };
    let name = proto.name();
    report.proto = Some(name);
    let asked = match proto {
        Proto::Socks5 => {
            socks5::accept_request(&mut io, &secrets.users, secrets.password.is_some()).map(|r| match r {
                Request::Connect(t) => Asked::Tunnel(Ask::Socks5(t)),
                Request::UdpAssociate(from) => Asked::Udp(from),
            })
        }
        Proto::Socks4 => {
            socks4::accept(&mut io, !secrets.users.is_empty()).map(|t| Asked::Tunnel(Ask::Socks4(t)))
        }
        Proto::Http => http::accept(&mut io, &secrets.users).map(|r| match r {
            http::Request::Connect(t) => Asked::Tunnel(Ask::Connect(t)),
            http::Request::Forward { target, head } => Asked::Tunnel(Ask::Forward(target, head)),
        }),
    };
    match asked {
        Ok(ask) => Some(ask),
        Err(e @ Error::Denied(_)) => {
            log::warn!("#{id} {name} client {}: {e}", report.peer());
            report.end = format!("{name}: {e}");
            None
        }
        Err(e) => {
            log::debug!("#{id} {name} failed: {e}");
            report.end = format!("{name}: {e}");
            None
        }
    }
}

/// One client, up to the start of its relay (which then owns `report`).
fn client(app: TcpStream, cfg: &Config, upstreams: &Arc<Upstreams>, pool: Option<&Pool>, mut report: Report) {
    let id = report.id;
    let _ = app.set_nodelay(true);
    let secrets = cfg.secrets.get();
    let Some(ask) = handshake(&app, cfg, &secrets, &mut report) else {
        net::close_gently(&app);
        return;
    };
    let ask = match ask {
        // Only asked for with a password: the seed format has no UDP.
        Asked::Udp(from) => return associate(app, &from, cfg, &secrets, upstreams, pool, report),
        Asked::Tunnel(ask) => ask,
    };
    let target = ask.target().clone();
    log::debug!("#{id} connect {target}");
    report.target = Some(target.to_string());

    let reply_until = || Instant::now() + cfg.timeouts.handshake;
    let ready = pool.and_then(Pool::take);
    let Link { server: index, sock, conn, .. } =
        match ready.map_or_else(|| upstreams.connect(Some(report.place())), Ok) {
            Ok(link) => link,
            Err(Unreachable { server, error: e }) => {
                log::warn!("#{id} cannot reach server {server}: {e}");
                let _ = ask.fail(&mut Deadline::new(&app, reply_until()), &e);
                report.end = format!("server {server}: {e}");
                net::close_gently(&app);
                return;
            }
        };
    if let Err(e) = ask.grant(&mut Deadline::new(&app, reply_until())) {
        report.end = format!("client: {e}");
        return;
    }
    // A forwarded request's head goes first; its upstream's silence gets a 502.
    let (head, silence) = match ask {
        Ask::Forward(_, head) => (head, Some(http::SILENT_UPSTREAM)),
        _ => (Vec::new(), None),
    };

    // On this short-lived thread's stack, not the heap: the connection keeps none of it.
    let mut early = [0u8; EARLY_DATA_MAX];
    let room = EARLY_DATA_MAX.saturating_sub(head.len());
    let early_len = match read_ready(&app, &mut early[..room]) {
        Ok(n) => n,
        // A reset now must not turn into a clean end upstream: drop the tunnel unopened.
        Err(e) => {
            report.end = format!("client: {e}");
            return;
        }
    };
    let mut first = Vec::with_capacity(HEADER_MAX + head.len() + early_len);
    match &secrets.password {
        Some(hash) => wire::encode_trojan(hash, &target, &mut first),
        None => wire::encode_seed(&target, &mut first),
    }
    first.extend_from_slice(&head);
    first.extend_from_slice(&early[..early_len]);
    let sent = (head.len() + early_len) as u64;
    drop(head);
    let mut server = Half::tls(sock, conn);
    if let Err(e) = server.writer.write_all(&first) {
        report.end = format!("server: {e}");
        return;
    }
    drop(first);

    report.up = sent;
    let names = ["client", "server"];
    let upstreams = Arc::clone(upstreams);
    relay::relay_answering_silence(Half::tcp(app), server, names, &cfg.timeouts, silence, move |out| {
        if out.cut_before_reply {
            upstreams.failed(index, "a connection was cut before any reply byte");
        }
        report.relayed(out)
    });
}

/// Serves a UDP ASSOCIATE: a UDP socket of its own on the listener's
/// address for the client's datagrams, one TLS connection to the server
/// whose trojan header asks for UDP, the success reply naming the socket,
/// then the association's two threads (see [`crate::udp`]). `from` is where
/// the client said its datagrams will come from: its port, when not 0, is
/// the only one accepted; the address is always the client's own.
fn associate(
    app: TcpStream,
    from: &Target,
    cfg: &Config,
    secrets: &Secrets,
    upstreams: &Upstreams,
    pool: Option<&Pool>,
    mut report: Report,
) {
    let id = report.id;
    report.target = Some("udp".into());
    let reply_until = || Instant::now() + cfg.timeouts.handshake;
    let (Ok(here), Ok(client), Some(hash)) = (app.local_addr(), app.peer_addr(), secrets.password) else {
        report.end = "udp: no address or no password".into();
        let _ = socks5::reply(&mut Deadline::new(&app, reply_until()), socks5::REP_GENERAL_FAILURE);
        return;
    };
    let udp = match UdpSocket::bind(SocketAddr::new(here.ip(), 0)) {
        Ok(s) => s,
        Err(e) => {
            report.end = format!("udp: {e}");
            let _ = socks5::reply(&mut Deadline::new(&app, reply_until()), socks5::REP_GENERAL_FAILURE);
            net::close_gently(&app);
            return;
        }
    };
    let ready = pool.and_then(Pool::take);
    let Link { sock, mut conn, .. } = match ready.map_or_else(|| upstreams.connect(Some(report.place())), Ok)
    {
        Ok(link) => link,
        Err(Unreachable { server, error: e }) => {
            log::warn!("#{id} cannot reach server {server}: {e}");
            let _ = socks5::reply(&mut Deadline::new(&app, reply_until()), socks5::reply_code(&e));
            report.end = format!("server {server}: {e}");
            net::close_gently(&app);
            return;
        }
    };
    let mut header = Vec::with_capacity(HEADER_MAX);
    wire::encode_trojan_request(&hash, Command::UdpAssociate, from, &mut header);
    let sent = conn.writer().write_all(&header).and_then(|()| {
        let mut io = Deadline::new(&sock, reply_until());
        while conn.wants_write() {
            conn.write_tls(&mut io)?;
        }
        Ok(())
    });
    if let Err(e) = sent {
        let e = Error::from(e);
        let _ = socks5::reply(&mut Deadline::new(&app, reply_until()), socks5::reply_code(&e));
        report.end = format!("server: {e}");
        net::close_gently(&app);
        return;
    }
    let bound = udp.local_addr().unwrap_or(here);
    if let Err(e) = socks5::reply_bound(&mut Deadline::new(&app, reply_until()), bound) {
        report.end = format!("client: {e}");
        return;
    }
    log::debug!("#{id} udp association on {bound} for {client}");
    let port = from.port();
    udp::local(app, udp, sock, conn, client.ip(), port, &cfg.timeouts, move |out| report.associated(out));
}

/// Reads what `sock` has already received into `buf`, without waiting;
/// returns its length (0 when nothing has arrived yet).
fn read_ready(sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    match net::Arrived(sock).read(buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        other => other,
    }
}
