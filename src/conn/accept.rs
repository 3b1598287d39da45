//! The accept loop every listener runs (the proxies' and the metrics
//! endpoint's): admission through the [`Gate`], a setup thread per
//! connection, a way to stop ([`Stopper`]) and drain.
//!
//! Several listeners may share one gate ([`Acceptor::sibling`]), so that
//! one cap counts the connections of all of them: they stop together, and
//! the first listener's drain waits for the connections of every one.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::error::Error;
use crate::net::dial::listen;
use crate::text::Count;
use crate::workers::SETUP_THREADS;

use super::admission::{Fds, Gate, Place, Refused};

/// How long the accept loop rests after a resource error (EMFILE, a failed spawn).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Stops an [`Acceptor`], and its siblings, from another thread (the
/// signal thread).
#[derive(Clone)]
pub struct Stopper(Arc<Stop>);

/// What the listeners that share a gate share to stop: the flag, and the
/// sockets to shut down to wake the threads blocked on them.
struct Stop {
    flag: AtomicBool,
    wake: Mutex<Vec<Socket>>,
}

impl Stopper {
    /// Makes the accept loops return (connections already accepted go on),
    /// and wakes whatever waits on a socket registered with
    /// [`Acceptor::wake_on_stop`].
    pub fn stop(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        // Shutting a listening socket down wakes a thread blocked in
        // accept(); a UDP socket's read side, one blocked in recv().
        for sock in self.0.wake.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let _ = sock.shutdown(std::net::Shutdown::Read);
        }
    }

    /// Whether [`stop`](Stopper::stop) has been called.
    pub fn stopped(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    fn wake(&self, sock: Socket) {
        self.0.wake.lock().unwrap_or_else(PoisonError::into_inner).push(sock);
    }
}

/// A listening socket with its admission control.
pub struct Acceptor {
    listener: TcpListener,
    gate: Arc<Gate>,
    stop: Stopper,
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
        Acceptor::on(listen(addr)?, Gate::with_fds(max_conns, per_source, fds), None)
    }

    /// An acceptor for `listener` behind `gate`, stopped by `stop` (a new
    /// one when `None`), which wakes it.
    fn on(listener: TcpListener, gate: Arc<Gate>, stop: Option<Stopper>) -> Result<Acceptor, Error> {
        let stop = stop.unwrap_or_else(|| {
            Stopper(Arc::new(Stop { flag: AtomicBool::new(false), wake: Mutex::new(Vec::new()) }))
        });
        stop.wake(Socket::from(listener.try_clone().map_err(Error::Io)?));
        Ok(Acceptor { listener, gate, stop, source_at_accept: true })
    }

    /// Another acceptor, for `listener` (bound with [`listen`]), behind this
    /// one's gate: its connections count under the same cap, this one's
    /// [`Stopper`] stops it too, and this one's drain waits for its
    /// connections. The sibling runs [`serve`](Acceptor::serve), on a
    /// thread of its own.
    pub fn sibling(&self, listener: TcpListener) -> Result<Acceptor, Error> {
        let mut sibling = Acceptor::on(listener, Arc::clone(&self.gate), Some(self.stop.clone()))?;
        sibling.source_at_accept = self.source_at_accept;
        Ok(sibling)
    }

    /// Has the [`Stopper`] shut `sock`'s read side down too, which wakes a
    /// thread blocked reading it (a UDP socket served beside the listener).
    pub fn wake_on_stop(&self, sock: &UdpSocket) -> io::Result<()> {
        self.stop.wake(Socket::from(sock.try_clone()?));
        Ok(())
    }

    /// The gate its connections are admitted through, to admit others
    /// under the same cap (clients of a UDP socket served beside it).
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
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

    /// A handle that stops [`run`](Acceptor::run) (and its siblings') from another thread.
    pub fn stopper(&self) -> Stopper {
        self.stop.clone()
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
        let gate = Arc::clone(&self.gate);
        self.serve(admit, refuse);
        let open = gate.active();
        if open > 0 {
            log::info!(
                "listener closed; waiting up to {:.1}s for {}",
                drain.as_secs_f64(),
                Count(open, "connection")
            );
        }
        let left = gate.wait_idle(drain);
        if left > 0 {
            log::warn!("drain timeout: exiting with {} open", Count(left, "connection"));
        }
        left
    }

    /// The accept loop of [`run`](Acceptor::run) without the drain: accepts
    /// until stopped, then closes the listener and returns at once (a
    /// sibling's loop, whose connections the first acceptor's drain waits for).
    pub fn serve<A, J, R>(self, admit: A, refuse: R)
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
        while !self.stop.stopped() {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(_) if self.stop.stopped() => break,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::testing::TIMEOUT;
    use std::sync::mpsc;

    #[test]
    fn siblings_share_one_cap_and_stop_together() {
        let main = Acceptor::bind("127.0.0.1:0", 1, None, None).unwrap();
        let sibling = main.sibling(listen("127.0.0.1:0").unwrap()).unwrap();
        let (a, b) = (main.local_addr().unwrap(), sibling.local_addr().unwrap());
        let stop = main.stopper();
        // Each admitted connection hands its socket and place over; held, it keeps the one place.
        let (held_tx, held) = mpsc::channel::<(TcpStream, Place)>();
        let (refused_tx, refused) = mpsc::channel::<String>();
        let admit = |tx: mpsc::Sender<(TcpStream, Place)>| {
            move |sock, _, place| {
                let tx = tx.clone();
                move || tx.send((sock, place)).unwrap()
            }
        };
        let refuse = |tx: mpsc::Sender<String>| move |_, why: &Refused| tx.send(why.to_string()).unwrap();
        let (admit_b, refuse_b) = (admit(held_tx.clone()), refuse(refused_tx.clone()));
        let sibling = thread::spawn(move || sibling.serve(admit_b, refuse_b));
        let main = thread::spawn(move || main.run(TIMEOUT, admit(held_tx), refuse(refused_tx)));
        let connect = |addr| TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();

        let _first = connect(a);
        let place = held.recv_timeout(TIMEOUT).unwrap();
        let _second = connect(b);
        assert_eq!(refused.recv_timeout(TIMEOUT).unwrap(), "at capacity (1 connections)");
        drop(place);
        let _third = connect(b);
        let place = held.recv_timeout(TIMEOUT).unwrap();
        let _fourth = connect(a);
        assert_eq!(refused.recv_timeout(TIMEOUT).unwrap(), "at capacity (1 connections)", "one cap for both");

        // One stop: both loops end, and the drain waits for the sibling's connection too.
        stop.stop();
        sibling.join().unwrap();
        assert!(TcpStream::connect_timeout(&b, TIMEOUT).is_err(), "the sibling's listener is closed");
        assert!(TcpStream::connect_timeout(&a, TIMEOUT).is_err());
        assert!(!main.is_finished(), "the drain waits for the sibling's connection");
        drop(place);
        assert_eq!(main.join().unwrap(), 0, "drained");
    }
}
