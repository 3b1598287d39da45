//! Shutdown on SIGTERM and SIGINT, without a signal handler.
//!
//! [`block`] blocks both signals in the calling thread before any other thread
//! exists, so every thread inherits the block; [`watch`] then waits for them
//! on a thread of its own with `sigwait`, where the reaction is ordinary code.
//! The first signal starts a graceful shutdown; a second exits at once.

use std::thread;

use nix::sys::signal::{SigSet, Signal};

use crate::error::Error;
use crate::workers::COPY_STACK;

/// The signals that stop a proxy.
pub struct Signals(SigSet);

/// Blocks SIGTERM and SIGINT in this thread and every thread it starts later.
/// Call it first in `main`, before any thread is spawned.
pub fn block() -> Result<Signals, Error> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().map_err(|e| Error::Config(format!("cannot block signals: {e}")))?;
    Ok(Signals(set))
}

/// Runs `first` when the first signal arrives; exits the process with
/// 128 + the signal's number when a second one does.
pub fn watch(signals: Signals, first: impl FnOnce() + Send + 'static) -> Result<(), Error> {
    let set = signals.0;
    thread::Builder::new()
        .name("signals".into())
        .stack_size(COPY_STACK)
        .spawn(move || {
            let Ok(sig) = set.wait() else { return };
            log::info!("{sig}: shutting down, draining open connections (again to exit at once)");
            first();
            if let Ok(sig) = set.wait() {
                log::warn!("{sig} again: exiting now");
                std::process::exit(128 + sig as i32);
            }
        })
        .map(|_| ())
        .map_err(|e| Error::Config(format!("cannot start the signal thread: {e}")))
}
