//! What the two binaries share: common options, logging setup and the way a
//! run ends (exit 0, 1 with one line for a failure, 2 with one line for bad usage).

use std::process::ExitCode;
use std::time::Duration;

use getopts::{Matches, Options};

use crate::{Error, Timeouts};

/// Why a binary stops.
pub enum Exit {
    /// `--help` or `--version` was printed.
    Done,
    /// Bad command line: one line, exit status 2.
    Usage(String),
    /// A failure at start or while running: one line, exit status 1.
    Failed(Error),
}

impl From<Error> for Exit {
    fn from(e: Error) -> Self {
        Exit::Failed(e)
    }
}

impl From<getopts::Fail> for Exit {
    fn from(e: getopts::Fail) -> Self {
        Exit::Usage(e.to_string())
    }
}

/// Turns the result of a binary's `run` into its exit status and one line on stderr.
pub fn finish(prog: &str, result: Result<(), Exit>) -> ExitCode {
    match result {
        Ok(()) | Err(Exit::Done) => ExitCode::SUCCESS,
        Err(Exit::Usage(msg)) => {
            eprintln!("{prog}: {msg} (try --help)");
            ExitCode::from(2)
        }
        Err(Exit::Failed(e)) => {
            eprintln!("{prog}: {e}");
            ExitCode::from(1)
        }
    }
}

/// Adds the options both binaries take: timeouts, verbosity, help and version.
pub fn common_options(opts: &mut Options) {
    let d = Timeouts::default();
    let secs = |t: Duration| format!("SECS (default {})", t.as_secs());
    opts.optopt("", "handshake-timeout", "deadline of the handshake phase", &secs(d.handshake));
    opts.optopt("", "connect-timeout", "deadline of the onward connect", &secs(d.connect));
    opts.optopt("", "idle-timeout", "close after no traffic either way", &secs(d.idle));
    opts.optopt("", "linger", "after one direction ends, close the other once quiet", &secs(d.linger));
    opts.optflagmulti("v", "verbose", "log more (debug, then trace)");
    opts.optflag("q", "quiet", "log only warnings and errors");
    opts.optflag("h", "help", "print this help");
    opts.optflag("V", "version", "print the version");
}

/// Parses the arguments; handles `--help` and `--version`, and sets up logging.
pub fn parse(prog: &str, about: &str, opts: &Options, args: &[String]) -> Result<Matches, Exit> {
    let m = opts.parse(args)?;
    if m.opt_present("help") {
        let brief = format!("Usage: {prog} [options]\n\n{about}");
        print!("{}", opts.usage(&brief));
        return Err(Exit::Done);
    }
    if m.opt_present("version") {
        println!("{prog} {}", env!("CARGO_PKG_VERSION"));
        return Err(Exit::Done);
    }
    if let Some(extra) = m.free.first() {
        return Err(Exit::Usage(format!("unexpected argument: {extra}")));
    }
    let level = match (m.opt_present("quiet"), m.opt_count("verbose")) {
        (true, _) => log::LevelFilter::Warn,
        (false, 0) => log::LevelFilter::Info,
        (false, 1) => log::LevelFilter::Debug,
        (false, _) => log::LevelFilter::Trace,
    };
    // RUST_LOG, when set, wins over -v/-q.
    env_logger::Builder::new().filter_level(level).format_target(false).parse_env("RUST_LOG").init();
    Ok(m)
}

/// Reads the timeout options.
pub fn timeouts(m: &Matches) -> Result<Timeouts, Exit> {
    let mut t = Timeouts::default();
    for (name, slot) in [
        ("handshake-timeout", &mut t.handshake),
        ("connect-timeout", &mut t.connect),
        ("idle-timeout", &mut t.idle),
        ("linger", &mut t.linger),
    ] {
        if let Some(v) = m.opt_str(name) {
            *slot = parse_secs(&v).ok_or_else(|| {
                Exit::Usage(format!("--{name} wants a positive number of seconds, not {v:?}"))
            })?;
        }
    }
    Ok(t)
}

fn parse_secs(v: &str) -> Option<Duration> {
    let s: f64 = v.parse().ok()?;
    (s.is_finite() && s > 0.0 && s < 1e9).then(|| Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::parse_secs;
    use std::time::Duration;

    #[test]
    fn seconds_may_be_fractional_but_not_zero() {
        assert_eq!(parse_secs("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_secs("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_secs("0"), None);
        assert_eq!(parse_secs("-1"), None);
        assert_eq!(parse_secs("inf"), None);
        assert_eq!(parse_secs("ten"), None);
    }
}
