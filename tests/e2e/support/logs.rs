//! What the library logs while the tests run it in this process: every
//! line, kept in memory, and the close lines of each [`Running`](super::Running)
//! apart, as its watch hands them over. A close line belongs to the proxy
//! that closed it; any other line belongs to the process, so tests look for
//! those by what is theirs alone (an address, a port).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once, PoisonError};
use std::time::Instant;

use super::TIMEOUT;

/// Every line: the proxy whose close line it is, if it is one, and the text.
static LINES: Mutex<Vec<(Option<u64>, String)>> = Mutex::new(Vec::new());
static ADDED: Condvar = Condvar::new();
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// Every line, whatever a panicking test left behind: the lines are only ever
/// pushed, so a guard dropped in a panic leaves them whole.
fn all() -> MutexGuard<'static, Vec<(Option<u64>, String)>> {
    LINES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A number for a proxy run in this process, to file its close lines under.
pub fn owner() -> u64 {
    NEXT_OWNER.fetch_add(1, Ordering::Relaxed)
}

/// Adds a line; `owner` for a close line.
pub fn push(owner: Option<u64>, line: String) {
    if std::env::var_os("TEST_ECHO_LOGS").is_some() {
        eprintln!("{line}");
    }
    all().push((owner, line));
    ADDED.notify_all();
}

/// `owner`'s close lines and the process's other lines.
pub fn lines(owner: u64) -> Vec<String> {
    all().iter().filter(|(o, _)| o.is_none_or(|o| o == owner)).map(|(_, l)| l.clone()).collect()
}

/// Waits until `n` of `owner`'s lines (see [`lines`]) match `pred`, and
/// returns them; fails the test after TIMEOUT.
pub fn wait(owner: u64, n: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let until = Instant::now() + TIMEOUT;
    let mut all = all();
    loop {
        let found: Vec<String> = all
            .iter()
            .filter(|(o, l)| o.is_none_or(|o| o == owner) && pred(l))
            .map(|(_, l)| l.clone())
            .collect();
        if found.len() >= n {
            return found;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let got = format!("{:#?}", lines_of(&all, owner));
            drop(all);
            panic!("{} of {n} matching lines; got {got}", found.len());
        }
        all = ADDED.wait_timeout(all, left).unwrap_or_else(PoisonError::into_inner).0;
    }
}

fn lines_of(all: &[(Option<u64>, String)], owner: u64) -> Vec<&str> {
    all.iter().filter(|(o, _)| o.is_none_or(|o| o == owner)).map(|(_, l)| l.as_str()).collect()
}

/// Sets up the capture, once per process: debug and above, as `RUST_LOG=debug`
/// gives a process. Close lines come through each proxy's watch instead.
pub fn capture() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if log::set_logger(&Capture).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
    });
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Debug
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("[{:<5}] {}", record.level(), record.args());
        if !line.contains(" closed client=") {
            push(None, line);
        }
    }

    fn flush(&self) {}
}
