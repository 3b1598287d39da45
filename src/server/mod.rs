//! blocking-server: accepts TLS connections from blocking-local, reads the
//! target from the header and relays to it.
//!
//! [`Server`] binds the listener and runs the accept loop; each connection
//! is served on its own thread ([`connection`]), behind a load balancer's
//! PROXY header when there is one ([`balancer`]); connections without a
//! valid header go to the fallback site ([`fallback`]). What a reload
//! replaces, the certificate and the passwords, is in [`keys`]; the named
//! users of `--users`, their counts and limits, in [`users`].

pub mod connection;
pub mod balancer;
pub mod fallback;
pub mod keys;
pub mod users;

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::conn::accept::{self, Accepting, Acceptor};
use crate::conn::admission::Refused;
use crate::conn::Report;
use crate::error::Error;
use crate::metrics;
use crate::net::drain::Drain;

pub use connection::Config;
pub use keys::Keys;

/// A bound blocking-server, ready to [`run`](Server::run).
pub struct Server {
    acceptor: Acceptor,
    cfg: Arc<Config>,
    /// Started with the stop: connections still waiting for their header
    /// are closed then (see [`crate::net::drain`]).
    drain: Arc<Drain>,
}

/// Stops a [`Server`] from another thread (the signal thread): the accept
/// loop ends and the drain starts.
pub struct Stopper {
    acceptor: accept::Stopper,
    drain: Arc<Drain>,
}

impl Stopper {
    /// Stops accepting, and closes the connections that have sent no header
    /// yet; connections already served go on until they end or the drain
    /// time is up.
    pub fn stop(&self) {
        self.drain.start();
        self.acceptor.stop();
    }
}

impl Server {
    /// Binds the TLS listener.
    pub fn bind(listen: &str, cfg: Config) -> Result<Server, Error> {
        let mut acceptor = Acceptor::bind(listen, cfg.max_conns, Some(cfg.max_pending_per_source), cfg.fds)?;
        if cfg.proxy_protocol {
            // Every connection comes from the balancer: its header names the source to count.
            acceptor = acceptor.source_known_later();
        }
        let drain = Arc::new(Drain::new()?);
        Ok(Server { acceptor, cfg: Arc::new(cfg), drain })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.acceptor.local_addr()
    }

    /// A handle that makes [`run`](Server::run) stop accepting and drain.
    pub fn stopper(&self) -> io::Result<Stopper> {
        Ok(Stopper { acceptor: self.acceptor.stopper(), drain: Arc::clone(&self.drain) })
    }

    /// Serves connections until stopped, then drains; returns the connections still open.
    pub fn run(self) -> usize {
        self.start().run()
    }

    /// Starts serving connections: returns once the threads that accept are up.
    pub fn start(self) -> Running {
        let Server { acceptor, cfg, drain } = self;
        let drain_time = cfg.timeouts.drain;
        let admit = move |sock, peer, place| {
            let report = Report::new(peer, place, cfg.watch.clone());
            let (cfg, drain) = (Arc::clone(&cfg), Arc::clone(&drain));
            move || connection::serve(sock, &cfg, &drain, report)
        };
        Running { accepting: acceptor.start(admit, refuse), drain_time }
    }
}

/// A server that serves ([`Server::start`]).
pub struct Running {
    accepting: Accepting,
    drain_time: Duration,
}

impl Running {
    /// Serves until stopped, then drains; returns the connections still open.
    pub fn run(self) -> usize {
        self.accepting.drained(self.drain_time)
    }
}

/// Over a limit there is nothing to say before TLS: the connection is just closed.
fn refuse(sock: TcpStream, why: &Refused) {
    metrics::refused(why.into());
    drop(sock);
}
