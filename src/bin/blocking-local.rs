//! `blocking-local`: the SOCKS5 side of the pair. See the crate docs and README.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use blocking_proxy::addr::Target;
use blocking_proxy::cli::{self, Exit};
use blocking_proxy::local::{Config, Local};
use blocking_proxy::metrics::Role;
use blocking_proxy::signals;
use blocking_proxy::tls::{self, Trust};
use blocking_proxy::wire::trojan_hash;

const PROG: &str = "blocking-local";
const ABOUT: &str = "SOCKS5 proxy that carries every connection over TLS to blocking-server.";

fn main() -> ExitCode {
    cli::main(PROG, run)
}

fn run(args: &[String], signals: signals::Signals) -> Result<(), Exit> {
    let mut opts = getopts::Options::new();
    opts.optopt("", "server", "blocking-server to connect to (required)", "HOST:PORT");
    opts.optopt(
        "",
        "listen",
        "address for SOCKS5, SOCKS4 and HTTP proxy clients (default 127.0.0.1:1081)",
        "ADDR:PORT",
    );
    opts.optopt("", "ca", "trust only the CA certificates in this PEM file", "FILE");
    opts.optmulti("", "pin", "trust exactly the certificate with this SHA-256 fingerprint", "SHA256HEX");
    opts.optopt("", "sni", "name to verify and send as SNI (default: the host of --server)", "NAME");
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
    opts.optopt("", "pool", "TLS connections to keep ready for new clients (default 0)", "N");
    opts.optopt(
        "",
        "pool-age",
        "replace a ready connection unused this long; below the server's --handshake-timeout (default 5)",
        "SECS",
    );
    cli::common_options(&mut opts);
    let m = cli::parse(PROG, ABOUT, &opts, args)?;

    let server = m.opt_str("server").ok_or_else(|| Exit::Usage("--server is required".into()))?;
    let server = Target::parse(&server)
        .ok_or_else(|| Exit::Usage(format!("--server wants HOST:PORT, not {server:?}")))?;
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
    let name = m.opt_str("sni").unwrap_or_else(|| server.host());
    let server_name = tls::server_name(&name)?;
    let timeouts = cli::timeouts(&m)?;
    let (max_conns, cap_from) = cli::max_conns(&m, blocking_proxy::net::FDS_PER_CONNECTION)?;
    let listen = m.opt_str("listen").unwrap_or_else(|| "127.0.0.1:1081".into());
    let password = match cli::passwords(&m)?.as_slice() {
        [] => None,
        [one] => Some(trojan_hash(one)),
        _ => return Err(Exit::Usage("blocking-local takes one password".into())),
    };
    let users = cli::users(&m)?;
    let pool = match m.opt_str("pool") {
        None => 0,
        Some(v) => {
            v.parse().map_err(|_| Exit::Usage(format!("--pool wants a number of connections, not {v:?}")))?
        }
    };
    let pool_age = match m.opt_str("pool-age") {
        None => Duration::from_secs(5),
        Some(v) => cli::parse_secs(&v).ok_or_else(|| {
            Exit::Usage(format!("--pool-age wants a positive number of seconds, not {v:?}"))
        })?,
    };

    let alpn = cli::alpn(&m)?;
    let tls = tls::client_config(&trust, &alpn)?;
    let open = users.is_empty();
    let format = if password.is_some() { "trojan" } else { "seed" };
    let cfg = Config {
        server: server.clone(),
        server_name,
        tls,
        timeouts,
        password,
        users,
        max_conns,
        pool,
        pool_age,
    };
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
    signals::watch(signals, move || stopper.stop())?;
    log::info!("listening on {addr} for socks5, socks4 and http, server {server} as {name}, {format} format, up to {max_conns} connections ({cap_from})");
    local.run();
    Ok(())
}
