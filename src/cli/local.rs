//! blocking-local's command line: its flags read into [`LocalArgs`] (every
//! cross-check a unit test), the files they name read into a
//! [`Config`], and the run: bind, warn, serve until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use crate::conn::report::Watch;
use crate::current::Current;
use crate::error::Error;
use crate::local::client::Secrets;
use crate::local::dns::DnsArgs;
use crate::local::forward::Forward;
use crate::local::pool::{PoolSize, DEMAND_CAP};
use crate::local::transparent::Rule;
use crate::local::upstream::{Balance, Upstream};
use crate::local::{Config, Local};
use crate::metrics::Role;
use crate::net::dial;
use crate::net::limits::FDS_PER_CONNECTION;
use crate::proto::acl::Acl;
use crate::proto::addr::Target;
use crate::proto::wire::trojan_hash;
use crate::text::Escaped;
use crate::tls::config::{self as tls, Trust};

use super::common::{self, Caps, Common, Passwords, Users};
use super::exit::{usage, Exit};
use super::flags::{self, COMMON, LOCAL, LOCAL_LISTEN, POOL_AGE_SECS};
use super::signals::{self, Signals};

const PROG: &str = "blocking-local";
const ABOUT: &str =
    "SOCKS5, SOCKS4 and HTTP proxy that carries every connection over TLS to blocking-server.";

/// Runs blocking-local with the arguments `argv` (without the program's
/// name) until SIGTERM or SIGINT.
pub fn run(argv: &[String], signals: Signals) -> Result<(), Exit> {
    let args = LocalArgs::parse(argv)?;
    common::init_logging(args.common.log);
    let caps = caps(&args);
    let (max_conns, cap_from) = (caps.conns, caps.why.clone());
    let (local, reload) = bind(&args, &caps, None)?;
    let addr = local.local_addr().map_err(Error::Io)?;
    if let Trust::Insecure = args.trust {
        log::warn!("--insecure: the server's certificate is not verified; anyone on the path can read and change the traffic");
    }
    if !reload.login && !addr.ip().is_loopback() {
        log::warn!("no --user: anyone who reaches {addr} can use this proxy");
    }
    let stopper = local.stopper().map_err(Error::Io)?;
    common::serve_metrics(args.common.metrics.as_deref(), Role::Local)?;
    let format = if reload.secrets.get().password.is_some() { "trojan" } else { "seed" };
    let routes = match (reload.acl.get().as_ref(), &args.acl) {
        (Some(acl), Some(path)) => format!(
            ", routes by {} ({} rules, the rest {}{})",
            path.display(),
            acl.rules(),
            acl.default_route().name(),
            if args.acl_resolve { ", names resolved to test IP rules" } else { "" }
        ),
        _ => String::new(),
    };
    let forwards = local
        .forwards()
        .iter()
        .map(|f| format!("{} to {}{}", f.local_addr(), f.target(), if f.udp() { "" } else { " (tcp only)" }))
        .collect::<Vec<_>>();
    if local.forwards().iter().any(|f| !f.udp()) {
        log::warn!("--forward without a password serves TCP only: UDP travels in the trojan format");
    }
    let mut forwards =
        if forwards.is_empty() { String::new() } else { format!(", forwarding {}", forwards.join(", ")) };
    for (rule, addr) in local.transparent() {
        let what = match rule {
            Rule::Redirect => "redirected tcp",
            Rule::Tproxy => "tproxy tcp and udp",
        };
        let sniff = if args.sniff { ", names sniffed" } else { "" };
        forwards.push_str(&format!(", {what} on {addr}{sniff}"));
    }
    if let Some(mark) = args.mark {
        forwards.push_str(&format!(", its sockets marked {mark}"));
    }
    let login = match reload.secrets.get().users.len() {
        0 => "no login".to_owned(),
        n => format!("login required ({n} user{})", if n == 1 { "" } else { "s" }),
    };
    signals::watch(signals, move || stopper.stop(), move || reload.run())?;
    warn_unresolved(&args.servers);
    let to: Vec<String> =
        args.servers.iter().map(|s| format!("{} ({})", s.addr, trusted(s, &args.trust))).collect();
    let balance = if to.len() > 1 { format!(" ({:?})", args.balance) } else { String::new() };
    let running = local.start();
    log::info!(
        "listening on {addr} for socks5, socks4 and http, {login}{forwards}, server {}{balance}, {format} format{routes}, up to {max_conns} connections ({cap_from})",
        to.join(", ")
    );
    running.run();
    Ok(())
}

/// How the local trusts `server`, for the start line: the name its
/// certificate must hold, and against what it is checked.
fn trusted(server: &Upstream, trust: &Trust) -> String {
    let name = server.name.to_str();
    match trust {
        Trust::WebPki => format!("certificate for {name}, by the public roots"),
        Trust::CaFile(ca) => format!("certificate for {name}, by the CA in {}", ca.display()),
        Trust::Pin(_) => "certificate pinned by --pin".to_owned(),
        Trust::Insecure => "certificate not checked: --insecure".to_owned(),
    }
}

/// How long the start waits to resolve each server's name, to warn.
const RESOLVE_AT_START: Duration = Duration::from_secs(2);

/// Warns of each server whose name does not resolve now: every client
/// would fail with a lookup error, and nothing else would say why.
fn warn_unresolved(servers: &[Upstream]) {
    for s in servers {
        let Target::Domain(name, port) = &s.addr else { continue };
        if let Err(e) = dial::resolve(name, *port, Instant::now() + RESOLVE_AT_START, &()) {
            log::warn!(
                "server {}: cannot resolve {} now ({e}): clients fail until it resolves; check the name and this machine's DNS",
                s.addr,
                Escaped(name)
            );
        }
    }
}

/// blocking-local's command line, parsed and checked; the files it names
/// are read by [`bind`].
#[derive(Clone, Debug)]
pub struct LocalArgs {
    /// `--server`, each with the name it is verified as (`--sni`).
    pub servers: Vec<Upstream>,
    /// `--balance`.
    pub balance: Balance,
    /// `--listen`.
    pub listen: String,
    /// `--ca`, `--pin` or `--insecure`.
    pub trust: Trust,
    /// `--alpn`.
    pub alpn: Vec<Vec<u8>>,
    /// `--password`, `--password-file`.
    pub passwords: Passwords,
    /// `--user`, `--user-file`.
    pub users: Users,
    /// `--pool`.
    pub pool: PoolSize,
    /// `--pool-age`.
    pub pool_age: Duration,
    /// `--acl`.
    pub acl: Option<PathBuf>,
    /// `--acl-resolve`.
    pub acl_resolve: bool,
    /// `--dns`, `--dns-remote` and `--dns-direct`.
    pub dns: Option<DnsArgs>,
    /// `--forward`.
    pub forwards: Vec<Forward>,
    /// `--redir`.
    pub redir: Option<String>,
    /// `--tproxy`.
    pub tproxy: Option<String>,
    /// `--sniff`.
    pub sniff: bool,
    /// `--mark`.
    pub mark: Option<u32>,
    /// The flags both binaries take.
    pub common: Common,
}

impl LocalArgs {
    /// Parses `argv`. `--help` and `--version` print and return [`Exit::Done`].
    pub fn parse(argv: &[String]) -> Result<LocalArgs, Exit> {
        let m = flags::parse(PROG, ABOUT, &[LOCAL, COMMON], argv)?;
        let addrs = m
            .opt_strs("server")
            .iter()
            .map(|s| common::host_port("server", s))
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.is_empty() {
            return Err(usage("--server is required"));
        }
        let snis = m.opt_strs("sni");
        let names: Vec<String> = match snis.len() {
            0 => addrs.iter().map(Target::host).collect(),
            1 => vec![snis[0].clone(); addrs.len()],
            n if n == addrs.len() => snis,
            n => {
                return Err(usage(format!(
                    "--sni is given {n} times for {} servers: give it once for all, or once per --server",
                    addrs.len()
                )))
            }
        };
        let servers = addrs
            .into_iter()
            .zip(&names)
            .map(|(addr, name)| Ok(Upstream { addr, name: tls::server_name(name)? }))
            .collect::<Result<Vec<_>, Exit>>()?;
        let balance = match m.opt_str("balance") {
            None => Balance::First,
            Some(b) => Balance::parse(&b)
                .ok_or_else(|| usage(format!("--balance wants first or round-robin, not {b:?}")))?,
        };
        let pins = m.opt_strs("pin");
        let trust = match (m.opt_str("ca"), pins.is_empty(), m.opt_present("insecure")) {
            (None, true, false) => Trust::WebPki,
            (Some(ca), true, false) => Trust::CaFile(PathBuf::from(ca)),
            (None, false, false) => Trust::Pin(
                pins.iter()
                    .map(|p| tls::parse_fingerprint(p))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        usage("--pin wants 64 hex digits (a SHA-256 fingerprint: the one blocking-server logs at start, or openssl x509 -fingerprint -sha256 prints)")
                    })?,
            ),
            (None, true, true) => Trust::Insecure,
            _ => return Err(usage("--ca, --pin and --insecure exclude each other")),
        };
        let pool = match m.opt_str("pool") {
            None => PoolSize::Demand,
            Some(v) => PoolSize::parse(&v)
                .ok_or_else(|| usage(format!("--pool wants a number of connections, not {v:?}")))?,
        };
        let pool_age = match m.opt_str("pool-age") {
            None => Duration::from_secs(POOL_AGE_SECS),
            Some(v) => common::secs("pool-age", &v)?,
        };
        let acl = m.opt_str("acl").map(PathBuf::from);
        let acl_resolve = m.opt_present("acl-resolve");
        if acl_resolve && acl.is_none() {
            return Err(usage("--acl-resolve needs --acl"));
        }
        let dns = parse_dns(&m)?;
        let forwards = m
            .opt_strs("forward")
            .iter()
            .map(|f| {
                Forward::parse(f).ok_or_else(|| {
                    usage(format!("--forward wants LISTEN=HOST:PORT (127.0.0.1:5353=1.1.1.1:53), not {f:?}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let redir = m.opt_str("redir");
        if let Some(r) = redir.as_deref().filter(|r| Target::parse(r).is_none()) {
            return Err(usage(common::bad_address("redir", "ADDR:PORT", r)));
        }
        let tproxy = m.opt_str("tproxy");
        if let Some(t) = tproxy.as_deref().filter(|t| t.parse::<SocketAddr>().is_err()) {
            return Err(usage(format!(
                "--tproxy wants an IP address and port (0.0.0.0:12346, [::]:12346), not {t:?}"
            )));
        }
        let sniff = m.opt_present("sniff");
        if sniff && redir.is_none() && tproxy.is_none() {
            return Err(usage("--sniff needs --redir or --tproxy"));
        }
        let mark = match m.opt_str("mark") {
            None => None,
            Some(v) => Some(
                v.parse()
                    .map_err(|_| usage(format!("--mark wants a number (0 to 4294967295), not {v:?}")))?,
            ),
        };
        Ok(LocalArgs {
            servers,
            balance,
            listen: common::listen(&m, LOCAL_LISTEN)?,
            trust,
            alpn: common::alpn(&m)?,
            passwords: Passwords::parse(&m)?,
            users: Users::parse(&m)?,
            pool,
            pool_age,
            acl,
            acl_resolve,
            dns,
            forwards,
            redir,
            tproxy,
            sniff,
            mark,
            common: Common::parse(&m)?,
        })
    }
}

/// `--dns` with `--dns-remote` (required) and `--dns-direct`; either of
/// those two without `--dns` is a usage error.
fn parse_dns(m: &getopts::Matches) -> Result<Option<DnsArgs>, Exit> {
    let remote = m.opt_str("dns-remote");
    let direct = m.opt_strs("dns-direct");
    let Some(listen) = m.opt_str("dns") else {
        if remote.is_some() || !direct.is_empty() {
            return Err(usage("--dns-remote and --dns-direct need --dns"));
        }
        return Ok(None);
    };
    let listen = listen.parse().map_err(|_| usage(format!("--dns wants ADDR:PORT, not {listen:?}")))?;
    let remote = remote.ok_or_else(|| usage("--dns needs --dns-remote HOST:PORT"))?;
    let remote = Target::parse(&remote)
        .ok_or_else(|| usage(format!("--dns-remote wants HOST:PORT, not {remote:?}")))?;
    let direct = direct
        .iter()
        .map(|d| d.parse().map_err(|_| usage(format!("--dns-direct wants ADDR:PORT, not {d:?}"))))
        .collect::<Result<_, _>>()?;
    Ok(Some(DnsArgs { listen, remote, direct }))
}

/// Raises the limits and returns the local's caps: two descriptors per
/// connection (the client's socket and the TLS connection), a third that a
/// UDP association holds for its UDP socket (see [`crate::conn::admission`]),
/// and the pool's ready connections set aside.
pub fn caps(args: &LocalArgs) -> Caps {
    let pool = match args.pool {
        PoolSize::Fixed(n) => n,
        PoolSize::Demand => DEMAND_CAP,
    };
    // Each filler may hold one more while it replaces a stale one.
    let kept = u64::try_from(pool).unwrap_or(u64::MAX).saturating_add(2);
    common::cap(args.common.max_conns, FDS_PER_CONNECTION, kept)
}

/// Reads the files `args` name and binds the local under `caps`; with
/// `watch`, each close line is passed to it too. What [`run`] does before
/// it serves, for a program that runs the local in its own process (the
/// tests).
pub fn bind(args: &LocalArgs, caps: &Caps, watch: Option<Watch>) -> Result<(Local, Reload), Exit> {
    if let Some(mark) = args.mark {
        dial::set_mark(mark)?;
    }
    let tls = Arc::new(Current::new(tls::client_config(&args.trust, &args.alpn)?));
    let secrets = Arc::new(Current::new(read_secrets(args)?));
    let acl = Arc::new(Current::new(args.acl.as_deref().map(common::read_acl).transpose()?));
    let dns_direct =
        Arc::new(Current::new(args.dns.as_ref().map(DnsArgs::direct_resolvers).unwrap_or_default()));
    let login = !secrets.get().users.is_empty();
    let cfg = Config {
        servers: args.servers.clone(),
        balance: args.balance,
        tls: Arc::clone(&tls),
        timeouts: args.common.timeouts,
        secrets: Arc::clone(&secrets),
        max_conns: caps.conns,
        fds: Some(caps.fds),
        pool: args.pool,
        pool_age: args.pool_age,
        watch,
        acl: Arc::clone(&acl),
        acl_resolve: args.acl_resolve,
        dns: args.dns.clone(),
        dns_direct: Arc::clone(&dns_direct),
        forwards: args.forwards.clone(),
        redir: args.redir.clone(),
        tproxy: args.tproxy.clone(),
        sniff: args.sniff,
    };
    let local = Local::bind(&args.listen, cfg)?;
    Ok((local, Reload { args: args.clone(), tls, secrets, acl, dns_direct, login }))
}

/// The users and the password, read from their flags and files.
fn read_secrets(args: &LocalArgs) -> Result<Secrets, Exit> {
    let password = match args.passwords.read()?.as_slice() {
        [] => None,
        [one] => Some(trojan_hash(one)),
        _ => return Err(usage("blocking-local takes one password")),
    };
    Ok(Secrets { users: args.users.read()?, password })
}

/// What SIGHUP reads again: `--user-file`, `--password-file`, `--ca` and `--acl`.
pub struct Reload {
    args: LocalArgs,
    tls: Arc<Current<ClientConfig>>,
    secrets: Arc<Current<Secrets>>,
    acl: Arc<Current<Option<Acl>>>,
    dns_direct: Arc<Current<Vec<SocketAddr>>>,
    /// Whether clients log in (a reload never empties the users).
    login: bool,
}

impl Reload {
    /// Reads the files again and puts what they hold in force for new
    /// connections. Anything that fails keeps everything as it was, with one
    /// warning that names the file and the reason.
    pub fn run(&self) {
        let args = &self.args;
        let ca = match &args.trust {
            Trust::CaFile(path) => Some(path),
            _ => None,
        };
        let nothing = args.acl.is_none() && args.dns.is_none();
        if args.users.file.is_none() && args.passwords.file.is_none() && ca.is_none() && nothing {
            log::info!(
                "reload: nothing to read again (no --user-file, --password-file, --ca, --acl or --dns)"
            );
            return;
        }
        let tls = match ca.map(|_| tls::client_config(&args.trust, &args.alpn)).transpose() {
            Ok(tls) => tls,
            Err(e) => return log::warn!("reload failed, keeping what was loaded: {e}"),
        };
        let secrets = match read_secrets(args) {
            Ok(s) => s,
            Err(e) => return log::warn!("reload failed, keeping what was loaded: {e}"),
        };
        let acl = match args.acl.as_deref().map(common::read_acl).transpose() {
            Ok(acl) => acl,
            Err(e) => return log::warn!("reload failed, keeping what was loaded: {e}"),
        };
        let mut done = Vec::new();
        if let (Some(tls), Some(path)) = (tls, ca) {
            done.push(format!("CA {}", path.display()));
            self.tls.set(tls);
        }
        if args.users.file.is_some() {
            let n = secrets.users.len();
            done.push(format!("{n} user{}", if n == 1 { "" } else { "s" }));
        }
        if args.passwords.file.is_some() {
            done.push("the password".to_owned());
        }
        if let (Some(acl), Some(path)) = (acl, &args.acl) {
            done.push(format!("ACL {} ({} rules)", path.display(), acl.rules()));
            self.acl.set(Some(acl));
        }
        if let Some(dns) = &args.dns {
            let direct = dns.direct_resolvers();
            done.push(format!("{} direct DNS resolvers", direct.len()));
            self.dns_direct.set(direct);
        }
        self.secrets.set(secrets);
        log::info!("reloaded {}; new connections use them", done.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<LocalArgs, Exit> {
        LocalArgs::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    fn usage_error(args: &[&str]) -> String {
        match parse(args) {
            Err(Exit::Usage(msg)) => msg,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn a_bare_server_gets_every_default() {
        let a = parse(&["--server", "proxy.example:9012"]).unwrap();
        assert_eq!(a.servers.len(), 1);
        assert_eq!(
            (a.servers[0].addr.to_string(), a.servers[0].name.to_str()),
            ("proxy.example:9012".into(), "proxy.example".into())
        );
        assert_eq!((a.listen.as_str(), a.balance, a.pool), (LOCAL_LISTEN, Balance::First, PoolSize::Demand));
        assert!(matches!(a.trust, Trust::WebPki));
        assert_eq!(a.pool_age, Duration::from_secs(POOL_AGE_SECS));
        assert_eq!(a.alpn, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn servers_are_required_and_each_must_be_host_and_port() {
        assert_eq!(usage_error(&[]), "--server is required");
        assert_eq!(usage_error(&["--server", "nowhere"]), "--server wants HOST:PORT, not \"nowhere\"");
        let a = parse(&["--server", "[::1]:9012", "--server", "b.example:1", "--balance", "round-robin"])
            .unwrap();
        assert_eq!(
            a.servers.iter().map(|s| s.name.to_str().into_owned()).collect::<Vec<_>>(),
            ["::1", "b.example"]
        );
        assert_eq!(a.balance, Balance::RoundRobin);
        assert!(usage_error(&["--server", "a:1", "--balance", "random"]).starts_with("--balance wants"));
    }

    #[test]
    fn sni_is_given_once_for_all_or_once_per_server() {
        let three = ["--server", "a:1", "--server", "b:2", "--server", "c:3"];
        let names = |extra: &[&str]| {
            let a = parse(&[&three[..], extra].concat()).unwrap();
            a.servers.iter().map(|s| s.name.to_str().into_owned()).collect::<Vec<_>>()
        };
        assert_eq!(names(&["--sni", "x"]), ["x", "x", "x"]);
        assert_eq!(names(&["--sni", "x", "--sni", "y", "--sni", "z"]), ["x", "y", "z"]);
        let msg = usage_error(&[&three[..], &["--sni", "x", "--sni", "y"]].concat());
        assert_eq!(msg, "--sni is given 2 times for 3 servers: give it once for all, or once per --server");
    }

    #[test]
    fn ca_pin_and_insecure_exclude_each_other_and_pins_are_fingerprints() {
        let pin = "ab".repeat(32);
        assert!(
            matches!(parse(&["--server", "h:1", "--pin", &pin, "--pin", &pin]).unwrap().trust, Trust::Pin(p) if p.len() == 2)
        );
        assert!(matches!(parse(&["--server", "h:1", "--insecure"]).unwrap().trust, Trust::Insecure));
        for extra in
            [&["--ca", "x", "--insecure"][..], &["--ca", "x", "--pin", &pin], &["--pin", &pin, "--insecure"]]
        {
            assert_eq!(
                usage_error(&[&["--server", "h:1"][..], extra].concat()),
                "--ca, --pin and --insecure exclude each other"
            );
        }
        for bad in ["+a".repeat(32), format!(":{pin}"), format!("{pin}:"), format!("a:b{}", "ab".repeat(31))]
        {
            assert!(
                usage_error(&["--server", "h:1", "--pin", &bad]).starts_with("--pin wants 64 hex digits"),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_pool_takes_a_count_and_its_age_seconds() {
        let a = parse(&["--server", "h:1", "--pool", "0", "--pool-age", "0.5"]).unwrap();
        assert_eq!((a.pool, a.pool_age), (PoolSize::Fixed(0), Duration::from_millis(500)));
        assert!(usage_error(&["--server", "h:1", "--pool", "-1"]).starts_with("--pool wants a number"));
        assert!(
            usage_error(&["--server", "h:1", "--pool-age", "0"]).starts_with("--pool-age wants a positive")
        );
        assert!(usage_error(&["--server", "h:1", "--alpn", "h2,,x"]).starts_with("--alpn wants"));
    }

    #[test]
    fn tproxy_takes_an_ip_address_and_sniff_needs_a_transparent_listener() {
        let a = parse(&["--server", "h:1", "--tproxy", "[::]:12346", "--sniff"]).unwrap();
        assert_eq!((a.tproxy.as_deref(), a.sniff), (Some("[::]:12346"), true));
        let a = parse(&["--server", "h:1", "--redir", "127.0.0.1:12345", "--sniff"]).unwrap();
        assert!(a.sniff && a.tproxy.is_none());
        assert!(usage_error(&["--server", "h:1", "--tproxy", "localhost:12346"])
            .starts_with("--tproxy wants an IP"));
        assert_eq!(usage_error(&["--server", "h:1", "--sniff"]), "--sniff needs --redir or --tproxy");
    }

    #[test]
    fn redir_takes_an_address_and_mark_a_number() {
        let a = parse(&["--server", "h:1"]).unwrap();
        assert_eq!((a.redir, a.mark), (None, None));
        let a = parse(&["--server", "h:1", "--redir", "127.0.0.1:12345", "--mark", "4294967295"]).unwrap();
        assert_eq!((a.redir.as_deref(), a.mark), (Some("127.0.0.1:12345"), Some(u32::MAX)));
        assert_eq!(
            usage_error(&["--server", "h:1", "--redir", "12345"]),
            "--redir wants ADDR:PORT, such as 127.0.0.1:12345, not \"12345\""
        );
        for bad in ["-1", "4294967296", "0x7", ""] {
            assert!(
                usage_error(&["--server", "h:1", "--mark", bad]).starts_with("--mark wants a number"),
                "{bad}"
            );
        }
    }

    #[test]
    fn forwards_are_repeated_and_each_must_be_listen_and_target() {
        let a = parse(&["--server", "h:1"]).unwrap();
        assert!(a.forwards.is_empty());
        let a = parse(&[
            "--server",
            "h:1",
            "--forward",
            "127.0.0.1:5353=1.1.1.1:53",
            "--forward",
            "[::1]:80=web:80",
        ])
        .unwrap();
        let shown: Vec<String> = a.forwards.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["127.0.0.1:5353=1.1.1.1:53", "[::1]:80=web:80"]);
        for bad in ["1.1.1.1:53", "127.0.0.1:5353=", "127.0.0.1=1.1.1.1:53", "127.0.0.1:5353=1.1.1.1:0"] {
            assert_eq!(
                usage_error(&["--server", "h:1", "--forward", bad]),
                format!("--forward wants LISTEN=HOST:PORT (127.0.0.1:5353=1.1.1.1:53), not {bad:?}")
            );
        }
    }

    #[test]
    fn an_invalid_server_name_fails_naming_it() {
        let Err(Exit::Failed(e)) = parse(&["--server", "h:1", "--sni", "bad name"]) else { panic!() };
        assert_eq!(e.to_string(), "invalid server name: bad name");
    }
}
