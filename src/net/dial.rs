//! Listening, and connecting to a host by name or address: the name lookup
//! (on a worker thread, under a deadline) and the egress check on every
//! address it gives.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Instant;

use socket2::{Domain, Socket, Type};

use crate::error::Error;
use crate::metrics;
use crate::proto::addr::Target;
use crate::workers::SETUP_THREADS;

use super::egress::Policy;

/// Pending connections the kernel may queue before the accept loop takes them.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds a listening socket; the error names the address.
pub fn listen(addr: &str) -> Result<TcpListener, Error> {
    let fail = |e: &dyn fmt::Display| Error::Config(format!("cannot listen on {addr}: {e}"));
    let sa = addr.to_socket_addrs().map_err(|e| fail(&e))?.next().ok_or_else(|| fail(&"no such address"))?;
    let sock = Socket::new(Domain::for_address(sa), Type::STREAM, None).map_err(|e| fail(&e))?;
    sock.set_reuse_address(true).map_err(|e| fail(&e))?;
    sock.bind(&sa.into()).map_err(|e| fail(&e))?;
    sock.listen(LISTEN_BACKLOG).map_err(|e| fail(&e))?;
    Ok(sock.into())
}

/// Connects to `target`, trying each address it resolves to until one
/// answers; resolution and all attempts together end at `until`. With a
/// `policy`, only the addresses it permits are tried, and none is a
/// [`Error::Denied`]. A name lookup that outlives `until` keeps a clone of
/// `hold` (the connection's place under the cap) until it returns.
pub fn connect<H: Clone + Send + 'static>(
    target: &Target,
    until: Instant,
    policy: Option<&Policy>,
    hold: &H,
) -> Result<TcpStream, Error> {
    let mut addrs: Vec<SocketAddr> = match target {
        Target::Ip(a) => vec![*a],
        Target::Domain(name, port) => resolve(name, *port, until, hold)?,
    };
    if let Some(policy) = policy {
        let resolved = addrs.len();
        addrs.retain(|a| policy.permits(a.ip()));
        if addrs.is_empty() && resolved > 0 {
            metrics::EGRESS_DENIALS.inc();
            return Err(Error::Denied(format!("{target} is not a public address")));
        }
    }
    let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
    for (i, addr) in addrs.iter().enumerate() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
            break;
        }
        // Each address gets its share of what is left, so one that never
        // answers (an AAAA without a route, say) does not starve the rest.
        let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
        match TcpStream::connect_timeout(addr, share) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(Error::Io(last))
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
