//! The pair measured side by side with the proxies people use.
//!
//! `cargo bench --bench proxy -- [ARGS]` (`make bench`, `make bench-peers`).
//! A load generator that speaks SOCKS5 itself drives each "chain" (a SOCKS5
//! address plus the processes behind it) against in-process targets on
//! loopback, in interleaved rounds, and prints one table: a row per figure,
//! a column per chain. TCP and UDP (through a UDP ASSOCIATE variant of each
//! chain that has one). Then the pair routing by an ACL (`acl`), and what
//! DNS queries answered by the local's `--dns` (from its cache, and through
//! the tunnel) next to its resolver asked directly (`dns`), and what the key
//! exchange costs in a TLS 1.3 handshake, full and resumed, in memory. See
//! `--help` and docs/PERFORMANCE.md.

#[path = "proxy/acl.rs"]
mod acl;
#[path = "proxy/chains.rs"]
mod chains;
#[path = "proxy/dns.rs"]
mod dns;
#[path = "proxy/kx.rs"]
mod kx;
#[path = "proxy/loadgen.rs"]
mod loadgen;
#[path = "proxy/relay.rs"]
mod relay;
#[path = "proxy/report.rs"]
mod report;
#[path = "proxy/udp.rs"]
mod udp;
#[path = "../tests/e2e/support/trojan.rs"]
mod trojan_config;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chains::{Chain, Workdir};
use getopts::{Fail, Options};
use loadgen::{Targets, Via};
use report::{Fig, Results};

const BRIEF: &str = "\
usage: cargo bench --bench proxy -- [OPTIONS]

Starts blocking-server and blocking-local on 127.0.0.1:0 and measures them
with default flags (\"ours\") and with --pool 8 (\"ours-pool8\"), with no
proxy at all (\"direct\", the loopback limit) alongside; new connections
with a generated 10,000-rule ACL that proxies the targets and one that
sends them direct; DNS queries to blocking-local --dns, from its cache and
through the tunnel, next to dnsmasq asked directly; then times TLS 1.3
handshakes in memory with X25519MLKEM768 and with X25519.";

const AFTER: &str = "\
Prints one table (a row per figure, a column per chain) and writes it to
target/bench/report.txt, with a latency chart in target/bench/latency.svg;
the proxies' configuration files and logs are in target/bench/run/.";

/// The options. Each may be given more than once (the last one counts), as
/// may the `--bench` that cargo bench passes to every bench target.
fn options() -> Options {
    let mut o = Options::new();
    o.optflagmulti(
        "",
        "peers",
        "also start and measure stunnel4+microsocks, trojan, and shadowsocks-rust \
         (aes-128-gcm, 2022-blake3-aes-128-gcm)",
    );
    o.optmulti(
        "",
        "chains",
        &format!(
            "only these chains, comma-separated, from: {} (peers named here need no --peers)",
            CHAINS.join(", ")
        ),
        "LIST",
    );
    o.optmulti("", "socks", "measure whatever SOCKS5 proxy listens at ADDR instead of the pair", "ADDR");
    o.optmulti("", "pids", "with --socks: its processes, for the CPU and memory figures", "PID,PID");
    o.optmulti(
        "",
        "local-args",
        "extra flags for blocking-local in the chain ours and in the ACL chains (e.g. \"--pool 4\")",
        "\"...\"",
    );
    o.optmulti("", "bytes", "bytes per upload and per download (default 512MiB; K, M, G suffixes)", "SIZE");
    o.optmulti("", "rounds", "interleaved rounds (default 5, 1 with --quick)", "N");
    o.optflagmulti(
        "",
        "quick",
        "small sizes for trying it out: 64 MiB, fewer operations, 200 held connections, no scale run",
    );
    o.optflagmulti("", "no-scale", "skip the 5,000-connection scale run");
    o.optflagmulti("", "no-udp", "skip the UDP figures");
    o.optflagmulti("", "no-acl", "skip the figures of routing by an ACL");
    o.optflagmulti("", "no-dns", "skip the DNS figures (blocking-local --dns and dnsmasq)");
    o.optflagmulti("", "no-kx", "skip the key-exchange measurement");
    o.optflagmulti("", "kx-only", "only the key-exchange measurement: no proxies are started");
    o.optmulti("", "ss-dir", "where sslocal and ssserver are (default target/peers/bin)", "DIR");
    o.optflagmulti("", "bench", "passed by cargo bench; ignored");
    o.optflagmulti("h", "help", "this text");
    o
}

fn usage() -> String {
    format!("{}\n{AFTER}", options().usage(BRIEF))
}

struct Opts {
    peers: bool,
    /// Only these chains, when given.
    only: Option<Vec<String>>,
    socks: Option<SocketAddr>,
    pids: Vec<u32>,
    local_args: Vec<String>,
    bytes: u64,
    rounds: usize,
    c1_warm: usize,
    c1_ops: usize,
    c32_threads: usize,
    c32_per: usize,
    held: usize,
    ttfb: usize,
    scale: usize,
    /// UDP: measured at all; round trips (after a warm-up); seconds of the rate run.
    udp: bool,
    udp_warm: usize,
    udp_pings: usize,
    udp_secs: f64,
    /// The pair with an ACL measured too (see `acl`).
    acl: bool,
    /// The DNS figures measured too (see `dns`).
    dns: bool,
    /// Handshakes per batch in the key-exchange measurement (0: skipped).
    kx: usize,
    kx_only: bool,
    ss_dir: PathBuf,
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split].parse().ok()?;
    let mult: u64 = match s[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult).filter(|b| *b > 0)
}

/// The argument as it was written, for an option getopts names `name`.
fn spelled(args: &[String], name: &str) -> String {
    if name.chars().count() == 1 {
        return format!("-{name}");
    }
    let long = format!("--{name}");
    args.iter()
        .find(|a| **a == long || a.strip_prefix(&long).is_some_and(|rest| rest.starts_with('=')))
        .cloned()
        .unwrap_or(long)
}

fn parse(args: &[String]) -> Result<Option<Opts>, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let m = options().parse(args).map_err(|e| match e {
        Fail::ArgumentMissing(name) => format!("--{name} wants a value"),
        Fail::UnrecognizedOption(name) | Fail::UnexpectedArgument(name) => {
            format!("unknown argument {:?}", spelled(args, &name))
        }
        other => other.to_string(),
    })?;
    if let Some(free) = m.free.first() {
        return Err(format!("unknown argument {free:?}"));
    }
    if m.opt_present("help") {
        return Ok(None);
    }
    let last = |name: &str| m.opt_strs(name).pop();
    let (quick, peers, no_scale) =
        (m.opt_present("quick"), m.opt_present("peers"), m.opt_present("no-scale"));
    let (no_udp, no_kx, kx_only) =
        (m.opt_present("no-udp"), m.opt_present("no-kx"), m.opt_present("kx-only"));
    let (no_acl, no_dns) = (m.opt_present("no-acl"), m.opt_present("no-dns"));
    let socks = match last("socks") {
        None => None,
        Some(v) => {
            let addr: SocketAddr = v.parse().map_err(|_| format!("--socks wants ADDR:PORT, not {v:?}"))?;
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "--socks: {addr} is not a loopback address; the bench stays on loopback"
                ));
            }
            Some(addr)
        }
    };
    let pids: Vec<u32> = match last("pids") {
        None => vec![],
        Some(v) => v
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| p.trim().parse::<u32>().map_err(|_| format!("--pids: bad PID {p:?}")))
            .collect::<Result<_, _>>()?,
    };
    let local_args: Vec<String> =
        last("local-args").map(|v| v.split_whitespace().map(str::to_owned).collect()).unwrap_or_default();
    let bytes = match last("bytes") {
        None => None,
        Some(v) => {
            Some(parse_size(&v).ok_or_else(|| format!("--bytes wants a size such as 512MiB, not {v:?}"))?)
        }
    };
    let rounds = match last("rounds") {
        None => None,
        Some(v) => {
            Some(v.parse::<usize>().ok().filter(|n| (1..=20).contains(n)).ok_or("--rounds wants 1 to 20")?)
        }
    };
    let ss_dir = last("ss-dir").map(PathBuf::from);
    let only = match last("chains") {
        None => None,
        Some(v) => {
            let list: Vec<String> = v.split(',').map(|c| c.trim().to_owned()).collect();
            if let Some(bad) = list.iter().find(|c| !CHAINS.contains(&c.as_str())) {
                return Err(format!("--chains: unknown chain {bad:?} (known: {})", CHAINS.join(", ")));
            }
            Some(list)
        }
    };
    if !pids.is_empty() && socks.is_none() {
        return Err("--pids goes with --socks".into());
    }
    if socks.is_some() && (peers || only.is_some()) {
        return Err("--socks excludes --peers and --chains".into());
    }
    if kx_only && (no_kx || socks.is_some() || peers || only.is_some()) {
        return Err("--kx-only excludes --no-kx, --socks, --peers and --chains".into());
    }
    let ss_dir = ss_dir.unwrap_or_else(|| root.join("target/peers/bin"));
    let full = Opts {
        peers,
        only,
        socks,
        pids,
        local_args,
        bytes: bytes.unwrap_or(512 << 20),
        rounds: rounds.unwrap_or(5),
        c1_warm: 100,
        c1_ops: 2000,
        c32_threads: 32,
        c32_per: 300,
        held: 1000,
        ttfb: 20,
        scale: if no_scale { 0 } else { 5000 },
        udp: !no_udp,
        udp_warm: 100,
        udp_pings: 2000,
        udp_secs: 2.0,
        acl: !no_acl,
        dns: !no_dns,
        kx: if no_kx { 0 } else { 1000 },
        kx_only,
        ss_dir,
    };
    if !quick {
        return Ok(Some(full));
    }
    Ok(Some(Opts {
        bytes: bytes.unwrap_or(64 << 20),
        rounds: rounds.unwrap_or(1),
        c1_warm: 30,
        c1_ops: 300,
        c32_per: 30,
        held: 200,
        ttfb: 5,
        scale: 0,
        udp_warm: 30,
        udp_pings: 300,
        udp_secs: 0.5,
        kx: if no_kx { 0 } else { 200 },
        ..full
    }))
}

/// target/ of this build: the bench binary runs from target/release/deps/.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .filter(|t| t.join("release").is_dir())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("proxy bench: {e}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Requests through a fresh instance before its memory is measured.
const FRESH_WARM_UP: usize = 20;
/// Parses of each ACL a round, of which the median counts.
const ACL_PARSES: usize = 5;
/// Starts of a local alone a round, for each RSS once listening.
const ALONE_STARTS: usize = 3;

struct Bench<'a> {
    opts: &'a Opts,
    /// Configuration and logs of the fresh instances started for the memory figures.
    fresh_dir: Workdir,
    /// Configuration and logs of the chains' UDP variants.
    udp_dir: Workdir,
    targets: Targets,
    udp_echo: Option<udp::Echo>,
    results: Results,
    /// The pair with an ACL, when measured, and the routing table's figures:
    /// a column for ours, then one per chain.
    acl_chains: Vec<acl::AclChain>,
    routing: Results,
    /// The resolver and the pair with `--dns`, when measured, and the DNS
    /// table's figures: a column per [`dns::COLUMNS`].
    dns: Option<dns::Setup>,
    dns_results: Results,
    clk: f64,
    start: Instant,
}

impl Bench<'_> {
    fn progress(&self, msg: &str) {
        progress(self.start, msg);
    }

    fn throughput(&mut self, i: usize, chain: &Chain) {
        let b = self.opts.bytes;
        let mib = b as f64 / f64::from(1 << 20);
        let cpu0 = loadgen::sum_cpu(&chain.pids);
        let up = loadgen::upload(chain.via, &self.targets, b);
        let down = loadgen::download(chain.via, &self.targets, b);
        let cpu1 = loadgen::sum_cpu(&chain.pids);
        let mut msg = format!("throughput {}:", chain.name);
        for (run, fig, what, sep) in [(&up, Fig::Up, "up", " "), (&down, Fig::Down, "down", ", ")] {
            match run {
                Ok(t) => {
                    let v = mib / t.as_secs_f64();
                    self.results.add(i, fig, v);
                    msg += &format!("{sep}{what} {v:.0} MiB/s");
                }
                Err(e) => self.results.note(i, format!("{what}load failed: {e}")),
            }
        }
        if let (Ok(_), Ok(_), Some(c0), Some(c1)) = (&up, &down, cpu0, cpu1) {
            if chain.has_pids() {
                let gib = 2.0 * b as f64 / f64::from(1 << 30);
                let v = (c1.saturating_sub(c0)) as f64 / self.clk / gib;
                self.results.add(i, Fig::Cpu, v);
                msg += &format!(", CPU {v:.2} s/GiB");
            }
        }
        self.progress(&msg);
    }

    fn new_connections(&mut self, i: usize, chain: &Chain) {
        let o = self.opts;
        let echo = self.targets.echo;
        let cap = Duration::from_secs(90);
        let warm = loadgen::requests(chain.via, echo, 1, o.c1_warm, cap);
        // The chain's CPU around each batch. Each follows another batch, so
        // work left over from the one before (a pool refilling, closes)
        // balances what this one leaves to the next.
        let cpu0 = loadgen::sum_cpu(&chain.pids);
        let one = loadgen::requests(chain.via, echo, 1, o.c1_ops, cap);
        let cpu1 = loadgen::sum_cpu(&chain.pids);
        let many = loadgen::requests(chain.via, echo, o.c32_threads, o.c32_per, cap);
        let cpu2 = loadgen::sum_cpu(&chain.pids);
        let per_conn = |from: Option<u64>, to: Option<u64>, batch: &loadgen::Batch| match (from, to) {
            (Some(a), Some(b)) if chain.has_pids() && !batch.latencies.is_empty() => {
                Some(b.saturating_sub(a) as f64 / self.clk * 1e6 / batch.latencies.len() as f64)
            }
            _ => None,
        };
        let (cpu_one, cpu_many) = (per_conn(cpu0, cpu1, &one), per_conn(cpu1, cpu2, &many));
        let mut msg = format!("new connections {}:", chain.name);
        for (label, batch, want) in [
            ("c=1", &one, o.c1_ops),
            ("c=32", &many, o.c32_threads * o.c32_per),
            ("warm-up", &warm, o.c1_warm),
        ] {
            if batch.errors > 0 || batch.latencies.len() < want {
                self.results.note(
                    i,
                    format!(
                        "{label}: {} of {want} requests answered, {} errors (first: {})",
                        batch.latencies.len(),
                        batch.errors,
                        batch.first_error.as_deref().unwrap_or("-")
                    ),
                );
            }
        }
        if !one.latencies.is_empty() {
            let (ops, p50, p99) = (one.ops_per_sec(), one.percentile_us(50.0), one.percentile_us(99.0));
            self.results.add(i, Fig::C1Ops, ops);
            self.results.add(i, Fig::C1P50, p50);
            self.results.add(i, Fig::C1P99, p99);
            msg += &format!(" c=1 {ops:.0} ops/s p50 {p50:.0} µs p99 {p99:.0} µs");
            if let Some(c) = cpu_one {
                self.results.add(i, Fig::C1Cpu, c);
                msg += &format!(" CPU {c:.0} µs/conn");
            }
            msg += ";";
        }
        if !many.latencies.is_empty() {
            let (ops, p99) = (many.ops_per_sec(), many.percentile_us(99.0));
            self.results.add(i, Fig::C32Ops, ops);
            self.results.add(i, Fig::C32P99, p99);
            msg += &format!(" c=32 {ops:.0} ops/s p99 {p99:.0} µs");
            if let Some(c) = cpu_many {
                self.results.add(i, Fig::C32Cpu, c);
                msg += &format!(" CPU {c:.0} µs/conn");
            }
        }
        self.progress(&msg);
    }

    /// One round of the routing figures (see `acl`), in the routing table's
    /// columns after ours (whose new-connection figures are the main
    /// table's): new connections one at a time through each ACL chain, as
    /// at c=1 above; the ACL parsed and looked up in this process, with the
    /// proxies idle; and fresh locals' RSS once listening, without an ACL and
    /// with each file.
    fn routing_round(&mut self, round: usize) {
        if self.acl_chains.is_empty() {
            return;
        }
        let o = self.opts;
        let echo = self.targets.echo;
        let mut order: Vec<usize> = (0..self.acl_chains.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for &k in &order {
            let (col, chain) = (k + 1, &self.acl_chains[k].chain);
            let cap = Duration::from_secs(90);
            let warm = loadgen::requests(chain.via, echo, 1, o.c1_warm, cap);
            let cpu0 = loadgen::sum_cpu(&chain.pids);
            let one = loadgen::requests(chain.via, echo, 1, o.c1_ops, cap);
            let cpu1 = loadgen::sum_cpu(&chain.pids);
            for (label, batch, want) in [("c=1", &one, o.c1_ops), ("warm-up", &warm, o.c1_warm)] {
                if batch.errors > 0 || batch.latencies.len() < want {
                    self.routing.note(
                        col,
                        format!(
                            "{label}: {} of {want} requests answered, {} errors (first: {})",
                            batch.latencies.len(),
                            batch.errors,
                            batch.first_error.as_deref().unwrap_or("-")
                        ),
                    );
                }
            }
            if one.latencies.is_empty() {
                continue;
            }
            let (ops, p50, p99) = (one.ops_per_sec(), one.percentile_us(50.0), one.percentile_us(99.0));
            self.routing.add(col, Fig::C1Ops, ops);
            self.routing.add(col, Fig::C1P50, p50);
            self.routing.add(col, Fig::C1P99, p99);
            let mut msg =
                format!("new connections {}: c=1 {ops:.0} ops/s p50 {p50:.0} µs p99 {p99:.0} µs", chain.name);
            if let (Some(a), Some(b)) = (cpu0, cpu1) {
                let c = b.saturating_sub(a) as f64 / self.clk * 1e6 / one.latencies.len() as f64;
                self.routing.add(col, Fig::C1Cpu, c);
                msg += &format!(" CPU {c:.0} µs/conn");
            }
            self.progress(&msg);
        }
        for &k in &order {
            let (col, a) = (k + 1, &self.acl_chains[k]);
            let parse = acl::parse_ms(&a.text, ACL_PARSES);
            let (by_ip, by_name) = acl::lookups(&a.acl, *echo.ip());
            if let Some(ms) = parse {
                self.routing.add(col, Fig::AclParse, ms);
            }
            self.routing.add(col, Fig::AclLookupIp, by_ip);
            self.routing.add(col, Fig::AclLookupName, by_name);
            self.progress(&format!(
                "ACL {}: parse {} ms, lookup {by_ip:.0} ns by address, {by_name:.0} ns by name",
                a.chain.name,
                report::fmt(parse, 1)
            ));
        }
        // Each local with ours's flags, started ALONE_STARTS times in turn;
        // the server is the ACL chains', which none of them reaches before a
        // client comes.
        let Some(server) = self.acl_chains[0].chain.server else { return };
        let mut rss: Vec<Vec<f64>> = vec![vec![]; self.acl_chains.len() + 1];
        let mut order: Vec<usize> = (0..rss.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for _ in 0..ALONE_STARTS {
            for &col in &order {
                let mut extra = o.local_args.clone();
                let label = match col.checked_sub(1).map(|k| &self.acl_chains[k]) {
                    None => "alone-no-acl".to_string(),
                    Some(a) => {
                        extra.extend(["--acl".into(), a.file.display().to_string()]);
                        format!("alone-{}", a.chain.name)
                    }
                };
                match chains::local_alone(&self.fresh_dir, &label, server, &extra) {
                    Ok(local) => {
                        // The threads it starts once it listens.
                        std::thread::sleep(Duration::from_millis(100));
                        if let Some(kib) = loadgen::sum_rss_kib(&local.pids) {
                            rss[col].push(kib as f64);
                            self.routing.add(col, Fig::LocalRss, kib as f64);
                        }
                    }
                    Err(e) => self.routing.note(col, format!("a local alone, for its RSS: {e}")),
                }
            }
        }
        let med: Vec<Option<f64>> = rss.iter().map(|v| report::median(v)).collect();
        for (col, m) in med.iter().enumerate().skip(1) {
            if let (Some(with), Some(without)) = (m, med[0]) {
                self.routing.add(col, Fig::AclRss, with - without);
            }
        }
        let kib: Vec<String> = med.iter().map(|m| report::fmt(*m, 0)).collect();
        self.progress(&format!(
            "local RSS once listening, no ACL / with each (median of {ALONE_STARTS}): {} KiB",
            kib.join(" / ")
        ));
    }

    /// One round of the DNS figures (see `dns`), each column in turn
    /// (reversed in odd rounds): a warm-up one query at a time, then queries
    /// one at a time, then on [`dns::SOCKETS`] sockets at once; the local's
    /// and the server's CPU read around each batch, and the local's metrics
    /// around that, to check where its answers came from.
    fn dns_round(&mut self, round: usize) {
        let Some(d) = self.dns.as_ref() else { return };
        let o = self.opts;
        let cap = Duration::from_secs(60);
        let per_socket = o.c1_ops.div_ceil(dns::SOCKETS);
        let (local, server) = (d.local_pid(), d.server_pid());
        let mut order = dns::Kind::ALL.to_vec();
        if round % 2 == 1 {
            order.reverse();
        }
        for kind in order {
            let col = kind.column();
            // Every hit name is asked once at least, and so cached.
            let warm_n = if kind == dns::Kind::Hit { o.c1_warm.max(dns::HIT_NAMES) } else { o.c1_warm };
            let warm = d.queries(kind, round, 1, warm_n, cap);
            if warm.errors > 0 {
                self.dns_results.note(
                    col,
                    format!(
                        "warm-up: {} of {warm_n} answered (first error: {})",
                        warm.latencies.len(),
                        warm.first_error.as_deref().unwrap_or("-")
                    ),
                );
            }
            let mut msg = format!("DNS {}:", dns::COLUMNS[col]);
            for (c, sockets, n) in [(1, 1, o.c1_ops), (dns::SOCKETS, dns::SOCKETS, per_socket)] {
                let seen0 = d.answered();
                let cpu0 = (loadgen::cpu_ns(local), loadgen::cpu_ns(server));
                let batch = d.queries(kind, round, sockets, n, cap);
                let cpu1 = (loadgen::cpu_ns(local), loadgen::cpu_ns(server));
                let seen1 = d.answered();
                let want = sockets * n;
                let answered = batch.latencies.len();
                let asked = answered + batch.errors;
                let r = round + 1;
                if batch.errors > 0 || answered < want {
                    self.dns_results.note(
                        col,
                        format!(
                            "round {r}, c={c}: {answered} of {want} queries answered, {} failed (first: {})",
                            batch.errors,
                            batch.first_error.as_deref().unwrap_or("-")
                        ),
                    );
                }
                if let Some((got, place)) = dns::as_expected(kind, seen0.as_ref(), seen1.as_ref()) {
                    if got != asked as u64 {
                        self.dns_results
                            .note(col, format!("round {r}, c={c}: {got} of {asked} queries {place}"));
                    }
                }
                if answered == 0 {
                    continue;
                }
                let (ops, p50, p99) =
                    (batch.ops_per_sec(), batch.percentile_us(50.0), batch.percentile_us(99.0));
                let failed = batch.errors as f64 * 100.0 / asked as f64;
                self.dns_results.add(col, Fig::DnsOps(c), ops);
                self.dns_results.add(col, Fig::DnsP50(c), p50);
                self.dns_results.add(col, Fig::DnsP99(c), p99);
                self.dns_results.add(col, Fig::DnsFailed(c), failed);
                msg += &format!(" c={c} {ops:.0} q/s p50 {p50:.0} µs p99 {p99:.0} µs, {failed:.1}% failed");
                if kind != dns::Kind::Direct {
                    let per_query = |a: Option<u64>, b: Option<u64>| {
                        Some(b?.saturating_sub(a?) as f64 / 1e3 / asked as f64)
                    };
                    if let Some(v) = per_query(cpu0.0, cpu1.0) {
                        self.dns_results.add(col, Fig::DnsLocalCpu(c), v);
                        msg += &format!(" local CPU {v:.0} µs/q");
                    }
                    if let Some(v) = per_query(cpu0.1, cpu1.1) {
                        self.dns_results.add(col, Fig::DnsServerCpu(c), v);
                        msg += &format!(" server {v:.0} µs/q");
                    }
                }
                msg += ";";
            }
            self.progress(&msg);
        }
    }

    /// Stops opening connections before the machine runs short of task slots
    /// or memory (it is shared, and pid_max is small).
    fn guard(i: usize) -> Option<String> {
        let max = loadgen::pid_max();
        if let Some(tasks) = loadgen::system_tasks() {
            if tasks + 3000 > max {
                return Some(format!("stopped at {i}: {tasks} tasks on the system, pid_max {max}"));
            }
        }
        match loadgen::mem_available_kib() {
            Some(kib) if kib < 1 << 20 => Some(format!("stopped at {i}: under 1 GiB of memory available")),
            _ => None,
        }
    }

    /// A fresh instance of `chain` for the memory figures, so that memory that
    /// earlier figures freed and the allocator kept (and cached thread stacks)
    /// does not hide what held connections cost. It has carried a few requests
    /// and is back to the threads it started with. `None` for chains that
    /// cannot be restarted (`--socks`, and "direct", which has no process).
    fn fresh(&mut self, i: usize, chain: &Chain) -> Result<Option<Chain>, ()> {
        if !CHAINS.contains(&chain.name.as_str()) || !chain.has_pids() {
            return Ok(None);
        }
        let c = start_one(&chain.name, self.opts, &self.fresh_dir, false).map_err(|e| {
            self.results.note(i, format!("fresh instance for the memory figures: {e}"));
        })?;
        let threads = loadgen::sum_threads(&c.pids);
        let warm = loadgen::requests(c.via, self.targets.echo, 1, FRESH_WARM_UP, Duration::from_secs(30));
        if warm.errors > 0 {
            self.results.note(i, format!("fresh instance: {} warm-up requests failed", warm.errors));
        }
        if let Some(t) = threads {
            loadgen::settle(&c.pids, t, Duration::from_secs(10));
        }
        Ok(Some(c))
    }

    fn memory(&mut self, i: usize, chain: &Chain) {
        let n = self.opts.held;
        if !chain.has_pids() || n == 0 {
            return;
        }
        let Ok(fresh) = self.fresh(i, chain) else { return };
        let chain = fresh.as_ref().unwrap_or(chain);
        let (rss0, thr0) = (loadgen::sum_rss_kib(&chain.pids), loadgen::sum_threads(&chain.pids));
        let held = loadgen::hold(chain.via, n, Duration::from_secs(120), &Self::guard);
        let (rss1, thr1) = (loadgen::sum_rss_kib(&chain.pids), loadgen::sum_threads(&chain.pids));
        let got = held.pairs.len();
        drop(held.pairs);
        if let Some(why) = held.stopped {
            self.results.note(i, format!("held connections: {got} of {n} opened ({why})"));
        } else if let (Some(r0), Some(r1), Some(t0), Some(t1)) = (rss0, rss1, thr0, thr1) {
            let kib = (r1 as f64 - r0 as f64) / n as f64;
            let thr = (t1 as f64 - t0 as f64) / n as f64;
            self.results.add(i, Fig::Mem, kib);
            self.results.add(i, Fig::Threads, thr);
            self.progress(&format!(
                "held {n} {}: {kib:.1} KiB and {thr:.2} threads per connection",
                chain.name
            ));
        }
        if fresh.is_none() {
            if let Some(t0) = thr0 {
                loadgen::settle(&chain.pids, t0, Duration::from_secs(30));
            }
        }
    }

    fn first_byte(&mut self, i: usize, chain: &Chain) {
        let Some(via) = chain.ttfb_via else { return };
        let echo = self.targets.echo;
        let rtt = 2.0 * chains::ONE_WAY.as_secs_f64();
        // One connection first (a fresh client may fill caches or pools), then
        // one every 100 ms.
        let _ = loadgen::first_byte(via, echo);
        let mut times = vec![];
        let mut first_error = None;
        for _ in 0..self.opts.ttfb {
            std::thread::sleep(Duration::from_millis(100));
            match loadgen::first_byte(via, echo) {
                Ok(d) => times.push(d.as_secs_f64() / rtt),
                Err(e) => {
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        if let Some(e) = first_error {
            self.results.note(i, format!("first byte: {} of {} answered ({e})", times.len(), self.opts.ttfb));
        }
        if let Some(m) = report::median(&times) {
            self.results.add(i, Fig::Ttfb, m);
            self.progress(&format!("first byte {}: {m:.2} round trips", chain.name));
        }
    }

    /// The UDP figures of `chain`, through its UDP variant started for the
    /// purpose (see [`start_udp`]); "direct" sends straight to the echo
    /// target, and a `--socks` proxy is asked for UDP ASSOCIATE as it is.
    fn udp(&mut self, i: usize, chain: &Chain) {
        let o = self.opts;
        let Some(echo) = self.udp_echo.as_ref().map(|e| e.addr) else { return };
        let mut variant = None;
        let via = match chain.name.as_str() {
            "direct" => Via::Direct,
            name if CHAINS.contains(&name) => match start_udp(name, o, &self.udp_dir) {
                Ok(c) => variant.insert(c).via,
                Err(why) => {
                    self.results.note(i, why);
                    return;
                }
            },
            _ => chain.via,
        };
        let mut msg = format!("UDP {}:", chain.name);
        for size in udp::UDP_SIZES {
            let cap = Duration::from_secs(60);
            match udp::Assoc::open(via, echo).and_then(|a| udp::pings(&a, size, o.udp_warm, o.udp_pings, cap))
            {
                Ok(p) => {
                    if p.lost > 0 || p.latencies.len() < o.udp_pings {
                        self.results.note(
                            i,
                            format!(
                                "UDP {size} B: {} of {} round trips answered, {} lost",
                                p.latencies.len(),
                                o.udp_pings,
                                p.lost
                            ),
                        );
                    }
                    if !p.latencies.is_empty() {
                        let (p50, p99) = (p.percentile_us(50.0), p.percentile_us(99.0));
                        self.results.add(i, Fig::UdpP50(size), p50);
                        self.results.add(i, Fig::UdpP99(size), p99);
                        msg += &format!(" {size} B p50 {p50:.0} µs p99 {p99:.0} µs");
                    }
                }
                Err(e) => {
                    self.results.note(i, format!("UDP {size} B round trips: {e}"));
                    continue;
                }
            }
            let run = Duration::from_secs_f64(o.udp_secs);
            match udp::Assoc::open(via, echo).and_then(|a| udp::rate(&a, size, udp::WINDOW, run)) {
                Ok(r) => {
                    let (rate, lost) = (r.per_sec(), r.lost_percent());
                    self.results.add(i, Fig::UdpRate(size), rate);
                    self.results.add(i, Fig::UdpLost(size), lost);
                    msg += &format!(", {rate:.0}/s ({} of {} lost);", r.lost, r.sent);
                }
                Err(e) => self.results.note(i, format!("UDP {size} B rate: {e}")),
            }
        }
        drop(variant);
        self.progress(&msg);
    }

    fn scale(&mut self, i: usize, chain: &Chain) {
        let n = self.opts.scale;
        let Ok(fresh) = self.fresh(i, chain) else { return };
        let chain = fresh.as_ref().unwrap_or(chain);
        let thr0 = loadgen::sum_threads(&chain.pids);
        self.progress(&format!("scale {}: opening {n} connections", chain.name));
        let mut held = loadgen::hold(chain.via, n, Duration::from_secs(240), &Self::guard);
        let answering = loadgen::echo_all(&mut held.pairs);
        let (rss, thr) = (loadgen::sum_rss_kib(&chain.pids), loadgen::sum_threads(&chain.pids));
        let got = held.pairs.len();
        drop(held.pairs);
        self.results.add(i, Fig::ScaleHeld, answering as f64);
        if let Some(r) = rss.filter(|_| chain.has_pids()) {
            self.results.add(i, Fig::ScaleRss, r as f64 / 1024.0);
        }
        if let Some(t) = thr.filter(|_| chain.has_pids()) {
            self.results.add(i, Fig::ScaleThreads, t as f64);
        }
        if let Some(why) = &held.stopped {
            self.results.note(i, format!("scale: {got} of {n} opened ({why})"));
        }
        if answering < got {
            self.results.note(i, format!("scale: {answering} of {got} held connections answered the echo"));
        }
        self.progress(&format!("scale {}: {answering} of {n} held and answering", chain.name));
        if fresh.is_none() {
            if let Some(t0) = thr0 {
                loadgen::settle(&chain.pids, t0, Duration::from_secs(60));
            }
        }
    }
}

/// The chains, in the order of the table's columns.
const CHAINS: [&str; 7] = ["ours", "ours-pool8", "direct", "stunnel", "trojan", "ss-aes-128-gcm", "ss-2022"];

/// Starts the chain called `name` (one of [`CHAINS`]); with `far`, also its
/// client pointed at a delay relay.
fn start_one(name: &str, o: &Opts, w: &Workdir, far: bool) -> Result<Chain, String> {
    match name {
        "ours" => chains::ours(w, name, &o.local_args, None, far),
        "ours-pool8" => chains::ours(w, name, &["--pool".into(), "8".into()], None, far),
        "direct" => Ok(Chain::direct()),
        "stunnel" => chains::stunnel(w, far),
        "trojan" => chains::trojan(w, far),
        "ss-aes-128-gcm" => chains::shadowsocks(w, &o.ss_dir, name, "aes-128-gcm", false, far),
        _ => chains::shadowsocks(w, &o.ss_dir, name, "2022-blake3-aes-128-gcm", false, far),
    }
}

/// The password of our UDP variant (UDP ASSOCIATE needs the trojan format).
const UDP_PASSWORD: &str = "blocking-proxy bench";

/// Starts the UDP variant of the chain `name`: ours with `--password` on both
/// sides, shadowsocks-rust in mode tcp_and_udp, trojan as it is. The error
/// says why a chain has none, or why it did not start.
fn start_udp(name: &str, o: &Opts, w: &Workdir) -> Result<Chain, String> {
    let started = match name {
        "ours" => chains::ours(w, name, &o.local_args, Some(UDP_PASSWORD), false),
        "trojan" => chains::trojan(w, false),
        "ss-aes-128-gcm" => chains::shadowsocks(w, &o.ss_dir, name, "aes-128-gcm", true, false),
        "ss-2022" => chains::shadowsocks(w, &o.ss_dir, name, "2022-blake3-aes-128-gcm", true, false),
        "ours-pool8" => {
            return Err(
                "UDP measured for ours only (a pool only readies the association's TLS connection)".into()
            )
        }
        "stunnel" => {
            return Err("no UDP: stunnel carries TCP only, and microsocks has no UDP ASSOCIATE".into())
        }
        _ => return Err(format!("no UDP variant of {name}")),
    };
    started.map_err(|e| format!("UDP variant: {e}"))
}

fn start_chains(o: &Opts, w: &Workdir) -> Result<Vec<Chain>, String> {
    if let Some(addr) = o.socks {
        return Ok(vec![Chain::external(addr, o.pids.clone()), Chain::direct()]);
    }
    let wanted = |name: &str| match &o.only {
        Some(list) => list.iter().any(|c| c == name),
        None => o.peers || matches!(name, "ours" | "ours-pool8" | "direct"),
    };
    let mut all = vec![];
    for name in CHAINS.into_iter().filter(|n| wanted(n)) {
        match start_one(name, o, w, true) {
            Ok(c) => all.push(c),
            Err(e) if name == "ours" => return Err(format!("cannot start the pair: {e}")),
            Err(e) => eprintln!("skip {name}: {e}"),
        }
    }
    Ok(all)
}

fn progress(start: Instant, msg: &str) {
    eprintln!("[{:6.1}s] {msg}", start.elapsed().as_secs_f64());
}

fn machine(nofile: u64) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "machine: {cores} cores, Linux {}, CLK_TCK {}, pid_max {}, RLIMIT_NOFILE {nofile}\n",
        kernel.trim(),
        loadgen::clk_tck(),
        loadgen::pid_max()
    )
}

/// The key-exchange measurement (see `kx`): for each client, full and
/// resumed handshakes in interleaved rounds; a table of medians.
fn key_exchange(o: &Opts, root: &std::path::Path, start: Instant) -> Result<String, String> {
    let (kinds, server) = kx::setup(root)?;
    // Per client: CPU µs per handshake, full and resumed, one sample a round.
    let mut samples: Vec<[Vec<f64>; 2]> = kinds.iter().map(|_| [vec![], vec![]]).collect();
    let mut groups = vec![String::new(); kinds.len()];
    for round in 0..o.rounds {
        let mut order: Vec<usize> = (0..kinds.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut msg = format!("key exchange, round {} of {}:", round + 1, o.rounds);
        for &k in &order {
            for (m, resumed) in [false, true].into_iter().enumerate() {
                let r = kx::measure(&kinds[k], &server, resumed, o.kx)?;
                samples[k][m].push(r.us);
                groups[k] = r.group;
            }
            msg +=
                &format!(" {} {:.0}/{:.0} µs;", kinds[k].label, samples[k][0][round], samples[k][1][round]);
        }
        progress(start, &msg);
    }
    let med: Vec<[Option<f64>; 2]> =
        samples.iter().map(|s| [report::median(&s[0]), report::median(&s[1])]).collect();
    let batches =
        if o.rounds == 1 { "one batch".to_string() } else { format!("median of {} batches", o.rounds) };
    let mut t = format!(
        "key exchange in a TLS 1.3 handshake, client and server in memory in one thread\n\
         (their CPU per handshake, {batches} of {}; the server is blocking-server's own)\n",
        o.kx
    );
    t += &format!("{:<34}{:<18}{:>10}{:>12}\n", "client offers", "negotiated", "full µs", "resumed µs");
    for (k, kind) in kinds.iter().enumerate() {
        t += &format!(
            "{:<34}{:<18}{:>10}{:>12}\n",
            kind.label,
            groups[k],
            report::fmt(med[k][0], 0),
            report::fmt(med[k][1], 0)
        );
    }
    // kx::setup puts X25519MLKEM768 only and X25519 only second and third.
    if let (Some([Some(pq_f), Some(pq_r)]), Some([Some(x_f), Some(x_r)])) = (med.get(1), med.get(2)) {
        t += &format!("{:<52}{:>10.0}{:>12.0}\n", "X25519MLKEM768 − X25519", pq_f - x_f, pq_r - x_r);
        let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}×", a / b) } else { "n/a".into() };
        t += &format!(
            "{:<52}{:>10}{:>12}\n",
            "X25519MLKEM768 ÷ X25519",
            ratio(*pq_f, *x_f),
            ratio(*pq_r, *x_r)
        );
    }
    Ok(t)
}

fn run(o: &Opts) -> Result<(), String> {
    let start = Instant::now();
    // Children inherit the raised limit.
    let nofile = blocking_proxy::net::limits::raise_fd_limit();
    let out_dir = target_dir().join("bench");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if o.kx_only {
        let text = format!("\n{}\n{}", machine(nofile), key_exchange(o, &root, start)?);
        print!("{text}");
        return Ok(());
    }
    let run_dir = out_dir.join("run");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
    let w = Workdir { dir: run_dir.clone(), root: root.clone() };
    let fresh_dir = Workdir { dir: run_dir.join("fresh"), root: root.clone() };
    let udp_dir = Workdir { dir: run_dir.join("udp"), root: root.clone() };
    for d in [&fresh_dir.dir, &udp_dir.dir] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }

    let targets = Targets::start().map_err(|e| format!("targets: {e}"))?;
    let udp_echo =
        if o.udp { Some(udp::Echo::start().map_err(|e| format!("UDP echo target: {e}"))?) } else { None };
    let mut chains = start_chains(o, &w)?;
    // One request through each before measuring: a chain that cannot carry one is left out.
    chains.retain(|c| match loadgen::request(c.via, targets.echo, 7) {
        Ok(_) => true,
        Err(e) if c.name == "ours" => {
            eprintln!("proxy bench: a request through the pair failed: {e} (logs in {})", run_dir.display());
            false
        }
        Err(e) => {
            eprintln!("skip {}: a request through it failed: {e} (logs in {})", c.name, run_dir.display());
            false
        }
    });
    let want_ours = o.socks.is_none() && o.only.as_ref().is_none_or(|l| l.iter().any(|c| c == "ours"));
    if want_ours && !chains.iter().any(|c| c.name == "ours") {
        return Err("the pair could not be measured".into());
    }
    let acl_chains = if o.acl && want_ours {
        acl::start(&w, &o.local_args, targets.echo).unwrap_or_else(|e| {
            eprintln!("skip the ACL figures: {e} (logs in {})", run_dir.display());
            vec![]
        })
    } else {
        vec![]
    };
    let dns_setup = if o.dns && want_ours {
        dns::start(&w, &o.local_args)
            .map_err(|e| eprintln!("skip the DNS figures: {e} (logs in {})", run_dir.display()))
            .ok()
    } else {
        None
    };
    // 2 descriptors per held connection in this process, plus the targets and chains.
    let scale = o.scale.min((nofile.saturating_sub(512) / 2) as usize);

    let mut header = machine(nofile);
    header += &format!(
        "settings: {} rounds; {} MiB up and down; c=1 {} requests (after {}); c=32 {}×{}; \
         {} held; first byte ×{}; scale {}\n",
        o.rounds,
        o.bytes >> 20,
        o.c1_ops,
        o.c1_warm,
        o.c32_threads,
        o.c32_per,
        o.held,
        o.ttfb,
        if scale == 0 { "off".to_string() } else { scale.to_string() }
    );
    let sizes: Vec<String> = udp::UDP_SIZES.iter().map(|n| format!("{n} B")).collect();
    header += &if o.udp {
        format!(
            "          UDP ({}): {} round trips (after {}), then {} s with {} in flight; \
             key exchange: {}\n",
            sizes.join(", "),
            o.udp_pings,
            o.udp_warm,
            o.udp_secs,
            udp::WINDOW,
            if o.kx == 0 { "off".to_string() } else { format!("{} handshakes a batch", o.kx) }
        )
    } else {
        format!(
            "          UDP off; key exchange: {}\n",
            if o.kx == 0 { "off".to_string() } else { format!("{} handshakes a batch", o.kx) }
        )
    };
    for c in chains.iter().chain(acl_chains.iter().map(|a| &a.chain)) {
        header += &format!("  {:<16} {}\n", c.name, c.about);
    }
    if let Some(d) = &dns_setup {
        header += &format!("  {:<16} {}\n", d.pair.name, d.about);
    }
    if o.udp && o.socks.is_none() {
        header += "  UDP through each chain's variant: ours with --password on both sides, \
                   shadowsocks-rust with -U (tcp_and_udp), trojan as it is\n";
    }
    let names: Vec<&str> =
        chains.iter().chain(acl_chains.iter().map(|a| &a.chain)).map(|c| c.name.as_str()).collect();
    eprintln!("measuring {} (proxy logs in {})", names.join(", "), run_dir.display());

    let mut b = Bench {
        opts: o,
        fresh_dir,
        udp_dir,
        targets,
        udp_echo,
        results: Results::new(chains.iter().map(|c| c.name.clone()).collect()),
        routing: Results::new(
            std::iter::once("ours")
                .chain(acl_chains.iter().map(|a| a.chain.name.as_str()))
                .map(str::to_owned)
                .collect(),
        ),
        acl_chains,
        dns: dns_setup,
        dns_results: Results::new(dns::COLUMNS.iter().map(|c| c.to_string()).collect()),
        clk: loadgen::clk_tck() as f64,
        start,
    };
    for round in 0..o.rounds {
        let mut order: Vec<usize> = (0..chains.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        b.progress(&format!("round {} of {}", round + 1, o.rounds));
        for &i in &order {
            b.throughput(i, &chains[i]);
        }
        for &i in &order {
            b.new_connections(i, &chains[i]);
        }
        b.routing_round(round);
        b.dns_round(round);
        for &i in &order {
            b.memory(i, &chains[i]);
        }
        for &i in &order {
            b.first_byte(i, &chains[i]);
        }
        for &i in &order {
            b.udp(i, &chains[i]);
        }
    }
    if scale > 0 {
        for (i, c) in chains.iter().enumerate() {
            if matches!(c.via, Via::Socks(_)) {
                b.scale(i, c);
            }
        }
    }
    drop(chains);
    let acl_measured = !b.acl_chains.is_empty();
    b.acl_chains.clear();
    let dns_measured = b.dns.take().is_some();

    let r = &b.results;
    let mut text = format!("\n{header}\n");
    text += &report::table(r, &format!("{} MiB", o.bytes >> 20), scale);
    if !r.notes.is_empty() {
        text += "\nnotes:\n";
        for n in &r.notes {
            text += &format!("  {n}\n");
        }
    }
    if let Some(ours) = r.chains.iter().position(|c| c == "ours") {
        let ratios = report::ratios(r, ours);
        if !ratios.is_empty() {
            text += &format!("\n{ratios}");
        }
        if acl_measured {
            for fig in [Fig::C1Ops, Fig::C1P50, Fig::C1P99, Fig::C1Cpu] {
                for v in r.samples(ours, fig) {
                    b.routing.add(0, fig, *v);
                }
            }
        }
    }
    if acl_measured {
        let t = &b.routing;
        text += &format!("\n{}", acl::about((o.c1_ops, o.c1_warm), ACL_PARSES, ALONE_STARTS));
        text += &report::table_of(t, &report::routing(), "", 0);
        if !t.notes.is_empty() {
            text += "\nnotes:\n";
            for n in &t.notes {
                text += &format!("  {n}\n");
            }
        }
        text += &format!("\n{}", report::relative(t, 0, &report::routing()));
    }
    if dns_measured {
        let t = &b.dns_results;
        text += &format!("\n{}", dns::about(o.c1_warm, o.c1_ops, o.c1_ops.div_ceil(dns::SOCKETS)));
        text += &report::table_of(t, &report::dns(), "", 0);
        if !t.notes.is_empty() {
            text += "\nnotes:\n";
            for n in &t.notes {
                text += &format!("  {n}\n");
            }
        }
        let direct = dns::Kind::Direct.column();
        text += &format!("\n{}", report::relative(t, direct, &report::dns()));
    }
    // With the proxies stopped, so that only this thread runs.
    if o.kx > 0 {
        text += "\n";
        text +=
            &key_exchange(o, &root, start).unwrap_or_else(|e| format!("key exchange: not measured: {e}\n"));
    }
    let svg = out_dir.join("latency.svg");
    std::fs::write(&svg, report::latency_svg(r)).map_err(|e| format!("{}: {e}", svg.display()))?;
    let txt = out_dir.join("report.txt");
    let _ = std::fs::write(&txt, &text);
    text += &format!(
        "\nlatency chart: {}\nthis report: {}\nproxy logs: {}\ntotal time: {:.0}s\n",
        svg.display(),
        txt.display(),
        run_dir.display(),
        start.elapsed().as_secs_f64()
    );
    print!("{text}");
    Ok(())
}
