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

use std::net::IpAddr;
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
        let route = match target {
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
        };
        route
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
