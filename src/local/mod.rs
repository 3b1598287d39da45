//! blocking-local: accepts SOCKS5, SOCKS4/4a and HTTP proxy clients on one
//! port and carries each one over its own TLS connection to blocking-server,
//! or, as an ACL says ([`route`]), straight to its target or nowhere.
//!
//! [`Local`] binds the listener and runs the accept loop; each client is
//! served on its own thread ([`client`]), over a link to one of the servers
//! ([`upstream`]: failover, back-off and the check), taken ready from the
//! [`pool`] when there is one. Fixed forwards ([`forward`]) listen beside
//! it, under the same cap, and lead to one target each; so do the
//! listeners for connections a firewall sent here ([`transparent`], and
//! [`tproxy`] for UDP).

pub mod transparent;
pub mod tproxy;
pub mod forward;
pub mod client;
pub mod dns;
pub mod route;
pub mod pool;
pub mod upstream;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::ClientConfig;

use crate::conn::accept::{Accepting, Acceptor, Stopper};
use crate::conn::admission::{Fds, Refused};
use crate::conn::report::Watch;
use crate::conn::{Report, Timeouts};
use crate::current::Current;
use crate::error::Error;
use crate::metrics;
use crate::proto::acl::Acl;
use crate::proto::addr::ATYP_IPV4;
use crate::proto::{http, socks4, socks5};

use client::{Context, Proto, Secrets};
use forward::{Bound, Forward};
use pool::{Pool, PoolSize};
use route::Router;
use transparent::Rule;
use upstream::{Balance, Upstream, Upstreams};

/// A bound blocking-local, ready to [`run`](Local::run).
pub struct Local {
    acceptor: Acceptor,
    forwards: Vec<Bound>,
    transparent: Vec<transparent::Bound>,
    tproxy_udp: Option<tproxy::Bound>,
    cfg: Config,
    upstreams: Arc<Upstreams>,
    dns: Option<dns::Sockets>,
}

/// Everything a local needs to serve its clients.
pub struct Config {
    /// The servers, in order of preference (at least one).
    pub servers: Vec<Upstream>,
    /// Which server a new client goes to.
    pub balance: Balance,
    /// Built by [`crate::tls::config::client_config`]; a reload of `--ca` replaces it.
    pub tls: Arc<Current<ClientConfig>>,
    /// Deadlines of each connection.
    pub timeouts: Timeouts,
    /// The users and the password in force; a reload replaces them.
    pub secrets: Arc<Current<Secrets>>,
    /// Connections served at once; more are refused (see `refuse`).
    pub max_conns: usize,
    /// The descriptors connections may hold between them, if counted: a
    /// UDP association holds one more than a TCP connection.
    pub fds: Option<Fds>,
    /// TLS connections to keep ready: a fixed number (0: none, each client
    /// waits for its own handshake), or as many as recent demand asks for.
    pub pool: PoolSize,
    /// A ready connection older than this is replaced; keep it below the
    /// server's handshake timeout, after which the server closes it.
    pub pool_age: Duration,
    /// Called with each close line, for a program that embeds the local.
    pub watch: Option<Watch>,
    /// `--acl`, as loaded at start; a reload replaces it. `None` sends
    /// every connection through a server.
    pub acl: Arc<Current<Option<Acl>>>,
    /// `--acl-resolve`: a name no domain rule matches is resolved here to
    /// test the IP rules.
    pub acl_resolve: bool,
    /// `--dns`: the DNS server, if any.
    pub dns: Option<dns::DnsArgs>,
    /// The resolvers `--dns` asks directly; a reload replaces them.
    pub dns_direct: Arc<Current<Vec<SocketAddr>>>,
    /// `--forward`: ports that lead to one target each, for TCP and, with
    /// a password, UDP.
    pub forwards: Vec<Forward>,
    /// `--redir`: where connections a firewall redirected arrive, if anywhere.
    pub redir: Option<String>,
    /// `--tproxy`: where TCP and UDP a firewall's tproxy rule delivers arrive, if anywhere.
    pub tproxy: Option<String>,
    /// `--sniff`: route a transparent connection by the name its first bytes carry.
    pub sniff: bool,
}

impl Local {
    /// Binds the listener for SOCKS5, SOCKS4 and HTTP clients, the
    /// forwards' (UDP too with a password), and `--redir`'s and `--tproxy`'s
    /// (TCP and UDP). From here on
    /// the servers' state is in the metrics (all up until a client or the
    /// pool finds otherwise).
    pub fn bind(listen: &str, cfg: Config) -> Result<Local, Error> {
        let acceptor = Acceptor::bind(listen, cfg.max_conns, None, cfg.fds)?;
        let udp = cfg.secrets.get().password.is_some();
        let forwards =
            cfg.forwards.iter().map(|f| forward::bind(&acceptor, f, udp)).collect::<Result<Vec<_>, _>>()?;
        let mut others: Vec<SocketAddr> = forwards.iter().map(Bound::local_addr).collect();
        others.extend(cfg.dns.as_ref().map(|d| d.listen));
        let mut transparent = Vec::new();
        let mut tproxy_udp = None;
        for (rule, addr) in [(Rule::Redirect, &cfg.redir), (Rule::Tproxy, &cfg.tproxy)] {
            let Some(addr) = addr else { continue };
            let bound = transparent::bind(&acceptor, rule, addr, cfg.sniff, &others)?;
            if rule == Rule::Tproxy {
                tproxy_udp = Some(tproxy::bind(&acceptor, bound.local_addr())?);
            }
            transparent.push(bound);
        }
        let listeners: Vec<SocketAddr> = transparent.iter().map(transparent::Bound::local_addr).collect();
        for t in &mut transparent {
            t.also_own(&listeners);
        }
        let upstreams = Arc::new(Upstreams::new(
            cfg.servers.clone(),
            cfg.balance,
            Arc::clone(&cfg.tls),
            cfg.timeouts.connect,
        ));
        let dns = cfg.dns.as_ref().map(|d| dns::bind(d.listen)).transpose()?;
        let shown = Arc::clone(&upstreams);
        metrics::add_collector(Box::new(move |out| shown.write_metrics(out)));
        Ok(Local { acceptor, forwards, transparent, tproxy_udp, cfg, upstreams, dns })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.acceptor.local_addr()
    }

    /// The forwards, bound.
    pub fn forwards(&self) -> &[Bound] {
        &self.forwards
    }

    /// The transparent listeners (`--redir`, then `--tproxy`): the rule
    /// that sends them connections, and their addresses.
    pub fn transparent(&self) -> Vec<(Rule, SocketAddr)> {
        self.transparent.iter().map(|t| (t.rule(), t.local_addr())).collect()
    }

    /// A handle that makes [`run`](Local::run) stop accepting (on the
    /// forwards too) and drain.
    pub fn stopper(&self) -> io::Result<Stopper> {
        Ok(self.acceptor.stopper())
    }

    /// Serves clients until stopped, then drains, and stops the pool and
    /// the check; returns the connections still open.
    pub fn run(self) -> usize {
        self.start().run()
    }

    /// Starts serving clients (the pool, the check, every listener): returns
    /// once the threads that accept are up.
    pub fn start(self) -> Running {
        let Local { acceptor, forwards, transparent, tproxy_udp, cfg, upstreams, dns } = self;
        let pool = Pool::start(&upstreams, cfg.pool, cfg.pool_age);
        upstreams.start_check(pool.is_some());
        let (pool_stop, upstreams_stop) = (pool.clone(), Arc::clone(&upstreams));
        let router = Arc::new(Router {
            acl: Arc::clone(&cfg.acl),
            resolve: cfg.acl_resolve,
            servers: cfg.servers.iter().map(|s| s.addr.clone()).collect(),
        });
        if let (Some(sockets), Some(args)) = (dns, &cfg.dns) {
            let secrets = Arc::clone(&cfg.secrets);
            let settings = dns::Settings {
                remote: args.remote.clone(),
                direct: Arc::clone(&cfg.dns_direct),
                acl: Arc::clone(&cfg.acl),
                servers: router.servers.clone(),
                password: Arc::new(move || secrets.get().password),
                timeout: cfg.timeouts.connect,
            };
            if let Err(e) = dns::serve(sockets, settings, Arc::clone(&upstreams), pool.clone()) {
                log::error!("dns: {e}");
            }
        }
        let ctx = Arc::new(Context {
            timeouts: cfg.timeouts,
            secrets: Arc::clone(&cfg.secrets),
            upstreams,
            pool,
            router,
        });
        let watch = cfg.watch;
        let mut threads = Vec::new();
        let stop = acceptor.stopper();
        for f in forwards {
            let (addr, target) = (f.local_addr(), f.target().clone());
            match f.start(&ctx, watch.clone(), stop.clone()) {
                Ok(started) => threads.extend(started),
                Err(e) => {
                    // Serving without a forward asked for would hide it: stop, and drain.
                    log::error!("cannot start the forward on {addr} to {target}: {e}; stopping");
                    stop.stop();
                }
            }
        }
        for t in transparent {
            let addr = t.local_addr();
            match t.start(&ctx, watch.clone()) {
                Ok(started) => threads.push(started),
                Err(e) => {
                    log::error!("cannot start the transparent listener on {addr}: {e}; stopping");
                    stop.stop();
                }
            }
        }
        if let Some(u) = tproxy_udp {
            match u.start(&ctx, watch.clone(), stop.clone()) {
                Ok(started) => threads.push(started),
                Err(e) => {
                    log::error!("cannot start the tproxy udp thread: {e}; stopping");
                    stop.stop();
                }
            }
        }
        let admit = move |app, peer, place| {
            let (ctx, report) = (Arc::clone(&ctx), Report::new(peer, place, watch.clone()));
            move || client::serve(app, &ctx, report)
        };
        // A reload never empties the users (an empty user file is refused).
        let login = !cfg.secrets.get().users.is_empty();
        let accepting = acceptor.start(admit, move |app, why| refuse(app, why, login));
        Running { accepting, drain: cfg.timeouts.drain, threads, pool: pool_stop, upstreams: upstreams_stop }
    }
}

/// A local that serves ([`Local::start`]).
pub struct Running {
    accepting: Accepting,
    drain: Duration,
    /// The other listeners' threads, which return once stopped.
    threads: Vec<JoinHandle<()>>,
    pool: Option<Arc<Pool>>,
    upstreams: Arc<Upstreams>,
}

impl Running {
    /// Serves until stopped, then drains, and stops the pool and the
    /// check; returns the connections still open.
    pub fn run(self) -> usize {
        let left = self.accepting.drained(self.drain);
        for thread in self.threads {
            let _ = thread.join();
        }
        if let Some(pool) = self.pool {
            pool.stop();
        }
        self.upstreams.stop();
        left
    }
}

/// Over the cap: an answer in the client's protocol when its first byte has
/// already arrived, else none, then a close; nothing here waits, since the
/// thread that accepts runs it. SOCKS5 without users gets method 0x00 and a general
/// failure; with users, method 0xFF (no acceptable method): 0x00 is not what
/// such a local serves, and a client that offered only username/password
/// must not be answered with a method it did not offer. SOCKS4 gets
/// [`socks4::REQUEST_REJECTED`], HTTP `503 Service Unavailable`.
fn refuse(app: TcpStream, why: &Refused, login: bool) {
    metrics::refused(why.into());
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
