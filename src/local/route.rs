//! Where each of the local's connections goes: straight to its target
//! (direct), through a server (proxy), or nowhere (block), by the rules of
//! an ACL file (`--acl`, [`crate::proto::acl`]); without one, everything
//! goes through a server.
//!
//! A name is matched as the application sent it, by the ACL's domain
//! rules alone; IP rules match IP targets. No name is resolved here just to
//! test IP rules (the query would tell the local network, and the
//! resolver, every site the application asks for, the proxied ones too)
//! unless `--acl-resolve` asks for it: then a name no domain rule matches
//! is resolved under the connect deadline and decided by its addresses, as
//! shadowsocks-rust decides it. A target on the host of one of the
//! servers (by name or address, whatever the port) always goes direct:
//! through the server it would loop back to itself, or be refused by the
//! server's egress policy.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::current::Current;
use crate::metrics::{self, Routed};
use crate::net::dial;
use crate::proto::acl::{Acl, Route};
use crate::proto::addr::Target;

/// The local's rules: the ACL in force (a reload replaces it), whether a
/// name may be resolved to test IP rules, and the servers' hosts.
pub struct Router {
    /// `--acl`, as loaded at start or by the last reload; `None` sends everything through a server.
    pub acl: Arc<Current<Option<Acl>>>,
    /// `--acl-resolve`.
    pub resolve: bool,
    /// The hosts of the servers, which are always reached directly.
    pub servers: Vec<Target>,
}

impl Router {
    /// Where a connection to `target` goes. With `--acl-resolve`, a name
    /// may be resolved, under `until`; the lookup's thread holds `hold`
    /// (the connection's place under the cap) until it returns.
    pub fn route<H: Clone + Send + 'static>(&self, target: &Target, until: Instant, hold: &H) -> Route {
        let acl = self.acl.get();
        let Some(acl) = acl.as_ref() else { return Route::Proxy };
        match target {
            _ if self.is_server_host(target) => Route::Direct,
            Target::Ip(addr) => acl.route_ip(addr.ip()),
            Target::Domain(name, _) if name.parse::<IpAddr>().is_ok() => {
                name.parse().map_or(acl.default_route(), |ip| acl.route_ip(ip))
            }
            Target::Domain(name, port) => match acl.route_name(name) {
                Some(route) => route,
                None if self.resolve && acl.needs_addresses() => {
                    match dial::resolve(name, *port, until, hold) {
                        Ok(found) => acl.route_resolved(&found.iter().map(|a| a.ip()).collect::<Vec<_>>()),
                        Err(e) => {
                            log::debug!("--acl-resolve: {target}: {e}: the ACL's default applies");
                            acl.default_route()
                        }
                    }
                }
                None => acl.default_route(),
            },
        }
    }

    /// Where a transparent connection to `dst` that carries `name` (sniffed
    /// from its first bytes) goes: by the ACL's domain rules, or by its IP
    /// rules for `dst` when none matches; but a `dst` the IP rules block is
    /// blocked, and one on a server's host goes direct. Nothing is resolved.
    pub fn route_sniffed(&self, name: &str, dst: SocketAddr) -> Route {
        let acl = self.acl.get();
        let Some(acl) = acl.as_ref() else { return Route::Proxy };
        if self.is_server_host(&Target::Ip(dst)) {
            return Route::Direct;
        }
        // The name is the client's word, the address where it goes: a
        // blocked address stays blocked whatever name comes with it.
        let by_address = acl.route_ip(dst.ip());
        if by_address == Route::Block {
            return Route::Block;
        }
        acl.route_name(name).unwrap_or(by_address)
    }

    /// Whether `target` is on the host of one of the servers.
    fn is_server_host(&self, target: &Target) -> bool {
        let host = target.host();
        let ip = host.parse::<IpAddr>().ok();
        self.servers.iter().any(|s| {
            let server = s.host();
            match (ip, server.parse::<IpAddr>().ok()) {
                (Some(a), Some(b)) => a == b,
                _ => server.eq_ignore_ascii_case(host.trim_end_matches('.')),
            }
        })
    }
}

/// The routes an association's datagrams took, for its close line's
/// `route=`: `direct`, `proxy`, `block`, joined by `+` when more than one
/// (`direct+proxy`), or `-` before any datagram.
#[derive(Default)]
pub struct Taken(AtomicU8);

impl Taken {
    /// A datagram went `route`.
    pub fn note(&self, route: Route) {
        let bit = match route {
            Route::Direct => 1,
            Route::Proxy => 2,
            Route::Block => 4,
        };
        self.0.fetch_or(bit, Ordering::Relaxed);
    }

    /// The close line's text for the routes taken so far.
    pub fn name(&self) -> &'static str {
        const NAMES: [&str; 8] = [
            "-",
            "direct",
            "proxy",
            "direct+proxy",
            "block",
            "direct+block",
            "proxy+block",
            "direct+proxy+block",
        ];
        NAMES[usize::from(self.0.load(Ordering::Relaxed) & 7)]
    }
}

/// The metrics' label for `route`.
pub fn label(route: Route) -> Routed {
    match route {
        Route::Direct => Routed::Direct,
        Route::Proxy => Routed::Proxy,
        Route::Block => Routed::Block,
    }
}

/// Counts a connection's route.
pub fn count(route: Route) {
    metrics::routed(label(route));
}

/// Counts a datagram's route.
pub fn count_datagram(route: Route) {
    metrics::routed_datagram(label(route));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn router(acl: Option<&str>, resolve: bool) -> Router {
        let acl = acl.map(|text| Acl::parse(text).unwrap());
        let servers =
            vec![Target::parse("proxy.example:9012").unwrap(), Target::parse("[2001:db8::9]:443").unwrap()];
        Router { acl: Arc::new(Current::new(acl)), resolve, servers }
    }

    fn route(r: &Router, target: &str) -> Route {
        r.route(&Target::parse(target).unwrap(), Instant::now() + Duration::from_secs(5), &())
    }

    const RULES: &str =
        "[proxy_all]\n[bypass_list]\n192.0.2.0/24\n||lan.example\n[block_list]\n|ads.example\n";

    #[test]
    fn without_an_acl_everything_goes_through_a_server() {
        let r = router(None, false);
        for t in ["a.example:80", "192.0.2.1:80", "proxy.example:443"] {
            assert_eq!(route(&r, t), Route::Proxy, "{t}");
        }
    }

    #[test]
    fn names_go_by_domain_rules_and_addresses_by_ip_rules() {
        let r = router(Some(RULES), false);
        assert_eq!(route(&r, "nas.lan.example:445"), Route::Direct);
        assert_eq!(route(&r, "ADS.example.:443"), Route::Block, "case and a trailing dot");
        assert_eq!(route(&r, "192.0.2.7:80"), Route::Direct);
        assert_eq!(route(&r, "198.51.100.7:80"), Route::Proxy);
        assert_eq!(route(&r, "elsewhere.example:80"), Route::Proxy, "the default, not resolved");
    }

    #[test]
    fn a_name_that_is_an_address_goes_by_the_ip_rules() {
        let r = router(Some(RULES), false);
        let named = Target::Domain("192.0.2.7".into(), 80);
        assert_eq!(r.route(&named, Instant::now(), &()), Route::Direct);
    }

    #[test]
    fn the_servers_hosts_go_direct_whatever_the_rules_say() {
        let r = router(Some("[proxy_all]\n[block_list]\n||example\n2001:db8::/32\n"), false);
        assert_eq!(route(&r, "proxy.example:443"), Route::Direct, "by name, any port");
        assert_eq!(route(&r, "PROXY.example:80"), Route::Direct);
        assert_eq!(route(&r, "[2001:db8::9]:80"), Route::Direct, "by address");
        assert_eq!(route(&r, "other.example:443"), Route::Block);
    }

    #[test]
    fn with_acl_resolve_a_name_no_rule_matches_is_decided_by_its_addresses() {
        // `localhost` resolves from /etc/hosts, without a query leaving the host.
        let r = router(Some("[proxy_all]\n[bypass_list]\n127.0.0.0/8\n::1\n"), true);
        assert_eq!(route(&r, "localhost:80"), Route::Direct);
        let r = router(Some("[proxy_all]\n[bypass_list]\n127.0.0.0/8\n::1\n"), false);
        assert_eq!(route(&r, "localhost:80"), Route::Proxy, "not resolved without --acl-resolve");
    }

    #[test]
    fn a_sniffed_name_goes_by_domain_rules_then_by_its_address() {
        let r = router(Some(RULES), false);
        let dst = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            r.route_sniffed("nas.lan.example", dst("198.51.100.7:443")),
            Route::Direct,
            "a domain rule"
        );
        assert_eq!(r.route_sniffed("ads.example", dst("192.0.2.7:443")), Route::Block, "before the address");
        assert_eq!(r.route_sniffed("elsewhere.example", dst("192.0.2.7:443")), Route::Direct, "the address");
        assert_eq!(
            r.route_sniffed("elsewhere.example", dst("198.51.100.7:443")),
            Route::Proxy,
            "the default"
        );
        assert_eq!(
            r.route_sniffed("proxy.example", dst("198.51.100.7:443")),
            Route::Proxy,
            "a name is not an address"
        );
        assert_eq!(
            r.route_sniffed("other.example", dst("[2001:db8::9]:443")),
            Route::Direct,
            "a server's address"
        );
        let blocking =
            router(Some("[proxy_all]\n[bypass_list]\n||lan.example\n[block_list]\n192.0.2.0/24\n"), false);
        assert_eq!(
            blocking.route_sniffed("nas.lan.example", dst("192.0.2.7:443")),
            Route::Block,
            "the address blocks"
        );
        assert_eq!(router(None, false).route_sniffed("lan.example", dst("192.0.2.7:80")), Route::Proxy);
    }

    #[test]
    fn an_associations_routes_are_named_in_one_word() {
        let taken = Taken::default();
        assert_eq!(taken.name(), "-");
        taken.note(Route::Proxy);
        assert_eq!(taken.name(), "proxy");
        taken.note(Route::Direct);
        taken.note(Route::Proxy);
        assert_eq!(taken.name(), "direct+proxy");
        taken.note(Route::Block);
        assert_eq!(taken.name(), "direct+proxy+block");
    }
}
