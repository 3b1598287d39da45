//! `blocking-local`: the side of the pair next to the applications. It
//! serves SOCKS5, SOCKS4 and HTTP proxy clients on one port and carries each
//! over TLS to blocking-server. See `--help` and the README.

use std::process::ExitCode;

fn main() -> ExitCode {
    blocking_proxy::cli::main("blocking-local", blocking_proxy::cli::local::run)
}
