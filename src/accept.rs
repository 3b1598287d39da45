//! The accept loop both binaries run: admission through the [`Gate`], a
//! setup thread per connection, a way to stop ([`Stopper`]) and drain, and
//! the one log line per connection ([`Report`]).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::error::Error;
use crate::gate::{Gate, Place, Refused};
use crate::metrics::{self, Closed, Refusal};
use crate::net::listen;
use crate::relay::Outcome;
use crate::udp;
use crate::workers::SETUP_THREADS;

/// How long the accept loop rests after a resource error (EMFILE, a failed spawn).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Stops an [`Acceptor`] from another thread (the signal thread).
pub struct Stopper {
    stop: Arc<AtomicBool>,
    listener: TcpListener,
}

impl Stopper {
    /// Makes the accept loop return; connections already accepted go on.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Shutting a listening socket down wakes a thread blocked in accept().
        let _ = SockRef::from(&self.listener).shutdown(std::net::Shutdown::Read);
    }
}

/// A listening socket with its admission control.
pub struct Acceptor {
    listener: TcpListener,
    gate: Arc<Gate>,
    stop: Arc<AtomicBool>,
    /// Whether a connection counts against its source as it is accepted.
    source_at_accept: bool,
}

impl Acceptor {
    /// Binds `addr` (the error names it) for at most `max_conns` connections
    /// at once, and with `per_source`, at most that many pending from one source.
    pub fn bind(addr: &str, max_conns: usize, per_source: Option<usize>) -> Result<Acceptor, Error> {
        Ok(Acceptor {
            listener: listen(addr)?,
            gate: Gate::new(max_conns, per_source),
            stop: Arc::new(AtomicBool::new(false)),
            source_at_accept: true,
        })
    }

    /// Leaves the per-source limit to the handler, which learns the real
    /// source later ([`Place::pending_from`](crate::gate::Place::pending_from)):
    /// for a listener behind a load balancer, whose connections all come
    /// from the balancer. The cap still applies at accept.
    pub fn source_known_later(mut self) -> Acceptor {
        self.source_at_accept = false;
        self
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that stops [`run`](Acceptor::run) from another thread.
    pub fn stopper(&self) -> io::Result<Stopper> {
        Ok(Stopper { stop: Arc::clone(&self.stop), listener: self.listener.try_clone()? })
    }

    /// Accepts until stopped, running `handler(stream, report)` on a setup
    /// thread for each client; the [`Report`] holds the client's
    /// place under the cap until it is dropped. Over the cap, `refuse(stream)` answers
    /// the client inline instead. Resource errors and refusals are logged at
    /// most once a second and accept errors are backed off: the loop never
    /// spins and never panics. Once stopped, the listener is closed (new
    /// clients are refused) and open connections get up to `drain` to finish;
    /// returns how many were still open.
    pub fn run<F, R>(self, drain: Duration, handler: F, refuse: R) -> usize
    where
        F: Fn(TcpStream, Report) + Send + Sync + 'static,
        R: Fn(TcpStream),
    {
        let handler = Arc::new(handler);
        let mut last_warning: Option<Instant> = None;
        let mut warn_limited = |what: String| {
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                log::warn!("{what}");
                last_warning = Some(Instant::now());
            }
        };
        while !self.stop.load(Ordering::SeqCst) {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(_) if self.stop.load(Ordering::SeqCst) => break,
                Err(e) if is_transient_accept_error(&e) => continue,
                Err(e) => {
                    warn_limited(format!("accept failed: {e}; backing off"));
                    thread::sleep(ACCEPT_BACKOFF);
                    continue;
                }
            };
            let admitted =
                if self.source_at_accept { self.gate.enter(peer.ip()) } else { self.gate.enter_unsourced() };
            let ticket = match admitted {
                Ok(ticket) => ticket,
                Err(why) => {
                    metrics::refused(match why {
                        Refused::Cap(_) => Refusal::Cap,
                        Refused::PerSource(..) => Refusal::PerSource,
                    });
                    warn_limited(format!("{why}: refusing {peer}"));
                    refuse(stream);
                    continue;
                }
            };
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let h = Arc::clone(&handler);
            let report = Report::new(id, peer, ticket);
            let spawned = SETUP_THREADS.spawn(move || h(stream, report));
            if let Err(e) = spawned {
                // The closure, and the client socket with it, is dropped: the client sees a close.
                warn_limited(format!("#{id} cannot start a thread for {peer}: {e}; backing off"));
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
        drop(self.listener);
        let open = self.gate.active();
        if open > 0 {
            log::info!("listener closed; waiting up to {:.1}s for {open} connections", drain.as_secs_f64());
        }
        let left = self.gate.wait_idle(drain);
        if left > 0 {
            log::warn!("drain timeout: exiting with {left} connections open");
        }
        left
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

/// One connection's account: what it did, logged as a single `info` line
/// when it is dropped, and its place under the cap, given back then.
pub struct Report {
    /// The connection's number in this process, the `#id` of its log lines.
    pub id: u64,
    peer: SocketAddr,
    start: Instant,
    place: Place,
    /// Where the client asked to go (or was sent), once known.
    pub target: Option<String>,
    /// Bytes from the client towards the target.
    pub up: u64,
    /// Bytes from the target towards the client.
    pub down: u64,
    /// How it ended.
    pub end: String,
    /// For a UDP association: datagrams up and down, and those dropped.
    pub datagrams: Option<[u64; 3]>,
    /// The protocol the client spoke, when the listener serves more than one.
    pub proto: Option<&'static str>,
}

impl Report {
    /// Starts the report of connection `id` from `peer`, admitted with `place`.
    pub fn new(id: u64, peer: SocketAddr, place: Place) -> Report {
        metrics::ACCEPTED.inc();
        Report {
            id,
            peer,
            start: Instant::now(),
            place,
            target: None,
            up: 0,
            down: 0,
            end: "aborted".to_owned(),
            datagrams: None,
            proto: None,
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client is `source`, as a PROXY protocol header said: the address
    /// the connection's log lines name from now on.
    pub fn proxied(&mut self, source: SocketAddr) {
        self.peer = source;
    }

    /// The connection's place under the cap, to share with work that may outlive it.
    pub fn place(&self) -> &Place {
        &self.place
    }

    /// Adds what a UDP association moved and how it ended.
    pub fn associated(&mut self, out: udp::Outcome) {
        self.up += out.up;
        self.down += out.down;
        self.datagrams = Some(out.datagrams);
        self.end = out.end;
    }

    /// Adds what a relay moved and how it ended.
    pub fn relayed(&mut self, out: Outcome) {
        self.up += out.up;
        self.down += out.down;
        self.end = out.end.to_string();
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        let target = self.target.as_deref().unwrap_or("-");
        // Counted before the line is logged: whoever reads the line finds it counted.
        metrics::closed(closed_as(&self.end, target), self.up, self.down);
        // Fields added later go after `end=`, so the older ones keep their places.
        let datagrams = match self.datagrams {
            Some([up, down, dropped]) => format!(" datagrams={up}/{down} dropped={dropped}"),
            None => String::new(),
        };
        let proto = self.proto.map(|p| format!(" proto={p}")).unwrap_or_default();
        log::info!(
            "#{} closed client={} target={} up={} down={} time={:.3}s end={}{datagrams}{proto}",
            self.id,
            self.peer,
            target,
            self.up,
            self.down,
            self.start.elapsed().as_secs_f64(),
            self.end,
        );
    }
}

/// The class of a close line's `end=` text, for
/// `blocking_proxy_connections_closed_total`. Every end a connection can
/// have is decided in its own place, as text for the log (see the Logs
/// section of docs/DEPLOYMENT.md); this is the one place that sorts them, by
/// the forms that text takes. A connection whose `target` is the fallback
/// counts as handed over however it ended. The first rule that matches wins:
/// a refusal by policy (`denied: `), a TLS error (`tls: `), a failed onward
/// connect (`target: `, `fallback: `, `server HOST:PORT: `), a deadline,
/// a reset or a peer gone, a clean close, a protocol error; else other.
fn closed_as(end: &str, target: &str) -> Closed {
    let mut words = end.split(' ');
    let (first, second) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    // The local's `server HOST:PORT: …`, not the relay's `server reset` or `server: …`.
    let onward = matches!(first, "target:" | "fallback:") || (first == "server" && second.ends_with(':'));
    let any = |needles: &[&str]| needles.iter().any(|n| end.contains(n));
    if target.starts_with("fallback/") {
        Closed::Fallback
    } else if end.contains("denied: ") {
        Closed::Denied
    } else if end.starts_with("tls: ") || end.contains(" tls: ") {
        Closed::TlsError
    } else if onward {
        Closed::Unreachable
    } else if any(&["timed out", "deadline passed", "idle timeout", "linger timeout", "udp timeout"]) {
        Closed::Timeout
    } else if any(&[" reset", " gone", "without close_notify", "Broken pipe", "failed to fill"]) {
        Closed::Reset
    } else if end == "eof" || any(&["closed before", "closed the control connection"]) {
        Closed::Eof
    } else if end.starts_with("header: ")
        || end.starts_with("unknown protocol")
        || any(&["protocol: ", "sent bytes on the control"])
    {
        Closed::Protocol
    } else {
        Closed::Other
    }
}

#[cfg(test)]
mod tests {
    use super::closed_as;
    use crate::metrics::Closed;

    /// Ends as the code writes them (docs/DEPLOYMENT.md, Logs), and their classes.
    const ENDS: &[(&str, Closed)] = &[
        ("eof", Closed::Eof),
        ("client closed before its first byte", Closed::Eof),
        ("header: client closed before its first record", Closed::Eof),
        ("client closed the control connection", Closed::Eof),
        ("target closed before any byte", Closed::Eof),
        ("idle timeout", Closed::Timeout),
        ("linger timeout", Closed::Timeout),
        ("udp timeout", Closed::Timeout),
        ("client write timed out", Closed::Timeout),
        ("client: deadline passed", Closed::Timeout),
        ("socks5: deadline passed", Closed::Timeout),
        ("tls handshake: deadline passed", Closed::Timeout),
        ("header: deadline passed", Closed::Timeout),
        ("client reset", Closed::Reset),
        ("target gone", Closed::Reset),
        ("server closed without close_notify", Closed::Reset),
        ("client: Connection reset by peer (os error 104)", Closed::Reset),
        ("server: Broken pipe (os error 32)", Closed::Reset),
        ("socks5: failed to fill whole buffer", Closed::Reset),
        ("target reset before any byte", Closed::Reset),
        ("tls handshake: tls: received corrupt message of type InvalidContentType", Closed::TlsError),
        ("tls: no server certificate chain resolved", Closed::TlsError),
        ("server 127.0.0.1:9012: tls: invalid peer certificate: UnknownIssuer", Closed::TlsError),
        ("client: tls: cannot decrypt peer's message", Closed::TlsError),
        ("stream: tls: cannot decrypt peer's message", Closed::TlsError),
        ("unknown protocol: first byte 0x16", Closed::Protocol),
        ("socks5: protocol: unsupported SOCKS version", Closed::Protocol),
        ("header: protocol: not a trojan header", Closed::Protocol),
        ("header: the fallback spoke first", Closed::Protocol),
        ("client sent bytes on the control connection", Closed::Protocol),
        ("socks5: denied: login failed for user alice", Closed::Denied),
        ("target: denied: 10.0.0.1:80 is not a public address", Closed::Denied),
        ("target: Connection refused (os error 111)", Closed::Unreachable),
        ("target: name resolution timed out", Closed::Unreachable),
        ("fallback: Connection refused (os error 111)", Closed::Unreachable),
        ("server example.com:443: Connection refused (os error 111)", Closed::Unreachable),
        ("server [::1]:9012: connect timed out", Closed::Unreachable),
        ("aborted", Closed::Other),
        ("cannot start copy thread: Resource temporarily unavailable (os error 11)", Closed::Other),
        ("udp: no address or no password", Closed::Other),
    ];

    #[test]
    fn every_end_the_code_writes_falls_in_its_class() {
        for (end, class) in ENDS {
            assert_eq!(closed_as(end, "example.com:80"), *class, "{end}");
        }
    }

    #[test]
    fn a_connection_handed_to_the_fallback_counts_as_such_however_it_ended() {
        for end in ["eof", "client reset", "fallback: Broken pipe (os error 32)", "idle timeout"] {
            assert_eq!(closed_as(end, "fallback/127.0.0.1:8080"), Closed::Fallback, "{end}");
        }
    }
}
