//! `blocking-server`: the TLS side of the pair. See the crate docs and README.

use std::path::PathBuf;
use std::process::ExitCode;

use blocking_proxy::cli::{self, Exit};
use blocking_proxy::server::{Config, Server};
use blocking_proxy::tls::{self, Identity};

const PROG: &str = "blocking-server";
const ABOUT: &str = "TLS server for blocking-local: reads the target, connects to it and relays.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    cli::finish(PROG, run(&args))
}

fn run(args: &[String]) -> Result<(), Exit> {
    let mut opts = getopts::Options::new();
    opts.optopt("", "cert", "certificate chain, PEM, leaf first (fullchain.pem)", "FILE");
    opts.optopt("", "key", "private key, PEM: PKCS#8, PKCS#1 or SEC1 (privkey.pem)", "FILE");
    opts.optopt("", "listen", "TLS address to listen on (default 0.0.0.0:9012)", "ADDR:PORT");
    cli::common_options(&mut opts);
    let m = cli::parse(PROG, ABOUT, &opts, args)?;

    let identity = match (m.opt_str("cert"), m.opt_str("key")) {
        (Some(cert), Some(key)) => Identity::Files { cert: PathBuf::from(cert), key: PathBuf::from(key) },
        (None, None) => Identity::TestCertificate,
        _ => return Err(Exit::Usage("--cert and --key go together".into())),
    };
    let timeouts = cli::timeouts(&m)?;
    let listen = m.opt_str("listen").unwrap_or_else(|| "0.0.0.0:9012".into());

    let tls = tls::server_config(&identity)?;
    let server = Server::bind(&listen, Config { tls, timeouts })?;
    if let Identity::TestCertificate = identity {
        log::warn!("no --cert/--key: using the built-in test certificate for localhost; its key is public, for tests and demos only");
    }
    log::info!("listening on {} for tls", server.local_addr().map_err(blocking_proxy::Error::Io)?);
    server.run();
    Ok(())
}
