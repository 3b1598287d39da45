//! The accept loop every listener runs (the proxies' and the metrics
//! endpoint's): admission through the [`Gate`], a setup thread per
//! connection, a way to stop ([`Stopper`]) and drain.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::error::Error;
use crate::net::dial::listen;
use crate::workers::SETUP_THREADS;

use super::admission::{Fds, Gate, Place, Refused};

/// How long the accept loop rests after a resource error (EMFILE, a failed spawn).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
    /// at once, with `per_source`, at most that many pending from one source,
    /// and with `fds`, only as many as the descriptors allow.
    pub fn bind(
        addr: &str,
        max_conns: usize,
        per_source: Option<usize>,
        fds: Option<Fds>,
    ) -> Result<Acceptor, Error> {
        Ok(Acceptor {
            listener: listen(addr)?,
            gate: Gate::with_fds(max_conns, per_source, fds),
            stop: Arc::new(AtomicBool::new(false)),
            source_at_accept: true,
        })
    }

    /// Leaves the per-source limit to the handler, which learns the real
    /// source later ([`Place::pending_from`]):
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

    /// Accepts until stopped. For each client admitted under the limits,
    /// `admit(stream, peer, place)` runs here and returns the job that
    /// serves it, which then runs on a setup thread; `place` holds the
    /// client's place under the cap until every share of it is dropped.
    /// Over a limit, `refuse(stream, why)` answers the client inline
    /// instead, and must not wait. Resource errors and refusals are logged
    /// at most once a second and accept errors are backed off: the loop
    /// never spins and never panics. Once stopped, the listener is closed
    /// (new clients are refused) and open connections get up to `drain` to
    /// finish; returns how many were still open.
    pub fn run<A, J, R>(self, drain: Duration, admit: A, refuse: R) -> usize
    where
        A: Fn(TcpStream, SocketAddr, Place) -> J,
        J: FnOnce() + Send + 'static,
        R: Fn(TcpStream, &Refused),
    {
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
            let place = match admitted {
                Ok(place) => place,
                Err(why) => {
                    warn_limited(format!("{why}: refusing {peer}"));
                    refuse(stream, &why);
                    continue;
                }
            };
            if let Err(e) = SETUP_THREADS.spawn(admit(stream, peer, place)) {
                // The job, and the client socket with it, is dropped: the client sees a close.
                warn_limited(format!("cannot start a thread for {peer}: {e}; backing off"));
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
