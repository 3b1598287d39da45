//! `blocking-local`: the SOCKS5 side of the pair. See the crate docs and README.

use std::path::PathBuf;
use std::process::ExitCode;

use blocking_proxy::cli::{self, Exit};
use blocking_proxy::local::{Config, Local};
use blocking_proxy::tls::{self, Trust};
use blocking_proxy::wire::Target;

const PROG: &str = "blocking-local";
const ABOUT: &str = "SOCKS5 proxy that carries every connection over TLS to blocking-server.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    cli::finish(PROG, run(&args))
}

fn run(args: &[String]) -> Result<(), Exit> {
    let mut opts = getopts::Options::new();
    opts.optopt("", "server", "blocking-server to connect to (required)", "HOST:PORT");
    opts.optopt("", "listen", "SOCKS5 address to listen on (default 127.0.0.1:1081)", "ADDR:PORT");
    opts.optopt("", "ca", "trust only the CA certificates in this PEM file", "FILE");
    opts.optopt("", "sni", "name to verify and send as SNI (default: the host of --server)", "NAME");
    opts.optflag("", "insecure", "do not verify the server's certificate (warns)");
    cli::common_options(&mut opts);
    let m = cli::parse(PROG, ABOUT, &opts, args)?;

    let server = m.opt_str("server").ok_or_else(|| Exit::Usage("--server is required".into()))?;
    let server = Target::parse(&server)
        .ok_or_else(|| Exit::Usage(format!("--server wants HOST:PORT, not {server:?}")))?;
    let trust = match (m.opt_str("ca"), m.opt_present("insecure")) {
        (Some(_), true) => return Err(Exit::Usage("--ca and --insecure exclude each other".into())),
        (Some(ca), false) => Trust::CaFile(PathBuf::from(ca)),
        (None, true) => Trust::Insecure,
        (None, false) => Trust::WebPki,
    };
    let name = m.opt_str("sni").unwrap_or_else(|| server.host());
    let server_name = tls::server_name(&name)?;
    let timeouts = cli::timeouts(&m)?;
    let listen = m.opt_str("listen").unwrap_or_else(|| "127.0.0.1:1081".into());

    let tls = tls::client_config(&trust)?;
    let local = Local::bind(&listen, Config { server: server.clone(), server_name, tls, timeouts })?;
    if let Trust::Insecure = trust {
        log::warn!("--insecure: the server's certificate is not verified; anyone on the path can read and change the traffic");
    }
    log::info!(
        "listening on {} for socks5, server {server} as {name}",
        local.local_addr().map_err(blocking_proxy::Error::Io)?
    );
    local.run();
    Ok(())
}
