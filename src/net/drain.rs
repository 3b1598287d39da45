//! The start of a drain, as something a blocked thread can wait on.
//!
//! A server that stops serves nothing new. A connection that has finished
//! its TLS handshake but sent no header yet (a local's ready connection,
//! kept for its next client) sits in a blocking read, and must give up when
//! the drain starts, not at its deadline: the restart may be meant to
//! tighten `--deny`. [`Drain`] is a socket pair whose far end is closed when
//! the drain starts, so one `poll(2)` on the near end, next to the client's
//! socket, wakes every thread that waits with it at once (see
//! [`super::deadline::Deadline::or_drain`]).

use std::fmt;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// Whether a drain has started, and a socket to wait on for it.
pub struct Drain {
    started: AtomicBool,
    /// Readable (at its end of stream) once the drain has started.
    watch: UnixStream,
    /// Closed to start the drain.
    trigger: Mutex<Option<UnixStream>>,
}

impl Drain {
    /// A drain not started yet.
    pub fn new() -> io::Result<Drain> {
        let (watch, trigger) = UnixStream::pair()?;
        Ok(Drain { started: AtomicBool::new(false), watch, trigger: Mutex::new(Some(trigger)) })
    }

    /// Starts the drain: every thread waiting with it wakes.
    pub fn start(&self) {
        self.started.store(true, Ordering::SeqCst);
        self.trigger.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// Whether the drain has started.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// The socket that becomes readable when the drain starts.
    pub fn watch(&self) -> &UnixStream {
        &self.watch
    }
}

/// The error a read waiting with a [`Drain`] fails with once it has started.
#[derive(Debug)]
pub struct Draining;

impl fmt::Display for Draining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("draining")
    }
}

impl std::error::Error for Draining {}

/// A [`Draining`] error.
pub fn draining() -> io::Error {
    io::Error::other(Draining)
}

/// Whether `e` is a [`Draining`] error.
pub fn is_draining(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Draining>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::poll::{wait, Ready};
    use crate::net::testing::socket_pair;
    use std::time::Duration;

    #[test]
    fn a_wait_wakes_when_the_drain_starts_and_stays_woken() {
        let drain = Drain::new().unwrap();
        let (a, _b) = socket_pair();
        assert_eq!(wait(&a, drain.watch(), true, Duration::from_millis(10)).unwrap(), Ready::Neither);
        assert!(!drain.started());
        drain.start();
        assert!(drain.started());
        for _ in 0..2 {
            assert_eq!(wait(&a, drain.watch(), true, Duration::from_secs(5)).unwrap(), Ready::Second);
        }
        assert!(is_draining(&draining()));
        assert!(!is_draining(&io::Error::other("x")));
    }
}
