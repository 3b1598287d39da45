//! One client of the local, from its first byte to the start of its relay.
//!
//! On the client's own setup thread: the first byte, peeked under the
//! handshake deadline, names the protocol (0x05 SOCKS5, 0x04 SOCKS4, an
//! ASCII letter HTTP; anything else is closed), whose parser then reads the
//! request from the start: the SOCKS5 greeting, login (when users are
//! configured) and request, a SOCKS4 request, or an HTTP request head. Then
//! the target's route ([`super::route`]): a blocked one gets the protocol's
//! refusal, a direct one a connect from the local itself and the relay
//! (`direct`); a proxied one, as below. For a proxied client, a link to a
//! server: a ready one from the [`Pool`], or TCP and TLS to the
//! server a new client goes to, and failing that to the next one, under the
//! connect deadline ([`super::upstream`]); a failure becomes the client
//! protocol's answer for it. Then the success reply, and the header in one
//! TLS record with whatever the application has already sent (after a
//! forwarded HTTP request's rewritten head), and the relay. After its
//! request the local never waits for the application to speak first, so
//! server-first protocols (SMTP, FTP, MySQL) work.
//!
//! A forwarded HTTP request is one request per connection: what the client
//! sends after its head goes through an [`http::Body`], in the first record
//! and then in the relay's client-to-server direction ([`relay::Message`]),
//! so only the request's body goes upstream and nothing after it; a body
//! whose framing breaks before the first record gets 400 and nothing is
//! sent, and one that breaks later ends the connection, reset both ways.
//!
//! A client that fails before it is told its tunnel is up is closed gently
//! ([`close_gently`]): it reads the answer it was given before the close.
//!
//! A fixed forward's client ([`forward`]) skips the request: its target is
//! the forward's, and it goes through a server as a proxied SOCKS5 client
//! does, answered with nothing. A redirected client ([`redirected`]) skips
//! it too: its target is its original destination, routed as a SOCKS5
//! client's would be, and it is answered with nothing either.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::admission::Place;
use crate::conn::end::{Break, End, Hop, Side, Step};
use crate::conn::relay::{self, Leg, Owed};
use crate::conn::udp;
use crate::conn::{Outcome, Report, Timeouts};
use crate::current::Current;
use crate::error::Error;
use crate::net::deadline::{close_gently, Arrived, Buffered, Deadline};
use crate::net::dial;
use crate::net::limits::{FDS_PER_CONNECTION, FDS_PER_LOCAL_ASSOCIATION};
use crate::proto::acl::Route;
use crate::proto::addr::Target;
use crate::proto::failure::Failure;
use crate::proto::sniff::{self, Sniffed, SNIFF_MAX};
use crate::proto::socks5::{self, Request};
use crate::proto::users::User;
use crate::proto::wire::{self, Command, TrojanHash, HEADER_MAX};
use crate::proto::{http, socks4};
use crate::text::Escaped;

use super::pool::Pool;
use super::route::{self, Router, Taken};
use super::upstream::{Link, Unreachable, Upstreams};

/// What every client of one local shares.
pub struct Context {
    /// Deadlines of each connection.
    pub timeouts: Timeouts,
    /// The users and the password in force; a reload replaces them.
    pub secrets: Arc<Current<Secrets>>,
    /// The servers and their state.
    pub upstreams: Arc<Upstreams>,
    /// Ready connections, when the local keeps any.
    pub pool: Option<Arc<Pool>>,
    /// Where each connection goes.
    pub router: Arc<Router>,
}

impl Context {
    /// Once a client is served: the pool's connection it took, replaced by
    /// this thread ([`Pool::refill`]).
    fn refill(&self) {
        if let Some(pool) = &self.pool {
            pool.refill();
        }
    }
}

/// What a client's login is checked against and what the server is told,
/// as loaded at start or by the last reload. A connection takes them once,
/// when it starts.
pub struct Secrets {
    /// When not empty, clients must log in as one of these (SOCKS5, HTTP Basic).
    pub users: Vec<User>,
    /// With a password, the trojan header; without, the seed header.
    pub password: Option<TrojanHash>,
}

/// Serves one client, up to the start of its relay (which then owns
/// `report`): the entry point of every connection the local accepts.
pub fn serve(app: TcpStream, ctx: &Context, mut report: Report) {
    let secrets = ctx.secrets.get();
    match handshake(&app, &secrets, ctx.timeouts.handshake, &mut report) {
        Ok(ask @ Ask::Udp(_)) => associate(app, &ask, ctx, &secrets, report),
        Ok(ask) => tunnel(app, ask, ctx, &secrets, report),
        Err(end) => refused(&app, report, end),
    }
    ctx.refill();
}

/// Serves one client of a fixed forward (`--forward`), up to the start of
/// its relay: no request to read, the target fixed, always through a
/// server (the ACL does not apply). The link, the header with whatever the
/// client has sent already, the relay and the close line are a proxied
/// SOCKS5 client's, with `proto=forward`; a client whose tunnel cannot be
/// opened sees its connection close.
pub fn forward(app: TcpStream, target: &Target, ctx: &Context, mut report: Report) {
    let secrets = ctx.secrets.get();
    report.proto(FORWARD);
    log::debug!("#{} forward to {target}", report.id);
    report.target(target);
    route::count(Route::Proxy);
    report.route(Route::Proxy.name());
    proxied(app, Ask::Fixed(target.clone()), ctx, &secrets, report);
    ctx.refill();
}

/// A fixed forward's connections and flows, in logs (`proto=forward`).
pub const FORWARD: &str = "forward";

/// Serves one connection a firewall sent to a transparent listener
/// (`--redir`, `--tproxy`), up to the start of its relay: no request to
/// read; its target is its original destination, `dst`, routed by the ACL
/// as a SOCKS5 client's request for it would be (direct, through a server,
/// or blocked: closed). With `--sniff`, the name its first bytes carry
/// (`proto::sniff`) is the target instead: the ACL's domain rules decide (its
/// IP rules, by `dst`, when none matches), a server is sent the name to
/// resolve, and a direct connection goes to `dst`. Whatever the client has
/// sent already goes with the header (or to the target), and the close
/// line is a SOCKS5 client's with `proto=redir` or `proto=tproxy` and
/// `dst=` the original destination.
pub fn redirected(app: TcpStream, dst: SocketAddr, how: Transparent, ctx: &Context, mut report: Report) {
    let secrets = ctx.secrets.get();
    report.proto(how.proto);
    report.dst(dst);
    let (name, head) = match how.sniff {
        true => match sniffed(&app, ctx.timeouts.handshake.min(SNIFF_WAIT)) {
            Ok(found) => found,
            Err(e) => {
                report.target(&Target::Ip(dst));
                return refused(&app, report, End::Failed(Step::Client, Error::Io(e)));
            }
        },
        false => (None, Vec::new()),
    };
    let target = match name {
        Some(name) => {
            log::debug!("#{} {} to {dst} is for {}", report.id, how.proto, Escaped(&name));
            Target::Domain(name, dst.port())
        }
        None => Target::Ip(dst),
    };
    tunnel(app, Ask::Redirected { target, dst, head }, ctx, &secrets, report);
    ctx.refill();
}

/// How a transparent listener's connections are served.
#[derive(Clone, Copy, Debug)]
pub struct Transparent {
    /// Their `proto=` in logs: `redir` or `tproxy`.
    pub proto: &'static str,
    /// `--sniff`: route by the name their first bytes carry.
    pub sniff: bool,
}

/// How long `--sniff` waits for a connection's first bytes (within the
/// handshake timeout): a client that speaks first (TLS, HTTP) sends them
/// with its first packet, a server-first protocol (SMTP, FTP) sends none
/// and waits this long, then goes by its address.
pub const SNIFF_WAIT: Duration = Duration::from_millis(300);

/// The name a transparent connection's first bytes carry ([`sniff::sniff`]),
/// and those bytes: read until they have a name or cannot, or until
/// [`SNIFF_MAX`] of them, an end, or `wait` has passed. The bytes go on to
/// the target as they came.
fn sniffed(app: &TcpStream, wait: Duration) -> io::Result<(Option<String>, Vec<u8>)> {
    let mut buf = vec![0u8; SNIFF_MAX];
    let mut got = 0;
    let mut io = Deadline::new(app, Instant::now() + wait);
    let name = loop {
        match sniff::sniff(&buf[..got]) {
            Sniffed::Name(name) => break Some(name),
            Sniffed::None => break None,
            Sniffed::NeedMore if got == SNIFF_MAX => break None,
            Sniffed::NeedMore => {}
        }
        match io.read(&mut buf[got..]) {
            Ok(0) => break None,
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    buf.truncate(got);
    Ok((name, buf))
}

/// The protocols served on the one port, told apart by the client's first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// 0x05.
    Socks5,
    /// 0x04, SOCKS4 and SOCKS4a.
    Socks4,
    /// An ASCII letter: the first of a method.
    Http,
}

impl Proto {
    /// The protocol a client whose first byte is `first` speaks, if it is one served.
    pub fn of(first: u8) -> Option<Proto> {
        match first {
            socks5::SOCKS_VERSION => Some(Proto::Socks5),
            socks4::SOCKS4_VERSION => Some(Proto::Socks4),
            b if b.is_ascii_alphabetic() => Some(Proto::Http),
            _ => None,
        }
    }

    /// Its name in logs (`proto=` of the close line).
    pub fn name(self) -> &'static str {
        match self {
            Proto::Socks5 => "socks5",
            Proto::Socks4 => "socks4",
            Proto::Http => "http",
        }
    }

    /// The step its parser is, in an end.
    fn step(self) -> Step {
        match self {
            Proto::Socks5 => Step::Socks5,
            Proto::Socks4 => Step::Socks4,
            Proto::Http => Step::Http,
        }
    }
}

/// What a client asked for, in its protocol: where to, how to answer, and
/// (a forwarded HTTP request) the head to send first and how its body is framed.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    /// With what the client sent after its request, read along with it.
    Socks5(Target, Vec<u8>),
    Socks4(Target),
    Connect(Target),
    Forward(Target, Vec<u8>, http::Framing),
    /// SOCKS5 UDP ASSOCIATE (with a password); datagrams will come from this address.
    Udp(Target),
    /// A fixed forward's (`--forward`) client: no request, nothing to answer.
    Fixed(Target),
    /// A transparent listener's client: no request, nothing to answer. Its
    /// target is its original destination, `dst`, or the name it sniffed;
    /// `head`, what it has sent already, goes first.
    Redirected {
        target: Target,
        dst: SocketAddr,
        head: Vec<u8>,
    },
}

impl Ask {
    /// Where the tunnel goes (for UDP, where datagrams come from).
    fn target(&self) -> &Target {
        match self {
            Ask::Socks5(t, _)
            | Ask::Socks4(t)
            | Ask::Connect(t)
            | Ask::Forward(t, ..)
            | Ask::Udp(t)
            | Ask::Fixed(t)
            | Ask::Redirected { target: t, .. } => t,
        }
    }

    /// The answer once the tunnel is up (none for a forwarded request, whose
    /// upstream answers; UDP names its socket, see [`socks5::reply_bound`]).
    fn grant(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            Ask::Socks5(..) => socks5::reply(w, socks5::REP_SUCCEEDED),
            Ask::Socks4(_) => socks4::reply(w, socks4::REQUEST_GRANTED),
            Ask::Connect(_) => w.write_all(http::ESTABLISHED),
            Ask::Forward(..) | Ask::Udp(_) | Ask::Fixed(_) | Ask::Redirected { .. } => Ok(()),
        }
    }

    /// The answer when the tunnel cannot be opened (a forward's client
    /// has none: it sees its connection close).
    fn refuse(&self, w: &mut impl Write, failure: Failure) -> io::Result<()> {
        match self {
            Ask::Socks5(..) | Ask::Udp(_) => socks5::reply(w, socks5::reply_code(failure)),
            Ask::Socks4(_) => socks4::reply(w, socks4::REQUEST_REJECTED),
            Ask::Connect(_) | Ask::Forward(..) => w.write_all(&http::response(http::Status::of(failure))),
            Ask::Fixed(_) | Ask::Redirected { .. } => Ok(()),
        }
    }
}

/// Reads the client's request in the protocol its first byte names, under
/// the `handshake` deadline. A request not served has been answered where
/// the protocol has an answer (a refused login is logged at warn).
fn handshake(app: &TcpStream, secrets: &Secrets, timeout: Duration, report: &mut Report) -> Result<Ask, End> {
    let id = report.id;
    let mut io = Deadline::new(app, Instant::now() + timeout);
    let mut first = [0u8; 1];
    let proto = match io.peek(&mut first) {
        Ok(0) => return Err(End::ClosedBeforeRequest),
        Ok(_) => Proto::of(first[0]),
        Err(e) => return Err(End::Failed(Step::Client, Error::Io(e))),
    };
    let Some(proto) = proto else {
        log::debug!("#{id} unknown protocol: first byte {:#04x}", first[0]);
        return Err(End::UnknownProtocol(first[0]));
    };
    let name = proto.name();
    report.proto(name);
    let asked = match proto {
        Proto::Socks5 => {
            // The greeting and the request in one read each, not one per field.
            let mut io = Buffered::new(&mut io);
            let asked = socks5::accept_request(&mut io, &secrets.users, secrets.password.is_some());
            asked.map(|r| match r {
                Request::Connect(t) => Ask::Socks5(t, io.rest()),
                // The control connection carries nothing after its request.
                Request::UdpAssociate(from) => Ask::Udp(from),
            })
        }
        Proto::Socks4 => socks4::accept(&mut io, !secrets.users.is_empty()).map(Ask::Socks4),
        Proto::Http => http::accept(&mut io, &secrets.users).map(|r| match r {
            http::Request::Connect(t) => Ask::Connect(t),
            http::Request::Forward { target, head, framing } => Ask::Forward(target, head, framing),
        }),
    };
    asked.map_err(|e| {
        match &e {
            Error::Denied(_) => log::warn!("#{id} {name} client {}: {e}", report.peer()),
            _ => log::debug!("#{id} {name} failed: {e}"),
        }
        End::Failed(proto.step(), e)
    })
}

/// Ends a client that failed before it was told its tunnel is up.
fn refused(app: &TcpStream, report: Report, end: End) {
    close_gently(app);
    report.end(end);
}

/// The most application bytes sent along with the header in its first record.
const EARLY_DATA_MAX: usize = 16 * 1024 - HEADER_MAX;

/// Opens a client's tunnel where its route says: straight to the target,
/// through a server, or nowhere (the client gets its protocol's refusal:
/// SOCKS5 0x02, SOCKS4 0x5B, HTTP 403).
fn tunnel(app: TcpStream, ask: Ask, ctx: &Context, secrets: &Secrets, mut report: Report) {
    log::debug!("#{} connect {}", report.id, ask.target());
    report.target(ask.target());
    let route = match &ask {
        Ask::Redirected { target: Target::Domain(name, _), dst, .. } => ctx.router.route_sniffed(name, *dst),
        _ => ctx.router.route(ask.target(), Instant::now() + ctx.timeouts.connect, report.place()),
    };
    route::count(route);
    report.route(route.name());
    match route {
        Route::Proxy => proxied(app, ask, ctx, secrets, report),
        Route::Direct => direct(app, ask, ctx, report),
        Route::Block => {
            let until = Instant::now() + ctx.timeouts.handshake;
            let _ = ask.refuse(&mut Deadline::new(&app, until), Failure::NotAllowed);
            refused(&app, report, End::Blocked);
        }
    }
}

/// Opens a client's tunnel through a server: a link to a server, the
/// success reply, the header with the first bytes, and the relay.
fn proxied(app: TcpStream, ask: Ask, ctx: &Context, secrets: &Secrets, mut report: Report) {
    let mut link = match link(&app, &ask, ctx, &report) {
        Ok(link) => link,
        Err(end) => return refused(&app, report, end),
    };
    let (body, due) = match granted(&app, ask, &mut link, secrets, &ctx.timeouts, &mut report) {
        Ok(answers) => answers,
        Err(end) => return report.end(end),
    };
    // A forwarded request's client gets a 502 should the server end without
    // a byte, rather than an empty reply.
    let silence = body.as_ref().map(|_| http::SILENT_TUNNEL);
    let client = match body {
        Some(body) => Leg::tcp_message(app, Box::new(body)),
        None => Leg::tcp(app),
    };
    let (server, upstreams) = (link.server, Arc::clone(&ctx.upstreams));
    let owed = due.map(|by| Owed {
        by,
        answer: silence.map(|_| http::SILENT_SERVER),
        prompt: upstreams.prompt(server),
    });
    let name = upstreams.server(server).addr.to_string();
    report.live().describe(|a| a.server = Some(name));
    let legs = (client.counting(report.relaying()), Leg::tls(link.sock, link.conn));
    relay::relay_expecting_answer(
        legs.0,
        legs.1,
        [Side::Client, Side::Server],
        &ctx.timeouts,
        silence,
        owed,
        move |mut out| {
            if let Some(why) = server_fault(&out) {
                upstreams.failed(server, why);
            }
            // Sent something, got nothing back: the server ended the tunnel
            // first, and its close line says how (the relay's end, for a
            // tunnel, only says that both ways ended).
            if out.down == 0 && report.up + out.up > 0 {
                out.end = match out.end {
                    End::Eof => End::NoReply(Side::Server, None),
                    End::Broke(Side::Server, b) => End::NoReply(Side::Server, Some(b)),
                    end => end,
                };
            }
            report.finish(out)
        },
    );
}

/// Opens a client's tunnel straight to its target, from the local itself:
/// the connect (every address the name resolves to, IPv6 and IPv4 raced
/// as RFC 8305 says) under the connect deadline, the success reply, and
/// the relay. A target that cannot be reached gets the client protocol's
/// answer for why. A forwarded request's head goes with whatever of its
/// body has arrived, checked first as on the way through a server
/// ([`granted`]): a body whose framing is already broken gets 400, and
/// nothing is sent.
fn direct(app: TcpStream, ask: Ask, ctx: &Context, mut report: Report) {
    let until = Instant::now() + ctx.timeouts.connect;
    // A transparent connection goes where it was going, whatever name it carries.
    let to = match &ask {
        Ask::Redirected { dst, .. } => Target::Ip(*dst),
        _ => ask.target().clone(),
    };
    let target = match dial::connect(&to, until, None, report.place()) {
        Ok(target) => target,
        Err(e) => {
            let until = Instant::now() + ctx.timeouts.handshake;
            let _ = ask.refuse(&mut Deadline::new(&app, until), Failure::of(&e));
            if e.is_exhaustion() {
                log::warn!("#{} out of resources here, not at the target: {e}", report.id);
                return refused(&app, report, End::Failed(Step::Local, e));
            }
            log::debug!("#{} cannot reach {} directly: {e}", report.id, ask.target());
            return refused(&app, report, End::Unreachable(Hop::Target, e));
        }
    };
    let until = Instant::now() + ctx.timeouts.handshake;
    let client = |e: io::Error| End::Failed(Step::Client, Error::Io(e));
    if let Err(e) = ask.grant(&mut Deadline::new(&app, until)) {
        return report.end(client(e));
    }
    let (client, silence) = match ask {
        Ask::Forward(_, head, framing) => {
            let mut body = http::Body::new(framing);
            let mut early = [0u8; EARLY_DATA_MAX];
            let first = match read_ready(&app, &mut early).map_err(client).and_then(|n| {
                body.pass(&mut early[..n]).map_err(|e| {
                    log::debug!("#{} http failed: {e}", report.id);
                    let _ = Deadline::new(&app, until).write_all(&http::response(http::Status::BadRequest));
                    close_gently(&app);
                    End::Failed(Step::Http, e)
                })
            }) {
                Ok(n) => [&head[..], &early[..n]].concat(),
                Err(end) => return report.end(end),
            };
            if let Err(e) = Deadline::new(&target, until).write_all(&first) {
                return report.end(End::Unreachable(Hop::Target, Error::Io(e)));
            }
            report.up = first.len() as u64;
            (Leg::tcp_message(app, Box::new(body)), Some(http::SILENT_UPSTREAM))
        }
        Ask::Redirected { head, .. } | Ask::Socks5(_, head) => {
            if let Err(e) = Deadline::new(&target, until).write_all(&head) {
                return report.end(End::Unreachable(Hop::Target, Error::Io(e)));
            }
            report.up = head.len() as u64;
            (Leg::tcp(app), None)
        }
        _ => (Leg::tcp(app), None),
    };
    relay::relay_answering_silence(
        client.counting(report.relaying()),
        Leg::tcp(target),
        [Side::Client, Side::Target],
        &ctx.timeouts,
        silence,
        move |out| report.finish(out),
    );
}

/// A link to a server for the client of `ask`: see [`reach`]. When no
/// server can be reached, the client is answered in its protocol.
fn link(app: &TcpStream, ask: &Ask, ctx: &Context, report: &Report) -> Result<Link, End> {
    reach(ctx, report.place(), report.id, true).map_err(|(end, failure)| {
        let until = Instant::now() + ctx.timeouts.handshake;
        let _ = ask.refuse(&mut Deadline::new(app, until), failure);
        end
    })
}

/// A link to a server for the connection `#id`, which holds `place`: a
/// ready one from the pool, or a new one. With `replace_here`, the calling
/// thread replaces a ready connection it takes once its client's relay runs
/// (the module's entry points call `Context::refill`); else a filler does.
/// When no server can be reached, the connection's end (logged) and the
/// failure its client is told of.
pub fn reach(ctx: &Context, place: &Place, id: u64, replace_here: bool) -> Result<Link, (End, Failure)> {
    let take = if replace_here { Pool::take_to_replace } else { Pool::take };
    let ready = ctx.pool.as_deref().and_then(take);
    let linked = ready.map_or_else(|| ctx.upstreams.connect(Some(place)), Ok);
    linked.map_err(|Unreachable { server, error }| {
        let failure = Failure::of(&error);
        if error.is_exhaustion() {
            log::warn!("#{id} out of resources here, not at server {server}: {error}");
            return (End::Failed(Step::Local, error), failure);
        }
        log::warn!("#{id} cannot reach server {server}: {error}");
        (End::Unreachable(Hop::Server(server), error), failure)
    })
}

/// Once a server is linked: tells the client its tunnel is up, then sends
/// the header and, in the same record, the forwarded request's head and
/// whatever the client has sent already (without waiting for more): for a
/// forwarded request, only what its [`http::Body`] passes. A body whose
/// framing is already broken gets 400, and nothing is sent. Returns that
/// body, to pass the rest of the client's bytes through in the relay, and
/// when the server's answer is due: before the header goes a TLS 1.3 key
/// update that asks for one back, which blocking-server sends as it reads
/// the header, whatever its target does. Nothing back by then is a server
/// gone silent (a stalled process, a middlebox that let the handshake
/// through and drops the rest): see [`relay::Owed`].
fn granted(
    app: &TcpStream,
    ask: Ask,
    link: &mut Link,
    secrets: &Secrets,
    timeouts: &Timeouts,
    report: &mut Report,
) -> Result<Answers, End> {
    let until = Instant::now() + timeouts.handshake;
    let client = |e: io::Error| End::Failed(Step::Client, Error::Io(e));
    ask.grant(&mut Deadline::new(app, until)).map_err(client)?;
    let (target, head, mut body) = match ask {
        Ask::Forward(target, head, framing) => (target, head, Some(http::Body::new(framing))),
        Ask::Redirected { target, head, .. } | Ask::Socks5(target, head) => (target, head, None),
        Ask::Socks4(t) | Ask::Connect(t) | Ask::Udp(t) | Ask::Fixed(t) => (t, Vec::new(), None),
    };
    // On this short-lived thread's stack, not the heap: the connection keeps none of it.
    let mut early = [0u8; EARLY_DATA_MAX];
    let room = EARLY_DATA_MAX.saturating_sub(head.len());
    // A reset now must not turn into a clean end upstream: the tunnel is dropped unopened.
    let mut arrived = read_ready(app, &mut early[..room]).map_err(client)?;
    if let Some(body) = &mut body {
        arrived = body.pass(&mut early[..arrived]).map_err(|e| {
            log::debug!("#{} http failed: {e}", report.id);
            let _ = Deadline::new(app, until).write_all(&http::response(http::Status::BadRequest));
            close_gently(app);
            End::Failed(Step::Http, e)
        })?;
    }
    let early = &early[..arrived];
    let mut first = Vec::with_capacity(HEADER_MAX + head.len() + early.len());
    wire::encode_connect(secrets.password.as_ref(), &target, &mut first);
    // The seed format's header goes in a record of its own: the seed's
    // server reads it, then waits for the socket to be readable before the
    // next read, and would never see bytes already decrypted with it. A
    // trojan header shares the first record with what follows, as trojan
    // clients send it (the server decides on that record).
    let header = if secrets.password.is_some() { 0 } else { first.len() };
    first.extend_from_slice(&head);
    first.extend_from_slice(early);
    let (header, rest) = first.split_at(header);
    // TLS 1.2 has no key update: then nothing is owed.
    let asked = link.conn.refresh_traffic_keys().is_ok();
    link.send(&[header, rest], until).map_err(|e| End::Failed(Step::Server, e))?;
    report.up = (head.len() + early.len()) as u64;
    Ok((body, asked.then(|| Instant::now() + timeouts.connect)))
}

/// A forwarded request's body, as the relay's client-to-server direction
/// passes it. A body that breaks its framing there ends the connection as
/// `client: request body: …` (the head has gone upstream: no 400 now).
impl relay::Message for http::Body {
    fn pass(&mut self, bytes: &mut [u8]) -> io::Result<usize> {
        http::Body::pass(self, bytes).map_err(|e| {
            let why = match e {
                Error::Protocol(why) => why.to_owned(),
                other => other.to_string(),
            };
            io::Error::new(io::ErrorKind::InvalidData, format!("request body: {why}"))
        })
    }
}

/// A forwarded request's body, and when the server's answer to the key
/// update is due: see [`granted`].
type Answers = (Option<http::Body>, Option<Instant>);

/// Whether a relay's end says that the server, not the target, failed, and
/// why: it broke the connection off (a reset, a TCP end without
/// close_notify, a TLS error) before it sent a byte, while the client was
/// still there, or it said nothing at all in time ([`Break::Silent`]). A
/// slow server (a write that timed out) is not counted.
fn server_fault(out: &Outcome) -> Option<&'static str> {
    match &out.end {
        _ if out.down > 0 => None,
        End::Broke(Side::Server, Break::Silent) | End::NoReply(Side::Server, Some(Break::Silent)) => {
            Some("no answer to a key update within the connect timeout")
        }
        End::Broke(Side::Server, b) | End::NoReply(Side::Server, Some(b))
            if !matches!(b, Break::WriteTimedOut) =>
        {
            Some("a connection was cut before any reply byte (if every one is, check that both sides have the same password, or both none)")
        }
        _ => None,
    }
}

/// Reads what `sock` has already received into `buf`, without waiting;
/// returns its length (0 when nothing has arrived yet).
fn read_ready(sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    match Arrived(sock).read(buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        other => other,
    }
}

/// Serves a UDP ASSOCIATE: a UDP socket of its own on the listener's
/// address for the client's datagrams, one TLS connection to the server
/// whose trojan header asks for UDP, the success reply naming the socket,
/// then the association's two threads (see [`crate::conn::udp`]). The
/// request (`ask`, a [`Ask::Udp`]) names where the client's datagrams will
/// come from: its port, when not 0, is the only one accepted, and port 0
/// binds the association to the first port that sends; the address is
/// always the control connection's own.
fn associate(app: TcpStream, ask: &Ask, ctx: &Context, secrets: &Secrets, mut report: Report) {
    report.udp();
    let opened = match open_udp(&app, ask, ctx, secrets, &report) {
        Ok(opened) => opened,
        Err(end) => return refused(&app, report, end),
    };
    let until = Instant::now() + ctx.timeouts.handshake;
    if let Err(e) = socks5::reply_bound(&mut Deadline::new(&app, until), opened.bound) {
        return report.end(End::Failed(Step::Client, Error::Io(e)));
    }
    log::debug!("#{} udp association on {} for {}", report.id, opened.bound, opened.client);
    let taken = Arc::new(Taken::default());
    let routing =
        ctx.router.acl.get().is_some().then(|| udp_routing(ask.target(), ctx, secrets, &report, &taken));
    let client = udp::Client {
        control: app,
        udp: opened.udp,
        ip: opened.client.ip(),
        port: ask.target().port(),
        routing,
        place: report.place().clone(),
    };
    let Link { sock, conn, .. } = opened.link;
    // Listed with its target; its bytes show in its close line.
    let _ = report.relaying();
    udp::local(client, sock, conn, &ctx.timeouts, move |out| {
        // Without an ACL, every datagram went through the server.
        let proxied = out.datagrams.is_some_and(|[up, ..]| up > 0);
        report.route(if taken.name() == "-" && proxied { "proxy" } else { taken.name() });
        report.finish(out)
    });
}

/// How an association with an ACL routes its datagrams: each target's
/// route, decided once per association (and counted per datagram, and
/// noted in `taken` for the close line), and a new link to a server, its
/// header asking for UDP for `from`, when the last one has ended.
fn udp_routing(
    from: &Target,
    ctx: &Context,
    secrets: &Secrets,
    report: &Report,
    taken: &Arc<Taken>,
) -> udp::Routing {
    let (router, noted, place, connect) =
        (Arc::clone(&ctx.router), Arc::clone(taken), report.place().clone(), ctx.timeouts.connect);
    let mut decided: HashMap<String, Route> = HashMap::new();
    let route: udp::RouteFn = Box::new(move |target| {
        let key = target.to_string();
        let route = match decided.get(&key) {
            Some(route) => *route,
            None => {
                let route = router.route(target, Instant::now() + connect, &place);
                if decided.len() >= ROUTES_REMEMBERED {
                    decided.clear();
                }
                decided.insert(key, route);
                route
            }
        };
        route::count_datagram(route);
        noted.note(route);
        route
    });
    let (upstreams, pool, place) = (Arc::clone(&ctx.upstreams), ctx.pool.clone(), report.place().clone());
    let (hash, from, handshake) = (secrets.password, from.clone(), ctx.timeouts.handshake);
    let relink: udp::Relink = Box::new(move || {
        let hash = hash.ok_or(Error::Protocol("udp needs a password"))?;
        let ready = pool.as_deref().and_then(Pool::take);
        let mut link = ready.map_or_else(|| upstreams.connect(Some(&place)), Ok).map_err(|u| u.error)?;
        let mut header = Vec::with_capacity(HEADER_MAX);
        wire::encode_trojan_request(&hash, Command::UdpAssociate, &from, &mut header);
        link.send(&[&header], Instant::now() + handshake)?;
        Ok((link.sock, link.conn.into()))
    });
    udp::Routing { route, relink }
}

/// The most targets whose route an association remembers.
const ROUTES_REMEMBERED: usize = 256;

/// An association ready for its success reply.
struct OpenUdp {
    /// The socket the client sends its datagrams to,
    udp: UdpSocket,
    /// at this address.
    bound: SocketAddr,
    /// The client's address, as its control connection shows it.
    client: SocketAddr,
    /// The link to the server, whose header asked for UDP.
    link: Link,
}

/// Everything an association needs before its client is told it is up:
/// the client's UDP socket, a link to a server and the trojan header that
/// asks it for UDP. A failure has been answered with its reply code.
fn open_udp(
    app: &TcpStream,
    ask: &Ask,
    ctx: &Context,
    secrets: &Secrets,
    report: &Report,
) -> Result<OpenUdp, End> {
    let until = Instant::now() + ctx.timeouts.handshake;
    let fail = |failure| {
        let _ = socks5::reply(&mut Deadline::new(app, until), socks5::reply_code(failure));
    };
    let (Ok(here), Ok(client), Some(hash)) = (app.local_addr(), app.peer_addr(), secrets.password) else {
        fail(Failure::General);
        return Err(End::NoUdp);
    };
    // Its UDP socket is one descriptor more than a TCP connection holds.
    report.place().hold((FDS_PER_LOCAL_ASSOCIATION - FDS_PER_CONNECTION) as usize).map_err(|why| {
        fail(Failure::General);
        End::Refused(why)
    })?;
    let udp = UdpSocket::bind(SocketAddr::new(here.ip(), 0)).map_err(|e| {
        fail(Failure::General);
        End::Failed(Step::Udp, Error::Io(e))
    })?;
    let bound = udp.local_addr().unwrap_or(here);
    let mut link = link(app, ask, ctx, report)?;
    let mut header = Vec::with_capacity(HEADER_MAX);
    wire::encode_trojan_request(&hash, Command::UdpAssociate, ask.target(), &mut header);
    link.send(&[&header], until).map_err(|e| {
        fail(Failure::of(&e));
        End::Failed(Step::Server, e)
    })?;
    Ok(OpenUdp { udp, bound, client, link })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::admission::Gate;
    use crate::conn::end::Hop;
    use crate::net::testing::{socket_pair, TIMEOUT};

    #[test]
    fn sniffing_reads_a_name_sent_one_byte_at_a_time_and_keeps_every_byte_read() {
        let (mut client, app) = client_and_app();
        let sent =
            b"GET / HTTP/1.1\r\nHost: Example.COM:8080\r\nAccept: */*\r\n\r\nbody after the head".to_vec();
        let head_len = sent.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let writer = std::thread::spawn({
            let sent = sent.clone();
            move || {
                for b in &sent {
                    client.write_all(&[*b]).unwrap();
                }
                client
            }
        });
        let (name, got) = sniffed(&app, TIMEOUT).unwrap();
        assert_eq!(name.as_deref(), Some("example.com"));
        assert!(got.len() >= head_len && sent.starts_with(&got), "{got:?}");
        let _client = writer.join().unwrap();
    }

    #[test]
    fn sniffing_gives_up_on_silence_and_on_bytes_that_carry_no_name() {
        let (_client, app) = client_and_app();
        assert_eq!(sniffed(&app, Duration::from_millis(50)).unwrap(), (None, Vec::new()), "server-first");
        let (mut client, app) = client_and_app();
        client.write_all(b"\x00\x01binary").unwrap();
        let (name, got) = sniffed(&app, TIMEOUT).unwrap();
        assert_eq!(name, None);
        assert!(b"\x00\x01binary".starts_with(&got) && !got.is_empty(), "{got:?}");
        let (mut client, app) = client_and_app();
        client.write_all(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n").unwrap();
        assert_eq!(sniffed(&app, TIMEOUT).unwrap().0, None, "no Host");
    }

    /// A client's socket and the local's end of it, on loopback.
    fn client_and_app() -> (TcpStream, TcpStream) {
        socket_pair()
    }

    fn report(app: &TcpStream) -> Report {
        let peer = app.peer_addr().unwrap();
        Report::new(peer, Gate::new(1, None).enter(peer.ip()).unwrap(), None)
    }

    fn secrets(users: &[&str], password: bool) -> Secrets {
        let users = users.iter().map(|u| User::parse(u).unwrap()).collect();
        Secrets { users, password: password.then(|| wire::trojan_hash("pw")) }
    }

    /// What the handshake makes of `input`, sent by a client in one write.
    fn handshake_of(input: &[u8], secrets: &Secrets, timeout: Duration) -> Result<Ask, End> {
        handshake_and_rest(input, secrets, timeout).0
    }

    /// The same, and the bytes the handshake left unread.
    fn handshake_and_rest(input: &[u8], secrets: &Secrets, timeout: Duration) -> (Result<Ask, End>, Vec<u8>) {
        let (mut client, app) = client_and_app();
        client.write_all(input).unwrap();
        let mut report = report(&app);
        let asked = handshake(&app, secrets, timeout, &mut report);
        let mut rest = [0u8; 64];
        let n = read_ready(&app, &mut rest).unwrap();
        (asked, rest[..n].to_vec())
    }

    #[test]
    fn the_first_byte_names_the_protocol() {
        assert_eq!(Proto::of(5), Some(Proto::Socks5));
        assert_eq!(Proto::of(4), Some(Proto::Socks4));
        for letter in [b'G', b'C', b'p', b'z'] {
            assert_eq!(Proto::of(letter), Some(Proto::Http), "{letter}");
        }
        for other in [0, 1, 3, 6, 0x16, b'0', b' ', 0xff] {
            assert_eq!(Proto::of(other), None, "{other:#04x}");
        }
    }

    #[test]
    fn each_protocol_is_read_from_the_first_byte_and_bytes_after_the_request_stay() {
        let open = secrets(&[], false);
        let socks5 = [&[5, 1, 0, 5, 1, 0, 3, 4][..], b"a.io", &[0, 80], b"early"].concat();
        let (asked, rest) = handshake_and_rest(&socks5, &open, TIMEOUT);
        let Ask::Socks5(target, read) = asked.unwrap() else { panic!("not socks5") };
        assert_eq!(target, Target::Domain("a.io".into(), 80));
        assert_eq!([read, rest].concat(), b"early", "read with the request, or left on the socket");
        let socks4 = [&[4, 1, 0, 80, 0, 0, 0, 1, 0][..], b"a.io\0"].concat();
        assert_eq!(
            handshake_of(&socks4, &open, TIMEOUT).unwrap(),
            Ask::Socks4(Target::Domain("a.io".into(), 80))
        );
        let connect = b"CONNECT a.io:443 HTTP/1.1\r\n\r\n\x16\x03\x01";
        let (asked, rest) = handshake_and_rest(connect, &open, TIMEOUT);
        assert_eq!(
            (asked.unwrap(), rest.as_slice()),
            (Ask::Connect(Target::Domain("a.io".into(), 443)), &[0x16, 3, 1][..])
        );
        let udp = [5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0];
        let with_password = secrets(&[], true);
        assert_eq!(
            handshake_of(&udp, &with_password, TIMEOUT).unwrap(),
            Ask::Udp(Target::Ip("0.0.0.0:0".parse().unwrap()))
        );
    }

    #[test]
    fn a_client_that_is_not_served_ends_with_its_reason() {
        let open = secrets(&[], false);
        let end =
            |input: &[u8], secrets: &Secrets| handshake_of(input, secrets, TIMEOUT).unwrap_err().to_string();
        assert_eq!(end(&[0x16, 3, 1], &open), "unknown protocol: first byte 0x16");
        assert_eq!(
            end(&[5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80], &open),
            "socks5: protocol: bind is not supported"
        );
        assert_eq!(
            end(&[5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0], &open),
            "socks5: protocol: udp associate needs a password on both sides (udp travels in the trojan format; the seed format has none)"
        );
        let users = secrets(&["alice:wonder"], false);
        assert!(
            end(&[4, 1, 0, 80, 1, 2, 3, 4, 0], &users).starts_with("socks4: denied: socks4 has no password")
        );
        assert_eq!(end(b"GET / HTTP/1.1\r\n\r\n", &open), "http: protocol: not an absolute http:// target");
    }

    #[test]
    fn a_client_that_closes_or_says_nothing_ends_before_its_protocol_is_known() {
        let (client, app) = client_and_app();
        drop(client);
        let mut r = report(&app);
        assert!(matches!(
            handshake(&app, &secrets(&[], false), TIMEOUT, &mut r),
            Err(End::ClosedBeforeRequest)
        ));
        let (_client, app) = client_and_app();
        let mut r = report(&app);
        let silent = handshake(&app, &secrets(&[], false), Duration::from_millis(50), &mut r).unwrap_err();
        assert_eq!(silent.to_string(), "client: deadline passed");
        let (mut client, app) = client_and_app();
        client.write_all(&[5, 1, 0]).unwrap();
        let mut r = report(&app);
        let cut = handshake(&app, &secrets(&[], false), Duration::from_millis(50), &mut r).unwrap_err();
        assert_eq!(cut.to_string(), "socks5: deadline passed", "the protocol is known from the first byte");
    }

    #[test]
    fn each_protocol_is_granted_and_refused_in_its_own_words() {
        let t = || Target::Domain("a.io".into(), 80);
        let granted = |ask: Ask| {
            let mut out = Vec::new();
            ask.grant(&mut out).unwrap();
            out
        };
        assert_eq!(granted(Ask::Socks5(t(), Vec::new())), [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(granted(Ask::Socks4(t())), [0, 90, 0, 0, 0, 0, 0, 0]);
        assert_eq!(granted(Ask::Connect(t())), http::ESTABLISHED);
        assert_eq!(
            granted(Ask::Forward(t(), b"GET / HTTP/1.1\r\n\r\n".to_vec(), http::Framing::None)),
            b"",
            "the upstream answers"
        );
        let refused = |ask: Ask, failure| {
            let mut out = Vec::new();
            ask.refuse(&mut out, failure).unwrap();
            out
        };
        assert_eq!(refused(Ask::Socks5(t(), Vec::new()), Failure::Refused), [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(refused(Ask::Udp(t()), Failure::TimedOut), [5, 6, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(refused(Ask::Socks4(t()), Failure::TimedOut), [0, 91, 0, 0, 0, 0, 0, 0]);
        let status = |out: Vec<u8>| String::from_utf8(out).unwrap().lines().next().unwrap().to_owned();
        assert_eq!(status(refused(Ask::Connect(t()), Failure::TimedOut)), "HTTP/1.1 504 Gateway Timeout");
        assert_eq!(
            status(refused(Ask::Forward(t(), Vec::new(), http::Framing::None), Failure::General)),
            "HTTP/1.1 502 Bad Gateway"
        );
    }

    #[test]
    fn what_has_arrived_is_read_without_waiting() {
        let (mut client, app) = client_and_app();
        let mut buf = [0u8; 16];
        assert_eq!(read_ready(&app, &mut buf).unwrap(), 0, "nothing yet, and no wait");
        client.write_all(b"early").unwrap();
        // The bytes are on loopback once the write returns; a read that must not wait finds them.
        let mut got = 0;
        let until = Instant::now() + TIMEOUT;
        while got == 0 && Instant::now() < until {
            got = read_ready(&app, &mut buf).unwrap();
        }
        assert_eq!(&buf[..got], b"early");
    }

    #[test]
    fn only_a_server_that_breaks_off_or_says_nothing_before_any_reply_byte_is_at_fault() {
        let out = |down, end| Outcome { up: 10, down, end, datagrams: None };
        let cut_before_reply = |out: &Outcome| server_fault(out).is_some();
        assert!(cut_before_reply(&out(0, End::Broke(Side::Server, Break::Silent))));
        assert!(cut_before_reply(&out(0, End::NoReply(Side::Server, Some(Break::Silent)))));
        assert!(cut_before_reply(&out(0, End::Broke(Side::Server, Break::Reset))));
        assert!(cut_before_reply(&out(0, End::Broke(Side::Server, Break::NoCloseNotify))));
        assert!(cut_before_reply(&out(0, End::NoReply(Side::Server, Some(Break::Reset)))));
        assert!(cut_before_reply(&out(
            0,
            End::Broke(Side::Server, Break::Error(Error::Tls(rustls::Error::DecryptError)))
        )));
        assert!(!cut_before_reply(&out(1, End::Broke(Side::Server, Break::Reset))), "it replied");
        assert!(!cut_before_reply(&out(0, End::Broke(Side::Client, Break::Reset))), "the client left");
        assert!(!cut_before_reply(&out(0, End::Broke(Side::Server, Break::WriteTimedOut))), "slow, not cut");
        assert!(!cut_before_reply(&out(0, End::NoReply(Side::Server, None))), "a clean end: the target's");
        assert!(!cut_before_reply(&out(0, End::Eof)));
        assert!(!cut_before_reply(&out(0, End::Idle)));
        let unreachable = End::Unreachable(Hop::Target, Error::Protocol("x"));
        assert!(!cut_before_reply(&out(0, unreachable)));
    }
}
