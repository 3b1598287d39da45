//! Every flag of both binaries, declared once: its name, the value it
//! takes, its help and its default. The parser (getopts) and `--help` are
//! built from these tables, and docs/REFERENCE.md holds the same text as
//! tables, which a test checks against `--help`.

use std::fmt::Write as _;

use getopts::{Matches, Options};

use super::exit::Exit;

/// One command-line flag.
pub struct Flag {
    /// The long name, without `--`.
    pub name: &'static str,
    /// The one-letter name, if any.
    pub short: Option<char>,
    /// What it takes.
    pub takes: Takes,
    /// What it does, as `--help` says it.
    pub help: &'static str,
    /// What holds without it.
    pub default: Default,
}

/// What a flag takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takes {
    /// Nothing: present or not.
    Nothing,
    /// Nothing, and may be repeated (`-vv`).
    Count,
    /// One value, described by the hint (`FILE`).
    One(&'static str),
    /// A value, and may be repeated.
    Many(&'static str),
}

/// What holds when a flag is not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Default {
    /// Nothing worth saying.
    None,
    /// This value, or this rule (`--help` says `(default …)`).
    Is(&'static str),
    /// The flag must be given.
    Required,
}

/// The listen address of blocking-local.
pub const LOCAL_LISTEN: &str = "127.0.0.1:1081";
/// The listen address of blocking-server.
pub const SERVER_LISTEN: &str = "0.0.0.0:9012";
/// Pending connections one source may hold unless `--max-pending-per-ip` says otherwise.
pub const MAX_PENDING_PER_SOURCE: usize = 64;
/// How long a ready connection may wait unused unless `--pool-age` says otherwise, in seconds.
pub const POOL_AGE_SECS: u64 = 5;

const fn flag(name: &'static str, takes: Takes, help: &'static str, default: Default) -> Flag {
    Flag { name, short: None, takes, help, default }
}

/// blocking-local's own flags.
pub const LOCAL: &[Flag] = &[
    flag(
        "server",
        Takes::Many("HOST:PORT"),
        "blocking-server to connect to: a name, IPv4 or [IPv6]:port; repeat for failover, in order of preference",
        Default::Required,
    ),
    flag(
        "balance",
        Takes::One("HOW"),
        "which server a new client goes to: the first one up, or round-robin over those up",
        Default::Is("first"),
    ),
    flag("listen", Takes::One("ADDR:PORT"), "address for SOCKS5, SOCKS4 and HTTP proxy clients", Default::Is(LOCAL_LISTEN)),
    flag("ca", Takes::One("FILE"), "trust only the CA certificates in this PEM file", Default::Is("webpki-roots")),
    flag(
        "pin",
        Takes::Many("SHA256HEX"),
        "trust exactly the certificate with this SHA-256 fingerprint, 64 hex digits, bare or with colons (repeatable)",
        Default::None,
    ),
    flag(
        "sni",
        Takes::Many("NAME"),
        "name to verify the certificate against and send as SNI; once for all, or once per --server",
        Default::Is("the host of --server"),
    ),
    flag("insecure", Takes::Nothing, "do not verify the server's certificate (warns at start)", Default::None),
    flag("alpn", Takes::One("LIST"), "ALPN protocols to offer the server, comma-separated", Default::Is("http/1.1")),
    flag(
        "password",
        Takes::Many("SECRET"),
        "speak the trojan format with this password (visible in ps: prefer --password-file or $BLOCKING_PROXY_PASSWORD)",
        Default::Is("none, the seed format"),
    ),
    flag("password-file", Takes::One("FILE"), "read the password from FILE (one non-empty line)", Default::None),
    flag(
        "user",
        Takes::Many("NAME:PASS"),
        "require SOCKS5 or HTTP Basic login as NAME with password PASS; SOCKS4 is then refused (repeatable)",
        Default::Is("no login"),
    ),
    flag("user-file", Takes::One("FILE"), "read NAME:PASS lines for --user", Default::None),
    flag(
        "pool",
        Takes::One("N"),
        "TLS connections to keep ready for new clients; 0 for none",
        Default::Is("as many as clients opened in the busiest second of the last minute, up to 16; none after 5 idle minutes"),
    ),
    flag(
        "pool-age",
        Takes::One("SECS"),
        "replace a ready connection that has waited this long unused; keep it below the server's --handshake-timeout",
        Default::Is("5"),
    ),
    flag(
        "acl",
        Takes::One("FILE"),
        "route each connection and datagram direct, through the server or nowhere by this shadowsocks ACL file (docs/ROUTING.md); SIGHUP reads it again",
        Default::Is("everything through the server"),
    ),
    flag(
        "dns",
        Takes::One("ADDR:PORT"),
        "serve DNS on this address, UDP and TCP: names the ACL sends through the server asked of --dns-remote through it, the others of --dns-direct",
        Default::None,
    ),
    flag(
        "dns-remote",
        Takes::One("HOST:PORT"),
        "the resolver --dns asks through the server, over TCP (required with --dns)",
        Default::None,
    ),
    flag(
        "dns-direct",
        Takes::Many("ADDR:PORT"),
        "a resolver --dns asks directly, for names the ACL sends direct and the servers' own (repeatable)",
        Default::Is("the nameservers of /etc/resolv.conf"),
    ),
    flag(
        "acl-resolve",
        Takes::Nothing,
        "resolve a name no domain rule of --acl matches, here, to test the IP rules (tells the local resolver every name asked for)",
        Default::Is("names are never resolved to route them"),
    ),
    flag(
        "forward",
        Takes::Many("LISTEN=HOST:PORT"),
        "send every TCP connection to LISTEN, and with a password every UDP client's datagrams, through the server to HOST:PORT (repeatable; the ACL does not apply)",
        Default::None,
    ),
    flag(
        "redir",
        Takes::One("ADDR:PORT"),
        "accept TCP connections a firewall redirect rule sent here, and route each as a SOCKS5 request for its original destination",
        Default::None,
    ),
    flag(
        "tproxy",
        Takes::One("ADDR:PORT"),
        "accept TCP connections and UDP datagrams a firewall tproxy rule delivers here, and route each by its original destination (needs CAP_NET_ADMIN)",
        Default::None,
    ),
    flag(
        "sniff",
        Takes::Nothing,
        "route --redir and --tproxy connections by the name their first bytes carry (TLS SNI, HTTP Host), waiting up to 300 ms for them",
        Default::Is("by their original destination"),
    ),
    flag(
        "mark",
        Takes::One("N"),
        "set firewall mark N (SO_MARK) on every socket the local opens, for redirect and tproxy rules to skip (needs CAP_NET_ADMIN)",
        Default::None,
    ),
];

/// blocking-server's own flags.
pub const SERVER: &[Flag] = &[
    flag(
        "cert",
        Takes::One("FILE"),
        "certificate chain, PEM, leaf first (fullchain.pem); required off loopback",
        Default::Is("a built-in test certificate, on loopback only"),
    ),
    flag(
        "key",
        Takes::One("FILE"),
        "private key, PEM: PKCS#8, PKCS#1 or SEC1 (privkey.pem); goes with --cert",
        Default::None,
    ),
    flag("listen", Takes::One("ADDR:PORT"), "TLS address to listen on ([::]:9012 for IPv6)", Default::Is(SERVER_LISTEN)),
    flag(
        "password",
        Takes::Many("SECRET"),
        "accept only trojan clients with this password (repeatable; visible in ps: prefer --password-file or $BLOCKING_PROXY_PASSWORD)",
        Default::Is("none, the seed format"),
    ),
    flag("password-file", Takes::One("FILE"), "read passwords from FILE, one per line", Default::None),
    flag(
        "users",
        Takes::One("FILE"),
        "accept trojan clients as the named users of FILE, one NAME:PASSWORD [max_conns=N] [rate=SIZE] [quota=SIZE[/PERIOD]] a line (docs/OPERATING.md); may be combined with --password; SIGHUP reads it again",
        Default::None,
    ),
    flag(
        "quota-state",
        Takes::One("FILE"),
        "keep what each --users user has used of its quota in FILE: read at start, written every minute, after a reload and at exit",
        Default::Is("in memory: a restart starts every quota again"),
    ),
    flag(
        "cut-removed",
        Takes::Nothing,
        "when SIGHUP removes a user from --users, end its open connections too",
        Default::Is("they go on; only new ones are refused"),
    ),
    flag(
        "fallback",
        Takes::One("HOST:PORT"),
        "hand connections without a valid header to this plain-TCP web server",
        Default::Is("none: close them"),
    ),
    flag("alpn", Takes::One("LIST"), "ALPN protocols to select from, in order of preference, comma-separated", Default::Is("http/1.1")),
    flag(
        "allow-private",
        Takes::Nothing,
        "allow non-public targets: loopback, private and special-purpose ranges, the host itself",
        Default::None,
    ),
    flag(
        "deny",
        Takes::Many("CIDR"),
        "never connect to this network, even with --allow-private (repeatable)",
        Default::None,
    ),
    flag(
        "acl",
        Takes::One("FILE"),
        "refuse targets by [outbound_block_list] and clients by the mode and [black_list]/[white_list] of this shadowsocks ACL file (docs/ROUTING.md); SIGHUP reads it again",
        Default::None,
    ),
    flag(
        "max-pending-per-ip",
        Takes::One("N"),
        "limit the connections one address (IPv6: one /64) may have in the handshake or before a valid header, once half the places are taken",
        Default::Is("64"),
    ),
    flag(
        "proxy-protocol",
        Takes::Nothing,
        "every connection begins with a PROXY protocol header (v1 or v2) from a load balancer (needs --proxy-from)",
        Default::None,
    ),
    flag(
        "proxy-from",
        Takes::Many("CIDR"),
        "take the PROXY protocol header only from this network, the balancers' (repeatable; required by --proxy-protocol; `any`: from anyone, with a warning)",
        Default::None,
    ),
    flag(
        "fallback-proxy-protocol",
        Takes::Nothing,
        "begin the connection to --fallback with a PROXY v2 header naming the client",
        Default::None,
    ),
];

/// The flags both binaries take.
pub const COMMON: &[Flag] = &[
    flag("handshake-timeout", Takes::One("SECS"), "deadline of the handshake phase", Default::Is("10")),
    flag("connect-timeout", Takes::One("SECS"), "deadline of the onward connect", Default::Is("10")),
    flag(
        "idle-timeout",
        Takes::One("SECS"),
        "close after no traffic in either direction",
        Default::Is("300"),
    ),
    flag(
        "linger",
        Takes::One("SECS"),
        "after one direction ends, close the other once quiet this long",
        Default::Is("30"),
    ),
    flag(
        "drain-timeout",
        Takes::One("SECS"),
        "on SIGTERM or SIGINT, let open connections finish this long",
        Default::Is("5"),
    ),
    flag(
        "udp-timeout",
        Takes::One("SECS"),
        "end a UDP association after no datagram either way",
        Default::Is("60"),
    ),
    flag(
        "max-conns",
        Takes::One("N"),
        "connections served at once",
        Default::Is("what the descriptor and thread limits allow"),
    ),
    flag(
        "metrics",
        Takes::One("ADDR:PORT"),
        "serve Prometheus metrics at http://ADDR:PORT/metrics and the open connections at http://ADDR:PORT/, unauthenticated: keep it private",
        Default::None,
    ),
    Flag {
        short: Some('v'),
        ..flag("verbose", Takes::Count, "log more of the proxy's own lines: once for debug, twice for trace (RUST_LOG for its libraries')", Default::None)
    },
    Flag { short: Some('q'), ..flag("quiet", Takes::Nothing, "log only warnings and errors", Default::None) },
    Flag { short: Some('h'), ..flag("help", Takes::Nothing, "print the options and exit", Default::None) },
    Flag { short: Some('V'), ..flag("version", Takes::Nothing, "print the version and exit", Default::None) },
];

/// Parses `args` by `tables`. `--help` and `--version` print and end the
/// run ([`Exit::Done`]); an argument that is not an option is a usage
/// error that never shows it (it may be part of a password the shell split).
pub fn parse(prog: &str, about: &str, tables: &[&[Flag]], args: &[String]) -> Result<Matches, Exit> {
    let m = options(tables).parse(args)?;
    if m.opt_present("help") {
        print!("{}", help(prog, about, tables));
        return Err(Exit::Done);
    }
    if m.opt_present("version") {
        println!("{prog} {}", env!("CARGO_PKG_VERSION"));
        return Err(Exit::Done);
    }
    if !m.free.is_empty() {
        return Err(Exit::Usage(format!(
            "unexpected argument ({} in all): options take the form --name VALUE; quote a value with spaces",
            m.free.len()
        )));
    }
    Ok(m)
}

/// The getopts options for `tables`.
fn options(tables: &[&[Flag]]) -> Options {
    let mut opts = Options::new();
    for f in tables.iter().copied().flatten() {
        let short = f.short.map(String::from).unwrap_or_default();
        match f.takes {
            Takes::Nothing => opts.optflag(&short, f.name, f.help),
            Takes::Count => opts.optflagmulti(&short, f.name, f.help),
            Takes::One(hint) => opts.optopt(&short, f.name, f.help, hint),
            Takes::Many(hint) => opts.optmulti(&short, f.name, f.help, hint),
        };
    }
    opts
}

/// `--help`: the usage line, what the program is, then one line per flag:
/// its names and value, then its help and default.
pub fn help(prog: &str, about: &str, tables: &[&[Flag]]) -> String {
    let names: Vec<(String, &Flag)> = tables.iter().copied().flatten().map(|f| (f.usage(), f)).collect();
    let width = names.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut out = format!("Usage: {prog} [options]\n\n{about}\n\nOptions:\n");
    for (name, f) in &names {
        let _ = write!(out, "{name:width$}  {}", f.help);
        match f.default {
            Default::None => {}
            Default::Is(v) => {
                let _ = write!(out, " (default {v})");
            }
            Default::Required => out.push_str(" (required)"),
        }
        out.push('\n');
    }
    out
}

impl Flag {
    /// How `--help` names it: `  -v, --verbose`, `      --listen ADDR:PORT`.
    fn usage(&self) -> String {
        let short = self.short.map_or_else(|| "    ".to_owned(), |c| format!("-{c}, "));
        let hint = match self.takes {
            Takes::One(h) | Takes::Many(h) => format!(" {h}"),
            Takes::Nothing | Takes::Count => String::new(),
        };
        format!("  {short}--{}{hint}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Timeouts;

    #[test]
    fn every_flag_is_declared_once_per_binary() {
        for tables in [[LOCAL, COMMON], [SERVER, COMMON]] {
            let mut names: Vec<&str> = tables.iter().copied().flatten().map(|f| f.name).collect();
            names.sort_unstable();
            let all = names.len();
            names.dedup();
            assert_eq!(names.len(), all, "a name twice");
        }
    }

    #[test]
    fn the_defaults_help_shows_are_the_defaults_in_force() {
        let shown =
            |table: &[Flag], name: &str| match table.iter().find(|f| f.name == name).map(|f| f.default) {
                Some(Default::Is(v)) => v.to_owned(),
                other => panic!("{name}: {other:?}"),
            };
        let t = Timeouts::default();
        for (name, d) in [
            ("handshake-timeout", t.handshake),
            ("connect-timeout", t.connect),
            ("idle-timeout", t.idle),
            ("linger", t.linger),
            ("drain-timeout", t.drain),
            ("udp-timeout", t.udp),
        ] {
            assert_eq!(shown(COMMON, name), d.as_secs().to_string(), "{name}");
        }
        assert_eq!(shown(SERVER, "max-pending-per-ip"), MAX_PENDING_PER_SOURCE.to_string());
        assert_eq!(shown(LOCAL, "pool-age"), POOL_AGE_SECS.to_string());
        assert_eq!(shown(LOCAL, "alpn"), crate::tls::config::DEFAULT_ALPN);
    }

    #[test]
    fn help_has_one_line_per_flag_with_its_default() {
        let text = help("blocking-local", "About.", &[LOCAL, COMMON]);
        let lines: Vec<&str> = text.lines().skip_while(|l| *l != "Options:").skip(1).collect();
        assert_eq!(lines.len(), LOCAL.len() + COMMON.len());
        assert!(
            lines[0].starts_with("      --server HOST:PORT  ") && lines[0].ends_with(" (required)"),
            "{}",
            lines[0]
        );
        assert!(lines.iter().any(|l| l.starts_with("  -v, --verbose ")));
        assert!(lines
            .iter()
            .any(|l| l.contains("--listen ADDR:PORT") && l.ends_with("(default 127.0.0.1:1081)")));
    }
}
