//! Which addresses blocking-server may connect to on a client's behalf.
//!
//! A proxy that reaches anything its host can reach can be turned on the
//! host's own services, its private network or a cloud metadata address. By
//! default the server refuses every address that is not public: every row of
//! [`NON_PUBLIC`] (loopback, private, link-local, CGNAT, documentation,
//! benchmarking, multicast, reserved and the other special-purpose ranges of
//! the IANA registries that are not globally reachable, and for IPv6 all
//! space outside global unicast `2000::/3`), and the host itself.
//!
//! The host itself is its unspecified addresses (`0.0.0.0/8`, `::`), which
//! connect to the host like loopback, and the addresses of its own
//! interfaces, read at start and read again at a check when the list is older
//! than [`HOST_ADDRS_MAX_AGE`] (1 s), so an address added to the host is
//! refused within a second. A read (`getifaddrs`, a netlink dump) costs about
//! 20 µs on a host with five addresses (measured by the `egress` end-to-end
//! test, which prints it), so it is read at connect time, at most once a
//! second, and only for a target the rest of the policy would permit (a
//! target already refused never needs the list). Both are judged as the
//! loopback address of their family: refused by default, and by any
//! `--deny` network that holds `127.0.0.1` (IPv4) or `::1` (IPv6).
//!
//! IPv6 addresses that carry an IPv4 address: IPv4-mapped `::ffff:0:0/96`,
//! NAT64 `64:ff9b::/96` (RFC 6052) and 6to4 `2002::/16` (bits 16..48) are
//! judged as the IPv4 address they carry. The deprecated IPv4-compatible
//! `::/96` and Teredo `2001::/32` are refused by default whatever they carry,
//! and so is the local-use NAT64 prefix `64:ff9b:1::/48`, whose layout the
//! operator chooses (RFC 8215), so it is not unwrapped. A `--deny` network
//! is matched against the address itself and every IPv4 address it carries
//! (for Teredo, the server's and the client's).
//!
//! The check runs on the addresses a name resolved to, right before
//! connecting, so a name that resolves to 127.0.0.1 (DNS rebinding) is
//! refused like the address.
//!
//! An ACL file (`--acl`, [`crate::proto::acl`]) refuses more: targets by its
//! outbound lists (a name by its domain rules before any lookup, an address
//! by its IP rules, which match an address as it is and as the IPv4
//! address a mapped one carries, not the NAT64, 6to4 or Teredo forms
//! `--deny` also unwraps), and clients by its mode lists. It never lifts
//! a refusal of the rule above.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::current::Current;
use crate::error::Error;
use crate::proto::acl::Acl;
use crate::proto::addr::Target;

/// Special-purpose networks that are not globally reachable, in the order
/// they are looked up (the first row that holds an address names it). From
/// the IANA IPv4 and IPv6 special-purpose address registries and, for IPv6,
/// the address space registry: only `2000::/3` is global unicast. IPv6
/// addresses that carry an IPv4 address are judged by that address instead
/// (see the module docs), so `::ffff:0:0/96`, `64:ff9b::/96` and
/// `2002::/16` have no row.
pub const NON_PUBLIC: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this host (unspecified)"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "limited broadcast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "this host (unspecified)"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "NAT64 local use"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "ORCHID (deprecated)"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "SRv6 SIDs"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
    ("::/3", "not global unicast"),
    ("4000::/2", "not global unicast"),
    ("8000::/1", "not global unicast"),
];

/// [`NON_PUBLIC`], parsed once.
static NON_PUBLIC_NETS: LazyLock<Vec<(Cidr, &'static str)>> =
    LazyLock::new(|| NON_PUBLIC.iter().filter_map(|(net, name)| Some((net.parse().ok()?, *name))).collect());

/// The name of the [`NON_PUBLIC`] row that holds `ip`, if any.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    NON_PUBLIC_NETS.iter().find(|(net, _)| net.contains(ip)).map(|(_, name)| *name)
}

/// How old the list of the host's interface addresses may get before a
/// check reads it again: an address added to the host is refused within
/// this long. A read costs tens of microseconds (see the module docs).
pub const HOST_ADDRS_MAX_AGE: Duration = Duration::from_secs(1);

/// A network in CIDR notation, such as `203.0.113.0/24` or `2001:db8::/32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Every IPv4 address, `0.0.0.0/0`.
    pub const EVERY_IPV4: Cidr = Cidr { net: IpAddr::V4(Ipv4Addr::UNSPECIFIED), prefix: 0 };
    /// Every IPv6 address, `::/0`.
    pub const EVERY_IPV6: Cidr = Cidr { net: IpAddr::V6(Ipv6Addr::UNSPECIFIED), prefix: 0 };

    /// Whether it holds every address of its family (a prefix of 0).
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }

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
/// and never those in `deny`; the host itself counts as loopback. An ACL
/// file (`--acl`) may refuse more targets, by name or address, and clients
/// too (see [`Policy::keep_permitted`] and [`Policy::refuses_client`]); it
/// never lifts a refusal of the rest of the rule.
#[derive(Clone)]
pub struct Policy {
    /// Also allow the non-public addresses listed in the module docs.
    pub allow_private: bool,
    /// Always refused, even with `allow_private`.
    pub deny: Vec<Cidr>,
    host: Arc<HostAddrs>,
    /// `--acl`, as loaded at start or by the last reload.
    acl: Arc<Current<Option<Acl>>>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("allow_private", &self.allow_private)
            .field("deny", &self.deny)
            .field("acl", &self.acl.get().is_some())
            .finish()
    }
}

impl Policy {
    /// The policy of a server on this host: reads the interface addresses now.
    pub fn new(allow_private: bool, deny: Vec<Cidr>) -> Result<Policy, Error> {
        let addrs = interface_addresses()
            .map_err(|e| Error::Config(format!("cannot read the interface addresses: {e}")))?;
        log::debug!("this host's interface addresses, refused like loopback: {addrs:?}");
        let host = HostAddrs::new(Some(interface_addresses), HOST_ADDRS_MAX_AGE, addrs);
        Ok(Policy { allow_private, deny, host: Arc::new(host), acl: Arc::new(Current::new(None)) })
    }

    /// A policy for a host whose own addresses are `host`, never read again.
    pub fn with_host_addrs(allow_private: bool, deny: Vec<Cidr>, host: Vec<IpAddr>) -> Policy {
        let host = Arc::new(HostAddrs::new(None, Duration::MAX, host));
        Policy { allow_private, deny, host, acl: Arc::new(Current::new(None)) }
    }

    /// The same policy, with the ACL in force in `acl` (a reload replaces it there).
    pub fn with_acl(self, acl: Arc<Current<Option<Acl>>>) -> Policy {
        Policy { acl, ..self }
    }

    /// Whether the ACL refuses clients from `ip` (its `[accept_all]` or
    /// `[reject_all]` mode and `[black_list]` or `[white_list]`, as
    /// shadowsocks-rust's server applies them).
    pub fn refuses_client(&self, ip: IpAddr) -> bool {
        self.acl.get().as_ref().as_ref().is_some_and(|acl| acl.client_refused(ip))
    }

    /// Whether the ACL refuses the name of `target` before it is resolved
    /// (a domain rule of `[outbound_block_list]`), so that no lookup is made.
    pub fn refuses_name(&self, target: &Target) -> bool {
        let acl = self.acl.get();
        match (target, acl.as_ref()) {
            (Target::Domain(name, _), Some(acl)) => acl.outbound_name(name) == Some(true),
            _ => false,
        }
    }

    /// Keeps the addresses `target` resolved to that the server may reach:
    /// those [`Policy::permits`], and with an ACL, as shadowsocks-rust
    /// decides: a name a domain rule allows is judged by the rest of the
    /// rule alone; a name no domain rule names is refused whole when the
    /// ACL's outbound rules refuse it by its addresses; each address must
    /// pass the outbound IP rules. Returns what refused the last address,
    /// if all were refused.
    pub fn keep_permitted(&self, target: &Target, addrs: &mut Vec<SocketAddr>) -> Option<&'static str> {
        let acl = self.acl.get();
        let resolved = addrs.len();
        let mut why = "not a public address";
        match acl.as_ref() {
            None => addrs.retain(|a| self.permits(a.ip())),
            Some(acl) => {
                let by_name = match target {
                    Target::Domain(name, _) => acl.outbound_name(name),
                    Target::Ip(_) => None,
                };
                let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
                if by_name == Some(true) || (by_name.is_none() && acl.outbound_resolved_blocked(&ips)) {
                    addrs.clear();
                    why = BLOCKED_BY_ACL;
                }
                addrs.retain(|a| {
                    let listed = by_name.is_none() && acl.outbound_ip_blocked(a.ip());
                    if listed {
                        why = BLOCKED_BY_ACL;
                    }
                    !listed && self.permits(a.ip())
                });
            }
        }
        (addrs.is_empty() && resolved > 0).then_some(why)
    }

    /// Whether the server may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let denied = |a: IpAddr| self.deny.iter().any(|c| c.contains(a));
        let forms = forms(ip);
        if forms.iter().flatten().any(|&a| denied(a)) {
            return false;
        }
        let judged = judged(ip);
        if !self.allow_private && non_public(judged).is_some() {
            return false;
        }
        // Only a target permitted so far needs the host's own addresses (read again if old).
        let host = self.host.current();
        // What `ip` reaches when it names the host itself: the loopback of its family.
        let as_host = |a: IpAddr| is_host(a, &host).then(|| loopback_of(a));
        if forms.iter().flatten().any(|&a| as_host(a).is_some_and(denied)) {
            return false;
        }
        self.allow_private || as_host(judged).is_none()
    }
}

/// Why a target the ACL refuses was refused.
pub const BLOCKED_BY_ACL: &str = "blocked by the acl";

/// Whether `a` names the host itself: unspecified (`0.0.0.0/8`, `::`) or
/// one of its interface addresses.
fn is_host(a: IpAddr, host: &[IpAddr]) -> bool {
    let unspecified = match a {
        IpAddr::V4(v4) => v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_unspecified(),
    };
    unspecified || host.contains(&a)
}

fn loopback_of(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// The first 96 bits of a deprecated IPv4-compatible address, `::a.b.c.d`.
const IPV4_COMPATIBLE: [u16; 6] = [0; 6];
/// The first 96 bits of the NAT64 well-known prefix `64:ff9b::/96` (RFC 6052).
const NAT64_WELL_KNOWN: [u16; 6] = [0x64, 0xff9b, 0, 0, 0, 0];
/// The first 16 bits of a 6to4 address, `2002::/16`; the IPv4 address follows.
const SIX_TO_FOUR: u16 = 0x2002;
/// The first 32 bits of a Teredo address, `2001::/32`; the server's IPv4
/// address follows, and the client's, inverted, ends it.
const TEREDO: [u16; 2] = [0x2001, 0];

/// `ip` and every IPv4 address it carries: mapped, compatible (but `::`
/// and `::1` are themselves), NAT64 (`64:ff9b::/96`), 6to4, and Teredo's
/// server and client.
fn forms(ip: IpAddr) -> [Option<IpAddr>; 3] {
    let IpAddr::V6(v6) = ip else { return [Some(ip), None, None] };
    let s = v6.segments();
    let o = v6.octets();
    let v4 = |b: [u8; 4]| Some(IpAddr::V4(Ipv4Addr::from(b)));
    let last = [o[12], o[13], o[14], o[15]];
    if let Some(mapped) = v6.to_ipv4_mapped() {
        return [Some(ip), Some(IpAddr::V4(mapped)), None];
    }
    let compatible = s[..6] == IPV4_COMPATIBLE && !v6.is_unspecified() && !v6.is_loopback();
    if compatible || s[..6] == NAT64_WELL_KNOWN {
        return [Some(ip), v4(last), None];
    }
    if s[0] == SIX_TO_FOUR {
        return [Some(ip), v4([o[2], o[3], o[4], o[5]]), None];
    }
    if s[..2] == TEREDO {
        return [Some(ip), v4([o[4], o[5], o[6], o[7]]), v4(last.map(|b| !b))];
    }
    [Some(ip), None, None]
}

/// The address the default rule judges: the IPv4 address carried by a
/// mapped, NAT64 (`64:ff9b::/96`) or 6to4 address, otherwise `ip` itself.
fn judged(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let s = v6.segments();
    let carries = v6.to_ipv4_mapped().is_some() || s[..6] == NAT64_WELL_KNOWN || s[0] == SIX_TO_FOUR;
    match forms(ip) {
        [_, Some(v4), _] if carries => v4,
        _ => ip,
    }
}

/// Reads the addresses of the host's interfaces.
type Reader = fn() -> io::Result<Vec<IpAddr>>;

/// The host's own addresses, read again at a check once `max_age` has passed.
#[derive(Debug)]
struct HostAddrs {
    read: Option<Reader>,
    max_age: Duration,
    known: Mutex<(Instant, Arc<[IpAddr]>)>,
}

impl HostAddrs {
    fn new(read: Option<Reader>, max_age: Duration, addrs: Vec<IpAddr>) -> HostAddrs {
        HostAddrs { read, max_age, known: Mutex::new((Instant::now(), addrs.into())) }
    }

    /// The list, read again first if it is too old; a failed read keeps the old list.
    fn current(&self) -> Arc<[IpAddr]> {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(read) = self.read.filter(|_| known.0.elapsed() >= self.max_age) {
            match read() {
                Ok(addrs) => known.1 = addrs.into(),
                Err(e) => log::warn!("cannot read the interface addresses again, keeping the last list: {e}"),
            }
            known.0 = Instant::now();
        }
        Arc::clone(&known.1)
    }
}

/// Every address of every interface of this host, loopback included.
pub fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    let mut addrs = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let Some(a) = ifa.address else { continue };
        let ip = match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => continue,
        };
        if !addrs.contains(&ip) {
            addrs.push(ip);
        }
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A policy for a host with no address of its own but loopback.
    /// `policy(allow_private, &[])` with the ACL file `text`.
    fn with_acl(allow_private: bool, text: &str) -> Policy {
        policy(allow_private, &[]).with_acl(Arc::new(Current::new(Some(Acl::parse(text).unwrap()))))
    }

    fn kept(p: &Policy, target: &str, addrs: &[&str]) -> Result<Vec<SocketAddr>, &'static str> {
        let target = Target::parse(target).unwrap();
        let mut addrs: Vec<SocketAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        match p.keep_permitted(&target, &mut addrs) {
            Some(why) => Err(why),
            None => Ok(addrs),
        }
    }

    #[test]
    fn an_acl_refuses_names_before_lookup_and_addresses_after() {
        let p = with_acl(false, "[outbound_block_list]\n||ads.example\n203.0.114.0/24\n");
        assert!(p.refuses_name(&Target::parse("x.ads.example:443").unwrap()));
        assert!(!p.refuses_name(&Target::parse("example.com:443").unwrap()));
        assert!(!p.refuses_name(&Target::parse("203.0.114.1:443").unwrap()), "addresses are judged after");
        assert_eq!(kept(&p, "x.ads.example:443", &["8.8.8.8:443"]), Err(BLOCKED_BY_ACL));
        assert_eq!(kept(&p, "203.0.114.1:80", &["203.0.114.1:80"]), Err(BLOCKED_BY_ACL));
        // A name one of whose addresses is listed is refused whole, as shadowsocks-rust refuses it.
        assert_eq!(kept(&p, "mixed.example:80", &["203.0.114.1:80", "8.8.8.8:80"]), Err(BLOCKED_BY_ACL));
        assert_eq!(kept(&p, "fine.example:80", &["8.8.8.8:80"]), Ok(vec!["8.8.8.8:80".parse().unwrap()]));
        // The rest of the rule still holds: a loopback address is refused as not public.
        assert_eq!(kept(&p, "fine.example:80", &["127.0.0.1:80"]), Err("not a public address"));
    }

    #[test]
    fn an_acl_never_lifts_the_default_refusal() {
        let p = with_acl(false, "[outbound_block_all]\n[outbound_allow_list]\n10.0.0.0/8\n|lan.example\n");
        assert_eq!(kept(&p, "10.1.2.3:80", &["10.1.2.3:80"]), Err("not a public address"));
        assert_eq!(kept(&p, "lan.example:80", &["10.1.2.3:80"]), Err("not a public address"));
        let p = with_acl(true, "[outbound_block_all]\n[outbound_allow_list]\n10.0.0.0/8\n|lan.example\n");
        assert_eq!(kept(&p, "10.1.2.3:80", &["10.1.2.3:80"]), Ok(vec!["10.1.2.3:80".parse().unwrap()]));
        // Allowed by name: its addresses are judged by the rest of the rule only.
        assert_eq!(
            kept(&p, "lan.example:80", &["192.168.1.1:80"]),
            Ok(vec!["192.168.1.1:80".parse().unwrap()])
        );
        // Allowed by an address: only the allowed ones are kept.
        assert_eq!(
            kept(&p, "split.example:80", &["10.1.2.3:80", "192.168.1.1:80"]),
            Ok(vec!["10.1.2.3:80".parse().unwrap()])
        );
        assert_eq!(kept(&p, "elsewhere.example:80", &["192.168.1.1:80"]), Err(BLOCKED_BY_ACL));
    }

    #[test]
    fn an_acl_refuses_clients_by_its_mode() {
        let p = with_acl(false, "[accept_all]\n[black_list]\n192.0.2.0/24\n");
        assert!(p.refuses_client(ip("192.0.2.9")) && !p.refuses_client(ip("198.51.100.1")));
        let p = with_acl(false, "[reject_all]\n[white_list]\n192.0.2.0/24\n");
        assert!(!p.refuses_client(ip("192.0.2.9")) && p.refuses_client(ip("198.51.100.1")));
        assert!(!policy(false, &[]).refuses_client(ip("198.51.100.1")), "no ACL, no refusal");
    }

    fn policy(allow_private: bool, deny: &[&str]) -> Policy {
        let deny = deny.iter().map(|c| c.parse().unwrap()).collect();
        Policy::with_host_addrs(allow_private, deny, vec![ip("127.0.0.1"), ip("::1")])
    }

    /// One address per row of NON_PUBLIC that the row, and no row before it, holds.
    const ROW_EXAMPLES: &[(&str, &str)] = &[
        ("0.0.0.0/8", "0.255.255.255"),
        ("10.0.0.0/8", "10.255.255.255"),
        ("100.64.0.0/10", "100.127.255.255"),
        ("127.0.0.0/8", "127.8.9.10"),
        ("169.254.0.0/16", "169.254.169.254"),
        ("172.16.0.0/12", "172.31.255.255"),
        ("192.0.0.0/24", "192.0.0.8"),
        ("192.0.2.0/24", "192.0.2.255"),
        ("192.168.0.0/16", "192.168.1.1"),
        ("198.18.0.0/15", "198.19.255.255"),
        ("198.51.100.0/24", "198.51.100.7"),
        ("203.0.113.0/24", "203.0.113.255"),
        ("224.0.0.0/4", "239.255.255.255"),
        ("255.255.255.255/32", "255.255.255.255"),
        ("240.0.0.0/4", "240.0.0.1"),
        ("::/128", "::"),
        ("::1/128", "::1"),
        ("::/96", "::8.8.8.8"),
        ("64:ff9b:1::/48", "64:ff9b:1::808:808"),
        ("100::/64", "100::ffff:ffff:ffff:ffff"),
        ("2001::/32", "2001:0:4136:e378:8000:63bf:f7f7:f7f7"),
        ("2001:2::/48", "2001:2:0:ffff::1"),
        ("2001:10::/28", "2001:1f::1"),
        ("2001:db8::/32", "2001:db8:ffff::1"),
        ("3fff::/20", "3fff:fff::1"),
        ("5f00::/16", "5f00:1::1"),
        ("fc00::/7", "fd12:3456::1"),
        ("fe80::/10", "febf::1"),
        ("fec0::/10", "feff::1"),
        ("ff00::/8", "ff02::1"),
        ("::/3", "1fff::1"),
        ("4000::/2", "4000::1"),
        ("8000::/1", "8000::1"),
    ];

    #[test]
    fn every_row_of_the_table_parses_names_its_example_and_is_refused_by_default() {
        assert_eq!(NON_PUBLIC_NETS.len(), NON_PUBLIC.len(), "every row parses");
        let rows: Vec<&str> = NON_PUBLIC.iter().map(|(net, _)| *net).collect();
        let examples: Vec<&str> = ROW_EXAMPLES.iter().map(|(net, _)| *net).collect();
        assert_eq!(rows, examples, "one example per row, in order");
        let (default, private) = (policy(false, &[]), policy(true, &[]));
        for ((net, name), (_, example)) in NON_PUBLIC.iter().zip(ROW_EXAMPLES) {
            let cidr: Cidr = net.parse().unwrap();
            assert_eq!(cidr.to_string(), *net, "written in canonical form");
            assert!(cidr.contains(ip(example)), "{net} holds {example}");
            assert_eq!(non_public(ip(example)), Some(*name), "{example} is named by {net}");
            assert!(!default.permits(ip(example)), "{example} ({net}, {name}) refused by default");
            assert!(private.permits(ip(example)), "{example} allowed with allow_private");
        }
    }

    #[test]
    fn the_neighbours_of_the_rows_are_public() {
        let p = policy(false, &[]);
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.1",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.1",
            "191.255.255.255",
            "192.0.1.255",
            "192.0.3.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
            "2000::1",
            "2001:1::1",
            "2001:2:1::1",
            "2001:20::1",
            "2001:db7:ffff::1",
            "2001:db9::1",
            "2606:4700::1111",
            "3fff:1000::1",
            "3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(non_public(judged(ip(a))), None, "{a}");
            assert!(p.permits(ip(a)), "{a} is public");
        }
    }

    #[test]
    fn ipv6_that_carries_ipv4_is_judged_by_the_ipv4_it_carries() {
        let p = policy(false, &[]);
        for a in [
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:192.0.2.1",
            "::ffff:198.18.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::c000:201",
            "64:ff9b::cb00:7101",
            "2002:a00:1::1",
            "2002:7f00:1::1",
            "2002:c000:201::1",
            "2002:f000:1::1",
            "::10.0.0.1",
            "::127.0.0.1",
        ] {
            assert!(!p.permits(ip(a)), "{a} must be refused");
        }
        // Teredo is refused whatever it carries; 64:ff9b:1::/48 is not unwrapped.
        assert!(!p.permits(ip("2001:0:808:808::f7f7:f7f7")));
        assert!(!p.permits(ip("64:ff9b:1::808:808")));
    }

    #[test]
    fn deny_matches_the_ipv6_address_and_every_ipv4_it_carries() {
        for net in ["64:ff9b::/96", "::/0"] {
            let p = policy(false, &[net]);
            assert!(!p.permits(ip("64:ff9b::808:808")), "--deny {net}");
        }
        let p = policy(true, &["::/0"]);
        for a in ["::ffff:8.8.8.8", "::ffff:127.0.0.1", "2002:808:808::1", "::8.8.8.8"] {
            assert!(!p.permits(ip(a)), "--deny ::/0 holds {a}");
        }
        assert!(p.permits(ip("8.8.8.8")) && p.permits(ip("127.0.0.1")));
        let p = policy(true, &["::ffff:0:0/96"]);
        assert!(!p.permits(ip("::ffff:127.0.0.1")) && p.permits(ip("127.0.0.1")));

        let p = policy(true, &["8.8.8.0/24"]);
        for a in [
            "8.8.8.8",
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:0:808:808::1",         // Teredo server
            "2001:0:102:304::f7f7:f7f7", // Teredo client, inverted
        ] {
            assert!(!p.permits(ip(a)), "--deny 8.8.8.0/24 holds {a}");
        }
        // Only real layouts are unwrapped.
        for a in ["64:ff9b:1::808:808", "2606:4700::808:808", "2001:1::808:808"] {
            assert!(p.permits(ip(a)), "{a} carries no IPv4");
        }
    }

    #[test]
    fn the_unspecified_addresses_are_the_hosts_loopback() {
        let p = policy(true, &["127.0.0.0/8", "::1/128"]);
        for a in ["0.0.0.0", "0.1.2.3", "::", "::ffff:0.0.0.0", "::ffff:0.1.2.3", "64:ff9b::", "::0.1.2.3"] {
            assert!(!p.permits(ip(a)), "{a} is the host: denied with loopback");
        }
        assert!(p.permits(ip("10.0.0.1")) && p.permits(ip("fd00::1")));
        // Per family: denying IPv4 loopback leaves `::`, and the other way round.
        let p = policy(true, &["127.0.0.1/32"]);
        assert!(!p.permits(ip("0.0.0.0")) && p.permits(ip("::")));
        let p = policy(true, &["::1/128"]);
        assert!(p.permits(ip("0.0.0.0")) && !p.permits(ip("::")));
        // Without a deny that holds loopback they stay allowed with allow_private.
        let p = policy(true, &["10.0.0.0/8"]);
        assert!(p.permits(ip("0.0.0.0")) && p.permits(ip("::")));
        let p = policy(false, &[]);
        for a in ["0.0.0.0", "0.1.2.3", "::", "::ffff:0.0.0.0"] {
            assert!(!p.permits(ip(a)), "{a} refused by default");
        }
    }

    #[test]
    fn the_hosts_own_addresses_are_refused_by_default_and_count_as_loopback_for_deny() {
        let own = vec![ip("127.0.0.1"), ip("::1"), ip("8.8.8.8"), ip("2606:4700::1111"), ip("10.9.9.9")];
        let with = |allow_private: bool, deny: &[&str]| {
            let deny = deny.iter().map(|c| c.parse().unwrap()).collect();
            Policy::with_host_addrs(allow_private, deny, own.clone())
        };
        let p = with(false, &[]);
        for a in ["8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2606:4700::1111"] {
            assert!(!p.permits(ip(a)), "{a} is the host");
        }
        assert!(p.permits(ip("8.8.4.4")) && p.permits(ip("2606:4700::1001")));

        let p = with(true, &[]);
        assert!(p.permits(ip("8.8.8.8")) && p.permits(ip("2606:4700::1111")) && p.permits(ip("10.9.9.9")));
        let p = with(true, &["127.0.0.0/8"]);
        assert!(!p.permits(ip("8.8.8.8")) && !p.permits(ip("10.9.9.9")) && !p.permits(ip("::ffff:10.9.9.9")));
        assert!(p.permits(ip("2606:4700::1111")) && p.permits(ip("8.8.4.4")) && p.permits(ip("10.9.9.8")));
        let p = with(true, &["::1/128"]);
        assert!(!p.permits(ip("2606:4700::1111")) && p.permits(ip("8.8.8.8")));
    }

    /// What the test reader returns; `None` is a failed read.
    static INTERFACES: Mutex<Option<Vec<IpAddr>>> = Mutex::new(Some(Vec::new()));

    fn test_interfaces() -> io::Result<Vec<IpAddr>> {
        INTERFACES.lock().unwrap().clone().ok_or_else(|| io::Error::other("no netlink today"))
    }

    #[test]
    fn the_host_addresses_are_read_again_once_old_and_kept_when_a_read_fails() {
        let set = |v: Option<Vec<IpAddr>>| *INTERFACES.lock().unwrap() = v;
        let host = HostAddrs::new(Some(test_interfaces), Duration::ZERO, Vec::new());
        let p = Policy {
            allow_private: false,
            deny: Vec::new(),
            host: Arc::new(host),
            acl: Arc::new(Current::new(None)),
        };
        assert!(p.permits(ip("8.8.8.8")));
        set(Some(vec![ip("8.8.8.8")]));
        assert!(!p.permits(ip("8.8.8.8")), "an address added later is read at the next check");
        set(None);
        assert!(!p.permits(ip("8.8.8.8")), "a failed read keeps the last list");
        set(Some(Vec::new()));
        assert!(p.permits(ip("8.8.8.8")), "an address removed is forgotten");

        let fresh = HostAddrs::new(Some(test_interfaces), HOST_ADDRS_MAX_AGE, vec![ip("8.8.8.8")]);
        set(Some(Vec::new()));
        assert_eq!(&*fresh.current(), &[ip("8.8.8.8")], "not read again while young");
    }

    #[test]
    fn the_interfaces_of_this_host_include_loopback() {
        assert!(interface_addresses().unwrap().contains(&ip("127.0.0.1")));
        let p = Policy::new(true, vec!["127.0.0.0/8".parse().unwrap()]).unwrap();
        assert!(!p.permits(ip("127.0.0.1")));
    }

    #[test]
    fn non_public_addresses_are_refused_by_default() {
        let p = policy(false, &[]);
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
        let p = policy(true, &["192.0.2.0/24"]);
        for a in ["127.0.0.1", "::1", "169.254.169.254", "10.0.0.1", "8.8.8.8"] {
            assert!(p.permits(ip(a)), "{a}");
        }
        assert!(!p.permits(ip("192.0.2.7")));
        assert!(!p.permits(ip("::ffff:192.0.2.7")));
    }

    #[test]
    fn deny_applies_to_public_addresses_too() {
        let p = policy(false, &["8.8.8.0/24", "2001:db8::/32"]);
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
