//! What the end-to-end tests share: the pair run in this process through
//! the library ([`Running`]) or as real processes ([`Proc`]), both built
//! from command lines ([`server`], [`local`]); in-process targets; SOCKS5,
//! HTTP and UDP clients; digests. Every socket gets a timeout, so a hang
//! fails instead of blocking the run.

pub mod hello;
pub mod logs;
pub mod nginx;
pub mod trojan;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use blocking_proxy::cli::local::{self, LocalArgs};
use blocking_proxy::cli::server::{self, ServerArgs};
use blocking_proxy::conn::report::Watch;

/// The longest any single step of a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The project's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the test certificates in `certs/`.
pub fn cert(name: &str) -> String {
    root().join("certs").join(name).display().to_string()
}

/// The test CA, which signed the server's test certificate.
pub const CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/ca.pem");

/// Which binary a command line is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bin {
    Server,
    Local,
}

/// A command line for blocking-server or blocking-local, with what the
/// tests mostly want filled in: run it in this process ([`Builder::start`])
/// or as a process of its own ([`Builder::spawn`]).
#[must_use]
pub struct Builder {
    bin: Bin,
    args: Vec<String>,
    /// The server may reach loopback and private targets (`--allow-private`).
    allow_private: bool,
    /// The local trusts the test CA (`--ca certs/ca.pem`).
    test_ca: bool,
    env: Vec<(String, String)>,
    /// Run under `prlimit --nofile=N:N` ([`Builder::spawn`] only).
    nofile: Option<u32>,
    /// Run in this namespace's network ([`Builder::spawn`] only).
    netns: Option<u32>,
}

/// blocking-server on 127.0.0.1:0 (unless `--listen` is given) with the
/// built-in test certificate (unless `--cert` and `--key` are), allowed to
/// reach the tests' targets on loopback (unless [`Builder::default_egress`]).
pub fn server() -> Builder {
    Builder {
        bin: Bin::Server,
        args: Vec::new(),
        allow_private: true,
        test_ca: false,
        env: Vec::new(),
        nofile: None,
        netns: None,
    }
}

/// blocking-server with the test certificate files in `certs/`.
pub fn server_with_certs() -> Builder {
    server().args(&["--cert", &cert("server.pem"), "--key", &cert("server.key")])
}

/// blocking-local for `server` on 127.0.0.1:0 (unless `--listen` is
/// given), trusting the test CA (unless `--ca`, `--pin` or `--insecure` is
/// given, or [`Builder::public_roots`]).
pub fn local(server: SocketAddr) -> Builder {
    local_for(&[server.to_string()])
}

/// blocking-local with several servers, in order of preference.
pub fn local_for(servers: &[String]) -> Builder {
    let args = servers.iter().flat_map(|s| ["--server".to_owned(), s.clone()]).collect();
    Builder {
        bin: Bin::Local,
        args,
        allow_private: false,
        test_ca: true,
        env: Vec::new(),
        nofile: None,
        netns: None,
    }
}

impl Builder {
    /// Adds arguments.
    pub fn args(mut self, args: &[&str]) -> Builder {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// The server keeps its default egress policy: public targets only.
    pub fn default_egress(mut self) -> Builder {
        self.allow_private = false;
        self
    }

    /// The local verifies the server against the public roots, as it does by default.
    pub fn public_roots(mut self) -> Builder {
        self.test_ca = false;
        self
    }

    /// An environment variable, for a process ([`Builder::spawn`] only: this
    /// process's environment is every test's).
    pub fn env(mut self, name: &str, value: &str) -> Builder {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Runs the process with a descriptor limit of `n`, soft and hard
    /// ([`Builder::spawn`] only), through prlimit.
    pub fn nofile(mut self, n: u32) -> Builder {
        self.nofile = Some(n);
        self
    }

    /// Runs the process in the network of the namespace `ns` holds
    /// ([`Builder::spawn`] only), through nsenter.
    pub fn in_netns(mut self, ns: &Netns) -> Builder {
        self.netns = Some(ns.pid());
        self
    }

    /// The whole command line.
    fn argv(&self) -> Vec<String> {
        let mut all = self.args.clone();
        let has = |flag: &str| self.args.iter().any(|a| a == flag);
        if !has("--listen") {
            all.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        if self.bin == Bin::Server && self.allow_private {
            all.push("--allow-private".to_owned());
        }
        if self.bin == Bin::Local && self.test_ca && !["--ca", "--pin", "--insecure"].iter().any(|f| has(f)) {
            all.extend(["--ca".to_owned(), CA.to_owned()]);
        }
        all
    }

    /// Runs it in this process, through the library, on a thread of its
    /// own; it stops accepting when dropped.
    pub fn start(self) -> Running {
        assert!(
            self.env.is_empty() && self.nofile.is_none() && self.netns.is_none(),
            "an environment, a limit or a namespace is for processes"
        );
        logs::capture();
        let argv = self.argv();
        let owner = logs::owner();
        let watch: Watch = Arc::new(move |line: &str, _| logs::push(Some(owner), line.to_owned()));
        let mut forwards = Vec::new();
        let (addr, stopper) = match self.bin {
            Bin::Server => {
                let args = ServerArgs::parse(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
                let (server, _reload, _serving) =
                    server::bind(&args, Some(watch)).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
                let stopper = server.stopper().unwrap();
                let started = (server.local_addr().unwrap(), Box::new(move || stopper.stop()) as Stop);
                thread::spawn(move || server.run());
                started
            }
            Bin::Local => {
                let args = LocalArgs::parse(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
                let (local, _reload) = local::bind(&args, &local::caps(&args), Some(watch))
                    .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
                let stopper = local.stopper().unwrap();
                forwards = local.forwards().iter().map(|f| f.local_addr()).collect();
                let started = (local.local_addr().unwrap(), Box::new(move || stopper.stop()) as Stop);
                thread::spawn(move || local.run());
                started
            }
        };
        Running { addr, forwards, owner, stopper }
    }

    /// Runs it as a process of its own, and waits for its "listening on" line.
    pub fn spawn(self) -> Proc {
        let bin = match self.bin {
            Bin::Server => env!("CARGO_BIN_EXE_blocking-server"),
            Bin::Local => env!("CARGO_BIN_EXE_blocking-local"),
        };
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut argv = self.argv();
        let bin = match self.nofile {
            Some(n) => {
                argv.splice(0..0, [format!("--nofile={n}:{n}"), "--".to_owned(), bin.to_owned()]);
                "prlimit"
            }
            None => bin,
        };
        let bin = match self.netns {
            Some(pid) => {
                argv.splice(
                    0..0,
                    ["-t".to_owned(), pid.to_string(), "-n".to_owned(), "--".to_owned(), bin.to_owned()],
                );
                "nsenter"
            }
            None => bin,
        };
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        Proc::start_with_env(bin, &argv, &env)
    }
}

/// A blocking-server or blocking-local running in this process. Its close
/// lines are its own; the other lines the library logs are this process's,
/// so a test looks for those by what only it has (an address, a port).
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// A local's `--forward` addresses, in the order given (TCP and UDP alike).
    pub forwards: Vec<SocketAddr>,
    owner: u64,
    stopper: Stop,
}

/// Stops a proxy run in this process.
type Stop = Box<dyn Fn() + Send>;

impl Running {
    /// Its close lines, then every other line logged in this process.
    pub fn lines(&self) -> Vec<String> {
        logs::lines(self.owner)
    }

    /// Waits for a line matching `pred` (or fails the test after TIMEOUT).
    pub fn wait_line(&self, pred: impl Fn(&str) -> bool) -> String {
        logs::wait(self.owner, 1, pred).remove(0)
    }

    /// Waits for `n` lines matching `pred`.
    pub fn wait_lines(&self, n: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
        logs::wait(self.owner, n, pred)
    }

    /// Stops accepting and drains, as SIGTERM does (dropping it does too).
    pub fn stop(&self) {
        (self.stopper)();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        (self.stopper)();
    }
}

/// A running blocking-server or blocking-local process, its stderr collected line by line.
pub struct Proc {
    child: Child,
    /// The address it listens on, from its "listening on" line.
    pub addr: SocketAddr,
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Proc {
    /// Starts `bin` with `args` and waits for its "listening on" line.
    pub fn start(bin: &str, args: &[&str]) -> Proc {
        Proc::start_with_env(bin, args, &[])
    }

    /// Like [`Proc::start`], with extra environment variables.
    pub fn start_with_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut p = Proc::run(bin, args, env);
        let line = p.wait_line(|l| l.contains("listening on ") || l == "<exit>");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{bin} did not start: {:?}", p.lines()));
        p.addr = addr.parse().unwrap();
        p
    }

    /// Starts another program, `bin` with `args`, and waits for a line of
    /// its stderr that says it is `ready`.
    pub fn start_waiting(bin: &str, args: &[&str], ready: impl Fn(&str) -> bool) -> Proc {
        let p = Proc::run(bin, args, &[]);
        let line = p.wait_line(|l| ready(l) || l == "<exit>");
        assert_ne!(line, "<exit>", "{bin} did not start: {:?}", p.lines());
        p
    }

    /// Starts `bin`, its stderr's lines collected.
    fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut command = Command::new(bin);
        command.args(args).env("RUST_LOG", "debug").envs(env.iter().copied());
        // An empty RUST_LOG: none at all, so that the flags set the level.
        if env.iter().any(|&(k, v)| k == "RUST_LOG" && v.is_empty()) {
            command.env_remove("RUST_LOG");
        }
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("TEST_ECHO_LOGS").is_some() {
                    eprintln!("{line}");
                }
                sink.0.lock().unwrap().push(line);
                sink.1.notify_all();
            }
            sink.0.lock().unwrap().push("<exit>".into());
            sink.1.notify_all();
        });
        Proc { child, addr: "0.0.0.0:0".parse().unwrap(), log }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line it has written to stderr.
    pub fn lines(&self) -> Vec<String> {
        self.log.0.lock().unwrap().clone()
    }

    /// Waits for a log line matching `pred` (or fails the test after TIMEOUT).
    pub fn wait_line(&self, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + TIMEOUT;
        let mut lines = self.log.0.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let left = until.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no matching log line; got {:#?}", *lines);
            lines = self.log.1.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Waits for `n` lines matching `pred`.
    pub fn wait_lines(&self, n: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let until = Instant::now() + TIMEOUT;
        let mut lines = self.log.0.lock().unwrap();
        loop {
            let found: Vec<String> = lines.iter().filter(|l| pred(l)).cloned().collect();
            if found.len() >= n {
                return found;
            }
            let left = until.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{} of {n} matching lines; got {:#?}", found.len(), *lines);
            lines = self.log.1.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Open descriptors, from /proc.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    /// Waits until the descriptor count is `n`, polling /proc; fails after TIMEOUT.
    pub fn wait_fds(&self, n: usize) {
        let until = Instant::now() + TIMEOUT;
        while self.fds() != n {
            assert!(Instant::now() < until, "descriptors stay at {}, want {n}", self.fds());
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// CPU time the process has used, every thread's, in clock ticks (1/100 s).
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the ")" of the command name; utime and stime are the 14th and 15th.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// The process's thread count, from /proc.
    pub fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
        line[8..].trim().parse().unwrap()
    }

    /// Waits until the thread count is `n`, polling /proc; fails after TIMEOUT.
    pub fn wait_threads(&self, n: usize) {
        let until = Instant::now() + TIMEOUT;
        while self.threads() != n {
            assert!(Instant::now() < until, "threads stay at {}, want {n}", self.threads());
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to exit and returns its status code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let until = Instant::now() + TIMEOUT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(Instant::now() < until, "process did not exit");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server with the test certificate files and a local trusting the test CA.
pub struct Pair<T = Running> {
    /// blocking-server.
    pub server: T,
    /// blocking-local, for that server.
    pub local: T,
}

impl Pair {
    /// Both in this process, with their defaults.
    pub fn start() -> Pair {
        Pair::with_args(&[], &[])
    }

    /// Both in this process, with extra arguments each.
    pub fn with_args(server_args: &[&str], local_args: &[&str]) -> Pair {
        let server = server_with_certs().args(server_args).start();
        let local = local(server.addr).args(local_args).start();
        Pair { server, local }
    }
}

impl Pair<Proc> {
    /// Both as processes of their own, with extra arguments each.
    pub fn spawn(server_args: &[&str], local_args: &[&str]) -> Pair<Proc> {
        let server = server_with_certs().args(server_args).spawn();
        let local = local(server.addr).args(local_args).spawn();
        Pair { server, local }
    }
}

/// Sets both socket timeouts to TIMEOUT.
pub fn timeouts(s: &TcpStream) {
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    timeouts(&s);
    s
}

/// The SOCKS5 request for `target`: ATYP and address.
pub fn socks_addr(target: &str) -> Vec<u8> {
    if let Ok(a) = target.parse::<SocketAddr>() {
        let mut v = match a {
            SocketAddr::V4(a) => [&[1u8][..], &a.ip().octets()].concat(),
            SocketAddr::V6(a) => [&[4u8][..], &a.ip().octets()].concat(),
        };
        v.extend_from_slice(&a.port().to_be_bytes());
        v
    } else {
        let (host, port) = target.rsplit_once(':').unwrap();
        let mut v = vec![3, host.len() as u8];
        v.extend_from_slice(host.as_bytes());
        v.extend_from_slice(&port.parse::<u16>().unwrap().to_be_bytes());
        v
    }
}

/// Sends greeting and CONNECT; returns the stream and the reply code.
pub fn socks_request(proxy: SocketAddr, target: &str) -> (TcpStream, u8) {
    let mut s = connect(proxy);
    let mut req = vec![5, 1, 0, 5, 1, 0];
    req.extend(socks_addr(target));
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 2 + 10];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..2], [5, 0], "method reply");
    assert_eq!(reply[2], 5, "reply version");
    (s, reply[3])
}

/// A SOCKS5 CONNECT through `proxy` that must succeed.
pub fn socks_connect(proxy: SocketAddr, target: &str) -> TcpStream {
    let (s, rep) = socks_request(proxy, target);
    assert_eq!(rep, 0, "socks5 reply code");
    s
}

/// Reads until EOF; an error (reset, timeout) fails the test.
pub fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).unwrap();
    v
}

/// Reads until the peer closes: Ok(bytes) on EOF, Err on reset; panics on timeout.
pub fn read_until_closed(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    match s.read_to_end(&mut v) {
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            panic!("not closed within {TIMEOUT:?}")
        }
        Err(e) => Err(e),
        Ok(_) => Ok(v),
    }
}

/// Set in the environment of the copy of the test binary that runs inside a
/// namespace ([`in_namespace`]).
pub const IN_NETNS: &str = "BLOCKING_PROXY_TEST_IN_NETNS";

/// Whether this is the copy of the test binary run inside a namespace.
pub fn inside_namespace() -> bool {
    std::env::var_os(IN_NETNS).is_some()
}

/// Runs the ignored test `test` of this binary again inside new namespaces
/// (`unshare` with `flags`, such as `-n`), once `lo` is up and `setup` (a
/// shell line; `files` are its `$1`, `$2`…) has run; false when `unshare`
/// with those flags is not allowed here (it needs root). Fails the test if
/// the run inside fails.
pub fn in_namespace(flags: &[&str], setup: &str, test: &str, files: &[&std::path::Path]) -> bool {
    let allowed = Command::new("unshare").args(flags).arg("true").stderr(Stdio::null()).status();
    if !allowed.is_ok_and(|s| s.success()) {
        return false;
    }
    let script = format!("ip link set lo up && {setup} exec \"$0\" --exact {test} --ignored --nocapture");
    let status = Command::new("unshare")
        .args(flags)
        .args(["sh", "-c", &script])
        .arg(std::env::current_exe().unwrap())
        .args(files)
        .env(IN_NETNS, "1")
        .status()
        .unwrap();
    assert!(status.success(), "the run inside the namespace failed: {status}");
    true
}

/// Everything read until the peer closes (an EOF or a reset); a peer that
/// keeps the connection open fails the test after TIMEOUT.
pub fn read_answer(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                panic!("not closed within {TIMEOUT:?}; got {:?}", String::from_utf8_lossy(&got))
            }
            Err(_) => return got,
        }
    }
}

/// The status line of an HTTP response.
pub fn status_line(resp: &[u8]) -> String {
    String::from_utf8_lossy(resp).split("\r\n").next().unwrap_or("").to_owned()
}

/// A listener on `bind` whose connections are handled by `f`, each on its own thread.
pub fn target(bind: &str, f: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let l = TcpListener::bind(bind).unwrap();
    let addr = l.local_addr().unwrap();
    let f = Arc::new(f);
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            timeouts(&s);
            let f = Arc::clone(&f);
            thread::spawn(move || f(s));
        }
    });
    addr
}

/// Echoes every byte until EOF, then half-closes.
pub fn echo(bind: &str) -> SocketAddr {
    target(bind, |mut s| {
        let mut r = s.try_clone().unwrap();
        if io::copy(&mut r, &mut s).is_ok() {
            let _ = s.shutdown(Shutdown::Write);
        }
    })
}

pub const PAGE: &str = "<html><body>hello through the tunnel</body></html>\n";

/// A minimal HTTP/1.x server answering every request with PAGE and closing.
pub fn http(bind: &str) -> SocketAddr {
    http_page(bind, PAGE)
}

/// A port that was free a moment ago, for peers that cannot listen on port 0 and report it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh directory for files a test makes.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("blocking-proxy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A minimal HTTP/1.x server answering every request with `body` and closing.
pub fn http_page(bind: &str, body: &'static str) -> SocketAddr {
    target(bind, move |mut s| {
        let mut req = Vec::new();
        let mut b = [0u8; 1];
        while !req.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(1) => req.push(b[0]),
                _ => return,
            }
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(resp.as_bytes());
        let _ = s.shutdown(Shutdown::Write);
        let _ = s.read(&mut b);
    })
}

/// A UDP echo on loopback that reports every datagram it gets.
pub fn udp_echo() -> (SocketAddr, mpsc::Receiver<usize>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let addr = sock.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = tx.send(n);
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    (addr, rx)
}

/// UDP ASSOCIATE by hand, for datagrams from `port` (0: any): the control
/// connection, and the relay address the local answered with.
pub fn associate(local: SocketAddr, port: u16) -> (TcpStream, SocketAddr) {
    let mut control = connect(local);
    let [hi, lo] = port.to_be_bytes();
    let ip = if port == 0 { [0, 0, 0, 0] } else { [127, 0, 0, 1] };
    control.write_all(&[&[5, 1, 0, 5, 3, 0, 1][..], &ip, &[hi, lo]].concat()).unwrap();
    let mut reply = [0u8; 2 + 10];
    control.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..4], [5, 0, 5, 0], "no auth, then success");
    let relay = SocketAddr::from((
        [reply[6], reply[7], reply[8], reply[9]],
        u16::from_be_bytes([reply[10], reply[11]]),
    ));
    (control, relay)
}

/// A datagram for the local: the SOCKS5 UDP header for `to` (with `frag`), then `payload`.
pub fn datagram(frag: u8, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(a) = to else { unreachable!("the tests' targets are IPv4") };
    [&[0, 0, frag, 1][..], &a.ip().octets(), &to.port().to_be_bytes(), payload].concat()
}

/// Runs curl with `args`; returns stdout on success, panics with stderr otherwise.
pub fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed (make deps)");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// SHA-256, from the aws-lc-rs provider rustls already builds.
pub struct Digest(Box<dyn rustls::crypto::hash::Context>);

impl Digest {
    pub fn new() -> Digest {
        let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
        let hash = suite.tls13().unwrap().common.hash_provider;
        Digest(hash.start())
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// Lowercase hex, as the library writes certificate fingerprints (also SHA-256).
    pub fn hex(self) -> String {
        let sum: blocking_proxy::tls::config::Fingerprint = self.0.finish().as_ref().try_into().unwrap();
        blocking_proxy::tls::config::fingerprint_hex(&sum)
    }
}

/// Writes `len` bytes of Pattern(seed) to `w`; returns their digest.
pub fn send_pattern(w: &mut impl Write, seed: u64, len: usize) -> String {
    let mut p = Pattern::new(seed);
    let mut d = Digest::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        p.fill(&mut buf[..n]);
        d.update(&buf[..n]);
        w.write_all(&buf[..n]).unwrap();
        left -= n;
    }
    d.hex()
}

/// Reads `r` to EOF; returns the byte count and digest.
pub fn recv_digest(r: &mut impl Read) -> (usize, String) {
    let mut d = Digest::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            return (total, d.hex());
        }
        d.update(&buf[..n]);
        total += n;
    }
}

/// A meeting point for `n` threads: each waits until all have come. A thread
/// that never comes (its connection refused, say) makes the others fail
/// after TIMEOUT, where a `Barrier` would leave them waiting for ever.
pub struct Latch {
    left: Mutex<usize>,
    all_in: Condvar,
}

impl Latch {
    /// A latch for `n` threads.
    pub fn new(n: usize) -> Latch {
        Latch { left: Mutex::new(n), all_in: Condvar::new() }
    }

    /// Arrives, and waits for the others.
    pub fn wait(&self) {
        let mut left = self.left.lock().unwrap();
        *left -= 1;
        self.all_in.notify_all();
        let (left, waited) = self.all_in.wait_timeout_while(left, TIMEOUT, |left| *left > 0).unwrap();
        assert!(!waited.timed_out(), "{} threads never arrived", *left);
    }
}

/// A process stopped (SIGSTOP) until this is dropped (SIGCONT), even by a failing test.
pub struct Stopped(String);

impl Stopped {
    /// Stops the process `pid`.
    pub fn new(pid: u32) -> Stopped {
        let pid = pid.to_string();
        assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0]).status();
    }
}

/// dnsmasq on 127.0.0.1:`port` with `args` besides, answering only from
/// them (no hosts file, no upstream), its records cacheable for 300 s, and
/// logging every query to its stderr (see [`Proc::lines`]).
pub fn dnsmasq(port: u16, args: &[&str]) -> Proc {
    let port = format!("--port={port}");
    let mut all = vec![
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--listen-address=127.0.0.1",
        &port,
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        "--local-ttl=300",
        "--log-queries",
        "--log-facility=-",
    ];
    all.extend_from_slice(args);
    Proc::start_waiting("dnsmasq", &all, |l| l.contains("started, version"))
}

/// The text of one scrape of `p`'s metrics, at the address its start-up
/// logs name (`--metrics`).
pub fn scrape(p: &Proc) -> String {
    let line = p.wait_line(|l| l.contains("metrics served on http://"));
    let addr = line.split("http://").nth(1).and_then(|u| u.strip_suffix("/metrics")).unwrap();
    let mut s = connect(addr.parse().unwrap());
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    String::from_utf8(read_all(&mut s)).unwrap()
}

/// Runs one nft command (nftables, which `make deps` installs); fails the
/// test if it fails. For a namespace the test made ([`in_namespace`]).
pub fn nft(command: &str) {
    let out = Command::new("nft")
        .arg(command)
        .output()
        .unwrap_or_else(|e| panic!("nft: {e} (`make deps` installs nftables)"));
    assert!(out.status.success(), "nft {command}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A network namespace of the test's own, inside the one it runs in
/// ([`in_namespace`]): a process (`cat`, waiting on its stdin) holds it
/// until this is dropped. Commands run in it through nsenter.
pub struct Netns {
    holder: Child,
}

impl Netns {
    /// A new network namespace, its `lo` up.
    pub fn new() -> Netns {
        let mut holder = Command::new("unshare")
            .args(["-n", "sh", "-c", "ip link set lo up && echo ready && exec cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "unshare -n did not start");
        Netns { holder }
    }

    /// The process that holds it, for `nsenter -t` and `ip link … netns`.
    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// Runs `args` in it, and returns its output; fails the test if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} in the namespace: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `args` as a command that runs in it.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid().to_string(), "-n", "--"]).args(args);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Runs `ip` with `args` in this process's namespace; fails the test if it fails.
pub fn ip(args: &str) {
    let out = Command::new("ip").args(args.split_whitespace()).output().unwrap();
    assert!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Sends SIGHUP to `p`.
pub fn hup(p: &Proc) {
    let ok = Command::new("kill").args(["-HUP", &p.pid().to_string()]).status().unwrap();
    assert!(ok.success());
}

/// Sends SIGHUP and waits for the `n`th line that reports a reload, good or bad.
pub fn reload(p: &Proc, n: usize) -> String {
    hup(p);
    let lines = p.wait_lines(n, |l| l.contains("reloaded ") || l.contains("reload failed"));
    lines[n - 1].clone()
}

/// Runs `promtool check metrics` on `text`; prints what it says and fails unless it exits 0.
pub fn promtool(who: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (make deps: Debian's prometheus)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let until = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "promtool did not finish");
        thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("promtool check metrics ({who}): exit {:?}; {:?}", out.status.code(), said.trim());
    assert!(out.status.success(), "promtool rejects the {who}'s exposition: {said}\n{text}");
}

/// Runs `bin` with `args`, expecting it to exit by itself (a usage error,
/// a bad file): its exit code and everything it wrote to stderr. One that is
/// still running after TIMEOUT is killed, and fails the test.
pub fn run_to_exit(bin: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read on a thread of its own, so that a full pipe never stalls the child.
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let text = rx.recv_timeout(TIMEOUT);
    if text.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    (status.code(), text.unwrap_or_else(|_| panic!("{bin} {args:?}: still running after {TIMEOUT:?}")))
}
