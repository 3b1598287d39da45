//! blocking-local: accepts SOCKS5, SOCKS4/4a and HTTP proxy clients on one
//! port and carries each one over its own TLS connection to blocking-server.
//!
//! Per client, on its own thread: the first byte, peeked under the handshake
//! deadline, names the protocol (0x05 SOCKS5, 0x04 SOCKS4, an ASCII letter
//! HTTP; anything else is closed), whose parser then reads the request from
//! the start: the SOCKS5 greeting, login (when users are configured) and
//! request, a SOCKS4 request, or an HTTP request head; a TLS connection to
//! the server, taken ready from the [`Pool`] when there is one, or TCP and
//! TLS to the server under the connect deadline (a failure becomes the
//! client protocol's answer for it); the success reply; then the header, in
//! one TLS record with whatever the application has already sent (after a
//! forwarded HTTP request's rewritten head), and the relay. After its
//! request the local never waits for the application to speak first, so
//! server-first protocols (SMTP, FTP, MySQL) work.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::accept::{Acceptor, Report, Stopper};
use crate::addr::{Target, ATYP_IPV4};
use crate::error::Error;
use crate::gate::Place;
use crate::http;
use crate::metrics;
use crate::net::{self, Deadline, Timeouts};
use crate::relay::{self, Half};
use crate::socks4;
use crate::socks5::{self, Request, User};
use crate::tls;
use crate::udp;
use crate::wire::{self, Command, TrojanHash};
use crate::workers::SETUP_STACK;

/// The longest header: a trojan hash line, a command and a 255-byte name.
const HEADER_MAX: usize = 56 + 2 + 1 + 1 + 1 + 255 + 2 + 2;
/// The most application bytes sent along with the header in its first record.
const EARLY_DATA_MAX: usize = 16 * 1024 - HEADER_MAX;

/// Everything a client connection needs to reach the server.
pub struct Config {
    /// The server's address (`host:port`).
    pub server: Target,
    /// The name the server's certificate is verified against and sent in SNI.
    pub server_name: ServerName<'static>,
    /// Built by [`crate::tls::client_config`].
    pub tls: Arc<ClientConfig>,
    /// Deadlines of each connection.
    pub timeouts: Timeouts,
    /// With a password, the trojan header; without, the seed header.
    pub password: Option<TrojanHash>,
    /// When not empty, SOCKS5 clients must log in as one of these (RFC 1929).
    pub users: Vec<User>,
    /// Connections served at once; more are refused (see `refuse`).
    pub max_conns: usize,
    /// TLS connections to keep ready (0: none, each client waits for its own handshake).
    pub pool: usize,
    /// A ready connection older than this is replaced; keep it below the
    /// server's handshake timeout, after which the server closes it.
    pub pool_age: Duration,
}

/// A bound blocking-local, ready to [`run`](Local::run).
pub struct Local {
    acceptor: Acceptor,
    cfg: Arc<Config>,
}

impl Local {
    /// Binds the SOCKS5 listener.
    pub fn bind(listen: &str, cfg: Config) -> Result<Local, Error> {
        Ok(Local { acceptor: Acceptor::bind(listen, cfg.max_conns, None)?, cfg: Arc::new(cfg) })
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
        let pool = Pool::start(&self.cfg);
        let cfg = Arc::clone(&self.cfg);
        let handler = move |app, report| client(app, &cfg, pool.as_deref(), report);
        let login = !self.cfg.users.is_empty();
        self.acceptor.run(self.cfg.timeouts.drain, handler, move |app| refuse(app, login))
    }
}

/// TLS connections to the server, handshaken ahead of time so that a new
/// client does not wait for TCP and TLS. Filler threads keep `size` of them
/// ready and replace any that reach `pool_age` unused.
pub struct Pool {
    ready: Mutex<VecDeque<Ready>>,
    wake: Condvar,
    cfg: Arc<Config>,
}

struct Ready {
    sock: TcpStream,
    conn: ClientConnection,
    born: Instant,
}

/// How long a filler rests after it could not reach the server.
const POOL_BACKOFF: Duration = Duration::from_secs(1);

impl Pool {
    /// Starts the filler threads, if the configuration asks for a pool.
    fn start(cfg: &Arc<Config>) -> Option<Arc<Pool>> {
        if cfg.pool == 0 {
            return None;
        }
        let pool =
            Arc::new(Pool { ready: Mutex::new(VecDeque::new()), wake: Condvar::new(), cfg: Arc::clone(cfg) });
        for i in 0..cfg.pool.min(2) {
            let p = Arc::clone(&pool);
            let spawned = thread::Builder::new()
                .name(format!("pool-{i}"))
                .stack_size(SETUP_STACK)
                .spawn(move || p.fill());
            if let Err(e) = spawned {
                log::warn!("cannot start a pool thread: {e}");
            }
        }
        Some(pool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Ready>> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ready connection, if one is fresh and still open.
    fn take(&self) -> Option<(TcpStream, ClientConnection)> {
        let mut ready = self.lock();
        let found = loop {
            let mut r = ready.pop_front()?;
            if r.born.elapsed() < self.cfg.pool_age && still_open(&r.sock, &mut r.conn) {
                break Some((r.sock, r.conn));
            }
        };
        metrics::POOL_READY.set(ready.len() as i64);
        drop(ready);
        metrics::POOL_TAKEN.add(u64::from(found.is_some()));
        self.wake.notify_one();
        found
    }

    /// A filler thread: keeps the pool full and fresh, forever.
    fn fill(&self) {
        let age = self.cfg.pool_age;
        loop {
            let mut ready = self.lock();
            ready.retain(|r| r.born.elapsed() < age);
            metrics::POOL_READY.set(ready.len() as i64);
            if ready.len() >= self.cfg.pool {
                // Full: sleep until a connection is taken or the oldest gets too old.
                let oldest = ready.front().map_or(age, |r| age.saturating_sub(r.born.elapsed()));
                drop(self.wake.wait_timeout(ready, oldest).unwrap_or_else(PoisonError::into_inner));
                continue;
            }
            drop(ready);
            match connect_server(&self.cfg, None) {
                Ok((sock, mut conn)) => {
                    take_tickets(&sock, &mut conn);
                    self.lock().push_back(Ready { sock, conn, born: Instant::now() });
                }
                Err(e) => {
                    log::warn!("pool: cannot reach server {}: {e}", self.cfg.server);
                    thread::sleep(POOL_BACKOFF);
                }
            }
        }
    }
}

/// How long a filler waits for the session tickets a TLS 1.3 server sends
/// right after the handshake (about one round trip).
const TICKET_WAIT: Duration = Duration::from_millis(200);

/// Reads the session tickets that follow a handshake, so that they are
/// stored for resumption now and not on a client's path later. TLS 1.2
/// servers send none: then this just waits [`TICKET_WAIT`] for nothing.
fn take_tickets(sock: &TcpStream, conn: &mut ClientConnection) {
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return;
    }
    let _ = sock.set_read_timeout(Some(TICKET_WAIT));
    if conn.read_tls(&mut &*sock).is_ok_and(|n| n > 0) {
        let _ = conn.process_new_packets();
    }
}

/// Whether the server has not closed a connection while it waited in the
/// pool. Whatever arrived meanwhile is read without waiting: the session
/// tickets the server sends after the handshake (stored for resumption), and
/// behind them perhaps the end of the connection.
fn still_open(sock: &TcpStream, conn: &mut ClientConnection) -> bool {
    if sock.set_nonblocking(true).is_err() {
        return false;
    }
    let open = loop {
        match conn.read_tls(&mut &*sock) {
            Ok(0) => break false,
            Ok(_) => {
                if conn.process_new_packets().is_err() {
                    break false;
                }
            }
            Err(e) => break e.kind() == io::ErrorKind::WouldBlock,
        }
    };
    open && sock.set_nonblocking(false).is_ok()
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
fn handshake(app: &TcpStream, cfg: &Config, report: &mut Report) -> Option<Asked> {
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
            socks5::accept_request(&mut io, &cfg.users, cfg.password.is_some()).map(|r| match r {
                Request::Connect(t) => Asked::Tunnel(Ask::Socks5(t)),
                Request::UdpAssociate(from) => Asked::Udp(from),
            })
        }
        Proto::Socks4 => {
            socks4::accept(&mut io, !cfg.users.is_empty()).map(|t| Asked::Tunnel(Ask::Socks4(t)))
        }
        Proto::Http => http::accept(&mut io, &cfg.users).map(|r| match r {
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
fn client(app: TcpStream, cfg: &Config, pool: Option<&Pool>, mut report: Report) {
    let id = report.id;
    let _ = app.set_nodelay(true);
    let Some(ask) = handshake(&app, cfg, &mut report) else {
        net::close_gently(&app);
        return;
    };
    let ask = match ask {
        // Only asked for with a password: the seed format has no UDP.
        Asked::Udp(from) => return associate(app, &from, cfg, pool, report),
        Asked::Tunnel(ask) => ask,
    };
    let target = ask.target().clone();
    log::debug!("#{id} connect {target}");
    report.target = Some(target.to_string());

    let reply_until = || Instant::now() + cfg.timeouts.handshake;
    let ready = pool.and_then(Pool::take);
    let (sock, conn) = match ready.map_or_else(|| connect_server(cfg, Some(report.place())), Ok) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("#{id} cannot reach server {}: {e}", cfg.server);
            let _ = ask.fail(&mut Deadline::new(&app, reply_until()), &e);
            report.end = format!("server {}: {e}", cfg.server);
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
    match &cfg.password {
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
    relay::relay_answering_silence(Half::tcp(app), server, names, &cfg.timeouts, silence, move |out| {
        report.relayed(out)
    });
}

/// Serves a UDP ASSOCIATE: a UDP socket of its own on the listener's
/// address for the client's datagrams, one TLS connection to the server
/// whose trojan header asks for UDP, the success reply naming the socket,
/// then the association's two threads (see [`crate::udp`]). `from` is where
/// the client said its datagrams will come from: its port, when not 0, is
/// the only one accepted; the address is always the client's own.
fn associate(app: TcpStream, from: &Target, cfg: &Config, pool: Option<&Pool>, mut report: Report) {
    let id = report.id;
    report.target = Some("udp".into());
    let reply_until = || Instant::now() + cfg.timeouts.handshake;
    let (Ok(here), Ok(client), Some(hash)) = (app.local_addr(), app.peer_addr(), cfg.password) else {
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
    let (sock, mut conn) = match ready.map_or_else(|| connect_server(cfg, Some(report.place())), Ok) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("#{id} cannot reach server {}: {e}", cfg.server);
            let _ = socks5::reply(&mut Deadline::new(&app, reply_until()), socks5::reply_code(&e));
            report.end = format!("server {}: {e}", cfg.server);
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

/// Opens TCP and completes TLS to the server, both before the connect
/// deadline; a client's connection shares its `place` with a name lookup.
fn connect_server(cfg: &Config, place: Option<&Place>) -> Result<(TcpStream, ClientConnection), Error> {
    let until = Instant::now() + cfg.timeouts.connect;
    let sock = net::connect(&cfg.server, until, None, place)?;
    let mut conn = ClientConnection::new(Arc::clone(&cfg.tls), cfg.server_name.clone())?;
    tls::handshake(&mut conn, &mut Deadline::new(&sock, until))?;
    log::trace!("tls to server: {:?} {:?}", conn.handshake_kind(), conn.negotiated_cipher_suite());
    Ok((sock, conn))
}

/// Reads what `sock` has already received into `buf`, without waiting;
/// returns its length (0 when nothing has arrived yet).
fn read_ready(sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    sock.set_nonblocking(true)?;
    let read = match (&*sock).read(buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        other => other,
    };
    sock.set_nonblocking(false)?;
    read
}
