//! `blocking-local`: the SOCKS5 side of the pair. See the crate docs and README.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use blocking_proxy::addr::Target;
use blocking_proxy::cli::{self, Exit};
use blocking_proxy::current::Current;
use blocking_proxy::local::{Config, Local, Secrets};
use blocking_proxy::metrics::Role;
use blocking_proxy::signals;
use blocking_proxy::tls::{self, Trust};
use blocking_proxy::upstream::{Balance, PoolSize, Server};
use blocking_proxy::wire::trojan_hash;
use getopts::Matches;
use rustls::ClientConfig;

const PROG: &str = "blocking-local";
const ABOUT: &str = "SOCKS5 proxy that carries every connection over TLS to blocking-server.";

fn main() -> ExitCode {
    cli::main(PROG, run)
}

fn run(args: &[String], signals: signals::Signals) -> Result<(), Exit> {
    let mut opts = getopts::Options::new();
    opts.optmulti(
        "",
        "server",
        "blocking-server to connect to (required; repeat for failover, in order of preference)",
        "HOST:PORT",
    );
    opts.optopt(
        "",
        "balance",
        "which server a new client goes to: first or round-robin (default first)",
        "HOW",
    );
    opts.optopt(
        "",
        "listen",
        "address for SOCKS5, SOCKS4 and HTTP proxy clients (default 127.0.0.1:1081)",
        "ADDR:PORT",
    );
    opts.optopt("", "ca", "trust only the CA certificates in this PEM file", "FILE");
    opts.optmulti("", "pin", "trust exactly the certificate with this SHA-256 fingerprint", "SHA256HEX");
    opts.optmulti(
        "",
        "sni",
        "name to verify and send as SNI (default: the host of --server); once for all, or once per --server",
        "NAME",
    );
    opts.optflag("", "insecure", "do not verify the server's certificate (warns)");
    cli::alpn_option(&mut opts, "ALPN protocols to offer the server, comma-separated");
    cli::password_options(&mut opts, "speak the trojan format with this password");
    opts.optmulti(
        "",
        "user",
        "require login as NAME:PASSWORD (SOCKS5, HTTP Basic; SOCKS4 refused)",
        "NAME:PASS",
    );
    opts.optopt("", "user-file", "read NAME:PASSWORD lines for --user", "FILE");
    opts.optopt(
        "",
        "pool",
        "TLS connections to keep ready for new clients; 0 for none (default: as many as clients \
         recently opened in one second, up to 16, none after 5 idle minutes)",
        "N",
    );
    opts.optopt(
        "",
        "pool-age",
        "replace a ready connection unused this long; below the server's --handshake-timeout (default 5)",
        "SECS",
    );
    cli::common_options(&mut opts);
    let m = cli::parse(PROG, ABOUT, &opts, args)?;

    let addrs = m
        .opt_strs("server")
        .iter()
        .map(|s| Target::parse(s).ok_or_else(|| Exit::Usage(format!("--server wants HOST:PORT, not {s:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(Exit::Usage("--server is required".into()));
    }
    let snis = m.opt_strs("sni");
    let names: Vec<String> = match snis.len() {
        0 => addrs.iter().map(Target::host).collect(),
        1 => vec![snis[0].clone(); addrs.len()],
        n if n == addrs.len() => snis,
        n => {
            return Err(Exit::Usage(format!(
                "--sni is given {n} times for {} servers: give it once for all, or once per --server",
                addrs.len()
            )))
        }
    };
    let servers = addrs
        .iter()
        .zip(&names)
        .map(|(addr, name)| Ok(Server { addr: addr.clone(), name: tls::server_name(name)? }))
        .collect::<Result<Vec<_>, Exit>>()?;
    let balance = match m.opt_str("balance") {
        None => Balance::First,
        Some(b) => Balance::parse(&b)
            .ok_or_else(|| Exit::Usage(format!("--balance wants first or round-robin, not {b:?}")))?,
    };
    let pins = m.opt_strs("pin");
    let trust = match (m.opt_str("ca"), pins.is_empty(), m.opt_present("insecure")) {
        (None, true, false) => Trust::WebPki,
        (Some(ca), true, false) => Trust::CaFile(PathBuf::from(ca)),
        (None, false, false) => Trust::Pin(
            pins.iter()
                .map(|p| tls::parse_fingerprint(p))
                .collect::<Option<_>>()
                .ok_or_else(|| Exit::Usage("--pin wants 64 hex digits (a SHA-256 fingerprint)".into()))?,
        ),
        (None, true, true) => Trust::Insecure,
        _ => return Err(Exit::Usage("--ca, --pin and --insecure exclude each other".into())),
    };
    let timeouts = cli::timeouts(&m)?;
    let (max_conns, cap_from) = cli::max_conns(&m, blocking_proxy::net::FDS_PER_CONNECTION)?;
    let listen = m.opt_str("listen").unwrap_or_else(|| "127.0.0.1:1081".into());
    let secrets = read_secrets(&m)?;
    let pool = match m.opt_str("pool") {
        None => PoolSize::Demand,
        Some(v) => PoolSize::parse(&v)
            .ok_or_else(|| Exit::Usage(format!("--pool wants a number of connections, not {v:?}")))?,
    };
    let pool_age = match m.opt_str("pool-age") {
        None => Duration::from_secs(5),
        Some(v) => cli::parse_secs(&v).ok_or_else(|| {
            Exit::Usage(format!("--pool-age wants a positive number of seconds, not {v:?}"))
        })?,
    };

    let alpn = cli::alpn(&m)?;
    let tls = Arc::new(Current::new(tls::client_config(&trust, &alpn)?));
    let open = secrets.users.is_empty();
    let format = if secrets.password.is_some() { "trojan" } else { "seed" };
    let secrets = Arc::new(Current::new(secrets));
    let reload = Reload {
        m: m.clone(),
        trust: trust.clone(),
        alpn,
        tls: Arc::clone(&tls),
        secrets: Arc::clone(&secrets),
    };
    let cfg = Config { servers, balance, tls, timeouts, secrets, max_conns, pool, pool_age };
    let local = Local::bind(&listen, cfg)?;
    let addr = local.local_addr().map_err(blocking_proxy::error::Error::Io)?;
    if let Trust::Insecure = trust {
        log::warn!("--insecure: the server's certificate is not verified; anyone on the path can read and change the traffic");
    }
    if open && !addr.ip().is_loopback() {
        log::warn!("no --user: anyone who reaches {addr} can use this proxy");
    }
    let stopper = local.stopper().map_err(blocking_proxy::error::Error::Io)?;
    cli::serve_metrics(&m, Role::Local)?;
    signals::watch(signals, move || stopper.stop(), move || reload.run())?;
    let to: Vec<String> = addrs.iter().zip(&names).map(|(a, n)| format!("{a} as {n}")).collect();
    let balance = if to.len() > 1 { format!(" ({balance:?})") } else { String::new() };
    log::info!(
        "listening on {addr} for socks5, socks4 and http, server {}{balance}, {format} format, up to {max_conns} connections ({cap_from})",
        to.join(", ")
    );
    local.run();
    Ok(())
}

/// The users (`--user`, `--user-file`) and the password (`--password`,
/// `--password-file`, the environment), read from their files.
fn read_secrets(m: &Matches) -> Result<Secrets, Exit> {
    let password = match cli::passwords(m)?.as_slice() {
        [] => None,
        [one] => Some(trojan_hash(one)),
        _ => return Err(Exit::Usage("blocking-local takes one password".into())),
    };
    Ok(Secrets { users: cli::users(m)?, password })
}

/// What SIGHUP reads again: `--user-file`, `--password-file` and `--ca`.
struct Reload {
    m: Matches,
    trust: Trust,
    alpn: Vec<Vec<u8>>,
    tls: Arc<Current<ClientConfig>>,
    secrets: Arc<Current<Secrets>>,
}

impl Reload {
    /// Reads the files again and puts what they hold in force for new
    /// connections. Anything that fails keeps everything as it was, with one
    /// warning that names the file and the reason.
    fn run(&self) {
        let m = &self.m;
        let files = ["user-file", "password-file", "ca"].iter().filter(|f| m.opt_present(f)).count();
        if files == 0 {
            log::info!("reload: nothing to read again (no --user-file, --password-file or --ca)");
            return;
        }
        let tls = match &self.trust {
            Trust::CaFile(_) => match tls::client_config(&self.trust, &self.alpn) {
                Ok(tls) => Some(tls),
                Err(e) => return log::warn!("reload failed, keeping what was loaded: {e}"),
            },
            _ => None,
        };
        let secrets = match read_secrets(m) {
            Ok(s) => s,
            Err(e) => return log::warn!("reload failed, keeping what was loaded: {e}"),
        };
        let mut done = Vec::new();
        if let Some(tls) = tls {
            done.push(format!("CA {}", m.opt_str("ca").unwrap_or_default()));
            self.tls.set(tls);
        }
        if m.opt_present("user-file") {
            let n = secrets.users.len();
            done.push(format!("{n} user{}", if n == 1 { "" } else { "s" }));
        }
        if m.opt_present("password-file") {
            done.push("the password".to_owned());
        }
        self.secrets.set(secrets);
        log::info!("reloaded {}; new connections use them", done.join(", "));
    }
}
