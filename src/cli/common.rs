//! What both binaries read from their command lines and files alike: the
//! deadlines, the connection cap, logging, the metrics address, passwords,
//! users, ALPN and the ACL file. Parsing is pure (a unit test reaches every check);
//! reading a file happens when the run, or a reload, asks for it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use getopts::Matches;

use crate::conn::admission::Fds;
use crate::conn::Timeouts;
use crate::endpoint;
use crate::file;
use crate::metrics::Role;
use crate::net::limits;
use crate::proto::acl::Acl;
use crate::proto::addr::Target;
use crate::proto::users::User;
use crate::tls::config::{parse_alpn, DEFAULT_ALPN};

use super::exit::{failed, usage, Exit};

/// The environment variable a password may come from (safe from `ps`).
pub const PASSWORD_ENV: &str = "BLOCKING_PROXY_PASSWORD";

/// The flags both binaries take ([`super::flags::COMMON`]), parsed.
#[derive(Clone, Debug)]
pub struct Common {
    /// The deadlines of each connection.
    pub timeouts: Timeouts,
    /// `--max-conns`, when given.
    pub max_conns: Option<usize>,
    /// `--metrics`, when given.
    pub metrics: Option<String>,
    /// How much to log (`-v`, `-q`).
    pub log: log::LevelFilter,
}

impl Common {
    /// Reads the common flags from `m`.
    pub fn parse(m: &Matches) -> Result<Common, Exit> {
        let mut timeouts = Timeouts::default();
        for (name, slot) in [
            ("handshake-timeout", &mut timeouts.handshake),
            ("connect-timeout", &mut timeouts.connect),
            ("idle-timeout", &mut timeouts.idle),
            ("linger", &mut timeouts.linger),
            ("drain-timeout", &mut timeouts.drain),
            ("udp-timeout", &mut timeouts.udp),
        ] {
            if let Some(v) = m.opt_str(name) {
                *slot = secs(name, &v)?;
            }
        }
        let max_conns = m.opt_str("max-conns").map(|v| positive("max-conns", &v)).transpose()?;
        let log = match (m.opt_present("quiet"), m.opt_count("verbose")) {
            (true, _) => log::LevelFilter::Warn,
            (false, 0) => log::LevelFilter::Info,
            (false, 1) => log::LevelFilter::Debug,
            (false, _) => log::LevelFilter::Trace,
        };
        Ok(Common { timeouts, max_conns, metrics: m.opt_str("metrics"), log })
    }
}

/// `--listen`, or `default`: an address and port, or a usage error that
/// says how to write one.
pub fn listen(m: &Matches, default: &str) -> Result<String, Exit> {
    let Some(listen) = m.opt_str("listen") else { return Ok(default.to_owned()) };
    match Target::parse(&listen) {
        Some(_) => Ok(listen),
        None => Err(usage(bad_address("listen", "ADDR:PORT", &listen))),
    }
}

/// `value`, given to `--flag`, as HOST:PORT (a name, IPv4, or `[IPv6]`, and
/// a port), or a usage error that says how to write it.
pub fn host_port(flag: &str, value: &str) -> Result<Target, Exit> {
    Target::parse(value).ok_or_else(|| usage(bad_address(flag, "HOST:PORT", value)))
}

/// The usage error for `value`, given to `--flag` where `form` (HOST:PORT,
/// ADDR:PORT) was wanted: what is wrong with it and how to write it.
pub fn bad_address(flag: &str, form: &str, value: &str) -> String {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let hint = match value.rsplit_once(':') {
        // A port alone, or with no address before its colon.
        None if digits(value) => {
            return format!("--{flag} wants {form}, such as 127.0.0.1:{value}, not {value:?}")
        }
        Some(("", port)) if digits(port) => {
            return format!("--{flag} wants {form}, such as 127.0.0.1:{port} or [::]:{port}, not {value:?}")
        }
        Some((host, port)) if host.contains(':') && !host.starts_with('[') => {
            format!(": write an IPv6 address in brackets: [{host}]:{port}")
        }
        Some((_, port)) if digits(port) && port.parse::<u32>().map_or(true, |p| p > 65_535) => {
            format!(": port {port} is out of range (1 to 65535)")
        }
        _ => String::new(),
    };
    format!("--{flag} wants {form}, not {value:?}{hint}")
}

/// Starts logging to stderr at `level` for the proxy's own lines, and at
/// most `info` for its libraries'; `RUST_LOG`, when set, wins.
pub fn init_logging(level: log::LevelFilter) {
    // `-v` is for the proxy's own lines, which name their connection; the
    // libraries' debug output (rustls's handshakes) stays behind RUST_LOG.
    let mut logger = env_logger::Builder::new();
    logger.format_target(false);
    match std::env::var("RUST_LOG") {
        Ok(filters) if !filters.trim().is_empty() => logger.parse_filters(&filters),
        _ => logger
            .filter_level(level.min(log::LevelFilter::Info))
            .filter_module(env!("CARGO_CRATE_NAME"), level),
    };
    let _ = logger.try_init();
}

/// `--NAME`'s value as seconds: fractional allowed, greater than zero.
pub fn secs(name: &str, v: &str) -> Result<Duration, Exit> {
    parse_secs(v).ok_or_else(|| usage(format!("--{name} wants a positive number of seconds, not {v:?}")))
}

/// `--NAME`'s value as a whole number greater than zero.
pub fn positive(name: &str, v: &str) -> Result<usize, Exit> {
    v.parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| usage(format!("--{name} wants a positive number, not {v:?}")))
}

/// Seconds, fractional allowed, greater than zero.
pub fn parse_secs(v: &str) -> Option<Duration> {
    let s: f64 = v.parse().ok()?;
    (s.is_finite() && s > 0.0 && s < 1e9).then(|| Duration::from_secs_f64(s))
}

/// The `--alpn` list, or the default.
pub fn alpn(m: &Matches) -> Result<Vec<Vec<u8>>, Exit> {
    let list = m.opt_str("alpn").unwrap_or_else(|| DEFAULT_ALPN.to_owned());
    parse_alpn(&list).ok_or_else(|| usage("--alpn wants protocol names separated by commas (h2,http/1.1)"))
}

/// The passwords a command line names: `--password` values and a
/// `--password-file`, read (with the environment's) by [`Passwords::read`].
#[derive(Clone, Default)]
pub struct Passwords {
    given: Vec<String>,
    /// `--password-file`, read again on reload.
    pub file: Option<PathBuf>,
}

impl Passwords {
    /// Reads `--password` and `--password-file` from `m`; an empty
    /// `--password` is a usage error.
    pub fn parse(m: &Matches) -> Result<Passwords, Exit> {
        let given = m.opt_strs("password");
        if given.iter().any(String::is_empty) {
            return Err(usage("a password cannot be empty"));
        }
        Ok(Passwords { given, file: m.opt_str("password-file").map(PathBuf::from) })
    }

    /// Every password: `--password`, the lines of the file, and
    /// [`PASSWORD_ENV`] (ignored when empty). A file without one is an error.
    pub fn read(&self) -> Result<Vec<String>, Exit> {
        let mut all = self.given.clone();
        if let Some(path) = &self.file {
            all.extend(read_lines(path, "password")?);
        }
        if let Ok(p) = std::env::var(PASSWORD_ENV) {
            if !p.is_empty() {
                all.push(p);
            }
        }
        Ok(all)
    }
}

impl std::fmt::Debug for Passwords {
    /// How many were given, never what they are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Passwords({} given, file {:?})", self.given.len(), self.file)
    }
}

/// The users a command line names: `--user` values and a `--user-file`.
#[derive(Clone, Debug, Default)]
pub struct Users {
    given: Vec<User>,
    /// `--user-file`, read again on reload.
    pub file: Option<PathBuf>,
}

impl Users {
    /// Reads `--user` (each `NAME:PASS`, checked now) and `--user-file` from `m`.
    pub fn parse(m: &Matches) -> Result<Users, Exit> {
        // Never echo the value: it holds a password.
        let given = m
            .opt_strs("user")
            .iter()
            .map(|line| {
                User::parse(line).ok_or_else(|| usage("--user wants NAME:PASSWORD, each 1 to 255 bytes"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Users { given, file: m.opt_str("user-file").map(PathBuf::from) })
    }

    /// Every user: `--user`, then the lines of the file. An empty file is an
    /// error (it would leave the proxy open to anyone: never what it was
    /// given for), and so is a bad line, named by its number only.
    pub fn read(&self) -> Result<Vec<User>, Exit> {
        let mut users = self.given.clone();
        if let Some(path) = &self.file {
            for (i, line) in read_lines(path, "user")?.iter().enumerate() {
                let user = User::parse(line).ok_or_else(|| {
                    failed(format!(
                        "{} line {}: want NAME:PASSWORD, each 1 to 255 bytes",
                        path.display(),
                        i + 1
                    ))
                })?;
                users.push(user);
            }
        }
        Ok(users)
    }
}

/// The ACL file at `path` (`--acl`), read and parsed: a file that cannot
/// be read is a failure (exit 1), one that is not a valid ACL a usage error
/// that names the file and the line (exit 2). Lines skipped for holding
/// non-ASCII characters (as shadowsocks skips them) get one warning.
pub fn read_acl(path: &Path) -> Result<Acl, Exit> {
    let text = file::read_list(path, "ACL file")?;
    let acl = Acl::parse(&text).map_err(|e| usage(format!("ACL file {} {e}", path.display())))?;
    if acl.skipped() > 0 {
        log::warn!(
            "ACL file {}: {} lines with non-ASCII characters skipped, as shadowsocks skips them",
            path.display(),
            acl.skipped()
        );
    }
    Ok(acl)
}

/// The lines of a password or user file, checked by [`file::lines`].
fn read_lines(path: &Path, what: &str) -> Result<Vec<String>, Exit> {
    Ok(file::lines(path, &format!("{what} file"))?)
}

/// What the limits allow a process: its connection cap, what set it (for
/// the start-up line), and the descriptors its connections may hold.
#[derive(Clone, Debug)]
pub struct Caps {
    /// Connections at once: `--max-conns`, or what the limits allow.
    pub conns: usize,
    /// What set `conns`.
    pub why: String,
    /// The descriptors the connections may hold between them, whatever
    /// `--max-conns` says: a connection over it is refused, never left to
    /// fail on EMFILE.
    pub fds: Fds,
}

/// Raises the descriptor and thread limits and returns the caps for
/// connections of `fds_per_connection` descriptors and
/// [`limits::THREADS_PER_CONNECTION`] threads each, with `kept` descriptors
/// set aside (a pool's ready connections): `--max-conns` when given, else
/// what the limits allow.
pub fn cap(max_conns: Option<usize>, fds_per_connection: u64, kept: u64) -> Caps {
    let limit = limits::raise_fd_limit();
    let threads = limits::thread_limit();
    let budget = limits::fd_budget(limit, kept);
    let fds = Fds {
        budget: usize::try_from(budget).unwrap_or(usize::MAX),
        per_connection: usize::try_from(fds_per_connection).unwrap_or(usize::MAX),
    };
    if let Some(n) = max_conns {
        return Caps { conns: n, why: "--max-conns".into(), fds };
    }
    let by_fds = limits::connection_cap(budget, fds_per_connection);
    let why_fds = format!("descriptor limit {limit}, {fds_per_connection} per connection");
    let (conns, why) = match threads {
        Some((limit, name)) if limits::thread_cap(limit) < by_fds => (
            limits::thread_cap(limit),
            format!(
                "{name} {limit}, {} threads per connection; the {why_fds} would allow {by_fds}",
                limits::THREADS_PER_CONNECTION
            ),
        ),
        _ => (by_fds, why_fds),
    };
    Caps { conns, why, fds }
}

/// Serves the metrics on `--metrics ADDR:PORT`, if given, from a thread of
/// its own, with the live view of the open connections beside them, and
/// logs where (port 0 gets a free port, named in those lines). A bind
/// failure is an error; an address that is not loopback, a warning: the
/// metrics and the live view are served to anyone who reaches them.
pub fn serve_metrics(addr: Option<&str>, role: Role) -> Result<(), Exit> {
    let Some(addr) = addr else { return Ok(()) };
    let bound = endpoint::serve(addr, role).map_err(|e| failed(format!("--metrics: {e}")))?;
    log::info!("metrics served on http://{bound}/metrics");
    log::info!("open connections listed on http://{bound}/ (JSON: http://{bound}/connections)");
    if !bound.ip().is_loopback() {
        log::warn!(
            "--metrics on {bound}: anyone who reaches it can read the metrics and the open connections' addresses and targets; keep it behind a firewall"
        );
    }
    Ok(())
}

/// Whether every address `addr` (`host:port`) resolves to is a loopback
/// address; `None` when it does not resolve (binding it then fails and says why).
pub fn loopback_only(addr: &str) -> Option<bool> {
    let all: Vec<SocketAddr> = addr.to_socket_addrs().ok()?.collect();
    (!all.is_empty()).then(|| all.iter().all(|a| a.ip().is_loopback()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::flags::{self, COMMON};

    fn common(args: &[&str]) -> Result<Common, Exit> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Common::parse(&flags::parse("test", "", &[COMMON], &args)?)
    }

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

    #[test]
    fn common_flags_parse_into_timeouts_cap_and_log_level() {
        let c = common(&["--idle-timeout", "1.5", "--linger", "2", "--max-conns", "7", "-vv"]).unwrap();
        assert_eq!(
            (c.timeouts.idle, c.timeouts.linger),
            (Duration::from_millis(1500), Duration::from_secs(2))
        );
        assert_eq!(c.timeouts.handshake, Timeouts::default().handshake);
        assert_eq!((c.max_conns, c.log), (Some(7), log::LevelFilter::Trace));
        assert_eq!(common(&["-q", "-v"]).unwrap().log, log::LevelFilter::Warn, "-q wins");
        for (args, says) in [
            (&["--udp-timeout", "0"][..], "--udp-timeout wants a positive number of seconds"),
            (&["--max-conns", "0"][..], "--max-conns wants a positive number"),
            (&["--linger"][..], "linger"),
            (&["stray"][..], "unexpected argument (1 in all)"),
        ] {
            let Err(Exit::Usage(msg)) = common(args) else { panic!("{args:?}") };
            assert!(msg.contains(says), "{args:?}: {msg}");
        }
    }

    #[test]
    fn an_empty_password_and_a_bad_user_are_usage_errors_that_never_show_the_value() {
        let m = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            flags::parse("test", "", &[flags::LOCAL, COMMON], &args).unwrap()
        };
        assert!(matches!(Passwords::parse(&m(&["--password", ""])), Err(Exit::Usage(_))));
        let Err(Exit::Usage(msg)) = Users::parse(&m(&["--user", "secret-without-colon"])) else { panic!() };
        assert!(!msg.contains("secret"), "{msg}");
        let users = Users::parse(&m(&["--user", "a:b", "--user", "c:d:e"])).unwrap().read().unwrap();
        assert_eq!(users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["a", "c"]);
    }
}
