//! The connections open now, for the live view on the metrics address
//! (`GET /connections`, `GET /`): each admitted connection's [`Report`]
//! registers an [`Entry`] when it is made and takes it out when it is
//! dropped, so the list holds exactly the connections whose close line has
//! not been written yet.
//!
//! Its cost is bounded: a connection takes the registry's lock once when it
//! opens and once when it closes, and its entry's own lock when it is
//! described (as its relay starts) and named (a user, a server). The bytes
//! an entry shows are the relay's own counters, which the relay adds to as
//! it writes (nothing more per byte), plus what the connection moved
//! before its relay (the first bytes that came with a header). A UDP
//! association shows its bytes only in its close line. A [`snapshot`]
//! copies the list under the registry's lock and reads each entry after.
//!
//! [`Report`]: super::Report

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Bytes moved each way, up (from the client) then down: the counters a
/// relay adds to as it writes.
pub type Bytes = [AtomicU64; 2];

/// The open connections, by id.
static OPEN: Mutex<BTreeMap<u64, Arc<Entry>>> = Mutex::new(BTreeMap::new());

/// One open connection, as the live view shows it.
pub struct Entry {
    id: u64,
    start: Instant,
    /// What the relay has moved.
    relayed: Arc<Bytes>,
    /// What the connection moved before its relay.
    before: Bytes,
    about: Mutex<About>,
}

/// What is known of a connection: its description, filled in as it goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct About {
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// Where the client asked to go (a peer-controlled string).
    pub target: Option<String>,
    /// The protocol the client spoke.
    pub protocol: Option<&'static str>,
    /// Where a local sent it: `direct`, `proxy` or `block`.
    pub route: Option<&'static str>,
    /// The named user whose connection it is (a server's).
    pub user: Option<String>,
    /// The server a local's connection goes through.
    pub server: Option<String>,
}

impl Entry {
    /// Registers connection `id` from `client`; it stays in the list until
    /// the returned [`Registered`] is dropped.
    pub fn register(id: u64, client: SocketAddr) -> Registered {
        let entry = Arc::new(Entry {
            id,
            start: Instant::now(),
            relayed: Arc::default(),
            before: Bytes::default(),
            about: Mutex::new(About { client: Some(client), ..About::default() }),
        });
        OPEN.lock().unwrap_or_else(PoisonError::into_inner).insert(id, Arc::clone(&entry));
        Registered(entry)
    }

    /// Changes what is known of the connection.
    pub fn describe(&self, change: impl FnOnce(&mut About)) {
        change(&mut self.about.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Names the user whose connection it is.
    pub fn user(&self, name: &str) {
        self.describe(|a| a.user = Some(name.to_owned()));
    }

    /// Sets what the connection moved before its relay, and returns the
    /// counters its relay adds to.
    pub fn relaying(&self, up: u64, down: u64) -> Arc<Bytes> {
        self.before[0].store(up, Ordering::Relaxed);
        self.before[1].store(down, Ordering::Relaxed);
        Arc::clone(&self.relayed)
    }

    fn row(&self, now: Instant) -> Row {
        let moved = |i: usize| {
            self.before[i].load(Ordering::Relaxed).saturating_add(self.relayed[i].load(Ordering::Relaxed))
        };
        Row {
            id: self.id,
            about: self.about.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            up: moved(0),
            down: moved(1),
            age: now.saturating_duration_since(self.start),
        }
    }
}

/// An entry in the list, taken out when this is dropped.
pub struct Registered(Arc<Entry>);

impl Registered {
    /// The entry.
    pub fn entry(&self) -> &Entry {
        &self.0
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        OPEN.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.0.id);
    }
}

/// One open connection at the moment of a [`snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The connection's `#id`.
    pub id: u64,
    /// What is known of it.
    pub about: About,
    /// Bytes from the client so far.
    pub up: u64,
    /// Bytes to the client so far.
    pub down: u64,
    /// How long it has been open.
    pub age: Duration,
}

/// The open connections now, by id.
pub fn snapshot() -> Vec<Row> {
    let entries: Vec<Arc<Entry>> =
        OPEN.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
    let now = Instant::now();
    entries.iter().map(|e| e.row(now)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(id: u64) -> Option<Row> {
        snapshot().into_iter().find(|r| r.id == id)
    }

    #[test]
    fn an_entry_is_listed_until_dropped_with_its_bytes_before_and_in_the_relay() {
        let id = u64::MAX - 7;
        let reg = Entry::register(id, "127.0.0.1:5000".parse().unwrap());
        reg.entry().describe(|a| a.target = Some("example.com:443".into()));
        reg.entry().user("alice");
        let relayed = reg.entry().relaying(10, 0);
        relayed[0].fetch_add(5, Ordering::Relaxed);
        relayed[1].fetch_add(7, Ordering::Relaxed);
        let row = find(id).unwrap();
        assert_eq!((row.up, row.down), (15, 7));
        assert_eq!(row.about.target.as_deref(), Some("example.com:443"));
        assert_eq!(row.about.user.as_deref(), Some("alice"));
        drop(reg);
        assert_eq!(find(id), None);
    }
}
