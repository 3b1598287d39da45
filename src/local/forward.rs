//! Fixed forwards (`--forward LISTEN=HOST:PORT`): ports that lead to one
//! target through a server, for clients that speak no proxy protocol at
//! all (a mail client, a router's port).
//!
//! Each forward listens on LISTEN for TCP. Its listener is a sibling of the
//! local's own ([`Acceptor::sibling`]): behind the same gate, so one cap
//! counts the connections of every port, stopped with it, and drained with
//! it. Each connection then goes as a proxied SOCKS5 client's does, without
//! a request ([`client::forward`]). The ACL does not apply: a forward's
//! target is fixed, and always reached through a server.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::conn::accept::Acceptor;
use crate::conn::admission::Refused;
use crate::conn::report::Watch;
use crate::conn::Report;
use crate::error::Error;
use crate::metrics;
use crate::net::dial::listen;
use crate::proto::addr::Target;

use super::client::{self, Context};

/// One `--forward`: where it listens, and where what comes there goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// `ADDR:PORT`.
    pub listen: String,
    /// `HOST:PORT`, reached through a server.
    pub target: Target,
}

impl Forward {
    /// Parses `LISTEN=HOST:PORT`: LISTEN an address and port (a name, IPv4
    /// or `[IPv6]`; port 0 takes a free one), the target's port not 0.
    pub fn parse(s: &str) -> Option<Forward> {
        let (listen, target) = s.split_once('=')?;
        Target::parse(listen)?;
        let target = Target::parse(target).filter(|t| t.port() != 0)?;
        Some(Forward { listen: listen.to_owned(), target })
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.listen, self.target)
    }
}

/// A forward's listener, bound: a sibling of the local's.
pub struct Bound {
    target: Target,
    addr: SocketAddr,
    acceptor: Acceptor,
}

/// Binds `forward` beside `main`, whose gate and stop it shares.
pub fn bind(main: &Acceptor, forward: &Forward) -> Result<Bound, Error> {
    let listener = listen(&forward.listen)?;
    let addr = listener.local_addr().map_err(Error::Io)?;
    let acceptor = main.sibling(listener)?;
    Ok(Bound { target: forward.target.clone(), addr, acceptor })
}

impl Bound {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where what comes to it goes.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Starts its accept loop on a thread of its own, which returns once
    /// the local's [`Stopper`](crate::conn::accept::Stopper) is stopped.
    pub fn start(self, ctx: &Arc<Context>, watch: Option<Watch>) -> io::Result<JoinHandle<()>> {
        let Bound { target, addr, acceptor } = self;
        let ctx = Arc::clone(ctx);
        let admit = move |app, peer, place| {
            let (ctx, target, report) =
                (Arc::clone(&ctx), target.clone(), Report::new(peer, place, watch.clone()));
            move || client::forward(app, &target, &ctx, report)
        };
        let refuse = |app: TcpStream, why: &Refused| {
            metrics::refused(why.into());
            drop(app);
        };
        let thread = thread::Builder::new().name(format!("forward {addr}")).stack_size(THREAD_STACK);
        thread.spawn(move || acceptor.serve(admit, refuse))
    }
}

/// The stack of a forward's thread.
const THREAD_STACK: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_is_a_listen_address_and_a_target() {
        let f = Forward::parse("127.0.0.1:5353=1.1.1.1:53").unwrap();
        assert_eq!((f.listen.as_str(), f.target.to_string()), ("127.0.0.1:5353", "1.1.1.1:53".into()));
        let f = Forward::parse("[::1]:8080=example.com:80").unwrap();
        assert_eq!((f.listen.as_str(), &f.target), ("[::1]:8080", &Target::Domain("example.com".into(), 80)));
        assert_eq!(f.to_string(), "[::1]:8080=example.com:80");
        assert!(Forward::parse("localhost:0=[2001:db8::1]:443").is_some(), "port 0: a free one");
        for bad in [
            "",
            "=",
            "127.0.0.1:53",
            "127.0.0.1:53=",
            "=1.1.1.1:53",
            "5353=1.1.1.1:53",
            "127.0.0.1:53=1.1.1.1",
        ] {
            assert_eq!(Forward::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Forward::parse("127.0.0.1:53=1.1.1.1:0"), None, "a target on port 0");
    }
}
