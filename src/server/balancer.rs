//! A load balancer in front of the server (`--proxy-protocol`): every
//! connection begins with a PROXY protocol header, read before TLS with
//! exact reads under the handshake deadline, so that no TLS byte is taken
//! with it. A connection from outside `--proxy-from`, or without a valid
//! header, is closed. The client the header names is the client from then
//! on: in the close line, and in the per-source pending limit, which the
//! accept loop leaves to this step (every connection comes from the
//! balancer's address) and which may refuse the connection here. A version
//! 2 `LOCAL` header (a health check) or a version 1 `UNKNOWN` keeps the
//! connection's own address; a `LOCAL` connection closed before its first
//! TLS byte ends as `health check`.
//!
//! Only the balancer is trusted: `--proxy-protocol` requires `--proxy-from`
//! (`any` is every address, and warns), and a header from elsewhere closes
//! the connection. A client address no client can have (unspecified
//! `0.0.0.0/8` and `::`, the broadcast `255.255.255.255`, multicast, or a
//! version 2 header of family `AF_UNIX` or `AF_UNSPEC`) is not taken
//! either: the connection counts as from its own peer, the balancer, in
//! the close line and the per-source limit, and the reason is logged at
//! debug.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Instant;

use crate::conn::end::{End, Step};
use crate::conn::Report;
use crate::net::deadline::Deadline;
use crate::net::egress::Cidr;
use crate::proto::proxy_protocol::{self, Header};

/// Reads the PROXY protocol header of a connection from a load balancer
/// (one of `from`; no one when it is empty) and makes the client it names
/// the connection's client, pending against its source. Returns the
/// address that client connected to, or `None` when the connection's own
/// addresses stand (a `LOCAL` or `UNKNOWN` header, no address of TCP over
/// IPv4 or IPv6, or one no client can have: unspecified, broadcast, multicast).
pub fn read_header(
    sock: &TcpStream,
    from: &[Cidr],
    report: &mut Report,
    until: Instant,
) -> Result<Option<SocketAddr>, End> {
    let peer = report.peer();
    if !is_balancer(from, peer.ip()) {
        return Err(End::NotBalancer(peer.ip()));
    }
    let mut io = Deadline::new(sock, until);
    let header = proxy_protocol::read(&mut io).map_err(|e| End::Failed(Step::ProxyProtocol, e))?;
    match header {
        Header::Proxied { source, destination } if is_usable_client(source.ip()) => {
            log::debug!("#{} PROXY header from {peer}: client {source}, to {destination}", report.id);
            report.proxied(source);
            report.place().pending_from(source.ip()).map_err(End::Refused)?;
            Ok(Some(destination))
        }
        Header::Proxied { source, .. } => {
            log::debug!(
                "#{} PROXY header from {peer}: client {source} is no client's address; the connection counts as from {peer}",
                report.id
            );
            report.place().pending_from(peer.ip()).map_err(End::Refused)?;
            Ok(None)
        }
        Header::Local => {
            log::debug!(
                "#{} PROXY header from {peer}: LOCAL, UNKNOWN or no TCP address (AF_UNIX, AF_UNSPEC); the connection counts as from {peer}",
                report.id
            );
            report.place().pending_from(peer.ip()).map_err(End::Refused)?;
            // A health check: the balancer connects, sends the header and closes (or resets).
            match io.peek(&mut [0u8; 1]) {
                Ok(0) => Err(End::HealthCheck),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(End::HealthCheck),
                _ => Ok(None),
            }
        }
    }
}

/// Whether a PROXY protocol header is taken from `ip`: one of `from` (so
/// none when it is empty); an IPv4-mapped IPv6 address matches as its IPv4
/// address.
fn is_balancer(from: &[Cidr], ip: IpAddr) -> bool {
    from.iter().any(|net| net.contains(ip) || net.contains(ip.to_canonical()))
}

/// Whether `ip` can be a client's address, so that a header naming it is
/// taken: not unspecified (`0.0.0.0/8`, `::`), not the limited broadcast
/// `255.255.255.255`, not multicast (`224.0.0.0/4`, `ff00::/8`); an
/// IPv4-mapped address is judged as its IPv4 address.
fn is_usable_client(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => !(v4.octets()[0] == 0 || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_balancer_is_matched_by_its_network_and_an_ipv4_mapped_one_as_ipv4() {
        let from: Vec<Cidr> = ["127.0.0.3/32", "2001:db8::/32"].iter().map(|c| c.parse().unwrap()).collect();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(is_balancer(&from, ip("127.0.0.3")));
        assert!(is_balancer(&from, ip("::ffff:127.0.0.3")), "a dual-stack listener's IPv4 peer");
        assert!(is_balancer(&from, ip("2001:db8::7")));
        assert!(!is_balancer(&from, ip("127.0.0.1")));
        assert!(!is_balancer(&from, ip("::ffff:127.0.0.1")));
        assert!(!is_balancer(&from, ip("2001:db9::1")));
        assert!(!is_balancer(&[], ip("192.0.2.1")), "no --proxy-from: no one");
        let any = [Cidr::EVERY_IPV4, Cidr::EVERY_IPV6];
        assert!(is_balancer(&any, ip("192.0.2.1")) && is_balancer(&any, ip("2001:db8::1")), "any");
    }

    #[test]
    fn an_unspecified_broadcast_or_multicast_address_is_no_clients() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for no in ["0.0.0.0", "0.1.2.3", "::", "255.255.255.255", "224.0.0.1", "239.1.2.3", "ff02::1"] {
            assert!(!is_usable_client(ip(no)), "{no}");
        }
        for no in ["::ffff:0.0.0.0", "::ffff:255.255.255.255", "::ffff:224.0.0.1"] {
            assert!(!is_usable_client(ip(no)), "{no}: as its IPv4 address");
        }
        for yes in ["192.0.2.1", "127.0.0.1", "10.255.255.255", "2001:db8::1", "::1", "::ffff:192.0.2.1"] {
            assert!(is_usable_client(ip(yes)), "{yes}");
        }
    }
}
