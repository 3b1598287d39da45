//! blocking-proxy: a SOCKS5 proxy pair that carries every connection over TLS,
//! in plain blocking Rust with one OS thread per direction.
//!
//! ```text
//! app ──SOCKS5──▶ blocking-local ══TLS: header + payload══▶ blocking-server ──TCP──▶ target
//! ```
//!
//! From the top:
//!
//! - [`local`] is `blocking-local`: it accepts SOCKS5 clients, opens a TLS
//!   connection to the server per client and sends the target first.
//! - [`server`] is `blocking-server`: it accepts TLS, reads the target,
//!   connects to it and relays.
//! - [`socks5`] parses and answers RFC 1928 on any `Read + Write`.
//! - [`wire`] encodes and reads the header the local sends the server.
//! - [`tls`] is the one place that builds rustls configurations and loads PEM.
//! - [`egress`] decides which addresses the server may connect to.
//! - [`relay`] splits one TLS connection between two threads, copies each
//!   direction with `std::io::copy`, and handles half-close and timeouts.
//! - [`cli`] holds what the two binaries share: options, logging, exit codes.
//!
//! This file holds what both processes share at run time: the [`Error`] type,
//! the [`Timeouts`] of a connection and the accept loop ([`serve`]).

pub mod cli;
pub mod egress;
pub mod local;
pub mod relay;
pub mod server;
pub mod socks5;
pub mod tls;
pub mod wire;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::wire::Target;

/// Everything that can go wrong, from a bad flag at start to a bad byte on the wire.
#[derive(Debug)]
pub enum Error {
    /// A socket operation failed (connect, read, write, bind).
    Io(io::Error),
    /// The TLS layer refused: handshake failure, untrusted certificate, bad record.
    Tls(rustls::Error),
    /// The peer broke the protocol it is meant to speak (SOCKS5 or the wire header).
    Protocol(&'static str),
    /// A configuration that cannot work, found at start: the text names the file or address.
    Config(String),
    /// Refused by policy: a target the egress rule forbids, a failed login.
    Denied(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Tls(e) => write!(f, "tls: {e}"),
            Error::Protocol(what) => write!(f, "protocol: {what}"),
            Error::Config(what) => f.write_str(what),
            Error::Denied(what) => write!(f, "denied: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Tls(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        // rustls reports TLS failures met during blocking I/O as InvalidData wrapping its error.
        if e.kind() == io::ErrorKind::InvalidData {
            if let Some(tls) = e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()) {
                return Error::Tls(tls.clone());
            }
        }
        Error::Io(e)
    }
}

impl From<rustls::Error> for Error {
    fn from(e: rustls::Error) -> Self {
        Error::Tls(e)
    }
}

/// The deadlines of one connection. Every phase before the relay has one;
/// the relay itself ends after `idle` with no byte in either direction.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// SOCKS5 greeting and request (local); TLS handshake and header (server).
    pub handshake: Duration,
    /// TCP connect and TLS handshake to the server (local); connect to the target (server).
    pub connect: Duration,
    /// No byte in either direction for this long ends the relay.
    pub idle: Duration,
    /// After one direction has ended, the other is closed once it has been quiet this long.
    pub linger: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(10),
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(300),
            linger: Duration::from_secs(30),
        }
    }
}

/// Stack of every connection and copy thread. Buffers live on the heap; this
/// leaves room for getaddrinfo, a rustls handshake and logging.
pub const THREAD_STACK: usize = 128 * 1024;

/// How long the accept loop rests after a resource error (EMFILE, a failed spawn).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Accepts forever, running `handler(id, stream, peer)` on a new named thread
/// for each client. Resource errors are logged (at most once a second) and
/// backed off; the loop never spins and never panics.
pub fn serve<F>(listener: &TcpListener, role: &str, handler: F)
where
    F: Fn(u64, TcpStream, SocketAddr) + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let mut last_warning: Option<Instant> = None;
    let mut warn_limited = |what: String| {
        if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            log::warn!("{what}");
            last_warning = Some(Instant::now());
        }
    };
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if is_transient_accept_error(&e) => continue,
            Err(e) => {
                warn_limited(format!("accept failed: {e}; backing off"));
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let h = Arc::clone(&handler);
        let spawned = thread::Builder::new()
            .name(format!("{role}-{id}"))
            .stack_size(THREAD_STACK)
            .spawn(move || h(id, stream, peer));
        if let Err(e) = spawned {
            // The closure, and the client socket with it, is dropped: the client sees a close.
            warn_limited(format!("#{id} cannot start a thread for {peer}: {e}; backing off"));
            thread::sleep(ACCEPT_BACKOFF);
        }
    }
}

/// Errors that concern one aborted client, not the listener: try the next one at once.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Pending connections the kernel may queue before the accept loop takes them.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds a listening socket; the error names the address.
pub fn listen(addr: &str) -> Result<TcpListener, Error> {
    let fail = |e: &dyn fmt::Display| Error::Config(format!("cannot listen on {addr}: {e}"));
    let sa = addr.to_socket_addrs().map_err(|e| fail(&e))?.next().ok_or_else(|| fail(&"no such address"))?;
    let sock = Socket::new(Domain::for_address(sa), Type::STREAM, None).map_err(|e| fail(&e))?;
    sock.set_reuse_address(true).map_err(|e| fail(&e))?;
    sock.bind(&sa.into()).map_err(|e| fail(&e))?;
    sock.listen(LISTEN_BACKLOG).map_err(|e| fail(&e))?;
    Ok(sock.into())
}

/// Connects to `target`, trying each address it resolves to until one
/// answers; all attempts together end at `until`. With a `policy`, only the
/// addresses it permits are tried, and none is a [`Error::Denied`].
pub fn connect(target: &Target, until: Instant, policy: Option<&egress::Policy>) -> Result<TcpStream, Error> {
    let mut addrs: Vec<SocketAddr> = match target {
        Target::Ip(a) => vec![*a],
        Target::Domain(name, port) => (name.as_str(), *port).to_socket_addrs()?.collect(),
    };
    if let Some(policy) = policy {
        let resolved = addrs.len();
        addrs.retain(|a| policy.permits(a.ip()));
        if addrs.is_empty() && resolved > 0 {
            return Err(Error::Denied(format!("{target} is not a public address")));
        }
    }
    let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
    for addr in addrs {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(Error::Io(last))
}

/// What one connection did, logged as a single `info` line when it closes.
pub struct Report {
    id: u64,
    peer: SocketAddr,
    start: Instant,
    /// Where the client asked to go (or was sent), once known.
    pub target: Option<String>,
    /// Bytes from the client towards the target.
    pub up: u64,
    /// Bytes from the target towards the client.
    pub down: u64,
    /// How it ended.
    pub end: String,
}

impl Report {
    /// Starts the report of connection `id` from `peer`.
    pub fn new(id: u64, peer: SocketAddr) -> Report {
        Report { id, peer, start: Instant::now(), target: None, up: 0, down: 0, end: "aborted".to_owned() }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        let target = self.target.as_deref().unwrap_or("-");
        log::info!(
            "#{} closed client={} target={} up={} down={} time={:.3}s end={}",
            self.id,
            self.peer,
            target,
            self.up,
            self.down,
            self.start.elapsed().as_secs_f64(),
            self.end
        );
    }
}
