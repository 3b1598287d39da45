//! The two binaries' command lines and runs: every flag declared once
//! ([`flags`]) and read into typed arguments ([`local::LocalArgs`],
//! [`server::ServerArgs`], [`common`]), the files they name, logging,
//! signals ([`signals`]) and the exit status ([`exit`]).

pub mod local;
pub mod server;
pub mod common;
pub mod flags;
pub mod signals;
pub mod exit;

use std::process::ExitCode;

use exit::Exit;
use signals::Signals;

/// A binary's `main`: bounds the malloc arenas and blocks the shutdown
/// signals before any thread exists (every thread then inherits the block),
/// runs `run` with the arguments, and turns its result into the exit status
/// and, for a failure, one line on stderr.
pub fn main(prog: &str, run: fn(&[String], Signals) -> Result<(), Exit>) -> ExitCode {
    crate::sys::bound_malloc_arenas();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match signals::block().map_err(Exit::from).and_then(|signals| run(&args, signals)) {
        Ok(()) | Err(Exit::Done) => ExitCode::SUCCESS,
        Err(e @ Exit::Usage(_)) => {
            eprintln!("{prog}: {e} (try --help)");
            ExitCode::from(2)
        }
        Err(e @ Exit::Failed(_)) => {
            eprintln!("{prog}: {e}");
            ExitCode::from(1)
        }
    }
}
