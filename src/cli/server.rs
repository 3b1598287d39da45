//! blocking-server's command line: its flags read into [`ServerArgs`]
//! (every cross-check a unit test), the files they name read into a
//! [`Config`], and the run: bind, warn, serve until a signal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::conn::report::Watch;
use crate::current::Current;
use crate::error::Error;
use crate::file;
use crate::metrics;
use crate::metrics::Role;
use crate::net::egress::{Cidr, Policy};
use crate::net::limits::FDS_PER_CONNECTION;
use crate::proto::accounts::{self, Account};
use crate::proto::acl::Acl;
use crate::proto::addr::Target;
use crate::proto::wire::{trojan_hash, TrojanHash};
use crate::server::keys::{expiry_warning, watch_expiry};
use crate::server::users::Roster;
use crate::server::{Config, Keys, Server};
use crate::text::Escaped;
use crate::tls::config::{self as tls, Identity};
use crate::workers::COPY_STACK;

use super::common::{self, Common, Passwords};
use super::exit::{usage, Exit};
use super::flags::{self, COMMON, MAX_PENDING_PER_SOURCE, SERVER, SERVER_LISTEN};
use super::signals::{self, Signals};

const PROG: &str = "blocking-server";
const ABOUT: &str = "TLS server for blocking-local: reads the target, connects to it and relays.";

/// Runs blocking-server with the arguments `argv` (without the program's
/// name) until SIGTERM or SIGINT.
pub fn run(argv: &[String], signals: Signals) -> Result<(), Exit> {
    let args = ServerArgs::parse(argv)?;
    common::init_logging(args.common.log);
    let (server, reload, serving) = bind(&args, None)?;
    let addr = server.local_addr().map_err(Error::Io)?;
    if let Identity::TestCertificate = args.identity {
        log::warn!("no --cert/--key: using the built-in test certificate for localhost, on loopback only; its key is public, for tests and demos only");
    }
    if serving.open && !addr.ip().is_loopback() {
        log::warn!("no --password on {addr}: this is an open proxy, anyone who finds the port can use it; give it a password with --password-file FILE");
    }
    if args.proxy_protocol && args.proxy_from.iter().any(Cidr::is_everything) {
        log::warn!("--proxy-from any: any client can claim any address; give the balancer's addresses with --proxy-from CIDR, or firewall the port to the balancers");
    }
    log::info!(
        "certificate sha256 fingerprint {} (for blocking-local --pin){}",
        serving.fingerprint,
        expiry(serving.expires)
    );
    if let (Some(acl), Some(path)) = (reload.acl.get().as_ref(), &args.acl) {
        let targets = match acl.has_outbound_rules() {
            true => "refusing targets by its outbound lists",
            false => "no outbound rules",
        };
        log::info!("--acl {}: {} rules, {targets}", path.display(), acl.rules());
        if acl.has_client_rules() {
            log::warn!(
                "--acl {}: clients are refused by its mode and [black_list] or [white_list] (the same sections as a local's [bypass_list] and [proxy_list]); a [bypass_all] or [reject_all] file accepts only the clients it lists",
                path.display()
            );
        }
    }
    watch_expiry(Arc::clone(&reload.keys));
    let saver = reload.quota_saver().map(Arc::new);
    if let Some(saver) = &saver {
        QuotaSaver::every_minute(Arc::clone(saver));
    }
    let stopper = server.stopper().map_err(Error::Io)?;
    common::serve_metrics(args.common.metrics.as_deref(), Role::Server)?;
    signals::watch(signals, move || stopper.stop(), move || reload.run())?;
    let mut fallback = args.fallback.as_ref().map_or_else(|| "none".to_owned(), Target::to_string);
    if args.fallback_proxy_protocol {
        fallback.push_str(" with a PROXY v2 header");
    }
    let format = if serving.open { "seed" } else { "trojan" };
    let balancer = match args.proxy_protocol {
        false => String::new(),
        true => {
            let nets: Vec<String> = args.proxy_from.iter().map(ToString::to_string).collect();
            format!(", PROXY protocol from {}", nets.join(" "))
        }
    };
    let (max_conns, cap_from) = (serving.max_conns, serving.cap_from);
    let pending = args.max_pending_per_source;
    let running = server.start();
    log::info!(
        "listening on {addr} for tls{balancer}, {format} format, fallback {fallback}, up to {max_conns} connections ({cap_from}), {pending} pending per source"
    );
    running.run();
    if let Some(saver) = saver {
        saver.save();
    }
    Ok(())
}

/// blocking-server's command line, parsed and checked; the files it names
/// are read by [`bind`].
#[derive(Clone, Debug)]
pub struct ServerArgs {
    /// `--cert` and `--key`, or the built-in test certificate.
    pub identity: Identity,
    /// `--listen`.
    pub listen: String,
    /// `--password`, `--password-file`.
    pub passwords: Passwords,
    /// `--users`.
    pub users: Option<PathBuf>,
    /// `--cut-removed`.
    pub cut_removed: bool,
    /// `--quota-state`.
    pub quota_state: Option<PathBuf>,
    /// `--fallback`.
    pub fallback: Option<Target>,
    /// `--alpn`.
    pub alpn: Vec<Vec<u8>>,
    /// `--allow-private`.
    pub allow_private: bool,
    /// `--deny`.
    pub deny: Vec<Cidr>,
    /// `--acl`.
    pub acl: Option<PathBuf>,
    /// `--max-pending-per-ip`.
    pub max_pending_per_source: usize,
    /// `--proxy-protocol`.
    pub proxy_protocol: bool,
    /// `--proxy-from`: never empty with `--proxy-protocol` (`any` is
    /// `0.0.0.0/0` and `::/0`).
    pub proxy_from: Vec<Cidr>,
    /// `--fallback-proxy-protocol`.
    pub fallback_proxy_protocol: bool,
    /// The flags both binaries take.
    pub common: Common,
}

impl ServerArgs {
    /// Parses `argv`. `--help` and `--version` print and return [`Exit::Done`].
    pub fn parse(argv: &[String]) -> Result<ServerArgs, Exit> {
        let m = flags::parse(PROG, ABOUT, &[SERVER, COMMON], argv)?;
        let identity = match (m.opt_str("cert"), m.opt_str("key")) {
            (Some(cert), Some(key)) => Identity::Files { cert: PathBuf::from(cert), key: PathBuf::from(key) },
            (None, None) => Identity::TestCertificate,
            _ => return Err(usage("--cert and --key go together")),
        };
        let common = Common::parse(&m)?;
        let listen = common::listen(&m, SERVER_LISTEN)?;
        // Its key is public: anywhere but loopback, anyone could pose as this server.
        if matches!(identity, Identity::TestCertificate) && common::loopback_only(&listen) == Some(false) {
            return Err(usage(format!(
                "--cert and --key are required when listening on {listen} (the built-in test certificate is for \
                 loopback only); get one with an ACME client such as certbot, or make a self-signed one and pin \
                 it, see README (Pinning)"
            )));
        }
        let passwords = Passwords::parse(&m)?;
        let users = m.opt_str("users").map(PathBuf::from);
        let cut_removed = m.opt_present("cut-removed");
        if cut_removed && users.is_none() {
            return Err(usage("--cut-removed needs --users"));
        }
        let quota_state = m.opt_str("quota-state").map(PathBuf::from);
        if quota_state.is_some() && users.is_none() {
            return Err(usage("--quota-state needs --users"));
        }
        let fallback = match m.opt_str("fallback") {
            Some(f) => Some(common::host_port("fallback", &f)?),
            None => None,
        };
        let cidrs = |name: &str| -> Result<Vec<Cidr>, Exit> {
            m.opt_strs(name).iter().map(|c| c.parse().map_err(|e| usage(format!("--{name}: {e}")))).collect()
        };
        let deny = cidrs("deny")?;
        let proxy_protocol = m.opt_present("proxy-protocol");
        let proxy_from = proxy_from(&m.opt_strs("proxy-from"))?;
        if !proxy_from.is_empty() && !proxy_protocol {
            return Err(usage("--proxy-from needs --proxy-protocol"));
        }
        // Without it, anyone who reaches the port could claim any address.
        if proxy_protocol && proxy_from.is_empty() {
            return Err(usage(
                "--proxy-protocol needs --proxy-from: the balancers' networks (or `any`, if only they can reach the port)",
            ));
        }
        let fallback_proxy_protocol = m.opt_present("fallback-proxy-protocol");
        if fallback_proxy_protocol && fallback.is_none() {
            return Err(usage("--fallback-proxy-protocol needs --fallback"));
        }
        let max_pending_per_source = match m.opt_str("max-pending-per-ip") {
            None => MAX_PENDING_PER_SOURCE,
            Some(v) => common::positive("max-pending-per-ip", &v)?,
        };
        Ok(ServerArgs {
            identity,
            listen,
            passwords,
            users,
            cut_removed,
            quota_state,
            fallback,
            alpn: common::alpn(&m)?,
            allow_private: m.opt_present("allow-private"),
            deny,
            acl: m.opt_str("acl").map(PathBuf::from),
            max_pending_per_source,
            proxy_protocol,
            proxy_from,
            fallback_proxy_protocol,
            common,
        })
    }
}

/// The networks of `--proxy-from`: each a CIDR, or `any` for every
/// address (`0.0.0.0/0` and `::/0`).
fn proxy_from(values: &[String]) -> Result<Vec<Cidr>, Exit> {
    let mut nets = Vec::new();
    for v in values {
        match v.as_str() {
            "any" => nets.extend([Cidr::EVERY_IPV4, Cidr::EVERY_IPV6]),
            cidr => nets.push(cidr.parse().map_err(|e| usage(format!("--proxy-from: {e}")))?),
        }
    }
    Ok(nets)
}

/// What a bound server serves with, for the lines `run` logs at start.
pub struct Serving {
    /// No password: the seed format, open to anyone who reaches it.
    pub open: bool,
    /// The certificate's SHA-256 fingerprint, in hex (what `--pin` takes).
    pub fingerprint: String,
    /// When the certificate expires, if that could be read.
    pub expires: Option<SystemTime>,
    /// The connection cap,
    pub max_conns: usize,
    /// and what set it.
    pub cap_from: String,
}

/// Reads the files `args` name, raises the limits and binds the server;
/// with `watch`, each close line is passed to it too. What [`run`] does
/// before it serves, for a program that runs the server in its own process
/// (the tests).
pub fn bind(args: &ServerArgs, watch: Option<Watch>) -> Result<(Server, Reload, Serving), Exit> {
    let plain = hashes(&args.passwords)?;
    let roster = Roster::new();
    let (passwords, users) = match &args.users {
        Some(path) => {
            let accounts = read_users(path)?;
            let users = roster.load(&accounts).users;
            if let Some(state) = &args.quota_state {
                restore_quota(&roster, state)?;
            }
            (with_users(&plain, &accounts, path)?, users)
        }
        None => (plain.clone(), Vec::new()),
    };
    if args.users.is_some() {
        let collected = Arc::clone(&roster);
        metrics::add_collector(Box::new(move |out| collected.collect(out)));
    }
    let acl = Arc::new(Current::new(args.acl.as_deref().map(common::read_acl).transpose()?));
    let egress = Policy::new(args.allow_private, args.deny.clone())?.with_acl(Arc::clone(&acl));
    // The format is the flags' choice: a users file that names nobody (or
    // that a reload empties) opens nothing; it never turns the seed format on.
    let open = plain.is_empty() && args.users.is_none();
    if !open && passwords.is_empty() {
        log::warn!(
            "--users names no user and no --password is given: no client can connect until a reload adds one"
        );
    }
    // With passwords and a fallback, a connection holds the fallback's socket
    // too until its first record has been read.
    let probe_resistant = args.fallback.is_some() && !open;
    let caps = common::cap(args.common.max_conns, FDS_PER_CONNECTION + u64::from(probe_resistant), 0);
    let served = tls::server_config(&args.identity, &args.alpn, None)?;
    let keys = Arc::new(Current::new(Keys { tls: served.config, passwords, users, expires: served.expires }));
    let cfg = Config {
        keys: Arc::clone(&keys),
        timeouts: args.common.timeouts,
        fallback: args.fallback.clone(),
        egress,
        max_conns: caps.conns,
        fds: Some(caps.fds),
        max_pending_per_source: args.max_pending_per_source,
        proxy_protocol: args.proxy_protocol,
        proxy_from: args.proxy_from.clone(),
        fallback_proxy_protocol: args.fallback_proxy_protocol,
        watch,
        seed: open,
    };
    let server = Server::bind(&args.listen, cfg)?;
    let serving = Serving {
        open,
        fingerprint: tls::fingerprint_hex(&served.fingerprint),
        expires: served.expires,
        max_conns: caps.conns,
        cap_from: caps.why,
    };
    Ok((server, Reload { args: args.clone(), keys, acl, plain, roster }, serving))
}

/// Reads the `--quota-state` file at `path` into `roster`, if there is one yet.
fn restore_quota(roster: &Roster, path: &std::path::Path) -> Result<(), Exit> {
    if !path.exists() {
        return Ok(());
    }
    let bytes = file::read(path, "quota state file")?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::Config(format!("quota state file {} is not UTF-8", path.display())))?;
    roster
        .restore_quota(text)
        .map_err(|e| Error::Config(format!("quota state file {} {e}", path.display())))?;
    Ok(())
}

/// Writes what each user has used of its quota to `--quota-state`: to a
/// new file beside it, then renamed over it, so that a crash leaves the old
/// state or the new, never half of one.
pub struct QuotaSaver {
    roster: Arc<Roster>,
    path: PathBuf,
}

/// One save at a time: the minute's, a reload's and the exit's share the new file's name.
static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl QuotaSaver {
    /// How often the state is written while the server runs.
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    /// Writes the state now; a failure is one warning.
    pub fn save(&self) {
        let _one = SAVING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".new");
        let written =
            std::fs::write(&tmp, self.roster.quota_state()).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            log::warn!("cannot write the quota state file {}: {e}", self.path.display());
        }
    }

    /// Writes the state every [`EVERY`](QuotaSaver::EVERY), on a thread of its own.
    fn every_minute(saver: Arc<QuotaSaver>) {
        let spawned =
            std::thread::Builder::new().name("quota-state".into()).stack_size(COPY_STACK).spawn(move || {
                loop {
                    std::thread::sleep(QuotaSaver::EVERY);
                    saver.save();
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot start the quota state writer: {e}");
        }
    }
}

/// The users of the `--users` file at `path`; a bad line is an error that names the file and the line.
fn read_users(path: &std::path::Path) -> Result<Vec<Account>, Exit> {
    let bytes = file::read(path, "users file")?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::Config(format!("users file {} is not UTF-8", path.display())))?;
    let accounts =
        accounts::parse(text).map_err(|e| Error::Config(format!("users file {} {e}", path.display())))?;
    Ok(accounts)
}

/// The hashes of `plain` (`--password`, `--password-file`) and of
/// `accounts`; a password both give is an error, which names the user.
fn with_users(
    plain: &[TrojanHash],
    accounts: &[Account],
    path: &std::path::Path,
) -> Result<Vec<TrojanHash>, Exit> {
    if let Some(a) = accounts.iter().find(|a| plain.contains(&a.hash)) {
        return Err(Error::Config(format!(
            "users file {}: user {} has a password that --password or --password-file gives too; each user needs a password of its own",
            path.display(),
            Escaped(&a.name)
        ))
        .into());
    }
    Ok(plain.iter().copied().chain(accounts.iter().map(|a| a.hash)).collect())
}

/// The trojan hashes of every password.
fn hashes(passwords: &Passwords) -> Result<Vec<TrojanHash>, Exit> {
    Ok(passwords.read()?.iter().map(|p| trojan_hash(p)).collect())
}

/// `, valid N more days` for the start and reload lines, if the end is known.
fn expiry(expires: Option<SystemTime>) -> String {
    match expires.map(|t| t.duration_since(SystemTime::now())) {
        Some(Ok(left)) => format!(", valid {} more days", left.as_secs() / 86_400),
        Some(Err(_)) => ", expired".to_owned(),
        None => String::new(),
    }
}

/// What SIGHUP reads again: `--cert`, `--key`, `--password-file`, `--users` and `--acl`.
pub struct Reload {
    args: ServerArgs,
    keys: Arc<Current<Keys>>,
    acl: Arc<Current<Option<Acl>>>,
    /// The hashes of the passwords given without a name, as last read.
    plain: Vec<TrojanHash>,
    /// Every named user the process has known.
    roster: Arc<Roster>,
}

impl Reload {
    /// What writes `--quota-state`, if it is given.
    pub fn quota_saver(&self) -> Option<QuotaSaver> {
        let path = self.args.quota_state.clone()?;
        Some(QuotaSaver { roster: Arc::clone(&self.roster), path })
    }

    /// Reads the files again and puts what they hold in force for new
    /// connections. Anything that fails keeps everything as it was, with one
    /// warning that names the file and the reason.
    pub fn run(&self) {
        let args = &self.args;
        let files = matches!(args.identity, Identity::Files { .. });
        let password_file = args.passwords.file.is_some();
        if !files && !password_file && args.acl.is_none() && args.users.is_none() {
            log::info!("reload: nothing to read again (no --cert/--key, --password-file, --users or --acl)");
            return;
        }
        let old = self.keys.get();
        let served = match files {
            true => match tls::server_config(&args.identity, &args.alpn, Some(&old.tls)) {
                Ok(served) => Some(served),
                Err(e) => return log::warn!("reload failed, keeping what was loaded: {e}"),
            },
            false => None,
        };
        let passwords = match password_file {
            true => match hashes(&args.passwords) {
                Ok(p) => p,
                Err(e) => return log::warn!("reload failed, keeping what was loaded: {e}"),
            },
            false => self.plain.clone(),
        };
        let accounts = match args.users.as_deref().map(read_users).transpose() {
            Ok(accounts) => accounts,
            Err(e) => return log::warn!("reload failed, keeping what was loaded: {e}"),
        };
        let hashes = match (&accounts, &args.users) {
            (Some(accounts), Some(path)) => match with_users(&passwords, accounts, path) {
                Ok(hashes) => hashes,
                Err(e) => return log::warn!("reload failed, keeping what was loaded: {e}"),
            },
            _ => passwords.clone(),
        };
        let acl = match args.acl.as_deref().map(common::read_acl).transpose() {
            Ok(acl) => acl,
            Err(e) => return log::warn!("reload failed, keeping what was loaded: {e}"),
        };
        let mut done = Vec::new();
        let (tls, expires) = match served {
            Some(s) => {
                done.push(format!(
                    "certificate sha256 fingerprint {}{}",
                    tls::fingerprint_hex(&s.fingerprint),
                    expiry(s.expires)
                ));
                (s.config, s.expires)
            }
            None => (Arc::clone(&old.tls), old.expires),
        };
        if password_file {
            let n = passwords.len();
            done.push(format!("{n} password{}", if n == 1 { "" } else { "s" }));
        }
        if let (Some(acl), Some(path)) = (acl, &args.acl) {
            done.push(format!("ACL {} ({} rules)", path.display(), acl.rules()));
            self.acl.set(Some(acl));
        }
        let (users, removed) = match &accounts {
            Some(accounts) => {
                let loaded = self.roster.load(accounts);
                let n = loaded.users.len();
                done.push(format!("{n} user{}", if n == 1 { "" } else { "s" }));
                (loaded.users, loaded.removed)
            }
            None => (old.users.clone(), Vec::new()),
        };
        if hashes.is_empty() && self.args.users.is_some() {
            log::warn!("no user and no password left: no client can connect until a reload adds one");
        }
        self.keys.set(Keys { tls, passwords: hashes, users, expires });
        if let Some(saver) = self.quota_saver() {
            saver.save();
        }
        for name in removed {
            let cut = self.args.cut_removed;
            let open = if cut { "its open connections are cut" } else { "its open connections go on" };
            log::info!("user {} removed: its password opens nothing new, {open}", Escaped(&name));
            if let (true, Some(user)) = (cut, self.roster.get(&name)) {
                user.cut_all(&format!("user {} was removed", Escaped(&name)));
            }
        }
        log::info!("reloaded {}; new connections use them", done.join(", "));
        if let Some(warning) = expires.and_then(|t| expiry_warning(t, SystemTime::now())) {
            log::warn!("{warning}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ServerArgs, Exit> {
        ServerArgs::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    fn usage_error(args: &[&str]) -> String {
        match parse(args) {
            Err(Exit::Usage(msg)) => msg,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn on_loopback_the_defaults_hold_and_the_test_certificate_serves() {
        let a = parse(&["--listen", "127.0.0.1:0"]).unwrap();
        assert!(matches!(a.identity, Identity::TestCertificate));
        assert_eq!(a.max_pending_per_source, MAX_PENDING_PER_SOURCE);
        assert!(!a.allow_private && !a.proxy_protocol && a.fallback.is_none() && a.deny.is_empty());
    }

    #[test]
    fn cert_and_key_go_together_and_are_required_off_loopback() {
        assert_eq!(usage_error(&["--cert", "only.pem"]), "--cert and --key go together");
        for listen in ["0.0.0.0:9012", "[::]:9012"] {
            let msg = usage_error(&["--listen", listen]);
            assert!(
                msg.starts_with(&format!("--cert and --key are required when listening on {listen}")),
                "{msg}"
            );
            assert!(msg.contains("certbot") && msg.contains("self-signed"), "{msg}");
        }
        assert!(parse(&["--listen", "0.0.0.0:9012", "--cert", "c", "--key", "k"]).is_ok());
    }

    #[test]
    fn proxy_flags_need_what_they_qualify() {
        let lo = ["--listen", "127.0.0.1:0"];
        let with = |extra: &[&'static str]| -> Vec<&'static str> { [&lo[..], extra].concat() };
        assert_eq!(
            usage_error(&with(&["--proxy-from", "127.0.0.3/32"])),
            "--proxy-from needs --proxy-protocol"
        );
        assert_eq!(
            usage_error(&with(&["--proxy-protocol", "--proxy-from", "balancer"])),
            "--proxy-from: not an address: balancer"
        );
        assert_eq!(
            usage_error(&with(&["--fallback-proxy-protocol"])),
            "--fallback-proxy-protocol needs --fallback"
        );
        assert_eq!(usage_error(&with(&["--deny", "10.0.0.0/33"])), "--deny: bad prefix length: 33");
        assert!(usage_error(&with(&["--fallback", "nowhere"])).starts_with("--fallback wants HOST:PORT"));
        assert!(usage_error(&with(&["--max-pending-per-ip", "0"]))
            .starts_with("--max-pending-per-ip wants a positive"));
        let a = parse(&with(&[
            "--proxy-protocol",
            "--proxy-from",
            "127.0.0.3",
            "--fallback",
            "127.0.0.1:80",
            "--fallback-proxy-protocol",
        ]))
        .unwrap();
        assert_eq!(a.proxy_from[0].to_string(), "127.0.0.3/32");
        assert!(a.fallback_proxy_protocol);
    }

    #[test]
    fn the_users_flags_need_users() {
        let lo = ["--listen", "127.0.0.1:0"];
        assert_eq!(usage_error(&[&lo[..], &["--cut-removed"]].concat()), "--cut-removed needs --users");
        assert_eq!(usage_error(&[&lo[..], &["--quota-state", "q"]].concat()), "--quota-state needs --users");
        let a = parse(&[&lo[..], &["--users", "u", "--cut-removed", "--quota-state", "q"]].concat()).unwrap();
        assert!(a.cut_removed && a.users.is_some() && a.quota_state.is_some());
    }

    #[test]
    fn proxy_protocol_needs_proxy_from_and_any_is_every_address() {
        let lo = ["--listen", "127.0.0.1:0"];
        let msg = usage_error(&[&lo[..], &["--proxy-protocol"]].concat());
        assert!(msg.starts_with("--proxy-protocol needs --proxy-from"), "{msg}");
        let a = parse(&[&lo[..], &["--proxy-protocol", "--proxy-from", "any"]].concat()).unwrap();
        let nets: Vec<String> = a.proxy_from.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["0.0.0.0/0", "::/0"]);
        assert!(a.proxy_from.iter().all(Cidr::is_everything));
    }
}
