//! The accept loop every listener runs (the proxies' and the metrics
//! endpoint's): admission through the [`Gate`], a setup thread per
//! connection, a way to stop ([`Stopper`]) and drain.
//!
//! The setup threads accept for themselves (leader/follower): a few of them
//! wait in `accept` on the listener, and the one the kernel wakes for a
//! client serves it; when none is left waiting, another is started in its
//! place. A new connection thus starts on the thread woken for it, where an
//! accept loop handing it to another thread would cost a wake-up and a
//! context switch per connection.
//!
//! Several listeners may share one gate ([`Acceptor::sibling`]), so that
//! one cap counts the connections of all of them: they stop together, and
//! the first listener's drain waits for the connections of every one.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
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
    /// Notified once the flag is set, with `wake` held.
    stopped: Condvar,
}

impl Stop {
    /// The lock [`Stop::stopped`] is waited on with.
    fn flag_lock(&self) -> std::sync::MutexGuard<'_, Vec<Socket>> {
        self.wake.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Stopper {
    /// Makes the accept loops return (connections already accepted go on),
    /// and wakes whatever waits on a socket registered with
    /// [`Acceptor::wake_on_stop`].
    pub fn stop(&self) {
        let wake = self.0.flag_lock();
        self.0.flag.store(true, Ordering::SeqCst);
        // Shutting a listening socket down wakes every thread blocked in
        // accept() and refuses new clients; a UDP socket's read side wakes
        // one blocked in recv().
        for sock in wake.iter() {
            let _ = sock.shutdown(std::net::Shutdown::Read);
        }
        self.0.stopped.notify_all();
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
            Stopper(Arc::new(Stop {
                flag: AtomicBool::new(false),
                wake: Mutex::new(Vec::new()),
                stopped: Condvar::new(),
            }))
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
    /// `admit(stream, peer, place)` returns the job that serves it, and the
    /// setup thread that accepted the client runs it ([`Acceptor::serve`]); `place` holds the
    /// client's place under the cap until every share of it is dropped.
    /// Over a limit, `refuse(stream, why)` answers the client instead, and
    /// must not wait. Resource errors and refusals are logged
    /// at most once a second and accept errors are backed off: the loop
    /// never spins and never panics. Once stopped, the listener is closed
    /// (new clients are refused) and open connections get up to `drain` to
    /// finish; returns how many were still open.
    pub fn run<A, J, R>(self, drain: Duration, admit: A, refuse: R) -> usize
    where
        A: Fn(TcpStream, SocketAddr, Place) -> J + Send + Sync + 'static,
        J: FnOnce() + Send + 'static,
        R: Fn(TcpStream, &Refused) + Send + Sync + 'static,
    {
        self.start(admit, refuse).drained(drain)
    }

    /// The accept loop of [`run`](Acceptor::run) without the drain: accepts
    /// until stopped, then returns at once (a sibling's loop, whose
    /// connections the first acceptor's drain waits for).
    pub fn serve<A, J, R>(self, admit: A, refuse: R)
    where
        A: Fn(TcpStream, SocketAddr, Place) -> J + Send + Sync + 'static,
        J: FnOnce() + Send + 'static,
        R: Fn(TcpStream, &Refused) + Send + Sync + 'static,
    {
        self.start(admit, refuse).wait();
    }

    /// Starts accepting, as [`run`](Acceptor::run) does, and returns once
    /// the threads that accept are up; [`Accepting`] waits for the stop.
    ///
    /// The connections are accepted by leaders: setup threads that wait
    /// in `accept` on the listener themselves and each serve the connection
    /// they accept, so a connection starts on the thread the kernel woke for
    /// it, with no hand-off.
    pub fn start<A, J, R>(self, admit: A, refuse: R) -> Accepting
    where
        A: Fn(TcpStream, SocketAddr, Place) -> J + Send + Sync + 'static,
        J: FnOnce() + Send + 'static,
        R: Fn(TcpStream, &Refused) + Send + Sync + 'static,
    {
        let (stop, gate) = (self.stop.clone(), Arc::clone(&self.gate));
        let leaders = Arc::new(Leaders {
            acceptor: self,
            admit,
            refuse,
            waiting: AtomicUsize::new(0),
            last_warning: Mutex::new(None),
        });
        for _ in 0..LEADERS_WAITING {
            if let Err(e) = leaders.add() {
                leaders.warn_limited(format!("cannot start a thread to accept connections: {e}"));
            }
        }
        let fallback = (leaders.waiting.load(Ordering::SeqCst) == 0).then_some(leaders);
        Accepting {
            stop,
            gate,
            fallback: fallback.map(|l| Box::new(move || l.lead_here()) as Box<dyn FnOnce() + Send>),
        }
    }
}

/// A listener being served ([`Acceptor::start`]).
pub struct Accepting {
    stop: Stopper,
    gate: Arc<Gate>,
    /// When no thread could be started to accept: the loop, for the waiting thread to run.
    fallback: Option<Box<dyn FnOnce() + Send>>,
}

impl Accepting {
    /// Waits until stopped.
    pub fn wait(self) {
        if let Some(accept_here) = self.fallback {
            accept_here();
        }
        let mut stopped = self.stop.0.flag_lock();
        while !self.stop.stopped() {
            stopped = self.stop.0.stopped.wait(stopped).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits until stopped; then open connections get up to `drain` to
    /// finish. Returns how many were still open.
    pub fn drained(self, drain: Duration) -> usize {
        let gate = Arc::clone(&self.gate);
        self.wait();
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
}

/// How many threads wait in `accept` on one listener when it is quiet. One
/// that accepts leaves the others waiting, so a client that comes while it
/// serves its own needs no thread started or woken; when the last one
/// accepts, another is started in its place.
pub const LEADERS_WAITING: usize = 2;

/// The threads that accept a listener's connections and serve them.
struct Leaders<A, R> {
    acceptor: Acceptor,
    admit: A,
    refuse: R,
    /// Threads blocked in (or about to call) `accept`.
    waiting: AtomicUsize,
    last_warning: Mutex<Option<Instant>>,
}

impl<A, J, R> Leaders<A, R>
where
    A: Fn(TcpStream, SocketAddr, Place) -> J + Send + Sync + 'static,
    J: FnOnce() + Send + 'static,
    R: Fn(TcpStream, &Refused) + Send + Sync + 'static,
{
    /// No thread could be started to accept: the calling thread does, until others can.
    fn lead_here(self: Arc<Self>) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.lead();
    }

    /// Starts one more thread waiting in `accept` (a parked setup thread, or a new one).
    fn add(self: &Arc<Self>) -> io::Result<()> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let me = Arc::clone(self);
        SETUP_THREADS.spawn(move || me.lead()).inspect_err(|_| {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        })
    }

    /// A leader's life: accept a client, admit it under the limits and serve
    /// it here, then wait in `accept` again, unless [`LEADERS_WAITING`]
    /// others already do (then the thread goes back to the parked setup
    /// threads). Resource errors and refusals are logged at most once a
    /// second and accept errors are backed off: it never spins and never panics.
    fn lead(self: Arc<Self>) {
        loop {
            if self.acceptor.stop.stopped() {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            if !self.serve_one() {
                // No client: this thread is still one of those waiting.
                continue;
            }
            let back = self
                .waiting
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < LEADERS_WAITING).then_some(n + 1));
            if back.is_err() {
                return;
            }
        }
    }

    /// Accepts one client and serves it (or refuses it, over a limit), up
    /// to the start of its relay; then this thread no longer counts as
    /// waiting. Returns false, still counted as waiting, when accept gave
    /// no client (an error, or the stop).
    fn serve_one(self: &Arc<Self>) -> bool {
        let a = &self.acceptor;
        let (stream, peer) = match a.listener.accept() {
            Ok(accepted) => accepted,
            Err(_) if a.stop.stopped() => return false,
            Err(e) if is_transient_accept_error(&e) => return false,
            Err(e) => {
                self.warn_limited(format!("accept failed: {e}; backing off"));
                thread::sleep(ACCEPT_BACKOFF);
                return false;
            }
        };
        if self.waiting.fetch_sub(1, Ordering::SeqCst) == 1 && !a.stop.stopped() {
            // Nobody else waits in accept now: start a thread that does.
            if let Err(e) = self.add() {
                self.warn_limited(format!("cannot start a thread to accept connections: {e}"));
            }
        }
        let admitted = if a.source_at_accept { a.gate.enter(peer.ip()) } else { a.gate.enter_unsourced() };
        match admitted {
            Ok(place) => (self.admit)(stream, peer, place)(),
            Err(why) => {
                self.warn_limited(format!("{why}: refusing {peer}"));
                (self.refuse)(stream, &why);
            }
        }
        true
    }

    fn warn_limited(&self, what: String) {
        let mut last = self.last_warning.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            log::warn!("{what}");
            *last = Some(Instant::now());
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

    #[test]
    fn clients_keep_being_accepted_while_every_waiting_thread_serves_one() {
        let main = Acceptor::bind("127.0.0.1:0", 100, None, None).unwrap();
        let addr = main.local_addr().unwrap();
        let stop = main.stopper();
        // Each job holds its thread until told to go; it reports which thread serves it.
        let (served_tx, served) = mpsc::channel::<thread::ThreadId>();
        let (go_tx, go) = mpsc::channel::<()>();
        let go = Arc::new(Mutex::new(go));
        let admit = move |sock: TcpStream, _, place| {
            let (tx, go) = (served_tx.clone(), Arc::clone(&go));
            move || {
                tx.send(thread::current().id()).unwrap();
                let _ = go.lock().unwrap().recv_timeout(TIMEOUT);
                drop((sock, place));
            }
        };
        let main = thread::spawn(move || main.run(TIMEOUT, admit, |_, _| panic!("nobody is refused")));
        let clients: Vec<_> =
            (0..LEADERS_WAITING + 3).map(|_| TcpStream::connect_timeout(&addr, TIMEOUT).unwrap()).collect();
        let threads: Vec<_> = clients.iter().map(|_| served.recv_timeout(TIMEOUT).unwrap()).collect();
        let mut distinct = threads.clone();
        distinct.sort_by_key(|id| format!("{id:?}"));
        distinct.dedup();
        assert_eq!(distinct.len(), clients.len(), "each held client has a thread of its own");
        for _ in &clients {
            go_tx.send(()).unwrap();
        }
        stop.stop();
        assert_eq!(main.join().unwrap(), 0);
    }
}
