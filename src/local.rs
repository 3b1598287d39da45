//! blocking-local: accepts SOCKS5 clients and carries each one over its own
//! TLS connection to blocking-server.
//!
//! Per client, on its own thread: the SOCKS5 greeting, login (when users are
//! configured) and request under the handshake deadline; TCP and TLS to the server under the connect deadline
//! (a failure becomes the SOCKS5 reply code for it); the success reply; then
//! the header, in one TLS record with whatever the application has already
//! sent, and the relay. The local never waits for the application to speak
//! first, so server-first protocols (SMTP, FTP, MySQL) work.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::relay::{self, Deadline, Half};
use crate::socks5::User;
use crate::wire::{self, Target, TrojanHash};
use crate::{socks5, Acceptor, Error, Report, Stopper, Timeouts};

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
    /// Connections served at once; more are answered with a general failure.
    pub max_conns: usize,
}

/// A bound blocking-local, ready to [`run`](Local::run).
pub struct Local {
    acceptor: Acceptor,
    cfg: Arc<Config>,
}

impl Local {
    /// Binds the SOCKS5 listener.
    pub fn bind(listen: &str, cfg: Config) -> Result<Local, Error> {
        Ok(Local { acceptor: Acceptor::bind(listen, cfg.max_conns)?, cfg: Arc::new(cfg) })
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
        let cfg = Arc::clone(&self.cfg);
        let handler = move |id, app, peer| {
            let mut report = Report::new(id, peer);
            client(id, app, &cfg, &mut report);
        };
        self.acceptor.run("local", self.cfg.timeouts.drain, handler, refuse)
    }
}

/// Over the cap: a SOCKS5 general failure, written without reading the
/// client's greeting (the replies are fixed), then a close.
fn refuse(app: TcpStream) {
    const FAILURE: [u8; 12] = [
        socks5::SOCKS_VERSION,
        socks5::METHOD_NO_AUTH,
        socks5::SOCKS_VERSION,
        socks5::REP_GENERAL_FAILURE,
        0,
        socks5::ATYP_IPV4,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    if app.set_nonblocking(true).is_ok() {
        let _ = (&app).write(&FAILURE);
        let _ = app.shutdown(std::net::Shutdown::Write);
    }
}

/// The whole life of one SOCKS5 client.
fn client(id: u64, app: TcpStream, cfg: &Config, report: &mut Report) {
    let _ = app.set_nodelay(true);
    let until = Instant::now() + cfg.timeouts.handshake;
    let target = match socks5::accept(&mut Deadline::new(&app, until), &cfg.users) {
        Ok(t) => t,
        Err(e @ Error::Denied(_)) => {
            log::warn!("#{id} {e}");
            report.end = format!("socks5: {e}");
            relay::close_gently(&app);
            return;
        }
        Err(e) => {
            log::debug!("#{id} socks5 failed: {e}");
            report.end = format!("socks5: {e}");
            relay::close_gently(&app);
            return;
        }
    };
    log::debug!("#{id} connect {target}");
    report.target = Some(target.to_string());

    let reply_until = || Instant::now() + cfg.timeouts.handshake;
    let (sock, conn) = match connect_server(cfg) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("#{id} cannot reach server {}: {e}", cfg.server);
            let _ = socks5::reply(&mut Deadline::new(&app, reply_until()), socks5::reply_code(&e));
            report.end = format!("server {}: {e}", cfg.server);
            relay::close_gently(&app);
            return;
        }
    };
    if let Err(e) = socks5::reply(&mut Deadline::new(&app, reply_until()), socks5::REP_SUCCEEDED) {
        report.end = format!("client: {e}");
        return;
    }

    let mut first = Vec::with_capacity(HEADER_MAX + EARLY_DATA_MAX);
    match &cfg.password {
        Some(hash) => wire::encode_trojan(hash, &target, &mut first),
        None => wire::encode_seed(&target, &mut first),
    }
    let header_len = first.len();
    read_ready(&app, &mut first, EARLY_DATA_MAX);
    let early = (first.len() - header_len) as u64;
    let mut server = Half::tls(sock, conn);
    if let Err(e) = server.writer.write_all(&first) {
        report.end = format!("server: {e}");
        return;
    }
    drop(first);

    let out = relay::relay(Half::tcp(app), server, ["client", "server"], &cfg.timeouts);
    report.up = early + out.up;
    report.down = out.down;
    report.end = out.end.to_string();
}

/// Opens TCP and completes TLS to the server, both before the connect deadline.
fn connect_server(cfg: &Config) -> Result<(TcpStream, ClientConnection), Error> {
    let until = Instant::now() + cfg.timeouts.connect;
    let sock = crate::connect(&cfg.server, until, None)?;
    let mut conn = ClientConnection::new(Arc::clone(&cfg.tls), cfg.server_name.clone())?;
    relay::handshake(&mut conn, &sock, until)?;
    Ok((sock, conn))
}

/// Appends what `sock` has already received, up to `max` bytes, without waiting.
fn read_ready(sock: &TcpStream, buf: &mut Vec<u8>, max: usize) {
    if sock.set_nonblocking(true).is_err() {
        return;
    }
    let old = buf.len();
    buf.resize(old + max, 0);
    let n = (&*sock).read(&mut buf[old..]).unwrap_or(0);
    buf.truncate(old + n);
    let _ = sock.set_nonblocking(false);
}
