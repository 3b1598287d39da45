//! Which addresses blocking-server may connect to on a client's behalf.
//!
//! A proxy that reaches anything its host can reach can be turned on the
//! host's own loopback services, its private network or a cloud metadata
//! address. By default the server refuses every address that is not public:
//! loopback, unspecified, private (10/8, 172.16/12, 192.168/16, fc00::/7),
//! link-local (169.254/16, fe80::/10), shared CGNAT space (100.64/10),
//! multicast and broadcast, plus the reserved 0/8 and 240/4. The check runs
//! on the addresses a name resolved to, right before connecting, so a name
//! that resolves to 127.0.0.1 (DNS rebinding) is refused like the address.
//! IPv4 carried in IPv6 (`::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`) is judged as
//! the IPv4 address it carries.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A network in CIDR notation, such as `203.0.113.0/24` or `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside this network (IPv4 never matches an IPv6 network or back).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.prefix),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (bytes, bits) = (usize::from(prefix / 8), prefix % 8);
    if a[..bytes] != b[..bytes] {
        return false;
    }
    bits == 0 || (a[bytes] ^ b[bytes]) >> (8 - bits) == 0
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDR/PREFIX`, or a bare address for a single host.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| format!("not an address: {addr}"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                p.parse().ok().filter(|p| *p <= max).ok_or_else(|| format!("bad prefix length: {p}"))?
            }
        };
        Ok(Cidr { net, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The server's egress rule: public addresses only, unless told otherwise,
/// and never those in `deny`.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Also allow the non-public addresses listed in the module docs.
    pub allow_private: bool,
    /// Always refused, even with `allow_private`.
    pub deny: Vec<Cidr>,
}

impl Policy {
    /// Whether the server may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = embedded_ipv4(ip);
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        self.allow_private || is_public(ip)
    }
}

/// IPv4 addresses carried in IPv6 are judged as IPv4: mapped
/// (`::ffff:0:0/96`), compatible (`::/96`, deprecated), and NAT64
/// (`64:ff9b::/96` and the local-use `64:ff9b:1::/48`).
fn embedded_ipv4(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let o = v6.octets();
    let carried = IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    let compatible = s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1];
    if compatible || nat64 {
        return carried;
    }
    ip
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => is_public_v6(a),
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    !(a.is_loopback()
        || a.is_unspecified()
        || a.is_private()
        || a.is_link_local()
        || a.is_multicast()
        || a.is_broadcast()
        || o[0] == 0                                   // 0/8: "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64)        // 100.64/10: CGNAT
        || o[0] >= 240) // 240/4: reserved
}

fn is_public_v6(a: Ipv6Addr) -> bool {
    let first = a.segments()[0];
    !(a.is_loopback()
        || a.is_unspecified()
        || a.is_multicast()
        || (first & 0xfe00) == 0xfc00 // fc00::/7: unique local
        || (first & 0xffc0) == 0xfe80 // fe80::/10: link-local
        || (first & 0xffc0) == 0xfec0) // fec0::/10: old site-local
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_refused_by_default() {
        let p = Policy::default();
        for a in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a00:1",
            "::10.0.0.1",
            "::127.0.0.1",
        ] {
            assert!(!p.permits(ip(a)), "{a} must be refused");
        }
        for a in ["1.1.1.1", "8.8.8.8", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(p.permits(ip(a)), "{a} is public");
        }
    }

    #[test]
    fn allow_private_lifts_the_default_but_not_deny() {
        let p = Policy { allow_private: true, deny: vec!["192.0.2.0/24".parse().unwrap()] };
        for a in ["127.0.0.1", "::1", "169.254.169.254", "10.0.0.1", "8.8.8.8"] {
            assert!(p.permits(ip(a)), "{a}");
        }
        assert!(!p.permits(ip("192.0.2.7")));
        assert!(!p.permits(ip("::ffff:192.0.2.7")));
    }

    #[test]
    fn deny_applies_to_public_addresses_too() {
        let p = Policy {
            allow_private: false,
            deny: vec!["8.8.8.0/24".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
        };
        assert!(!p.permits(ip("8.8.8.8")));
        assert!(p.permits(ip("8.8.4.4")));
        assert!(!p.permits(ip("2001:db8::1")));
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!("10.0.0.0/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().to_string(), "1.2.3.4/32");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("fe80::/129".parse::<Cidr>().is_err());
        assert!("nonsense/8".parse::<Cidr>().is_err());
        let c: Cidr = "172.16.0.0/12".parse().unwrap();
        assert!(c.contains(ip("172.31.0.1")) && !c.contains(ip("172.32.0.1")) && !c.contains(ip("::1")));
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(c.contains(ip("9.9.9.9")));
    }
}
