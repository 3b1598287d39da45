//! Threads that are started once and used again.
//!
//! Every connection needs a setup thread and then two copy threads. Creating
//! an OS thread costs tens of microseconds, on the path of every new
//! connection; handing a job to a thread that is parked waiting for one costs
//! a wake-up. A [`Workers`] set keeps up to [`MAX_IDLE`] finished threads
//! parked for [`KEEP`], and starts a new thread only when none is idle. Each
//! job still has an OS thread to itself while it runs, so a connection is
//! still one thread per direction; idle threads leave after [`KEEP`], so the
//! thread count returns to its idle value soon after the last connection.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

/// How long a finished thread waits for another job before it exits.
pub const KEEP: Duration = Duration::from_secs(2);

/// At most this many threads of one set wait for a job; more exit at once.
pub const MAX_IDLE: usize = 64;

type Job = Box<dyn FnOnce() + Send>;

/// A parked thread's mailbox.
struct Slot {
    job: Mutex<Option<Job>>,
    ready: Condvar,
}

/// A set of reusable threads with one name and one stack size.
pub struct Workers {
    name: &'static str,
    stack: usize,
    idle: Mutex<Vec<Arc<Slot>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Workers {
    /// A set whose threads are called `name` and have `stack` bytes of stack.
    pub const fn new(name: &'static str, stack: usize) -> Workers {
        Workers { name, stack, idle: Mutex::new(Vec::new()) }
    }

    /// Runs `job` on an idle thread of this set, or on a new one. Fails only
    /// when a new thread is needed and the system will not start one.
    pub fn spawn(&'static self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let job: Job = Box::new(job);
        let parked = lock(&self.idle).pop();
        if let Some(slot) = parked {
            *lock(&slot.job) = Some(job);
            slot.ready.notify_one();
            return Ok(());
        }
        let slot = Arc::new(Slot { job: Mutex::new(None), ready: Condvar::new() });
        thread::Builder::new()
            .name(self.name.to_owned())
            .stack_size(self.stack)
            .spawn(move || self.work(slot, job))?;
        Ok(())
    }

    /// A thread's life: run a job, park, run the next, until none comes for [`KEEP`].
    fn work(&'static self, slot: Arc<Slot>, first: Job) {
        let mut job = first;
        loop {
            job();
            {
                let mut idle = lock(&self.idle);
                if idle.len() >= MAX_IDLE {
                    return;
                }
                idle.push(Arc::clone(&slot));
            }
            let mut waiting = lock(&slot.job);
            job = loop {
                if let Some(next) = waiting.take() {
                    break next;
                }
                let (guard, wait) =
                    slot.ready.wait_timeout(waiting, KEEP).unwrap_or_else(PoisonError::into_inner);
                waiting = guard;
                if wait.timed_out() && waiting.is_none() {
                    // Leave, unless a spawner has just taken this slot: then its job is on the way.
                    let mut idle = lock(&self.idle);
                    if let Some(i) = idle.iter().position(|s| Arc::ptr_eq(s, &slot)) {
                        idle.swap_remove(i);
                        return;
                    }
                }
            };
        }
    }
}

/// Stack of a connection's setup thread: SOCKS5 or the TLS handshake, name
/// resolution, connect, logging. Short-lived; more than four times
/// [`COPY_STACK`], so glibc never hands one of these deep stacks to a copy thread.
pub const SETUP_STACK: usize = 512 * 1024;

/// Stack of the two copy threads of a connection, which live as long as it
/// does. Their buffers are on the heap, so they stay shallow.
pub const COPY_STACK: usize = 64 * 1024;

/// The setup threads of both binaries.
pub static SETUP_THREADS: Workers = Workers::new("setup", SETUP_STACK);
/// The copy threads of both binaries.
pub static COPY_THREADS: Workers = Workers::new("copy", COPY_STACK);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    static SET: Workers = Workers::new("test-worker", 64 * 1024);

    /// Waits (polling, bounded) until `n` threads of the set are parked.
    fn parked(n: usize) {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while lock(&SET.idle).len() < n {
            assert!(std::time::Instant::now() < until, "no thread parked");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_parked_thread_runs_the_next_job() {
        let (tx, rx) = mpsc::channel();
        let mut first = None;
        for i in 0..20 {
            let tx = tx.clone();
            SET.spawn(move || tx.send((i, thread::current().id())).unwrap()).unwrap();
            let (got, id) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(got, i);
            assert_eq!(*first.get_or_insert(id), id, "job {i} ran on the parked thread");
            parked(1);
        }
    }
}
