//! Shutdown on SIGTERM and SIGINT, reload on SIGHUP, without a signal handler.
//!
//! [`block`] blocks the three signals in the calling thread before any other
//! thread exists, so every thread inherits the block; [`watch`] then waits
//! for them on a thread of its own with `sigwait`, where the reaction is
//! ordinary code. The first SIGTERM or SIGINT starts a graceful shutdown; a
//! second exits at once. Each SIGHUP runs the reload.

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
/// `reload` on each SIGHUP, before and after the first stop signal.
pub fn watch(
    signals: Signals,
    stop: impl FnOnce() + Send + 'static,
    reload: impl Fn() + Send + 'static,
) -> Result<(), Error> {
    let set = signals.0;
    thread::Builder::new()
        .name("signals".into())
        .stack_size(SETUP_STACK)
        .spawn(move || {
            let mut stop = Some(stop);
            while let Ok(sig) = set.wait() {
                if sig == Signal::SIGHUP {
                    log::info!("{sig}: reloading");
                    reload();
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
