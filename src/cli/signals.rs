//! Shutdown on SIGTERM and SIGINT, reload on SIGHUP, without a signal handler.
//!
//! [`block`] blocks the three signals in the calling thread before any other
//! thread exists, so every thread inherits the block; [`watch`] then waits
//! for them on a thread of its own with `sigwait`, where the reaction is
//! ordinary code. The first SIGTERM or SIGINT starts a graceful shutdown; a
//! second exits at once.
//!
//! A reload reads files, and a read can block: a path swapped for a FIFO, a
//! hung network mount. So the signal thread never reloads itself: it hands
//! each SIGHUP to a reload thread (`Reloader`) and goes back to waiting,
//! so SIGTERM and SIGINT are acted on whatever a reload is doing. SIGHUPs
//! that arrive while a reload runs are coalesced into one more reload after
//! it, which reads the files as they are by then.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

use nix::sys::signal::{SigSet, Signal};

use crate::error::Error;
use crate::workers::SETUP_STACK;

/// The signals a proxy takes: the two that stop it and the one that reloads it.
pub struct Signals(SigSet);

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread and every thread it
/// starts later. Call it first in `main`, before any thread is spawned.
pub fn block() -> Result<Signals, Error> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set.thread_block().map_err(|e| Error::Config(format!("cannot block signals: {e}")))?;
    Ok(Signals(set))
}

/// Runs `stop` when the first SIGTERM or SIGINT arrives, and exits the
/// process with 128 + the signal's number when a second one does; runs
/// `reload` on the reload thread for each SIGHUP (coalesced while one runs),
/// before and after the first stop signal.
pub fn watch(
    signals: Signals,
    stop: impl FnOnce() + Send + 'static,
    reload: impl Fn() + Send + 'static,
) -> Result<(), Error> {
    let set = signals.0;
    let reloader = Reloader::start(reload)?;
    thread::Builder::new()
        .name("signals".into())
        .stack_size(SETUP_STACK)
        .spawn(move || {
            let mut stop = Some(stop);
            while let Ok(sig) = set.wait() {
                if sig == Signal::SIGHUP {
                    match reloader.ask() {
                        Asked::Started => log::info!("{sig}: reloading"),
                        Asked::Queued => log::info!("{sig}: a reload is running; one more follows it"),
                        Asked::AlreadyQueued => log::info!("{sig}: folded into the reload that is due"),
                    }
                } else if let Some(stop) = stop.take() {
                    log::info!("{sig}: shutting down, draining open connections (again to exit at once)");
                    stop();
                } else {
                    log::warn!("{sig} again: exiting now");
                    std::process::exit(128 + sig as i32);
                }
            }
        })
        .map(|_| ())
        .map_err(|e| Error::Config(format!("cannot start the signal thread: {e}")))
}

/// A thread that runs a reload each time it is asked, one at a time.
struct Reloader {
    state: Arc<(Mutex<State>, Condvar)>,
}

/// What the reload thread is doing.
#[derive(Default)]
struct State {
    /// A reload is running.
    running: bool,
    /// Another is due once it ends (or now, if none runs).
    due: bool,
    /// Reloads run to their end.
    done: u64,
}

/// What [`Reloader::ask`] did.
#[derive(Debug, PartialEq)]
enum Asked {
    /// Nothing was running: the reload starts now.
    Started,
    /// One runs: another follows it.
    Queued,
    /// Another is already due: this ask is folded into that one.
    AlreadyQueued,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reloader {
    /// Starts the reload thread, which runs `reload` when asked.
    fn start(reload: impl Fn() + Send + 'static) -> Result<Reloader, Error> {
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let shared = Arc::clone(&state);
        thread::Builder::new()
            .name("reload".into())
            .stack_size(SETUP_STACK)
            .spawn(move || {
                let (m, cv) = &*shared;
                loop {
                    {
                        let mut s = lock(m);
                        while !s.due {
                            s = cv.wait(s).unwrap_or_else(PoisonError::into_inner);
                        }
                        s.due = false;
                        s.running = true;
                    }
                    reload();
                    let mut s = lock(m);
                    s.running = false;
                    s.done += 1;
                    cv.notify_all();
                }
            })
            .map_err(|e| Error::Config(format!("cannot start the reload thread: {e}")))?;
        Ok(Reloader { state })
    }

    /// Asks for a reload; never waits for one to run.
    fn ask(&self) -> Asked {
        let (m, cv) = &*self.state;
        let mut s = lock(m);
        let asked = match (s.running, s.due) {
            (_, true) => Asked::AlreadyQueued,
            (true, false) => Asked::Queued,
            (false, false) => Asked::Started,
        };
        s.due = true;
        cv.notify_all();
        asked
    }

    /// Waits until no reload runs or is due; how many have run.
    #[cfg(test)]
    fn wait_idle(&self) -> u64 {
        let (m, cv) = &*self.state;
        let mut s = lock(m);
        while s.running || s.due {
            s = cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn sighups_during_a_reload_that_blocks_are_answered_at_once_and_coalesced_into_one_more() {
        let (started, runs) = mpsc::channel::<()>();
        let (release, wait) = mpsc::channel::<()>();
        let wait = Mutex::new(wait);
        let reloader = Reloader::start(move || {
            started.send(()).unwrap();
            // Blocks like a read of a FIFO, until the test lets it go.
            wait.lock().unwrap().recv_timeout(TIMEOUT).unwrap();
        })
        .unwrap();
        assert_eq!(reloader.ask(), Asked::Started);
        runs.recv_timeout(TIMEOUT).unwrap();
        // The first reload is blocked; every ask returns at once.
        assert_eq!(reloader.ask(), Asked::Queued);
        for _ in 0..5 {
            assert_eq!(reloader.ask(), Asked::AlreadyQueued);
        }
        release.send(()).unwrap();
        runs.recv_timeout(TIMEOUT).unwrap();
        release.send(()).unwrap();
        assert_eq!(reloader.wait_idle(), 2, "seven asks, two reloads");
        assert_eq!(reloader.ask(), Asked::Started, "idle again");
        runs.recv_timeout(TIMEOUT).unwrap();
        release.send(()).unwrap();
        assert_eq!(reloader.wait_idle(), 3);
    }
}
