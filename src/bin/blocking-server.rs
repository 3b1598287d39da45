//! `blocking-server`: the TLS side of the pair. See the crate docs and README.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use blocking_proxy::addr::Target;
use blocking_proxy::cli::{self, Exit};
use blocking_proxy::current::Current;
use blocking_proxy::egress::{Cidr, Policy};
use blocking_proxy::metrics::Role;
use blocking_proxy::server::{watch_expiry, Config, Keys, Server};
use blocking_proxy::signals;
use blocking_proxy::tls::{self, Identity};
use blocking_proxy::wire::trojan_hash;
use getopts::Matches;

const PROG: &str = "blocking-server";
/// Pending connections one source may hold unless `--max-pending-per-ip` says otherwise.
const DEFAULT_MAX_PENDING_PER_SOURCE: usize = 64;
const ABOUT: &str = "TLS server for blocking-local: reads the target, connects to it and relays.";

fn main() -> ExitCode {
    cli::main(PROG, run)
}

fn run(args: &[String], signals: signals::Signals) -> Result<(), Exit> {
    let mut opts = getopts::Options::new();
    opts.optopt("", "cert", "certificate chain, PEM, leaf first (fullchain.pem)", "FILE");
    opts.optopt("", "key", "private key, PEM: PKCS#8, PKCS#1 or SEC1 (privkey.pem)", "FILE");
    opts.optopt("", "listen", "TLS address to listen on (default 0.0.0.0:9012)", "ADDR:PORT");
    cli::password_options(&mut opts, "accept only trojan clients with this password (repeatable)");
    opts.optopt("", "fallback", "hand connections without a valid header to this web server", "HOST:PORT");
    cli::alpn_option(&mut opts, "ALPN protocols to select from, in order of preference");
    opts.optflag("", "allow-private", "allow non-public targets: loopback, private, special-purpose ranges");
    opts.optmulti("", "deny", "never connect to this network (repeatable)", "CIDR");
    opts.optopt(
        "",
        "max-pending-per-ip",
        &format!(
            "once half the places are taken, connections from one address (an IPv6 /64) \
             in the handshake or before a valid header (default {DEFAULT_MAX_PENDING_PER_SOURCE})"
        ),
        "N",
    );
    opts.optflag(
        "",
        "proxy-protocol",
        "every connection begins with a PROXY protocol header (v1 or v2) from a load balancer",
    );
    opts.optmulti(
        "",
        "proxy-from",
        "take the PROXY protocol header only from this network (repeatable)",
        "CIDR",
    );
    opts.optflag(
        "",
        "fallback-proxy-protocol",
        "begin the connection to the fallback with a PROXY v2 header",
    );
    cli::common_options(&mut opts);
    let m = cli::parse(PROG, ABOUT, &opts, args)?;

    let identity = match (m.opt_str("cert"), m.opt_str("key")) {
        (Some(cert), Some(key)) => Identity::Files { cert: PathBuf::from(cert), key: PathBuf::from(key) },
        (None, None) => Identity::TestCertificate,
        _ => return Err(Exit::Usage("--cert and --key go together".into())),
    };
    let timeouts = cli::timeouts(&m)?;
    let listen = m.opt_str("listen").unwrap_or_else(|| "0.0.0.0:9012".into());
    // Its key is public: anywhere but loopback, anyone could pose as this server.
    if matches!(identity, Identity::TestCertificate) && cli::loopback_only(&listen) == Some(false) {
        return Err(Exit::Usage(format!(
            "--cert and --key are required when listening on {listen} (the built-in test certificate is for \
             loopback only); get one with an ACME client such as certbot, or make a self-signed one and pin \
             it, see README (Pinning)"
        )));
    }
    let passwords: Vec<_> = cli::passwords(&m)?.iter().map(|p| trojan_hash(p)).collect();
    let fallback = match m.opt_str("fallback") {
        Some(f) => Some(
            Target::parse(&f).ok_or_else(|| Exit::Usage(format!("--fallback wants HOST:PORT, not {f:?}")))?,
        ),
        None => None,
    };
    let deny = m
        .opt_strs("deny")
        .iter()
        .map(|c| c.parse().map_err(|e| Exit::Usage(format!("--deny: {e}"))))
        .collect::<Result<_, _>>()?;
    let proxy_protocol = m.opt_present("proxy-protocol");
    let proxy_from: Vec<Cidr> = m
        .opt_strs("proxy-from")
        .iter()
        .map(|c| c.parse().map_err(|e| Exit::Usage(format!("--proxy-from: {e}"))))
        .collect::<Result<_, _>>()?;
    if !proxy_from.is_empty() && !proxy_protocol {
        return Err(Exit::Usage("--proxy-from needs --proxy-protocol".into()));
    }
    let fallback_proxy_protocol = m.opt_present("fallback-proxy-protocol");
    if fallback_proxy_protocol && fallback.is_none() {
        return Err(Exit::Usage("--fallback-proxy-protocol needs --fallback".into()));
    }
    let egress = Policy::new(m.opt_present("allow-private"), deny)?;
    // With passwords and a fallback, a connection holds the fallback's socket
    // too until its first record has been read.
    let probe_resistant = fallback.is_some() && !passwords.is_empty();
    let (max_conns, cap_from) =
        cli::max_conns(&m, blocking_proxy::net::FDS_PER_CONNECTION + u64::from(probe_resistant))?;
    let max_pending_per_source =
        match m.opt_str("max-pending-per-ip") {
            None => DEFAULT_MAX_PENDING_PER_SOURCE,
            Some(v) => v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                Exit::Usage(format!("--max-pending-per-ip wants a positive number, not {v:?}"))
            })?,
        };

    let alpn = cli::alpn(&m)?;
    let served = tls::server_config(&identity, &alpn, None)?;
    let open = passwords.is_empty();
    let keys = Arc::new(Current::new(Keys { tls: served.config, passwords, expires: served.expires }));
    let reload = Reload { m: m.clone(), identity: identity.clone(), alpn, keys: Arc::clone(&keys) };
    let cfg = Config {
        keys: Arc::clone(&keys),
        timeouts,
        fallback: fallback.clone(),
        egress,
        max_conns,
        max_pending_per_source,
        proxy_protocol,
        proxy_from: proxy_from.clone(),
        fallback_proxy_protocol,
    };
    let server = Server::bind(&listen, cfg)?;
    let addr = server.local_addr().map_err(blocking_proxy::error::Error::Io)?;
    if let Identity::TestCertificate = identity {
        log::warn!("no --cert/--key: using the built-in test certificate for localhost, on loopback only; its key is public, for tests and demos only");
    }
    if open && !addr.ip().is_loopback() {
        log::warn!("no --password on {addr}: this is an open proxy, anyone who finds the port can use it; give it a password with --password-file FILE");
    }
    if proxy_protocol && proxy_from.is_empty() {
        log::warn!("--proxy-protocol without --proxy-from: any client can claim any address; give the balancer's addresses with --proxy-from CIDR");
    }
    log::info!(
        "certificate sha256 fingerprint {} (for blocking-local --pin){}",
        tls::fingerprint_hex(&served.fingerprint),
        expiry(served.expires)
    );
    watch_expiry(keys);
    let mut fallback = fallback.map_or_else(|| "none".to_owned(), |f| f.to_string());
    if fallback_proxy_protocol {
        fallback.push_str(" with a PROXY v2 header");
    }
    let format = if open { "seed" } else { "trojan" };
    let balancer = match (proxy_protocol, proxy_from.is_empty()) {
        (false, _) => String::new(),
        (true, true) => ", PROXY protocol from anyone".into(),
        (true, false) => {
            let nets: Vec<String> = proxy_from.iter().map(ToString::to_string).collect();
            format!(", PROXY protocol from {}", nets.join(" "))
        }
    };
    let stopper = server.stopper().map_err(blocking_proxy::error::Error::Io)?;
    cli::serve_metrics(&m, Role::Server)?;
    signals::watch(signals, move || stopper.stop(), move || reload.run())?;
    log::info!(
        "listening on {addr} for tls{balancer}, {format} format, fallback {fallback}, up to {max_conns} connections ({cap_from}), {max_pending_per_source} pending per source"
    );
    server.run();
    Ok(())
}

/// `, valid N more days` for the start and reload lines, if the end is known.
fn expiry(expires: Option<SystemTime>) -> String {
    match expires.map(|t| t.duration_since(SystemTime::now())) {
        Some(Ok(left)) => format!(", valid {} more days", left.as_secs() / 86_400),
        Some(Err(_)) => ", expired".to_owned(),
        None => String::new(),
    }
}

/// What SIGHUP reads again: `--cert`, `--key` and `--password-file`.
struct Reload {
    m: Matches,
    identity: Identity,
    alpn: Vec<Vec<u8>>,
    keys: Arc<Current<Keys>>,
}

impl Reload {
    /// Reads the files again and puts what they hold in force for new
    /// connections. Anything that fails keeps everything as it was, with one
    /// warning that names the file and the reason.
    fn run(&self) {
        let files = matches!(self.identity, Identity::Files { .. });
        let password_file = self.m.opt_present("password-file");
        if !files && !password_file {
            log::info!("reload: nothing to read again (no --cert/--key or --password-file)");
            return;
        }
        let old = self.keys.get();
        let served = match files {
            true => match tls::server_config(&self.identity, &self.alpn, Some(&old.tls)) {
                Ok(served) => Some(served),
                Err(e) => return log::warn!("reload failed, keeping what was loaded: {e}"),
            },
            false => None,
        };
        let passwords = match password_file {
            true => match cli::passwords(&self.m) {
                Ok(p) => p.iter().map(|p| trojan_hash(p)).collect(),
                Err(e) => return log::warn!("reload failed, keeping what was loaded: {e}"),
            },
            false => old.passwords.clone(),
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
        self.keys.set(Keys { tls, passwords, expires });
        log::info!("reloaded {}; new connections use them", done.join(", "));
        if let Some(warning) =
            expires.and_then(|t| blocking_proxy::server::expiry_warning(t, SystemTime::now()))
        {
            log::warn!("{warning}");
        }
    }
}
