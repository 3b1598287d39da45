//! Listening, and connecting to a host by name or address: the name lookup
//! (on a worker thread, under a deadline), the egress check on every
//! address it gives, and Happy Eyeballs (RFC 8305) among those left:
//! IPv6 and IPv4 taken in turn, each next connect started 250 ms after the
//! last or at once when one fails (at most two in flight), all of them waited on by the calling
//! thread with one `poll(2)`, and the first to connect kept.
//!
//! `--mark` is process-wide: [`set_mark`], once at start, has every socket
//! made here afterwards ([`socket`]: each connect, the local's direct DNS
//! queries and its direct UDP) carry that firewall mark (`SO_MARK`), so
//! that rules that redirect a host's own traffic to the local can leave
//! the local's own connections alone.
//!
//! A local with a transparent listener also remembers, for a while, each
//! connection it has just started ([`guard_loops`], [`is_own`]): a
//! connection that a firewall sent back to it is then told apart from an
//! application's, and refused, where a missing mark (or a rule that
//! ignores it) would otherwise loop it back through the local until the
//! cap.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::error::Error;
use crate::metrics;
use crate::proto::addr::Target;
use crate::workers::SETUP_THREADS;

use super::egress::{interface_addresses, Policy, BLOCKED_BY_ACL};
use super::poll::wait_writable;

/// Pending connections the kernel may queue before the accept loop takes them.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds a listening socket; the error names the address. Its accepted
/// connections have `TCP_NODELAY` already: Linux copies it from the listener
/// to each, which spares a system call per connection.
pub fn listen(addr: &str) -> Result<TcpListener, Error> {
    listen_as(addr, false)
}

/// Binds a listening socket for a firewall's `tproxy` rule: transparent
/// (`IP_TRANSPARENT`, `IPV6_TRANSPARENT`), so that it takes connections to
/// addresses not its own, each with its original destination as its own
/// address. The error names the address, and the capability it needs.
pub fn listen_transparent(addr: &str) -> Result<TcpListener, Error> {
    listen_as(addr, true)
}

/// [`listen`], transparent or not.
fn listen_as(addr: &str, transparent: bool) -> Result<TcpListener, Error> {
    let fail = |e: &dyn fmt::Display| Error::Config(format!("cannot listen on {addr}: {e}"));
    let sa = addr.to_socket_addrs().map_err(|e| fail(&e))?.next().ok_or_else(|| fail(&"no such address"))?;
    let sock = Socket::new(Domain::for_address(sa), Type::STREAM, None).map_err(|e| fail(&e))?;
    sock.set_reuse_address(true).map_err(|e| fail(&e))?;
    sock.set_tcp_nodelay(true).map_err(|e| fail(&e))?;
    if sa.is_ipv6() && sa.ip().is_unspecified() {
        // `[::]` takes IPv4 too, whatever the host's default (net.ipv6.bindv6only).
        sock.set_only_v6(false).map_err(|e| fail(&e))?;
    }
    if transparent {
        set_transparent(&sock, sa).map_err(|e| fail(&e))?;
    }
    sock.bind(&sa.into()).map_err(|e| fail(&e))?;
    sock.listen(LISTEN_BACKLOG).map_err(|e| fail(&e))?;
    Ok(sock.into())
}

/// A UDP socket bound to `addr`, transparent: the `tproxy` listener's, which
/// receives datagrams to any address (each one's original destination comes
/// with it), or a reply socket bound to an address not the host's own, so
/// that replies leave from the address the client wrote to. Both need
/// CAP_NET_ADMIN; a reply socket shares its address (`SO_REUSEADDR`) and
/// carries the `--mark`.
pub fn udp_transparent(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = socket(Domain::for_address(addr), Type::DGRAM)?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        sock.set_only_v6(false)?;
    }
    set_transparent(&sock, addr)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Makes `sock`, of `addr`'s family, transparent; a failure says what it needs.
fn set_transparent(sock: &Socket, addr: SocketAddr) -> io::Result<()> {
    let set = match addr {
        SocketAddr::V4(_) => sock.set_ip_transparent_v4(true),
        SocketAddr::V6(_) => sock.set_ip_transparent_v6(true),
    };
    set.map_err(|e| {
        io::Error::new(e.kind(), format!("cannot set IP_TRANSPARENT: {e} (it needs CAP_NET_ADMIN)"))
    })
}

/// The firewall mark of every socket [`socket`] makes, once [`set_mark`] has set it.
static MARK: OnceLock<u32> = OnceLock::new();

/// Has every socket made from now on carry the firewall mark `mark`
/// (`SO_MARK`, which needs CAP_NET_ADMIN), once a throwaway socket has
/// taken it: a failure is one line that says so. The mark is set once;
/// another mark afterwards is an error.
pub fn set_mark(mark: u32) -> Result<(), Error> {
    let probe = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(Error::Io)?;
    probe.set_mark(mark).map_err(|e| {
        Error::Config(format!("--mark {mark}: cannot set SO_MARK: {e} (it needs CAP_NET_ADMIN)"))
    })?;
    if *MARK.get_or_init(|| mark) != mark {
        return Err(Error::Config(format!("--mark {mark}: this process already marks with another mark")));
    }
    Ok(())
}

/// A new socket of `domain` and `ty`, with the mark of [`set_mark`] if one is set.
pub fn socket(domain: Domain, ty: Type) -> io::Result<Socket> {
    let sock = Socket::new(domain, ty, None)?;
    if let Some(&mark) = MARK.get() {
        sock.set_mark(mark)?;
    }
    Ok(sock)
}

/// Whether connects are remembered for [`is_own`]: [`guard_loops`] turns it on.
static GUARD: AtomicBool = AtomicBool::new(false);

/// A connect (or a connected UDP socket) started here in the last [`OWN_MEMORY`].
struct Started {
    id: u64,
    /// Where it left from, once its connect has started; `None` just before.
    from: Option<SocketAddr>,
    to: SocketAddr,
    at: Instant,
}

/// What [`is_own`] knows, oldest first.
static OWN: Mutex<VecDeque<Started>> = Mutex::new(VecDeque::new());

/// The next [`Started::id`].
static NEXT_STARTED: AtomicU64 = AtomicU64::new(0);

/// How long a started connect is remembered: a firewall that sends it back
/// to the local does so with its first packet, and the local accepts it at
/// once, so a few seconds cover any load.
pub const OWN_MEMORY: Duration = Duration::from_secs(10);

/// The most connects remembered at once; past it the oldest are forgotten.
const OWN_MAX: usize = 4096;

/// Has every connect from now on remembered for [`OWN_MEMORY`], for
/// [`is_own`]: for a local with a transparent listener. A connect is noted
/// just before it starts (by its destination), then by its source once
/// the kernel has chosen it: a `getsockname(2)` more per connect.
pub fn guard_loops() {
    GUARD.store(true, Ordering::Relaxed);
}

/// Whether a connection from `peer` to `dst` is one this process started
/// (in the last [`OWN_MEMORY`]), which a firewall rule has sent back here:
/// one of its connects left from `peer` for `dst`, or, in the moment
/// between a connect's start and its noting, is leaving for `dst` and
/// `peer` is an address of this host. Always false before [`guard_loops`].
pub fn is_own(peer: SocketAddr, dst: SocketAddr) -> bool {
    if !GUARD.load(Ordering::Relaxed) {
        return false;
    }
    let (peer, dst) = (unmapped(peer), unmapped(dst));
    let (exact, starting) = {
        let own = OWN.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = own.iter().filter(|s| s.to == dst);
        mine.fold((false, false), |(e, p), s| (e || s.from == Some(peer), p || s.from.is_none()))
    };
    exact || (starting && is_local_address(peer.ip()))
}

/// Whether `ip` is an address of this host: loopback, or one of its interfaces'.
pub fn is_local_address(ip: IpAddr) -> bool {
    ip.is_loopback() || interface_addresses().is_ok_and(|addrs| addrs.contains(&ip))
}

/// Notes that a socket is about to connect to `to`; [`started`] notes
/// where it left from. Returns its id.
fn starting(to: SocketAddr) -> u64 {
    let id = NEXT_STARTED.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    let mut own = OWN.lock().unwrap_or_else(PoisonError::into_inner);
    while own.front().is_some_and(|s| now.duration_since(s.at) > OWN_MEMORY) || own.len() >= OWN_MAX {
        own.pop_front();
    }
    own.push_back(Started { id, from: None, to: unmapped(to), at: now });
    id
}

/// Notes where the connect `id` left from: `sock`'s own address.
fn started(id: u64, sock: &Socket) {
    let from = sock.local_addr().ok().and_then(|a| a.as_socket()).map(unmapped);
    let mut own = OWN.lock().unwrap_or_else(PoisonError::into_inner);
    match own.iter().position(|s| s.id == id) {
        // Without its source it cannot be told from another's: forgotten.
        Some(i) if from.is_none() => {
            own.remove(i);
        }
        Some(i) => own[i].from = from,
        None => {}
    }
}

/// Forgets the connect `id`, which did not start.
fn forget(id: u64) {
    let mut own = OWN.lock().unwrap_or_else(PoisonError::into_inner);
    own.retain(|s| s.id != id);
}

/// Notes, with [`guard_loops`], a UDP socket of the local's own connected
/// from `from` to `to` (a tproxy flow's direct datagrams), for [`is_own`].
pub fn note_own(from: SocketAddr, to: SocketAddr) {
    if GUARD.load(Ordering::Relaxed) {
        let id = starting(to);
        let mut own = OWN.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = own.iter_mut().find(|s| s.id == id) {
            s.from = Some(unmapped(from));
        }
    }
}

/// `addr` with an IPv4-mapped IPv6 address written as IPv4 (what a
/// dual-stack socket says of an IPv4 peer).
pub fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// RFC 8305's Connection Attempt Delay (section 5, its recommended value):
/// how long an attempt has to itself before the next address is tried
/// beside it.
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Connects to `target`, racing the addresses it resolves to as RFC 8305
/// (Happy Eyeballs) says: IPv6 and IPv4 in turn ([`interleave`]), each
/// next attempt started [`CONNECTION_ATTEMPT_DELAY`] after the last one or
/// as soon as an attempt fails, all on this thread; the first to connect
/// wins, in blocking mode with `TCP_NODELAY`, and the others are closed.
/// Resolution and all attempts together end at `until`. With a `policy`,
/// only the addresses it permits are tried, and none is a
/// [`Error::Denied`]. A name lookup that outlives `until` keeps a clone of
/// `hold` (the connection's place under the cap) until it returns.
///
/// When no attempt connects, the error is the first refusal, if any
/// address refused: its host answered, so the name is right and nothing
/// listens on the port, which says more than another address's silence.
/// Otherwise it is the failure that came last: a timeout when attempts were
/// still in flight (or not yet started) at `until`, else the last attempt's
/// error, since later failures come from further away (a missing route
/// fails at once, a router's "unreachable" after a round trip).
pub fn connect<H: Clone + Send + 'static>(
    target: &Target,
    until: Instant,
    policy: Option<&Policy>,
    hold: &H,
) -> Result<TcpStream, Error> {
    if policy.is_some_and(|p| p.refuses_name(target)) {
        metrics::EGRESS_DENIALS.inc();
        return Err(Error::Denied(format!("{target} is {BLOCKED_BY_ACL}")));
    }
    let mut addrs: Vec<SocketAddr> = match target {
        Target::Ip(a) => vec![*a],
        Target::Domain(name, port) => resolve(name, *port, until, hold)?,
    };
    if let Some(why) = policy.and_then(|p| p.keep_permitted(target, &mut addrs)) {
        metrics::EGRESS_DENIALS.inc();
        return Err(Error::Denied(format!("{target} is {why}")));
    }
    if addrs.is_empty() {
        return Err(Error::Io(io::Error::new(io::ErrorKind::NotFound, "name resolved to no address")));
    }
    Ok(race(&interleave(&addrs), until, CONNECTION_ATTEMPT_DELAY)?)
}

/// The order to try `addrs` in (RFC 8305 section 4, with a First Address
/// Family Count of 1): one address of the family the resolver put first,
/// then one of the other, and so on, each family in the resolver's order;
/// when one family runs out, the rest of the other.
pub fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let (first, other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.iter().partition(|a| a.is_ipv6() == first_v6);
    let (mut first, mut other) = (first.into_iter(), other.into_iter());
    let mut order = Vec::with_capacity(addrs.len());
    while order.len() < addrs.len() {
        order.extend(first.next());
        order.extend(other.next());
    }
    order
}

/// The most connects one [`connect`] keeps in flight, so that a name with
/// many silent addresses holds at most this many sockets at once: when the
/// attempt delay passes with this many in flight, the oldest is given up
/// for the next address (every address still gets its turn).
pub const ATTEMPTS_IN_FLIGHT_MAX: usize = 2;

/// Connects to the first of `addrs` (in this order) that answers, before
/// `until`, as [`connect`] says, starting each next attempt `delay` after
/// the last one: each attempt is a non-blocking connect, and one `poll(2)`
/// waits on all those in flight, at most [`ATTEMPTS_IN_FLIGHT_MAX`] of them.
fn race(addrs: &[SocketAddr], until: Instant, delay: Duration) -> io::Result<TcpStream> {
    let mut untried = addrs.iter();
    let mut in_flight: Vec<Socket> = Vec::new();
    let mut failed: Option<io::Error> = None;
    let mut next_at = Instant::now();
    loop {
        let now = Instant::now();
        if now >= until {
            return Err(match failed {
                Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => e,
                _ => io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            });
        }
        if now >= next_at && in_flight.len() >= ATTEMPTS_IN_FLIGHT_MAX && untried.len() > 0 {
            // The oldest attempt has had its turn: it gives way to the next address.
            in_flight.remove(0);
            let gave_up = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
            failed = Some(worse(failed, gave_up));
        }
        if now >= next_at || in_flight.is_empty() {
            match untried.next() {
                Some(addr) => {
                    next_at = match start(addr) {
                        Ok(sock) => {
                            in_flight.push(sock);
                            now + delay
                        }
                        Err(e) => {
                            failed = Some(worse(failed, e));
                            now
                        }
                    }
                }
                None if in_flight.is_empty() => {
                    return Err(failed.unwrap_or_else(|| io::ErrorKind::NotFound.into()));
                }
                None => next_at = until,
            }
            continue;
        }
        let fds: Vec<BorrowedFd<'_>> = in_flight.iter().map(AsFd::as_fd).collect();
        // With no address left to start, only an attempt's end (or `until`) matters.
        let wake = if untried.len() > 0 { next_at.min(until) } else { until };
        let Some(i) = wait_writable(&fds, wake.saturating_duration_since(now))? else {
            continue;
        };
        // In order, so that the oldest is first to give way.
        let sock = in_flight.remove(i);
        // A connect that has ended is writable (or has an error or a hang-up);
        // SO_ERROR says how it ended, as std's connect_timeout reads it, so
        // no getpeername is needed.
        match sock.take_error() {
            Ok(None) => {
                let stream = TcpStream::from(sock);
                stream.set_nonblocking(false)?;
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Some(e)) | Err(e) => {
                failed = Some(worse(failed, e));
                next_at = now;
            }
        }
    }
}

/// Starts a connect to `addr` without waiting for it: a socket made
/// non-blocking by `socket(2)` itself, so it costs no system call more than
/// a blocking connect would (with [`guard_loops`], a `getsockname(2)`
/// more, to note it).
fn start(addr: &SocketAddr) -> io::Result<Socket> {
    let sock = socket(Domain::for_address(*addr), Type::STREAM.nonblocking())?;
    let noted = GUARD.load(Ordering::Relaxed).then(|| starting(*addr));
    let connected = match sock.connect(&(*addr).into()) {
        // Connected at once (it can happen on loopback): the poll says so.
        Ok(()) => Ok(sock),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(sock),
        Err(e) => Err(e),
    };
    if let Some(id) = noted {
        match &connected {
            Ok(sock) => started(id, sock),
            Err(_) => forget(id),
        }
    }
    connected
}

/// The error to keep once `e` has come after `failed`: the first refusal, or else the latest.
fn worse(failed: Option<io::Error>, e: io::Error) -> io::Error {
    match failed {
        Some(f) if f.kind() == io::ErrorKind::ConnectionRefused => f,
        _ => e,
    }
}

/// Resolves `name` with the system resolver, giving up at `until`. The
/// lookup runs on a worker thread, since getaddrinfo cannot be interrupted;
/// a late answer is dropped. That thread holds a clone of `hold` (a
/// connection's place under the cap) until getaddrinfo
/// returns, so lookups that never end (a resolver that does not answer)
/// keep their connections' places and cannot pile up past the cap.
pub fn resolve<H: Clone + Send + 'static>(
    name: &str,
    port: u16,
    until: Instant,
    hold: &H,
) -> Result<Vec<SocketAddr>, Error> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = name.to_owned();
    let held = hold.clone();
    let in_flight = metrics::LOOKUPS_IN_FLIGHT.hold();
    SETUP_THREADS.spawn(move || {
        let found = (owned.as_str(), port).to_socket_addrs().map(Iterator::collect::<Vec<_>>);
        drop(in_flight);
        let _ = tx.send(found);
        drop(held);
    })?;
    match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        Ok(found) => Ok(found?),
        Err(_) => Err(Error::Io(io::Error::new(io::ErrorKind::TimedOut, "name resolution timed out"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_connect_started_here_is_known_by_both_its_ends() {
        guard_loops();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let out = connect(&Target::Ip(to), Instant::now() + crate::net::testing::TIMEOUT, None, &()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer, out.local_addr().unwrap());
        assert!(is_own(peer, to), "the local's own connection, sent back");
        let mapped = SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), peer.port());
        assert!(is_own(mapped, to), "as a dual-stack listener sees it");
        let elsewhere = SocketAddr::from(([198, 51, 100, 1], peer.port()));
        assert!(!is_own(elsewhere, to), "the same port, from another host");
        assert!(
            !is_own(peer, SocketAddr::from(([127, 0, 0, 1], to.port().wrapping_add(1)))),
            "another destination"
        );
        let (udp_from, udp_to) =
            (SocketAddr::from(([127, 0, 0, 1], 40_000)), SocketAddr::from(([127, 0, 0, 9], 53)));
        assert!(!is_own(udp_from, udp_to));
        note_own(udp_from, udp_to);
        assert!(is_own(udp_from, udp_to), "a direct UDP flow's socket");
        let other = TcpStream::connect_timeout(&to, crate::net::testing::TIMEOUT).unwrap();
        assert!(!is_own(other.local_addr().unwrap(), to), "not started here");
        drop(accepted);
    }
    use crate::net::testing::TIMEOUT;

    #[test]
    fn accepted_connections_have_nodelay_from_the_listener() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let listener = listen(addr).unwrap();
            let _client = TcpStream::connect_timeout(&listener.local_addr().unwrap(), TIMEOUT).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            assert!(accepted.nodelay().unwrap(), "{addr}");
        }
    }
    use socket2::SockRef;

    /// Addresses written short: `6.2` is `[2001:db8::2]:443`, `4.2` is `192.0.2.2:443`.
    fn addrs(short: &str) -> Vec<SocketAddr> {
        let long = |a: &str| match a.split_once('.') {
            Some(("6", n)) => format!("[2001:db8::{n}]:443"),
            Some(("4", n)) => format!("192.0.2.{n}:443"),
            _ => panic!("{a}"),
        };
        short.split_whitespace().map(|a| long(a).parse().unwrap()).collect()
    }

    /// A port on `ip` that nothing listens on: bound a moment ago, and closed.
    fn closed(ip: &str) -> SocketAddr {
        TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
    }

    fn io_kind(e: Error) -> io::ErrorKind {
        match e {
            Error::Io(e) => e.kind(),
            other => panic!("not an I/O error: {other}"),
        }
    }

    #[test]
    fn the_families_take_turns_starting_with_the_resolvers_first() {
        let table = [
            ("nothing", "", ""),
            ("one address", "6.1", "6.1"),
            ("IPv6 first", "6.1 6.2 4.1 4.2", "6.1 4.1 6.2 4.2"),
            ("IPv4 first", "4.1 4.2 6.1 6.2", "4.1 6.1 4.2 6.2"),
            ("IPv4 only, in the resolver's order", "4.3 4.1 4.2", "4.3 4.1 4.2"),
            ("IPv6 only, in the resolver's order", "6.2 6.1", "6.2 6.1"),
            ("three IPv6, one IPv4", "6.1 6.2 6.3 4.1", "6.1 4.1 6.2 6.3"),
            ("one IPv6, three IPv4", "6.1 4.1 4.2 4.3", "6.1 4.1 4.2 4.3"),
            ("IPv4 first, already mixed, more IPv4", "4.1 6.1 4.2 4.3 6.2", "4.1 6.1 4.2 6.2 4.3"),
        ];
        for (case, given, want) in table {
            assert_eq!(interleave(&addrs(given)), addrs(want), "{case}: {given}");
        }
    }

    #[test]
    fn a_refusal_starts_the_next_attempt_at_once() {
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let order = [closed("::1"), v4.local_addr().unwrap()];
        // With an attempt delay of TIMEOUT, only the refusal can start the
        // second attempt before then.
        let start = Instant::now();
        let s = race(&order, start + 2 * TIMEOUT, TIMEOUT).unwrap();
        assert_eq!(s.peer_addr().unwrap(), order[1], "connected to the IPv4 listener");
        assert!(start.elapsed() < TIMEOUT, "moved on only after {:?}", start.elapsed());
        // Handed back as a blocking connect would be.
        assert!(!SockRef::from(&s).nonblocking().unwrap(), "blocking mode");
        assert!(s.nodelay().unwrap(), "TCP_NODELAY");
    }

    #[test]
    fn when_every_address_refuses_the_error_is_the_refusal() {
        let order = [closed("::1"), closed("127.0.0.1")];
        let e = race(&order, Instant::now() + TIMEOUT, CONNECTION_ATTEMPT_DELAY).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        let e = connect(&Target::Ip(closed("127.0.0.1")), Instant::now() + TIMEOUT, None, &()).unwrap_err();
        assert_eq!(io_kind(e), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn a_deadline_already_passed_is_a_timeout_and_no_attempt() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = connect(&Target::Ip(l.local_addr().unwrap()), Instant::now(), None, &()).unwrap_err();
        assert_eq!(io_kind(e), io::ErrorKind::TimedOut);
        l.set_nonblocking(true).unwrap();
        assert_eq!(l.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock, "nothing connected");
    }

    #[test]
    fn an_address_the_policy_refuses_is_denied_before_any_attempt() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let public_only = Policy::with_host_addrs(false, Vec::new(), Vec::new());
        let until = Instant::now() + TIMEOUT;
        let e = connect(&Target::Ip(l.local_addr().unwrap()), until, Some(&public_only), &()).unwrap_err();
        assert!(matches!(e, Error::Denied(_)), "{e}");
    }
}
