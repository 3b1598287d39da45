//! blocking-server: accepts TLS connections from blocking-local, reads the
//! target from the header and relays to it.
//!
//! Per connection, on its own thread: the TLS handshake and the header under
//! the handshake deadline; the connect to the target (every address the name
//! resolves to that the egress policy permits, in turn) under the connect
//! deadline; then the relay. Bytes that arrived with the header stay in
//! rustls's buffer and are the first the relay forwards.
//!
//! With passwords the header must be a trojan header with a known hash. A
//! connection whose header is not valid (a wrong password, a seed header, a
//! browser's `GET /`, a header cut short and then silence) is handed, with
//! every byte read so far, to the fallback address if there is one, so that a
//! prober sees an ordinary web site; otherwise it is closed. A client whose
//! hash was right but whose request is not served (UDP ASSOCIATE, a malformed
//! rest) is closed, never handed over with its hash.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use rustls::{ServerConfig, ServerConnection};

use crate::egress::Policy;
use crate::relay::{self, Deadline, Half};
use crate::wire::{Target, TrojanHash};
use crate::{wire, Acceptor, Error, Report, Stopper, Timeouts};

/// Everything a connection from a local needs.
pub struct Config {
    /// Built by [`crate::tls::server_config`].
    pub tls: Arc<ServerConfig>,
    /// Deadlines of each connection.
    pub timeouts: Timeouts,
    /// Known trojan password hashes; empty means the seed format, open to anyone.
    pub passwords: Vec<TrojanHash>,
    /// Where connections without a valid header are handed over.
    pub fallback: Option<Target>,
    /// Which target addresses may be reached.
    pub egress: Policy,
    /// Connections served at once; more are closed right after accept.
    pub max_conns: usize,
}

/// A bound blocking-server, ready to [`run`](Server::run).
pub struct Server {
    acceptor: Acceptor,
    cfg: Arc<Config>,
}

impl Server {
    /// Binds the TLS listener.
    pub fn bind(listen: &str, cfg: Config) -> Result<Server, Error> {
        Ok(Server { acceptor: Acceptor::bind(listen, cfg.max_conns)?, cfg: Arc::new(cfg) })
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
    let mut conn = match ServerConnection::new(Arc::clone(&cfg.tls)) {
        Ok(c) => c,
        Err(e) => {
            report.end = format!("tls: {e}");
            return;
        }
    };
    if let Err(e) = relay::handshake(&mut conn, &sock, until) {
        log::debug!("#{id} tls handshake failed: {e}");
        report.end = format!("tls handshake: {e}");
        return;
    }
    let mut io = Deadline::new(&sock, until);
    let mut header = Recorder { inner: rustls::Stream::new(&mut conn, &mut io), seen: Vec::new() };
    let parsed = if cfg.passwords.is_empty() {
        wire::read_seed(&mut header)
    } else {
        wire::read_trojan(&mut header, &cfg.passwords)
    };
    let seen = header.seen;
    let target = match parsed {
        Ok(t) => t,
        Err(e) => {
            log::debug!("#{id} bad header: {e}");
            report.end = format!("header: {e}");
            // A client that presented a valid password is never handed over:
            // the fallback would receive its hash in the clear.
            let authenticated = wire::trojan_hash_known(&seen, &cfg.passwords);
            if let (Some(fallback), true) = (&cfg.fallback, !authenticated && worth_a_fallback(&e, &seen)) {
                to_fallback(sock, conn, &seen, fallback, cfg, report);
            }
            return;
        }
    };
    log::debug!("#{id} connect {target}");
    report.target = Some(target.to_string());
    let out = match crate::connect(&target, Instant::now() + cfg.timeouts.connect, Some(&cfg.egress)) {
        Ok(s) => s,
        Err(e) => {
            log::debug!("#{id} cannot reach {target}: {e}");
            report.end = format!("target: {e}");
            return;
        }
    };
    relay::relay(Half::tls(sock, conn), Half::tcp(out), ["client", "target"], &cfg.timeouts, move |out| {
        report.relayed(out)
    });
}

/// A header that is wrong, or cut short and then silent, goes to the
/// fallback. A client that closed, broke TLS or never sent a byte has
/// nothing to hand over: an idle connection is closed, as web servers do.
fn worth_a_fallback(e: &Error, seen: &[u8]) -> bool {
    match e {
        Error::Protocol(_) => true,
        Error::Io(e) => {
            !seen.is_empty() && matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
        }
        _ => false,
    }
}

/// Relays a connection that did not present a valid header to the fallback,
/// starting with every byte it sent.
fn to_fallback(
    sock: TcpStream,
    conn: ServerConnection,
    seen: &[u8],
    fallback: &Target,
    cfg: &Config,
    mut report: Report,
) {
    log::debug!("#{} handing {} bytes to the fallback {fallback}", report.id, seen.len());
    report.target = Some(format!("fallback/{fallback}"));
    let until = Instant::now() + cfg.timeouts.connect;
    let out = match crate::connect(fallback, until, None) {
        Ok(s) => s,
        Err(e) => {
            report.end = format!("fallback: {e}");
            return;
        }
    };
    if let Err(e) = Deadline::new(&out, until).write_all(seen) {
        report.end = format!("fallback: {e}");
        return;
    }
    report.up = seen.len() as u64;
    relay::relay(Half::tls(sock, conn), Half::tcp(out), ["client", "fallback"], &cfg.timeouts, move |out| {
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
