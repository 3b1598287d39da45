//! blocking-server: accepts TLS connections from blocking-local, reads the
//! target from the header and relays to it.
//!
//! Per connection, on its own thread: the TLS handshake and the header under
//! the handshake deadline; the connect to the target (every address the name
//! resolves to, in turn) under the connect deadline; then the relay. Bytes
//! that arrived with the header stay in rustls's buffer and are the first the
//! relay forwards.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use rustls::{ServerConfig, ServerConnection};

use crate::relay::{self, Deadline, Half};
use crate::{wire, Error, Report, Timeouts};

/// Everything a connection from a local needs.
pub struct Config {
    /// Built by [`crate::tls::server_config`].
    pub tls: Arc<ServerConfig>,
    /// Deadlines of each connection.
    pub timeouts: Timeouts,
}

/// A bound blocking-server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    cfg: Arc<Config>,
}

impl Server {
    /// Binds the TLS listener.
    pub fn bind(listen: &str, cfg: Config) -> Result<Server, Error> {
        Ok(Server { listener: crate::listen(listen)?, cfg: Arc::new(cfg) })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves connections forever.
    pub fn run(self) {
        let cfg = self.cfg;
        crate::serve(&self.listener, "server", move |id, sock, peer| {
            let mut report = Report::new(id, peer);
            connection(id, sock, &cfg, &mut report);
        });
    }
}

/// The whole life of one connection from a local.
fn connection(id: u64, sock: TcpStream, cfg: &Config, report: &mut Report) {
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
    let header = wire::read_seed(&mut rustls::Stream::new(&mut conn, &mut Deadline::new(&sock, until)));
    let target = match header {
        Ok(t) => t,
        Err(e) => {
            log::debug!("#{id} bad header: {e}");
            report.end = format!("header: {e}");
            return;
        }
    };
    log::debug!("#{id} connect {target}");
    report.target = Some(target.clone());
    let out = match crate::connect(&target, Instant::now() + cfg.timeouts.connect) {
        Ok(s) => s,
        Err(e) => {
            log::debug!("#{id} cannot reach {target}: {e}");
            report.end = format!("target: {e}");
            return;
        }
    };
    let out = relay::relay(Half::tls(sock, conn), Half::tcp(out), ["client", "target"], &cfg.timeouts);
    report.up = out.up;
    report.down = out.down;
    report.end = out.end.to_string();
}
