//! Transparent proxying (`--redir ADDR:PORT`): a listener for TCP
//! connections that a firewall's `redirect` (nftables) or `REDIRECT`
//! (iptables) rule sent to the local, for programs that know of no proxy.
//!
//! Its listener is a sibling of the local's own ([`Acceptor::sibling`]):
//! under the same cap, stopped and drained with it. Each connection's
//! original destination is what the kernel's connection tracking recorded
//! before the rewrite (`SO_ORIGINAL_DST`, `IP6T_SO_ORIGINAL_DST`); the
//! connection is then routed as a SOCKS5 client asking for that address
//! would be ([`client::redirected`]), with no handshake. A connection whose
//! original destination is one of the local's own listeners was not
//! redirected at all, or would come back here: it is refused, logged and
//! closed.

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
use crate::net::dial::listen;
use crate::proto::addr::Target;

use super::client::{self, Context, REDIR};

/// The `--redir` listener, bound beside the local's.
pub struct Bound {
    addr: SocketAddr,
    acceptor: Acceptor,
    /// The local's own listeners: an original destination among them is a loop.
    own: Vec<SocketAddr>,
}

/// Binds `addr` beside `main`, whose gate and stop it shares.
pub fn bind(main: &Acceptor, addr: &str) -> Result<Bound, Error> {
    let listener = listen(addr)?;
    let bound = listener.local_addr().map_err(Error::Io)?;
    let acceptor = main.sibling(listener)?;
    let own = vec![bound, main.local_addr().map_err(Error::Io)?];
    Ok(Bound { addr: bound, acceptor, own })
}

impl Bound {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts its accept loop, which returns once the local is stopped.
    pub fn start(self, ctx: &Arc<Context>, watch: Option<Watch>) -> io::Result<JoinHandle<()>> {
        let Bound { addr, acceptor, own } = self;
        let (ctx, own) = (Arc::clone(ctx), Arc::new(own));
        let admit = move |app, peer, place| {
            let (ctx, own, report) =
                (Arc::clone(&ctx), Arc::clone(&own), Report::new(peer, place, watch.clone()));
            move || serve(app, &own, &ctx, report)
        };
        let refuse = |app: TcpStream, why: &Refused| {
            metrics::refused(why.into());
            drop(app);
        };
        let thread = thread::Builder::new().name(format!("redir {addr}")).stack_size(THREAD_STACK);
        thread.spawn(move || acceptor.serve(admit, refuse))
    }
}

/// The stack of the accept loop's thread.
const THREAD_STACK: usize = 256 * 1024;

/// Serves one redirected connection: its original destination, then as
/// [`client::redirected`] says; a connection whose original destination
/// cannot be read, or is one of `own` (or the address it reached, so that
/// it was not redirected), is logged and closed.
fn serve(app: TcpStream, own: &[SocketAddr], ctx: &Context, mut report: Report) {
    report.proto(REDIR);
    let id = report.id;
    let dst = match original_destination(&app) {
        Ok(dst) => dst,
        Err(e) => {
            log::warn!("#{id} redir from {}: no original destination: {e}", report.peer());
            close_gently(&app);
            return report.end(End::Failed(Step::Socket, Error::Io(e)));
        }
    };
    if own.contains(&dst) || app.local_addr().is_ok_and(|at| at == dst) {
        log::warn!(
            "#{id} redir from {}: the original destination {dst} is this local's own listener (a loop, or not redirected): closing",
            report.peer()
        );
        report.target(&Target::Ip(dst));
        close_gently(&app);
        return report.end(End::Failed(Step::Socket, Error::Denied(format!("{dst} is this local: a loop"))));
    }
    client::redirected(app, Target::Ip(dst), ctx, report);
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
