//! The chains under test: a SOCKS5 address plus the processes behind it.
//!
//! Every proxy listens on loopback, 127.0.0.1 unless said otherwise (see
//! [`ours_on`]), and is pointed only at loopback addresses. Each
//! chain with a client/server split is started twice on the client side: once
//! pointed at its server, and once pointed at a [`DelayRelay`] in front of the
//! same server, for the time-to-first-byte figure. Processes are killed (by
//! their own PID) when the chain is dropped. Their output goes to log files.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::loadgen::Via;
use crate::relay::DelayRelay;
use crate::trojan_config;

/// How long a proxy may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// One way of the simulated link: a 20 ms round trip.
pub const ONE_WAY: Duration = Duration::from_millis(10);

pub struct Chain {
    pub name: String,
    /// What it is, for the header of the report.
    pub about: String,
    pub via: Via,
    /// The same chain with its client pointed at the delay relay.
    pub ttfb_via: Option<Via>,
    /// The processes whose CPU and memory count (not the relay-side client).
    pub pids: Vec<u32>,
    /// The server its client is pointed at, for a client/server pair.
    pub server: Option<SocketAddr>,
    procs: Vec<Child>,
    _relay: Option<DelayRelay>,
}

impl Drop for Chain {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

impl Chain {
    pub fn direct() -> Chain {
        Chain {
            name: "direct".into(),
            about: "no proxy: the generator connects straight to the target (the loopback limit)".into(),
            via: Via::Direct,
            ttfb_via: None,
            pids: vec![],
            server: None,
            procs: vec![],
            _relay: None,
        }
    }

    pub fn external(addr: SocketAddr, pids: Vec<u32>) -> Chain {
        let about = if pids.is_empty() {
            format!("SOCKS5 at {addr} (no --pids: CPU and memory not measured)")
        } else {
            format!("SOCKS5 at {addr}, processes {pids:?}")
        };
        Chain {
            name: format!("socks {addr}"),
            about,
            via: Via::Socks(addr),
            ttfb_via: None,
            pids,
            server: None,
            procs: vec![],
            _relay: None,
        }
    }

    pub fn has_pids(&self) -> bool {
        !self.pids.is_empty()
    }

    /// Takes `child` into the chain; it counts towards CPU and memory if `counted`.
    fn adopt(&mut self, child: Child, counted: bool) {
        if counted {
            self.pids.push(child.id());
        }
        self.procs.push(child);
    }

    /// Starts the chain's client towards `server` with `client(label, upstream)`;
    /// with `far`, also a second one behind a delay relay, for the first-byte figure.
    fn clients(
        &mut self,
        server: SocketAddr,
        far: bool,
        label: &str,
        client: impl Fn(&str, SocketAddr) -> Result<(Child, SocketAddr), String>,
    ) -> Result<(), String> {
        let (c, addr) = client(label, server)?;
        self.adopt(c, true);
        self.via = Via::Socks(addr);
        self.server = Some(server);
        if far {
            let relay = DelayRelay::start(server, ONE_WAY).map_err(|e| format!("delay relay: {e}"))?;
            let (c, addr) = client(&format!("{label}-far"), relay.addr)?;
            self.adopt(c, false);
            self.ttfb_via = Some(Via::Socks(addr));
            self._relay = Some(relay);
        }
        Ok(())
    }

    /// Starts `program` with `args` as the counted process `label` and waits
    /// until it accepts on 127.0.0.1:`port`.
    fn serve(
        &mut self,
        w: &Workdir,
        label: &str,
        program: &Path,
        args: &[String],
        port: u16,
    ) -> Result<(), String> {
        let mut child = w.spawn(label, program, args, &[])?;
        let ready = w.accepting(label, &mut child, loopback(port));
        self.adopt(child, true);
        ready
    }

    fn empty(name: &str, about: String) -> Chain {
        Chain {
            name: name.into(),
            about,
            via: Via::Direct,
            ttfb_via: None,
            pids: vec![],
            server: None,
            procs: vec![],
            _relay: None,
        }
    }
}

/// Where the chains keep their configuration files and logs.
pub struct Workdir {
    pub dir: PathBuf,
    pub root: PathBuf,
}

impl Workdir {
    fn log(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.log"))
    }

    fn spawn(
        &self,
        label: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Child, String> {
        let log = File::create(self.log(label)).map_err(|e| format!("{label}: log file: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("{label}: log file: {e}"))?;
        Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{label}: cannot run {}: {e}", program.display()))
    }

    fn tail(&self, label: &str) -> String {
        let text = std::fs::read_to_string(self.log(label)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    /// Waits for the "listening on ADDR" line of one of our binaries.
    fn listening(&self, label: &str, child: &mut Child) -> Result<SocketAddr, String> {
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            let text = std::fs::read_to_string(self.log(label)).unwrap_or_default();
            let addr = text
                .lines()
                .filter_map(|l| l.split("listening on ").nth(1))
                .find_map(|rest| rest.split_whitespace().next()?.parse().ok());
            if let Some(addr) = addr {
                return Ok(addr);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{label} exited ({status}): {}", self.tail(label)));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err(format!("{label}: no \"listening on\" line within {}s", START_TIMEOUT.as_secs()))
    }

    /// Waits until `addr` accepts connections.
    fn accepting(&self, label: &str, child: &mut Child, addr: SocketAddr) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{label} exited ({status}): {}", self.tail(label)));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "{label}: not accepting on {addr} within {}s: {}",
            START_TIMEOUT.as_secs(),
            self.tail(label)
        ))
    }

    /// Starts `program` with `args` as the client `label` and gives it back
    /// with its address once it accepts on 127.0.0.1:`port`.
    fn client(
        &self,
        label: &str,
        program: &Path,
        args: &[String],
        port: u16,
    ) -> Result<(Child, SocketAddr), String> {
        let mut child = self.spawn(label, program, args, &[])?;
        let addr = self.accepting(label, &mut child, loopback(port)).map(|()| loopback(port));
        started(child, addr)
    }

    /// What the log of `label` holds so far.
    pub fn log_text(&self, label: &str) -> String {
        std::fs::read_to_string(self.log(label)).unwrap_or_default()
    }

    /// Whether the log of `label` has a line containing `text` within `cap`.
    pub fn logged(&self, label: &str, text: &str, cap: Duration) -> bool {
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(self.log(label)).unwrap_or_default();
            if log.lines().any(|l| l.contains(text)) {
                return true;
            }
            if start.elapsed() > cap {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf, String> {
        let path = self.dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    fn cert(&self, name: &str) -> String {
        self.root.join("certs").join(name).display().to_string()
    }
}

/// Gives back a started `child` with its address, or kills it and gives back the error.
fn started(mut child: Child, addr: Result<SocketAddr, String>) -> Result<(Child, SocketAddr), String> {
    match addr {
        Ok(addr) => Ok((child, addr)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| format!("free port: {e}"))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Finds a program on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

// Each constructor starts the client a second time, pointed at a delay relay
// in front of the same server, when `far` is set.

/// blocking-server and blocking-local as the chain `name`, with `local_args`
/// passed to the local. With a `password`, both sides speak the trojan format
/// with it (`--password`), which SOCKS5 UDP ASSOCIATE needs.
pub fn ours(
    w: &Workdir,
    name: &str,
    local_args: &[String],
    password: Option<&str>,
    far: bool,
) -> Result<Chain, String> {
    ours_on(w, name, Ipv4Addr::LOCALHOST, local_args, password, far)
}

/// [`ours`] with the server listening on `server_ip`, a loopback address.
pub fn ours_on(
    w: &Workdir,
    name: &str,
    server_ip: Ipv4Addr,
    local_args: &[String],
    password: Option<&str>,
    far: bool,
) -> Result<Chain, String> {
    let server_bin = Path::new(env!("CARGO_BIN_EXE_blocking-server"));
    let local_bin = Path::new(env!("CARGO_BIN_EXE_blocking-local"));
    let mut extra = if local_args.is_empty() { String::new() } else { format!(" {}", local_args.join(" ")) };
    if password.is_some() {
        extra += " --password …";
    }
    let on = if server_ip == Ipv4Addr::LOCALHOST { String::new() } else { format!(" on {server_ip}") };
    let about = format!(
        "blocking-local{extra} → TLS → blocking-server{}{on}",
        if password.is_some() { " --password …" } else { "" }
    );
    let mut chain = Chain::empty(name, about);
    let env = [("RUST_LOG", "info")];

    let mut server_args = strings(&["--listen", &format!("{server_ip}:0"), "--allow-private"]);
    if let Some(p) = password {
        server_args.extend(strings(&["--password", p]));
    }
    let server_label = format!("{name}-server");
    let mut server = w.spawn(&server_label, server_bin, &server_args, &env)?;
    let server_addr = w.listening(&server_label, &mut server);
    chain.adopt(server, true);
    let server_addr = server_addr?;

    let client = |label: &str, server: SocketAddr| -> Result<(Child, SocketAddr), String> {
        let mut child = w.spawn(label, local_bin, &local_command(w, server, password, local_args), &env)?;
        let addr = w.listening(label, &mut child);
        started(child, addr)
    };
    chain.clients(server_addr, far, &format!("{name}-local"), client)?;
    Ok(chain)
}

/// blocking-local's arguments, pointed at `server`: the test CA, the name
/// the certificate has for a server on another loopback address than
/// 127.0.0.1 (`--sni localhost`), the `password` if any, then `extra`.
fn local_command(w: &Workdir, server: SocketAddr, password: Option<&str>, extra: &[String]) -> Vec<String> {
    let mut args = strings(&["--listen", "127.0.0.1:0", "--server", &server.to_string()]);
    args.extend(["--ca".into(), w.cert("ca.pem")]);
    if server.ip() != Ipv4Addr::LOCALHOST {
        args.extend(strings(&["--sni", "localhost"]));
    }
    if let Some(p) = password {
        args.extend(strings(&["--password", p]));
    }
    args.extend(extra.iter().cloned());
    args
}

/// blocking-local alone, pointed at `server` with `extra` flags, as a chain
/// of that one process, once it has said it is listening.
pub fn local_alone(w: &Workdir, label: &str, server: SocketAddr, extra: &[String]) -> Result<Chain, String> {
    let local_bin = Path::new(env!("CARGO_BIN_EXE_blocking-local"));
    let mut chain = Chain::empty(label, format!("blocking-local {}", extra.join(" ")));
    let mut child =
        w.spawn(label, local_bin, &local_command(w, server, None, extra), &[("RUST_LOG", "info")])?;
    let addr = w.listening(label, &mut child);
    chain.adopt(child, true);
    chain.via = Via::Socks(addr?);
    Ok(chain)
}

/// dnsmasq as a resolver on 127.0.0.1:`port` (UDP and TCP), as the chain
/// `label` of its one process: no configuration file, no upstream, no
/// hosts file, local answers with a TTL of 300 s, `args` added; its log
/// (no queries) in the workdir.
pub fn dnsmasq(w: &Workdir, label: &str, port: u16, args: &[String]) -> Result<Chain, String> {
    let dnsmasq = which("dnsmasq")
        .or_else(|| Some(PathBuf::from("/usr/sbin/dnsmasq")).filter(|p| p.is_file()))
        .ok_or("dnsmasq not found (apt-get install dnsmasq-base)")?;
    let mut chain = Chain::empty(label, format!("dnsmasq on 127.0.0.1:{port}"));
    let mut all = strings(&[
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--listen-address=127.0.0.1",
        &format!("--port={port}"),
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        "--local-ttl=300",
        "--log-facility=-",
    ]);
    all.extend(args.iter().cloned());
    chain.serve(w, label, &dnsmasq, &all, port)?;
    Ok(chain)
}

/// dnsmasq's version, as `dnsmasq --version` gives it.
pub fn dnsmasq_version() -> Option<String> {
    let dnsmasq = which("dnsmasq").or_else(|| Some(PathBuf::from("/usr/sbin/dnsmasq")))?;
    let out = Command::new(dnsmasq).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.lines().next()?.split_whitespace().nth(2).map(str::to_owned)
}

fn stunnel_bin() -> Option<PathBuf> {
    which("stunnel4").or_else(|| which("stunnel"))
}

/// stunnel client → TLS → stunnel server → microsocks.
pub fn stunnel(w: &Workdir, far: bool) -> Result<Chain, String> {
    let stunnel =
        stunnel_bin().ok_or("stunnel4 (or stunnel) not found on PATH (apt-get install stunnel4)")?;
    let microsocks =
        which("microsocks").ok_or("microsocks not found on PATH (apt-get install microsocks)")?;
    let mut chain = Chain::empty("stunnel", "stunnel4 client → TLS → stunnel4 server → microsocks".into());

    let socks_port = free_port()?;
    let args = strings(&["-i", "127.0.0.1", "-p", &socks_port.to_string()]);
    chain.serve(w, "stunnel-microsocks", &microsocks, &args, socks_port)?;

    // Logging stays at stunnel's default level, to the log file only: without
    // `syslog = no`, stunnel also writes every line to syslog, or to /dev/console
    // where there is no syslog daemon, which costs milliseconds per connection.
    // TCP_NODELAY on both sides, as for every chain.
    let global = "foreground = yes\npid =\nsyslog = no\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n";
    let server_port = free_port()?;
    let conf = w.write(
        "stunnel-server.conf",
        &format!(
            "{global}[socks]\naccept = 127.0.0.1:{server_port}\nconnect = 127.0.0.1:{socks_port}\n\
             cert = {}\nkey = {}\n",
            w.cert("server.pem"),
            w.cert("server.key")
        ),
    )?;
    chain.serve(w, "stunnel-server", &stunnel, &[conf.display().to_string()], server_port)?;

    let client = |label: &str, upstream: SocketAddr| -> Result<(Child, SocketAddr), String> {
        let port = free_port()?;
        let conf = w.write(
            &format!("{label}.conf"),
            &format!(
                "{global}[socks]\nclient = yes\naccept = 127.0.0.1:{port}\nconnect = {upstream}\n\
                 verifyChain = yes\nCAfile = {}\ncheckHost = localhost\nsni = localhost\n",
                w.cert("ca.pem")
            ),
        )?;
        w.client(label, &stunnel, &[conf.display().to_string()], port)
    };
    chain.clients(loopback(server_port), far, "stunnel-client", client)?;
    Ok(chain)
}

const TROJAN_PASSWORD: &str = "blocking-proxy bench";

/// Debian's trojan (1.16), client and server.
pub fn trojan(w: &Workdir, far: bool) -> Result<Chain, String> {
    let trojan = which("trojan").ok_or("trojan not found on PATH (apt-get install trojan)")?;
    let mut chain = Chain::empty("trojan", "trojan client → TLS → trojan server".into());
    let server_port = free_port()?;
    // Nothing listens on the fallback port; the bench never sends a wrong password.
    let fallback_port = free_port()?;
    let conf = w.write(
        "trojan-server.json",
        &trojan_config::server_config(
            server_port,
            fallback_port,
            TROJAN_PASSWORD,
            &w.cert("server.pem"),
            &w.cert("server.key"),
        ),
    )?;
    chain.serve(w, "trojan-server", &trojan, &["-c".into(), conf.display().to_string()], server_port)?;

    let client = |label: &str, upstream: SocketAddr| -> Result<(Child, SocketAddr), String> {
        let port = free_port()?;
        let conf = w.write(
            &format!("{label}.json"),
            &trojan_config::client_config(port, upstream, TROJAN_PASSWORD, &w.cert("ca.pem")),
        )?;
        w.client(label, &trojan, &["-c".into(), conf.display().to_string()], port)
    };
    chain.clients(loopback(server_port), far, "trojan-client", client)?;
    Ok(chain)
}

/// The standard base64 alphabet, with padding.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// shadowsocks-rust's sslocal and ssserver with `method`, from `bin_dir`;
/// with `udp`, both in mode tcp_and_udp (`-U`), so sslocal's SOCKS5 port
/// takes UDP ASSOCIATE.
pub fn shadowsocks(
    w: &Workdir,
    bin_dir: &Path,
    name: &str,
    method: &str,
    udp: bool,
    far: bool,
) -> Result<Chain, String> {
    let sslocal = bin_dir.join("sslocal");
    let ssserver = bin_dir.join("ssserver");
    for b in [&sslocal, &ssserver] {
        if !b.is_file() {
            return Err(format!(
                "{} not found (make bench-peers builds it: cargo install --locked shadowsocks-rust --root target/peers)",
                b.display()
            ));
        }
    }
    // 2022 methods take a base64 key of the cipher's length (16 bytes); the others any password.
    let password = if method.starts_with("2022-") {
        base64(b"bench-ss2022-key")
    } else {
        "blocking-proxy bench".to_string()
    };
    let mode = if udp { " (tcp_and_udp)" } else { "" };
    let mut chain = Chain::empty(name, format!("shadowsocks-rust sslocal → {method} → ssserver{mode}"));
    let server_port = free_port()?;
    let common = |args: &mut Vec<String>| {
        args.extend(strings(&["-m", method, "-k", &password, "--tcp-no-delay"]));
        if udp {
            args.push("-U".into());
        }
    };
    let mut args = strings(&["-s", &loopback(server_port).to_string()]);
    common(&mut args);
    chain.serve(w, &format!("{name}-server"), &ssserver, &args, server_port)?;

    let client = |label: &str, upstream: SocketAddr| -> Result<(Child, SocketAddr), String> {
        let port = free_port()?;
        let mut args = strings(&["-b", &loopback(port).to_string(), "-s", &upstream.to_string()]);
        common(&mut args);
        w.client(label, &sslocal, &args, port)
    };
    chain.clients(loopback(server_port), far, &format!("{name}-local"), client)?;
    Ok(chain)
}
