//! The pool of ready connections: TLS connections to the servers,
//! handshaken ahead of time so that a new client does not wait for TCP and
//! TLS, kept at a fixed size or at the size recent demand asks for.

use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustls::ClientConnection;

use crate::metrics;
use crate::net::deadline::{Arrived, Deadline};
use crate::tls::handshake;
use crate::workers::SETUP_STACK;

use super::upstream::{Link, Unreachable, Upstreams};

/// How many ready connections a [`Pool`] keeps (`--pool`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolSize {
    /// Exactly this many (`--pool N`); 0 is no pool at all.
    Fixed(usize),
    /// About as many as clients opened recently, at most [`DEMAND_CAP`]
    /// (the default): see [`Demand`].
    Demand,
}

impl PoolSize {
    /// Parses `--pool`: a number of connections.
    pub fn parse(s: &str) -> Option<PoolSize> {
        s.parse().ok().map(PoolSize::Fixed)
    }
}

/// The most connections a demand-sized pool keeps ready. Each one is a
/// connection the server holds open (and counts as pending) until it is used.
pub const DEMAND_CAP: usize = 16;
/// After this long without a new client, a demand-sized pool lets its
/// connections go and keeps none, so an idle machine neither holds
/// connections nor makes the server handshake for nothing.
pub const DEMAND_IDLE: Duration = Duration::from_secs(300);
/// The window over which a demand-sized pool remembers its busiest second.
pub const DEMAND_WINDOW: usize = 60;

/// Recent demand: new clients per second over the last [`DEMAND_WINDOW`]
/// seconds. The pool keeps as many ready as the busiest of those seconds
/// saw (a browser opening six connections at once gets six), at least one
/// while there was any client in the last [`DEMAND_IDLE`], none after.
pub struct Demand {
    /// Clients per second, a ring indexed by seconds since `epoch`.
    slots: [u32; DEMAND_WINDOW],
    epoch: Instant,
    /// The second of the newest slot.
    second: u64,
    /// When the last client came.
    last: Option<Instant>,
}

impl Demand {
    /// No demand yet: a pool that keeps nothing until the first client.
    pub fn new(now: Instant) -> Demand {
        Demand { slots: [0; DEMAND_WINDOW], epoch: now, second: 0, last: None }
    }

    /// Moves the ring to `now`, clearing the seconds that passed.
    fn advance(&mut self, now: Instant) {
        let second = now.saturating_duration_since(self.epoch).as_secs();
        let passed = second.saturating_sub(self.second).min(DEMAND_WINDOW as u64);
        for s in 1..=passed {
            self.slots[((self.second + s) % DEMAND_WINDOW as u64) as usize] = 0;
        }
        self.second = self.second.max(second);
    }

    /// One new client at `now`.
    pub fn record(&mut self, now: Instant) {
        self.advance(now);
        let slot = &mut self.slots[(self.second % DEMAND_WINDOW as u64) as usize];
        *slot = slot.saturating_add(1);
        self.last = Some(now);
    }

    /// How many connections to keep ready at `now`.
    pub fn target(&mut self, now: Instant) -> usize {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < DEMAND_IDLE => {
                self.advance(now);
                let busiest = self.slots.iter().copied().max().unwrap_or(0) as usize;
                busiest.clamp(1, DEMAND_CAP)
            }
            _ => 0,
        }
    }
}

/// TLS connections to the servers, handshaken ahead of time so that a new
/// client does not wait for TCP and TLS. The thread that took a ready
/// connection makes the next one ([`Pool::refill`]); filler threads make
/// the rest when demand grows, keep the pool at its size (fixed, or from
/// [`Demand`]) and replace any connection that reaches `age` unused. Each ready connection knows its server; one whose
/// server is down, or no longer the one a new client would be sent to, is
/// never handed out.
pub struct Pool {
    state: Mutex<Stock>,
    wake: Condvar,
    upstreams: Arc<Upstreams>,
    size: PoolSize,
    age: Duration,
}

/// What a pool holds: the spare connections, oldest first, and the demand.
struct Stock {
    ready: VecDeque<Spare>,
    /// Connections a filler is making now, counted so that two fillers do
    /// not both make the one connection wanted.
    filling: usize,
    demand: Demand,
    /// The local has stopped: the fillers close what is ready and leave.
    stopped: bool,
}

impl Stock {
    fn target(&mut self, size: PoolSize) -> usize {
        match size {
            PoolSize::Fixed(n) => n,
            PoolSize::Demand => self.demand.target(Instant::now()),
        }
    }
}

/// A connection in the pool, and when it was made.
struct Spare {
    link: Link,
    born: Instant,
}

/// How long closing an unused ready connection may wait to write its close_notify.
const DISCARD_WRITE: Duration = Duration::from_millis(100);

impl Spare {
    /// Whether it may still be handed out: young enough, and wanted (see [`Upstreams::wanted`]).
    fn usable(&self, age: Duration, upstreams: &Upstreams) -> bool {
        self.born.elapsed() < age && upstreams.wanted(&self.link)
    }

    /// Closes a ready connection that will not be used with close_notify, so
    /// that the server sees a clean end, not a connection that broke.
    fn discard(mut self) {
        let until = Instant::now() + DISCARD_WRITE;
        let _ = handshake::close(&mut self.link.conn, &mut Deadline::new(&self.link.sock, until));
    }
}

thread_local! {
    /// Whether this thread took a ready connection that it is to replace
    /// itself ([`Pool::refill`]).
    static REFILL_OWED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How long a filler rests after it could not reach any server and none
/// was marked down for it (the local itself was out of descriptors, say).
const POOL_BACKOFF: Duration = Duration::from_secs(1);
/// How long a filler waits for a server to come back before it looks at
/// its stock again (a stop, a change of demand).
const POOL_WAIT_UP: Duration = Duration::from_secs(1);

impl Pool {
    /// Starts the filler threads for a pool of `size` (none for `Fixed(0)`).
    pub fn start(upstreams: &Arc<Upstreams>, size: PoolSize, age: Duration) -> Option<Arc<Pool>> {
        if size == PoolSize::Fixed(0) {
            return None;
        }
        let stock =
            Stock { ready: VecDeque::new(), filling: 0, demand: Demand::new(Instant::now()), stopped: false };
        let pool = Arc::new(Pool {
            state: Mutex::new(stock),
            wake: Condvar::new(),
            upstreams: Arc::clone(upstreams),
            size,
            age,
        });
        let fillers = match size {
            PoolSize::Fixed(n) => n.min(2),
            PoolSize::Demand => 2,
        };
        for i in 0..fillers {
            let p = Arc::clone(&pool);
            let spawned = thread::Builder::new()
                .name(format!("pool-{i}"))
                .stack_size(SETUP_STACK)
                .spawn(move || p.fill());
            if let Err(e) = spawned {
                log::warn!("cannot start a pool thread: {e}");
            }
        }
        Some(pool)
    }

    fn lock(&self) -> MutexGuard<'_, Stock> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ready connection for a new client, if one is fresh, still open,
    /// and to a server a new client would be sent to. Either way the client
    /// counts as demand, and a filler is woken to make up for it.
    pub fn take(&self) -> Option<Link> {
        self.take_for(false)
    }

    /// [`Pool::take`], for a thread that will call [`Pool::refill`] once
    /// its client's relay runs: when the pool lacks just the one taken, that
    /// thread makes it up itself and no filler is woken; when it lacks more
    /// (a burst of clients), a filler is, as for [`Pool::take`].
    pub fn take_to_replace(&self) -> Option<Link> {
        self.take_for(true)
    }

    fn take_for(&self, replace_here: bool) -> Option<Link> {
        let mut stock = self.lock();
        stock.demand.record(Instant::now());
        let found = loop {
            let Some(mut r) = stock.ready.pop_front() else { break None };
            if !r.usable(self.age, &self.upstreams) {
                r.discard();
            } else if still_open(&r.link.sock, &mut r.link.conn) {
                break Some(r.link);
            }
        };
        metrics::POOL_READY.set(stock.ready.len() as i64);
        let lacking = stock.target(self.size).saturating_sub(stock.ready.len() + stock.filling);
        drop(stock);
        metrics::POOL_TAKEN.add(u64::from(found.is_some()));
        // One short, the one just taken: the taker makes it. More (a burst
        // of clients): the fillers, so that the threads that accept are
        // not kept from accepting by handshakes.
        let mine = replace_here && found.is_some() && lacking == 1;
        if replace_here {
            REFILL_OWED.with(|owed| owed.set(mine));
        }
        if !mine && lacking > 0 {
            self.wake.notify_one();
        }
        found
    }

    /// Makes one ready connection here, if this thread took the one the
    /// pool lacks ([`Pool::take_to_replace`]) and it still does: called by
    /// the thread that served a client, once the client's relay runs, so
    /// that no filler is woken (and switched to) to replace the connection
    /// the client took. A failure is left to the fillers, which back off.
    pub fn refill(&self) {
        if !REFILL_OWED.with(|owed| owed.replace(false)) {
            return;
        }
        let mut stock = self.lock();
        if stock.stopped
            || stock.ready.len() + stock.filling >= stock.target(self.size)
            || !self.upstreams.any_up()
        {
            return;
        }
        let (mut stock, made) = self.make(stock);
        match made {
            Ok(link) if !stock.stopped => {
                stock.ready.push_back(Spare { link, born: Instant::now() });
                metrics::POOL_READY.set(stock.ready.len() as i64);
            }
            Ok(link) => Spare { link, born: Instant::now() }.discard(),
            Err(_) => {
                drop(stock);
                self.wake.notify_one();
            }
        }
    }

    /// A new connection to a server, counted as being made (`filling`)
    /// while `stock`'s lock is let go; returns the lock again with it. The
    /// session tickets a TLS 1.3 server sends after the handshake are not
    /// waited for here (a blocking read, a wake-up per connection):
    /// [`still_open`] reads them, without waiting, when the connection is
    /// taken, which is before the replacement's handshake
    /// ([`Pool::refill`]) needs one to resume.
    fn make<'a>(
        &'a self,
        mut stock: MutexGuard<'a, Stock>,
    ) -> (MutexGuard<'a, Stock>, Result<Link, Unreachable>) {
        stock.filling += 1;
        drop(stock);
        let made = self.upstreams.connect(None);
        let mut stock = self.lock();
        stock.filling -= 1;
        (stock, made)
    }

    /// Stops the fillers; what is ready is closed.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.wake.notify_all();
    }

    /// A filler thread: keeps the pool at its size and fresh, until the pool stops.
    fn fill(&self) {
        loop {
            let mut stock = self.lock();
            if stock.stopped {
                stock.ready.drain(..).for_each(Spare::discard);
                metrics::POOL_READY.set(0);
                return;
            }
            let (keep, stale): (VecDeque<Spare>, VecDeque<Spare>) =
                stock.ready.drain(..).partition(|r| r.usable(self.age, &self.upstreams));
            stock.ready = keep;
            stale.into_iter().for_each(Spare::discard);
            metrics::POOL_READY.set(stock.ready.len() as i64);
            if stock.ready.len() + stock.filling >= stock.target(self.size) {
                // Enough: sleep until a client comes or the oldest gets too old.
                let oldest =
                    stock.ready.front().map_or(self.age, |r| self.age.saturating_sub(r.born.elapsed()));
                drop(self.wake.wait_timeout(stock, oldest).unwrap_or_else(PoisonError::into_inner));
                continue;
            }
            // Every server down: the check, not the pool, tries them again.
            if !self.upstreams.any_up() {
                drop(stock);
                self.upstreams.wait_up(POOL_WAIT_UP);
                continue;
            }
            let (mut stock, made) = self.make(stock);
            match made {
                Ok(link) => stock.ready.push_back(Spare { link, born: Instant::now() }),
                Err(e) => {
                    // The server's down line says it once; the pool adds detail.
                    log::debug!("pool: cannot reach server {}: {}", e.server, e.error);
                    if self.upstreams.any_up() {
                        // Nobody to blame: a rest, which a stop cuts short.
                        drop(
                            self.wake
                                .wait_timeout(stock, POOL_BACKOFF)
                                .unwrap_or_else(PoisonError::into_inner),
                        );
                    }
                }
            }
        }
    }
}

/// Whether the server has not closed a connection while it waited in the
/// pool. Whatever arrived meanwhile is read without waiting: the session
/// tickets the server sends after the handshake (stored for resumption), and
/// behind them perhaps the end of the connection.
fn still_open(sock: &TcpStream, conn: &mut ClientConnection) -> bool {
    loop {
        match conn.read_tls(&mut Arrived(sock)) {
            Ok(0) => return false,
            Ok(_) => {
                if conn.process_new_packets().is_err() {
                    return false;
                }
            }
            Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_demand_sized_pool_keeps_the_busiest_second_of_the_last_minute_then_none() {
        let t0 = Instant::now();
        let mut d = Demand::new(t0);
        assert_eq!(d.target(t0), 0, "no client yet, nothing kept");
        for _ in 0..6 {
            d.record(t0);
        }
        assert_eq!(d.target(t0), 6, "six at once: six kept");
        d.record(t0 + Duration::from_secs(10));
        assert_eq!(d.target(t0 + Duration::from_secs(30)), 6, "the busiest second of the last minute");
        assert_eq!(d.target(t0 + Duration::from_secs(75)), 1, "a quiet minute: one kept");
        assert_eq!(d.target(t0 + Duration::from_secs(10) + DEMAND_IDLE), 0, "idle: none");
        for _ in 0..100 {
            d.record(t0 + Duration::from_secs(400));
        }
        assert_eq!(d.target(t0 + Duration::from_secs(400)), DEMAND_CAP);
    }
}
