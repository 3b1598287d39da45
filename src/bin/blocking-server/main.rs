//! `blocking-server`: the TLS side of the pair. It reads each connection's
//! target from its header, connects to it and relays. See `--help` and the
//! README.

use std::process::ExitCode;

fn main() -> ExitCode {
    blocking_proxy::cli::main("blocking-server", blocking_proxy::cli::server::run)
}
