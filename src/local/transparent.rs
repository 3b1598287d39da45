//! Transparent proxying: listeners for TCP connections that a firewall
//! sent to the local, for programs that know of no proxy. `--redir` takes
//! those of a `redirect` (nftables) or `REDIRECT` (iptables) rule, whose
//! original destination the kernel's connection tracking recorded before
//! the rewrite (`SO_ORIGINAL_DST`, `IP6T_SO_ORIGINAL_DST`); `--tproxy`
//! takes those of a `tproxy`/`TPROXY` rule, which are not rewritten: the
//! listener is transparent (`IP_TRANSPARENT`), and each connection's own
//! address is its original destination. `--tproxy`'s UDP is [`super::tproxy`].
//!
//! Each listener is a sibling of the local's own ([`Acceptor::sibling`]):
//! under the same cap, stopped and drained with it. Each connection is
//! then routed as a SOCKS5 client asking for its original destination
//! would be ([`client::redirected`]), with no handshake; with `--sniff`,
//! by the name its first bytes carry. A connection that would loop is
//! refused, logged and closed: one whose original destination is one of
//! the local's own listeners (it was not redirected at all, or would come
//! back here), or one that the local itself has just started and a rule
//! sent back ([`dial::is_own`]: the local's own connections need `--mark`
//! and a rule that lets them pass).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use nix::sys::socket::{getsockopt, sockopt, SockaddrIn, SockaddrIn6};

use crate::conn::accept::Acceptor;
use crate::conn::admission::Refused;
use crate::conn::end::{End, Step};
use crate::conn::report::Watch;
use crate::conn::Report;
use crate::error::Error;
use crate::metrics;
use crate::net::deadline::close_gently;
use crate::net::dial;
use crate::proto::addr::Target;

use super::client::{self, Context, Transparent};

/// The firewall rule that sends connections to a transparent listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `redirect`/`REDIRECT` (`--redir`): the address rewritten, the original in connection tracking.
    Redirect,
    /// `tproxy`/`TPROXY` (`--tproxy`): nothing rewritten.
    Tproxy,
}

impl Rule {
    /// Its connections' `proto=` in logs.
    pub fn proto(self) -> &'static str {
        match self {
            Rule::Redirect => "redir",
            Rule::Tproxy => "tproxy",
        }
    }
}

/// A transparent listener, bound beside the local's.
pub struct Bound {
    rule: Rule,
    addr: SocketAddr,
    acceptor: Acceptor,
    /// The local's own listeners: an original destination among them is a loop.
    own: Vec<SocketAddr>,
    sniff: bool,
}

/// Binds `addr` for connections `rule` sends, beside `main`, whose gate
/// and stop it shares; with `sniff`, their names are read from their first
/// bytes. `others` are the local's other listeners.
pub fn bind(
    main: &Acceptor,
    rule: Rule,
    addr: &str,
    sniff: bool,
    others: &[SocketAddr],
) -> Result<Bound, Error> {
    let listener = match rule {
        Rule::Redirect => dial::listen(addr)?,
        Rule::Tproxy => dial::listen_transparent(addr)?,
    };
    let bound = listener.local_addr().map_err(Error::Io)?;
    let acceptor = main.sibling(listener)?;
    let mut own = vec![bound, main.local_addr().map_err(Error::Io)?];
    own.extend_from_slice(others);
    dial::guard_loops();
    Ok(Bound { rule, addr: bound, acceptor, own, sniff })
}

impl Bound {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counts `addrs` (the other transparent listeners) among the local's own.
    pub fn also_own(&mut self, addrs: &[SocketAddr]) {
        self.own.extend_from_slice(addrs);
    }

    /// The rule that sends it connections.
    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// Starts its accept loop, which returns once the local is stopped.
    pub fn start(self, ctx: &Arc<Context>, watch: Option<Watch>) -> io::Result<JoinHandle<()>> {
        let Bound { rule, addr, acceptor, own, sniff } = self;
        let (ctx, own) = (Arc::clone(ctx), Arc::new(own));
        let how = Transparent { proto: rule.proto(), sniff };
        let admit = move |app, peer, place| {
            let (ctx, own, report) =
                (Arc::clone(&ctx), Arc::clone(&own), Report::new(peer, place, watch.clone()));
            move || serve(app, rule, how, &own, &ctx, report)
        };
        let refuse = |app: TcpStream, why: &Refused| {
            metrics::refused(why.into());
            drop(app);
        };
        let name = format!("{} {addr}", rule.proto());
        let thread = thread::Builder::new().name(name).stack_size(THREAD_STACK);
        thread.spawn(move || acceptor.serve(admit, refuse))
    }
}

/// The stack of the accept loop's thread.
const THREAD_STACK: usize = 256 * 1024;

/// Serves one connection `rule` sent here: its original destination, then
/// as [`client::redirected`] says; a connection whose original destination
/// cannot be read, or that would loop ([`looped`]), is logged and closed.
fn serve(
    app: TcpStream,
    rule: Rule,
    how: Transparent,
    own: &[SocketAddr],
    ctx: &Context,
    mut report: Report,
) {
    report.proto(rule.proto());
    let id = report.id;
    let dst = match rule {
        Rule::Redirect => original_destination(&app),
        // A dual-stack listener's IPv4 connections have IPv4-mapped addresses.
        Rule::Tproxy => app.local_addr().map(dial::unmapped),
    };
    let dst = match dst {
        Ok(dst) => dst,
        Err(e) => {
            log::warn!("#{id} {} from {}: no original destination: {e}", rule.proto(), report.peer());
            close_gently(&app);
            return report.end(End::Failed(Step::Socket, Error::Io(e)));
        }
    };
    if let Some(why) = looped(rule, &app, dst, own, report.peer()) {
        log::warn!("#{id} {} from {}: {why}: closing", rule.proto(), report.peer());
        report.target(&Target::Ip(dst));
        close_gently(&app);
        return report.end(End::Failed(Step::Socket, Error::Denied(format!("{dst} is a loop"))));
    }
    client::redirected(app, dst, how, ctx, report);
}

/// Why a connection from `peer` to `dst`, sent by `rule`, would loop, if
/// it would: its original destination is one of the local's own listeners
/// (`own`), or its own address when nothing rewrote it; or the local
/// itself started it, and a rule sent it back.
fn looped(
    rule: Rule,
    app: &TcpStream,
    dst: SocketAddr,
    own: &[SocketAddr],
    peer: SocketAddr,
) -> Option<String> {
    let listener = own.contains(&dst)
        || match rule {
            Rule::Redirect => app.local_addr().is_ok_and(|at| dial::unmapped(at) == dst),
            // Nothing is rewritten: an address of this host on a listener's port came straight here.
            Rule::Tproxy => own.iter().any(|o| o.port() == dst.port()) && dial::is_local_address(dst.ip()),
        };
    if listener {
        return Some(format!(
            "the original destination {dst} is this local's own listener (a loop, or not redirected)"
        ));
    }
    dial::is_own(peer, dst).then(|| {
        format!(
            "this connection to {dst} is the local's own, sent back by a firewall rule (a loop: give the local --mark N and let packets marked N pass)"
        )
    })
}

/// Where a redirected connection was going before the firewall rewrote
/// it: `SO_ORIGINAL_DST` for IPv4, `IP6T_SO_ORIGINAL_DST` for IPv6 (an
/// IPv4-mapped local address is asked as IPv4).
pub fn original_destination(sock: &TcpStream) -> io::Result<SocketAddr> {
    let v4 = match sock.local_addr()? {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
    };
    if v4 {
        let sa = getsockopt(sock, sockopt::OriginalDst).map_err(io::Error::from)?;
        Ok(SocketAddr::from(SockaddrIn::from(sa)))
    } else {
        let sa = getsockopt(sock, sockopt::Ip6tOriginalDst).map_err(io::Error::from)?;
        Ok(SocketAddr::from(SockaddrIn6::from(sa)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::testing::TIMEOUT;
    use std::net::TcpListener;

    #[test]
    fn a_connection_no_rule_redirected_has_no_original_destination_or_its_own() {
        // Without connection tracking there is none (ENOENT); with it, the
        // address the connection reached: either way, never another target.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        let (sock, _) = listener.accept().unwrap();
        match original_destination(&sock) {
            Ok(dst) => assert_eq!(dst, addr),
            Err(e) => assert!(e.raw_os_error().is_some(), "{e}"),
        }
    }
}
