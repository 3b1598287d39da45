//! What the two binaries share: common options, logging setup and the way a
//! run ends (exit 0, 1 with one line for a failure, 2 with one line for bad usage).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use getopts::{Matches, Options};

use crate::error::Error;
use crate::metrics::{self, Role};
use crate::net::{self, Timeouts};
use crate::signals::Signals;
use crate::socks5::User;

/// The environment variable a password may come from (safe from `ps`).
pub const PASSWORD_ENV: &str = "BLOCKING_PROXY_PASSWORD";

/// Why a binary stops.
pub enum Exit {
    /// `--help` or `--version` was printed.
    Done,
    /// Bad command line: one line, exit status 2.
    Usage(String),
    /// A failure at start or while running: one line, exit status 1.
    Failed(Error),
}

impl std::fmt::Display for Exit {
    /// The one line a failure or a usage error says (nothing for `Done`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Done => Ok(()),
            Exit::Usage(msg) => f.write_str(msg),
            Exit::Failed(e) => write!(f, "{e}"),
        }
    }
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

/// A binary's `main`: bounds the malloc arenas and blocks the shutdown
/// signals before any thread exists (every thread then inherits the block),
/// runs `run` with the arguments, and turns its result into the exit status.
pub fn main(prog: &str, run: fn(&[String], Signals) -> Result<(), Exit>) -> ExitCode {
    crate::sys::bound_malloc_arenas();
    let args: Vec<String> = std::env::args().skip(1).collect();
    finish(prog, crate::signals::block().map_err(Exit::from).and_then(|signals| run(&args, signals)))
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
    opts.optopt("", "drain-timeout", "on SIGTERM/SIGINT, let connections finish this long", &secs(d.drain));
    opts.optopt("", "udp-timeout", "end a UDP association after no datagram either way", &secs(d.udp));
    opts.optopt("", "max-conns", "connections at once (default: from the descriptor limit)", "N");
    opts.optopt(
        "",
        "metrics",
        "serve Prometheus metrics at http://ADDR:PORT/metrics (no auth: keep it private)",
        "ADDR:PORT",
    );
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
    if !m.free.is_empty() {
        // Never echoed: it may be a secret the shell split (--password correct horse).
        return Err(Exit::Usage(format!(
            "unexpected argument ({} in all): options take the form --name VALUE; quote a value with spaces",
            m.free.len()
        )));
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
        ("drain-timeout", &mut t.drain),
        ("udp-timeout", &mut t.udp),
    ] {
        if let Some(v) = m.opt_str(name) {
            *slot = parse_secs(&v).ok_or_else(|| {
                Exit::Usage(format!("--{name} wants a positive number of seconds, not {v:?}"))
            })?;
        }
    }
    Ok(t)
}

/// Raises the descriptor and thread limits and returns `--max-conns`, or
/// the cap the limits allow for connections of `fds_per_connection`
/// descriptors and [`net::THREADS_PER_CONNECTION`] threads each; with it,
/// what set the cap, for the start-up line.
pub fn max_conns(m: &Matches, fds_per_connection: u64) -> Result<(usize, String), Exit> {
    let fds = net::raise_fd_limit();
    let threads = net::thread_limit();
    if let Some(v) = m.opt_str("max-conns") {
        let n = v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| Exit::Usage(format!("--max-conns wants a positive number, not {v:?}")))?;
        return Ok((n, "--max-conns".into()));
    }
    let by_fds = net::connection_cap(fds, fds_per_connection);
    let why_fds = format!("descriptor limit {fds}, {fds_per_connection} per connection");
    Ok(match threads {
        Some((limit, name)) if net::thread_cap(limit) < by_fds => (
            net::thread_cap(limit),
            format!(
                "{name} {limit}, {} threads per connection; the {why_fds} would allow {by_fds}",
                net::THREADS_PER_CONNECTION
            ),
        ),
        _ => (by_fds, why_fds),
    })
}

/// Serves the metrics on `--metrics ADDR:PORT`, if given, from a thread of
/// its own, and logs where (port 0 gets a free port, named in that line).
/// A bind failure is an error; an address that is not loopback, a warning:
/// the metrics are served to anyone who reaches them.
pub fn serve_metrics(m: &Matches, role: Role) -> Result<(), Exit> {
    let Some(addr) = m.opt_str("metrics") else { return Ok(()) };
    let listener = net::listen(&addr).map_err(|e| Error::Config(format!("--metrics: {e}")))?;
    let bound = listener.local_addr().map_err(Error::Io)?;
    metrics::serve(listener, role)
        .map_err(|e| Error::Config(format!("--metrics: cannot start its thread: {e}")))?;
    log::info!("metrics served on http://{bound}/metrics");
    if !bound.ip().is_loopback() {
        log::warn!(
            "--metrics on {bound}: anyone who reaches it can read the metrics; keep it behind a firewall"
        );
    }
    Ok(())
}

/// Adds `--alpn`.
pub fn alpn_option(opts: &mut Options, what: &str) {
    let hint = format!("{what} (default {})", crate::tls::DEFAULT_ALPN);
    opts.optopt("", "alpn", &hint, "LIST");
}

/// The `--alpn` list, or the default.
pub fn alpn(m: &Matches) -> Result<Vec<Vec<u8>>, Exit> {
    let list = m.opt_str("alpn").unwrap_or_else(|| crate::tls::DEFAULT_ALPN.to_owned());
    crate::tls::parse_alpn(&list)
        .ok_or_else(|| Exit::Usage("--alpn wants protocol names separated by commas (h2,http/1.1)".into()))
}

/// Adds `--password` and `--password-file`.
pub fn password_options(opts: &mut Options, what: &str) {
    opts.optmulti(
        "",
        "password",
        &format!("{what} (visible in ps: prefer the file or ${PASSWORD_ENV})"),
        "SECRET",
    );
    opts.optopt("", "password-file", "read passwords from FILE, one per line", "FILE");
}

/// Every password given by `--password`, `--password-file` and the environment.
pub fn passwords(m: &Matches) -> Result<Vec<String>, Exit> {
    let mut all = m.opt_strs("password");
    if let Some(path) = m.opt_str("password-file") {
        let lines = read_lines(Path::new(&path), "password file")?;
        if lines.is_empty() {
            return Err(Exit::Failed(Error::Config(format!("no password in {path}"))));
        }
        all.extend(lines);
    }
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        if !p.is_empty() {
            all.push(p);
        }
    }
    if all.iter().any(|p| p.is_empty()) {
        return Err(Exit::Usage("a password cannot be empty".into()));
    }
    Ok(all)
}

/// Users from `--user NAME:PASS` and `--user-file FILE` (one NAME:PASS per line).
pub fn users(m: &Matches) -> Result<Vec<User>, Exit> {
    let mut lines = m.opt_strs("user");
    let from_args = lines.len();
    if let Some(path) = m.opt_str("user-file") {
        let file = read_lines(Path::new(&path), "user file")?;
        // An empty file would leave the proxy open to anyone: never what it was given for.
        if file.is_empty() {
            return Err(Exit::Failed(Error::Config(format!("no user in {path}"))));
        }
        lines.extend(file);
    }
    let mut users = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let user = line.split_once(':').and_then(|(name, password)| {
            let fits = |s: &str| !s.is_empty() && s.len() <= 255;
            (fits(name) && fits(password)).then(|| User { name: name.into(), password: password.into() })
        });
        // Never echo the line: it holds a password.
        let user = user.ok_or_else(|| match (i < from_args, m.opt_str("user-file")) {
            (false, Some(file)) => Exit::Failed(Error::Config(format!(
                "{file} line {}: want NAME:PASSWORD, each 1 to 255 bytes",
                i - from_args + 1
            ))),
            _ => Exit::Usage("--user wants NAME:PASSWORD, each 1 to 255 bytes".into()),
        })?;
        users.push(user);
    }
    Ok(users)
}

/// The non-empty lines of a file, without their line endings.
fn read_lines(path: &Path, what: &str) -> Result<Vec<String>, Exit> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Exit::Failed(Error::Config(format!("cannot read {what} {}: {e}", path.display()))))?;
    Ok(text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// Whether every address `addr` (`host:port`) resolves to is a loopback
/// address; `None` when it does not resolve (binding it then fails and says why).
pub fn loopback_only(addr: &str) -> Option<bool> {
    let all: Vec<SocketAddr> = addr.to_socket_addrs().ok()?.collect();
    (!all.is_empty()).then(|| all.iter().all(|a| a.ip().is_loopback()))
}

/// Seconds, fractional allowed, greater than zero.
pub fn parse_secs(v: &str) -> Option<Duration> {
    let s: f64 = v.parse().ok()?;
    (s.is_finite() && s > 0.0 && s < 1e9).then(|| Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::{loopback_only, parse_secs};
    use std::time::Duration;

    #[test]
    fn loopback_only_when_every_address_is() {
        for addr in ["127.0.0.1:9012", "127.1.2.3:0", "[::1]:9012", "localhost:0"] {
            assert_eq!(loopback_only(addr), Some(true), "{addr}");
        }
        for addr in ["0.0.0.0:9012", "[::]:9012", "192.0.2.1:443", "[::ffff:127.0.0.1]:1", "10.0.0.1:1"] {
            assert_eq!(loopback_only(addr), Some(false), "{addr}");
        }
        assert_eq!(loopback_only("no port"), None);
    }

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
