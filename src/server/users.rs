//! The server's named users at run time (`--users`): what each has open,
//! has moved and may still move, so that a close line names whose it was,
//! the metrics count each person, and one person cannot eat the link.
//!
//! A [`User`] lives, by name, for as long as the process: a reload that
//! keeps the name keeps its counts, its open connections and what it has
//! used of its quota, and takes the new password and limits. A name the
//! file no longer holds is marked removed: its password opens nothing new,
//! and with `--cut-removed` its open connections are cut.
//!
//! Each connection of a user holds a [`Session`]: its place under
//! `max_conns`, given back when dropped, and what cuts its relay. The
//! user is the relay's [`Meter`]: `rate=` is a token bucket per direction
//! shared by all its connections (a write waits for its bytes' turn, with a
//! burst of [`BURST`]), and `quota=` counts the bytes of both directions;
//! the write that would pass it ends every connection of the user. What
//! each user has used can be written to a file and read back at start
//! (`--quota-state`), so that a restart does not start it again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::conn::relay::{Cut, Dir, Meter};
use crate::metrics::{self, Counter, Kind};
use crate::proto::accounts::{Account, Quota};
use crate::proto::wire::TrojanHash;
use crate::text::Escaped;

/// How far ahead of its rate a user's direction may run: bytes worth this
/// long pass at once after a pause.
pub const BURST: Duration = Duration::from_millis(50);

/// A user's limits, as its line in the file gives them.
#[derive(Clone, Copy, Debug, Default)]
struct Limits {
    max_conns: Option<u64>,
    rate: Option<u64>,
    quota: Option<Quota>,
}

/// What a user has used of its quota in the current period.
struct Used {
    since: Instant,
    /// `since` on the wall clock, for the state file.
    since_wall: SystemTime,
    bytes: u64,
}

impl Used {
    fn new() -> Used {
        Used { since: Instant::now(), since_wall: SystemTime::now(), bytes: 0 }
    }
}

/// One named user, for the life of the process.
pub struct User {
    /// Its name, as the file gives it.
    pub name: Arc<str>,
    limits: Mutex<Limits>,
    removed: AtomicBool,
    open: AtomicU64,
    opened: Counter,
    refused: Counter,
    up: Counter,
    down: Counter,
    /// Per direction, the time at which the bytes passed so far are
    /// paid for at the rate (a virtual clock; None before the first).
    buckets: [Mutex<Option<Instant>>; 2],
    used: Mutex<Used>,
    /// What cuts each open connection, by its `#id` (None until its relay starts).
    conns: Mutex<HashMap<u64, Option<Cut>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl User {
    fn new(name: &str, limits: Limits) -> User {
        User {
            name: name.into(),
            limits: Mutex::new(limits),
            removed: AtomicBool::new(false),
            open: AtomicU64::new(0),
            opened: Counter::new(),
            refused: Counter::new(),
            up: Counter::new(),
            down: Counter::new(),
            buckets: [Mutex::new(None), Mutex::new(None)],
            used: Mutex::new(Used::new()),
            conns: Mutex::new(HashMap::new()),
        }
    }

    /// Opens connection `id` for this user, or says why not (its
    /// `max_conns` open already, its quota used up, removed); a refusal is counted.
    pub fn open(self: &Arc<Self>, id: u64) -> Result<Session, String> {
        let refuse = |why: String| {
            self.refused.inc();
            Err(why)
        };
        let name = Escaped(&self.name);
        if self.removed.load(Ordering::SeqCst) {
            return refuse(format!("user {name} was removed"));
        }
        let limits = *lock(&self.limits);
        if let Some(q) = limits.quota {
            if self.quota_left(q) == 0 {
                return refuse(format!("user {name} has used its quota of {} bytes", q.bytes));
            }
        }
        let max = limits.max_conns.unwrap_or(u64::MAX);
        let taken =
            self.open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1));
        if taken.is_err() {
            return refuse(format!("user {name} has {max} connections open, its max_conns"));
        }
        self.opened.inc();
        lock(&self.conns).insert(id, None);
        Ok(Session { user: Arc::clone(self), id })
    }

    /// The bytes left of quota `q` in this period (a new period starts the count again).
    fn quota_left(&self, q: Quota) -> u64 {
        let mut used = lock(&self.used);
        if q.period.is_some_and(|p| used.since.elapsed() >= p) {
            *used = Used::new();
        }
        q.bytes.saturating_sub(used.bytes)
    }

    /// The relay that carries connection `id` has started: `cut` ends it.
    /// Nothing is kept if the connection has closed already.
    pub fn relaying(&self, id: u64, cut: Cut) {
        if let Some(slot) = lock(&self.conns).get_mut(&id) {
            *slot = Some(cut);
        }
    }

    /// Cuts every open connection of the user, with the end `stream: denied: WHY`.
    pub fn cut_all(&self, why: &str) {
        let cuts: Vec<Cut> = lock(&self.conns).values().flatten().cloned().collect();
        for cut in cuts {
            cut.cut(why.to_owned());
        }
    }
}

impl Meter for User {
    fn pass(&self, dir: Dir, n: usize) -> Result<Duration, String> {
        let limits = *lock(&self.limits);
        let n = n as u64;
        if let Some(q) = limits.quota {
            // Checked and charged under one lock: concurrent writers cannot
            // all pass the same check.
            let mut used = lock(&self.used);
            if q.period.is_some_and(|p| used.since.elapsed() >= p) {
                *used = Used::new();
            }
            if n > q.bytes.saturating_sub(used.bytes) {
                used.bytes = q.bytes;
                drop(used);
                let why = format!("user {} reached its quota of {} bytes", Escaped(&self.name), q.bytes);
                self.cut_all(&why);
                return Err(why);
            }
            used.bytes += n;
        }
        let Some(rate) = limits.rate else { return Ok(Duration::ZERO) };
        let slot = match dir {
            Dir::Up => 0,
            Dir::Down => 1,
        };
        let now = Instant::now();
        let mut paid = lock(&self.buckets[slot]);
        let from = paid.map_or(now, |t| t.max(now));
        let due = from + Duration::from_secs_f64(n as f64 / rate as f64);
        *paid = Some(due);
        Ok(due.saturating_duration_since(now + BURST))
    }
}

/// A connection's place among its user's: given back when dropped.
pub struct Session {
    user: Arc<User>,
    id: u64,
}

impl Session {
    /// Its user.
    pub fn user(&self) -> &Arc<User> {
        &self.user
    }

    /// Counts what the connection moved, as its close line gives it.
    pub fn closed(&self, up: u64, down: u64) {
        self.user.up.add(up);
        self.user.down.add(down);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        lock(&self.user.conns).remove(&self.id);
        self.user.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A per-user family: its name, type and help, and each user's value.
type Family = (&'static str, Kind, &'static str, fn(&User) -> u64);

/// Every user the process has known, by name.
pub struct Roster {
    users: Mutex<HashMap<String, Arc<User>>>,
}

/// What a users file put in force.
pub struct Loaded {
    /// Each user's password hash and the user.
    pub users: Vec<(TrojanHash, Arc<User>)>,
    /// The names the file no longer holds.
    pub removed: Vec<Arc<str>>,
}

impl Roster {
    /// No users yet.
    pub fn new() -> Arc<Roster> {
        Arc::new(Roster { users: Mutex::new(HashMap::new()) })
    }

    /// Puts `accounts` in force: a known name keeps its counts and open
    /// connections and takes the new limits; a name no longer there is
    /// marked removed (and returned, to cut if asked).
    pub fn load(&self, accounts: &[Account]) -> Loaded {
        let mut all = lock(&self.users);
        let mut users = Vec::with_capacity(accounts.len());
        for a in accounts {
            let limits = Limits { max_conns: a.max_conns, rate: a.rate, quota: a.quota };
            let user = all.entry(a.name.clone()).or_insert_with(|| Arc::new(User::new(&a.name, limits)));
            *lock(&user.limits) = limits;
            user.removed.store(false, Ordering::SeqCst);
            users.push((a.hash, Arc::clone(user)));
        }
        let mut removed = Vec::new();
        for (name, user) in all.iter() {
            if !accounts.iter().any(|a| &a.name == name) && !user.removed.swap(true, Ordering::SeqCst) {
                removed.push(Arc::clone(&user.name));
            }
        }
        Loaded { users, removed }
    }

    /// What each user has used of its quota, for `--quota-state`: one
    /// `NAME BYTES SINCE` a line, SINCE the start of its period in seconds
    /// since the Unix epoch.
    pub fn quota_state(&self) -> String {
        let all = lock(&self.users);
        let mut names: Vec<&String> = all.keys().collect();
        names.sort();
        let mut out = String::new();
        for name in names {
            let used = lock(&all[name].used);
            let since = used.since_wall.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            out.push_str(&format!("{name} {} {since}\n", used.bytes));
        }
        out
    }

    /// Takes what [`quota_state`](Roster::quota_state) wrote, for the users
    /// the process knows (others are skipped). A line it cannot read is an
    /// error, by its number.
    pub fn restore_quota(&self, text: &str) -> Result<(), String> {
        let all = lock(&self.users);
        for (i, line) in text.lines().enumerate() {
            let bad = || format!("line {}: wants NAME BYTES SINCE", i + 1);
            let fields: Vec<&str> = line.split(' ').collect();
            let [name, bytes, since] = fields[..] else { return Err(bad()) };
            let (Ok(bytes), Ok(since)) = (bytes.parse::<u64>(), since.parse::<u64>()) else {
                return Err(bad());
            };
            let Some(user) = all.get(name) else { continue };
            let Some(since_wall) = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(since)) else {
                return Err(bad());
            };
            let ago = SystemTime::now().duration_since(since_wall).unwrap_or_default();
            let since = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
            *lock(&user.used) = Used { since, since_wall, bytes };
        }
        Ok(())
    }

    /// The user named `name`, if the process knows it.
    pub fn get(&self, name: &str) -> Option<Arc<User>> {
        lock(&self.users).get(name).cloned()
    }

    /// Writes the per-user families for the users in force, by name.
    pub fn collect(&self, out: &mut String) {
        let all = lock(&self.users);
        let mut users: Vec<&Arc<User>> = all.values().filter(|u| !u.removed.load(Ordering::SeqCst)).collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        let families: [Family; 3] = [
            (
                "blocking_proxy_user_connections_total",
                Kind::Counter,
                "Connections each named user (--users) opened.",
                |u| u.opened.get(),
            ),
            (
                "blocking_proxy_user_refused_total",
                Kind::Counter,
                "Connections of each named user refused at the header: its max_conns open, or its quota used up.",
                |u| u.refused.get(),
            ),
            (
                "blocking_proxy_user_open_connections",
                Kind::Gauge,
                "Connections each named user has open.",
                |u| u.open.load(Ordering::SeqCst),
            ),
        ];
        for (name, kind, help, value) in families {
            metrics::family(out, name, kind, help);
            for u in &users {
                metrics::sample(out, name, &[("user", &u.name)], value(u));
            }
        }
        let bytes = "blocking_proxy_user_bytes_total";
        metrics::family(
            out,
            bytes,
            Kind::Counter,
            "Bytes each named user's closed connections moved, up (client to target) and down.",
        );
        for u in &users {
            metrics::sample(out, bytes, &[("user", &u.name), ("direction", "up")], u.up.get());
            metrics::sample(out, bytes, &[("user", &u.name), ("direction", "down")], u.down.get());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::accounts::parse;

    #[test]
    fn max_conns_refuses_and_a_closed_connection_gives_its_place_back() {
        let roster = Roster::new();
        let loaded = roster.load(&parse("a:x max_conns=2").unwrap());
        let a = &loaded.users[0].1;
        let one = a.open(1).unwrap();
        let _two = a.open(2).unwrap();
        assert_eq!(a.open(3).err().unwrap(), "user a has 2 connections open, its max_conns");
        drop(one);
        let _three = a.open(4).unwrap();
        assert_eq!((a.opened.get(), a.refused.get()), (3, 1));
    }

    #[test]
    fn a_reload_keeps_counts_marks_removed_users_and_brings_them_back() {
        let roster = Roster::new();
        let first = roster.load(&parse("a:x\nb:y").unwrap());
        let a = Arc::clone(&first.users[0].1);
        let session = a.open(1).unwrap();
        session.closed(10, 20);
        let second = roster.load(&parse("a:z max_conns=1").unwrap());
        assert!(Arc::ptr_eq(&second.users[0].1, &a));
        assert_eq!(second.removed.iter().map(|n| &**n).collect::<Vec<_>>(), ["b"]);
        assert_eq!(a.open(2).err().unwrap(), "user a has 1 connections open, its max_conns");
        let b = roster.get("b").unwrap();
        assert_eq!(b.open(3).err().unwrap(), "user b was removed");
        let mut out = String::new();
        roster.collect(&mut out);
        assert!(out.contains("blocking_proxy_user_bytes_total{user=\"a\",direction=\"down\"} 20"), "{out}");
        assert!(!out.contains("user=\"b\""), "{out}");
        roster.load(&parse("a:z\nb:y").unwrap());
        assert!(b.open(4).is_ok());
    }

    #[test]
    fn a_quota_ends_the_write_that_would_pass_it_and_refuses_new_connections() {
        let roster = Roster::new();
        let loaded = roster.load(&parse("q:x quota=100").unwrap());
        let q = &loaded.users[0].1;
        let _s = q.open(1).unwrap();
        assert_eq!(q.pass(Dir::Up, 60), Ok(Duration::ZERO));
        assert_eq!(q.pass(Dir::Down, 40), Ok(Duration::ZERO));
        assert_eq!(q.pass(Dir::Up, 1), Err("user q reached its quota of 100 bytes".to_owned()));
        assert_eq!(q.open(2).err().unwrap(), "user q has used its quota of 100 bytes");
    }

    #[test]
    fn the_quota_state_is_written_and_read_back() {
        let roster = Roster::new();
        let loaded = roster.load(&parse("q:x quota=100\nr:y").unwrap());
        assert_eq!(loaded.users[0].1.pass(Dir::Up, 70), Ok(Duration::ZERO));
        let state = roster.quota_state();
        assert!(state.starts_with("q 70 ") && state.contains("\nr 0 "), "{state}");
        let again = Roster::new();
        let reloaded = again.load(&parse("q:x quota=100").unwrap());
        again.restore_quota(&state).unwrap();
        assert_eq!(
            reloaded.users[0].1.pass(Dir::Up, 31),
            Err("user q reached its quota of 100 bytes".to_owned())
        );
        assert_eq!(again.restore_quota("q 1"), Err("line 1: wants NAME BYTES SINCE".to_owned()));
    }

    #[test]
    fn a_rate_makes_writes_wait_beyond_the_burst() {
        let roster = Roster::new();
        let loaded = roster.load(&parse("r:x rate=1000").unwrap());
        let r = &loaded.users[0].1;
        // 20 bytes at 1000/s is 20 ms, inside the burst: no wait.
        assert_eq!(r.pass(Dir::Up, 20), Ok(Duration::ZERO));
        // 1000 more: a second in all, less the burst, is owed.
        let wait = r.pass(Dir::Up, 1000).unwrap();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_millis(1020 - 50), "{wait:?}");
        // The other direction has a bucket of its own.
        assert_eq!(r.pass(Dir::Down, 20), Ok(Duration::ZERO));
    }
}
