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

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Instant;

use crate::conn::end::{End, Step};
use crate::conn::Report;
use crate::net::deadline::Deadline;
use crate::net::egress::Cidr;
use crate::proto::proxy_protocol::{self, Header};

/// Reads the PROXY protocol header of a connection from a load balancer
/// (one of `from`, or anyone when it is empty) and makes the client it
/// names the connection's client, pending against its source. Returns the
/// address that client connected to, or `None` when the connection's own
/// addresses stand (a `LOCAL` or `UNKNOWN` header).
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
        Header::Proxied { source, destination } => {
            log::debug!("#{} PROXY header from {peer}: client {source}, to {destination}", report.id);
            report.proxied(source);
            report.place().pending_from(source.ip()).map_err(End::Refused)?;
            Ok(Some(destination))
        }
        Header::Local => {
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

/// Whether a PROXY protocol header is taken from `ip`: any address when
/// `from` is empty; an IPv4-mapped IPv6 address matches as its IPv4 address.
fn is_balancer(from: &[Cidr], ip: IpAddr) -> bool {
    from.is_empty() || from.iter().any(|net| net.contains(ip) || net.contains(ip.to_canonical()))
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
        assert!(is_balancer(&[], ip("192.0.2.1")), "no --proxy-from: anyone");
    }
}
