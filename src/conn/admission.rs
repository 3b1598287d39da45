//! Admission control: how many connections a process serves at once, how
//! many one source may keep pending, and the place each connection holds
//! until everything working for it is done.
//!
//! Descriptors are counted too, by what each kind of connection holds: a
//! connection takes [`Fds::per_connection`] as it is admitted (its client's
//! socket and the onward one), and one that opens more (a local's UDP
//! association: its UDP socket too) takes them with [`Place::hold`]. So the
//! process is refused cleanly at its budget instead of running into EMFILE,
//! whichever kinds of connection fill it.
//!
//! A connection is usually counted against its source as it is admitted.
//! Behind a load balancer every connection comes from the balancer, so it
//! is admitted without a source ([`Gate::enter_unsourced`]) and counted
//! against the real client once the PROXY protocol header has named it
//! ([`Place::pending_from`]).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::metrics::Refusal;

/// Admission control: at most `cap` connections at once; once half the
/// places are taken, at most `per_source` of them from one source still
/// pending (not yet past their header); and a way to wait until none is left.
///
/// The per-source limit waits for pressure so that a busy client (one local
/// opening a burst of connections) is not turned away from a server with
/// room to spare, while no source can take the places that are left.
pub struct Gate {
    state: Mutex<Admitted>,
    changed: Condvar,
    cap: usize,
    per_source: Option<usize>,
    fds: Option<Fds>,
}

/// The descriptors a [`Gate`]'s connections may hold between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fds {
    /// All of them: the descriptor limit, less what the process keeps for itself.
    pub budget: usize,
    /// What every connection holds once admitted.
    pub per_connection: usize,
}

/// What a [`Gate`] counts.
struct Admitted {
    active: usize,
    /// Descriptors held by the connections (with an [`Fds`] budget).
    fds: usize,
    /// Pending connections per source (see [`Source`]).
    pending: HashMap<Source, usize>,
}

/// Where a connection comes from, for the per-source limit: an IPv4
/// address, or the /64 network of an IPv6 address (one host usually has a
/// whole /64 to choose from).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address (IPv4-mapped IPv6 included).
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl Source {
    /// The source an address belongs to.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(a) => Source::V4(a.octets()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let o = a.octets();
                    Source::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Source::V4(o) => write!(f, "{}", std::net::Ipv4Addr::from(o)),
            Source::V6(o) => {
                let mut full = [0u8; 16];
                full[..8].copy_from_slice(&o);
                write!(f, "{}/64", std::net::Ipv6Addr::from(full))
            }
        }
    }
}

/// Why the [`Gate`] turned a connection away.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The cap was reached.
    Cap(usize),
    /// Its source has this many pending connections already.
    PerSource(Source, usize),
    /// The connections hold every descriptor of the budget (this many).
    Fds(usize),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Cap(cap) => write!(f, "at capacity ({cap} connections)"),
            Refused::PerSource(src, n) => write!(f, "{n} connections from {src} already pending"),
            Refused::Fds(budget) => write!(f, "out of descriptors ({budget} for connections)"),
        }
    }
}

impl From<&Refused> for Refusal {
    fn from(why: &Refused) -> Refusal {
        match why {
            Refused::Cap(_) | Refused::Fds(_) => Refusal::Cap,
            Refused::PerSource(..) => Refusal::PerSource,
        }
    }
}

/// One admitted connection. It is shared ([`Place`]) by whatever still
/// works for the connection (a name lookup that outlives its deadline, say),
/// and its place under the cap is given back when the last share is dropped.
pub struct Ticket {
    gate: Arc<Gate>,
    /// The source it still counts against, until it is past its header.
    pending: Mutex<Option<Source>>,
    /// Descriptors it holds beyond [`Fds::per_connection`] ([`Place::hold`]).
    extra: Mutex<usize>,
}

/// A share of a connection's [`Ticket`].
#[derive(Clone)]
pub struct Place(Arc<Ticket>);

impl Place {
    /// Counts the connection as pending from `peer`, found out after it was
    /// admitted (from a PROXY protocol header), under the same limit as at
    /// admission: refused when half the places are taken (this one aside)
    /// and `peer`'s source has its limit pending already. A place that
    /// counts against a source already, or a gate without a per-source
    /// limit, is left as it is.
    pub fn pending_from(&self, peer: IpAddr) -> Result<(), Refused> {
        let gate = &self.0.gate;
        let Some(limit) = gate.per_source else { return Ok(()) };
        let mut pending = self.0.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.is_some() {
            return Ok(());
        }
        let mut n = gate.count();
        let pressed = n.active.saturating_sub(1) >= gate.cap / 2;
        let source = Source::of(peer);
        let count = n.pending.get(&source).copied().unwrap_or(0);
        if pressed && count >= limit {
            return Err(Refused::PerSource(source, count));
        }
        n.pending.insert(source, count + 1);
        *pending = Some(source);
        Ok(())
    }

    /// Counts `n` more descriptors for this connection (a socket it is about
    /// to open), unless that would pass the gate's budget. They are given
    /// back with the place.
    pub fn hold(&self, n: usize) -> Result<(), Refused> {
        let gate = &self.0.gate;
        let Some(fds) = gate.fds else { return Ok(()) };
        let mut count = gate.count();
        if count.fds + n > fds.budget {
            return Err(Refused::Fds(fds.budget));
        }
        count.fds += n;
        *self.0.extra.lock().unwrap_or_else(PoisonError::into_inner) += n;
        Ok(())
    }

    /// The connection is past its header: it no longer counts as pending
    /// against its source (its place under the cap stays).
    pub fn authenticated(&self) {
        let source = self.0.pending.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(source) = source {
            self.0.gate.leave_pending(source);
        }
    }
}

impl Gate {
    /// A gate for `cap` connections, and with `per_source`, at most that
    /// many pending from one source.
    pub fn new(cap: usize, per_source: Option<usize>) -> Arc<Gate> {
        Gate::with_fds(cap, per_source, None)
    }

    /// A gate that counts descriptors too, against `fds`.
    pub fn with_fds(cap: usize, per_source: Option<usize>, fds: Option<Fds>) -> Arc<Gate> {
        let state = Mutex::new(Admitted { active: 0, fds: 0, pending: HashMap::new() });
        Arc::new(Gate { state, changed: Condvar::new(), cap, per_source, fds })
    }

    fn count(&self) -> std::sync::MutexGuard<'_, Admitted> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits one more connection from `peer`, unless a limit is reached.
    pub fn enter(self: &Arc<Self>, peer: IpAddr) -> Result<Place, Refused> {
        self.admit(Some(peer))
    }

    /// Admits one more connection under the cap alone: its source is not
    /// known yet (see [`Place::pending_from`]).
    pub fn enter_unsourced(self: &Arc<Self>) -> Result<Place, Refused> {
        self.admit(None)
    }

    fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Place, Refused> {
        let mut n = self.count();
        if n.active >= self.cap {
            return Err(Refused::Cap(self.cap));
        }
        let fds = self.fds.map_or(0, |f| f.per_connection);
        if let Some(f) = self.fds {
            if n.fds + fds > f.budget {
                return Err(Refused::Fds(f.budget));
            }
        }
        let pressed = n.active >= self.cap / 2;
        let pending = match (self.per_source, peer) {
            (Some(limit), Some(peer)) => {
                let source = Source::of(peer);
                let count = n.pending.entry(source).or_insert(0);
                if pressed && *count >= limit {
                    return Err(Refused::PerSource(source, *count));
                }
                *count += 1;
                Some(source)
            }
            _ => None,
        };
        n.active += 1;
        n.fds += fds;
        let ticket = Ticket { gate: Arc::clone(self), pending: Mutex::new(pending), extra: Mutex::new(0) };
        Ok(Place(Arc::new(ticket)))
    }

    fn leave_pending(&self, source: Source) {
        let mut n = self.count();
        if let Some(count) = n.pending.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                n.pending.remove(&source);
            }
        }
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.count().active
    }

    /// Waits until no connection is open or `timeout` has passed; returns how many are left.
    pub fn wait_idle(&self, timeout: Duration) -> usize {
        let n = self.count();
        let (n, _) = self
            .changed
            .wait_timeout_while(n, timeout, |n| n.active > 0)
            .unwrap_or_else(PoisonError::into_inner);
        n.active
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let source = self.pending.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(source) = source {
            self.gate.leave_pending(source);
        }
        let held = self.gate.fds.map_or(0, |f| f.per_connection)
            + *self.extra.get_mut().unwrap_or_else(PoisonError::into_inner);
        let mut n = self.gate.count();
        n.active -= 1;
        n.fds -= held;
        drop(n);
        self.gate.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_may_hold_only_so_many_pending_places_once_half_are_taken() {
        let gate = Gate::new(10, Some(2));
        // Half the places first, from elsewhere: from then on the per-source limit holds.
        let _others: Vec<Place> =
            (1..=5).map(|i| gate.enter(IpAddr::from([198, 51, 100, i])).unwrap()).collect();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        let first = gate.enter(a).unwrap();
        let _second = gate.enter(a).unwrap();
        assert_eq!(gate.enter(a).err(), Some(Refused::PerSource(Source::of(a), 2)));
        // A place past its header no longer counts as pending: its source may open another.
        first.authenticated();
        let third = gate.enter(a).unwrap();
        assert_eq!(gate.enter(a).err(), Some(Refused::PerSource(Source::of(a), 2)));
        // An IPv6 /64 is one source; an IPv4-mapped address is its IPv4 address.
        let _v6 = (gate.enter(b).unwrap(), gate.enter(same_64).unwrap());
        assert!(gate.enter(b).is_err());
        assert!(gate.enter("::ffff:192.0.2.1".parse().unwrap()).is_err());
        assert_eq!(gate.active(), 10);
        drop(third);
        assert_eq!(gate.active(), 9);
        assert!(gate.enter(a).is_ok(), "a dropped place frees its source too");
    }

    #[test]
    fn with_room_to_spare_one_source_may_have_many_pending() {
        let gate = Gate::new(10, Some(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let five: Vec<Place> = (0..5).map(|_| gate.enter(a).unwrap()).collect();
        assert_eq!(gate.enter(a).err(), Some(Refused::PerSource(Source::of(a), 5)));
        assert!(gate.enter("192.0.2.2".parse().unwrap()).is_ok(), "another source still gets in");
        drop(five);
    }

    #[test]
    fn behind_a_balancer_the_client_its_header_names_counts_not_the_balancer() {
        let gate = Gate::new(10, Some(2));
        let balancer: IpAddr = "127.0.0.3".parse().unwrap();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        // Six connections from the balancer, past half the places: none counts against a source yet.
        let six: Vec<Place> = (0..6).map(|_| gate.enter_unsourced().unwrap()).collect();
        assert!(gate.count().pending.is_empty());
        assert!(gate.enter(balancer).is_ok(), "the balancer's own address has nothing pending");
        // Their headers name the clients: two from `a` are pending, a third is refused.
        six[0].pending_from(a).unwrap();
        six[1].pending_from(a).unwrap();
        assert_eq!(six[2].pending_from(a).err(), Some(Refused::PerSource(Source::of(a), 2)));
        six[3].pending_from(b).unwrap();
        // Counting twice changes nothing; past its header `a`'s first frees a slot for another.
        six[0].pending_from(b).unwrap();
        six[4].pending_from(b).unwrap();
        assert_eq!(six[5].pending_from(b).err(), Some(Refused::PerSource(Source::of(b), 2)));
        six[0].authenticated();
        six[5].pending_from(a).unwrap();
        // The cap is still the cap.
        let rest: Vec<Place> = (0..4).map(|_| gate.enter_unsourced().unwrap()).collect();
        assert_eq!(gate.enter_unsourced().err(), Some(Refused::Cap(10)));
        drop((six, rest));
        assert_eq!(gate.active(), 0);
        assert!(gate.count().pending.is_empty(), "every pending count given back");
    }

    #[test]
    fn with_room_to_spare_a_balanced_client_may_have_many_pending() {
        let gate = Gate::new(10, Some(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let four: Vec<Place> = (0..4).map(|_| gate.enter_unsourced().unwrap()).collect();
        for place in &four {
            place.pending_from(a).unwrap();
        }
        let fifth = gate.enter_unsourced().unwrap();
        // Five places taken, this one aside four: not yet half of ten.
        fifth.pending_from(a).unwrap();
        let sixth = gate.enter_unsourced().unwrap();
        assert_eq!(sixth.pending_from(a).err(), Some(Refused::PerSource(Source::of(a), 5)));
        assert!(sixth.pending_from("192.0.2.2".parse().unwrap()).is_ok(), "another client still gets in");
    }

    #[test]
    fn each_connection_holds_its_descriptors_and_more_only_within_the_budget() {
        // Eleven descriptors, two per connection: five TCP connections, or
        // three UDP associations of three (2 + 1 held) and a connection.
        let fds = Fds { budget: 11, per_connection: 2 };
        let gate = Gate::with_fds(100, None, Some(fds));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut assocs: Vec<Place> = (0..3).map(|_| gate.enter(ip).unwrap()).collect();
        for a in &assocs {
            a.hold(1).unwrap();
        }
        let tcp = gate.enter(ip).unwrap();
        assert_eq!(gate.enter(ip).err(), Some(Refused::Fds(11)), "all 11 held");
        assert_eq!(tcp.hold(1).err(), Some(Refused::Fds(11)));
        assert_eq!(Refused::Fds(11).to_string(), "out of descriptors (11 for connections)");
        assocs.pop();
        tcp.hold(1).unwrap();
        let more = gate.enter(ip).unwrap();
        assert_eq!(gate.enter(ip).err(), Some(Refused::Fds(11)), "3 + 3 + 3 + 2");
        drop((tcp, more, assocs));
        assert_eq!(gate.count().fds, 0, "everything given back");
        let five: Vec<Place> = (0..5).map(|_| gate.enter(ip).unwrap()).collect();
        assert_eq!(gate.enter(ip).err(), Some(Refused::Fds(11)));
        drop(five);
    }

    #[test]
    fn a_shared_place_is_given_back_when_the_last_share_goes() {
        let gate = Gate::new(1, None);
        let place = gate.enter("127.0.0.1".parse().unwrap()).unwrap();
        let lookup = place.clone();
        drop(place);
        assert_eq!(gate.enter("127.0.0.1".parse().unwrap()).err(), Some(Refused::Cap(1)));
        drop(lookup);
        assert!(gate.enter("127.0.0.1".parse().unwrap()).is_ok());
    }
}
