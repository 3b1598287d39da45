//! Test harness: the real binaries on 127.0.0.1:0, in-process targets, a
//! SOCKS5 client, digests. Every socket gets a timeout so a hang fails.
#![allow(dead_code)]

pub mod trojan;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any single step of a test may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn cert(name: &str) -> String {
    root().join("certs").join(name).display().to_string()
}

/// A running blocking-server or blocking-local, its stderr collected line by line.
pub struct Proc {
    child: Child,
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
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
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
        let mut p = Proc { child, addr: "0.0.0.0:0".parse().unwrap(), log };
        let line = p.wait_line(|l| l.contains("listening on ") || l == "<exit>");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{bin} did not start: {:?}", p.lines()));
        p.addr = addr.parse().unwrap();
        p
    }

    /// A server on 127.0.0.1:0 whose targets may be on loopback (the test
    /// targets are), unless `args` hold the marker `--default-egress`.
    pub fn server(args: &[&str]) -> Proc {
        let mut all = vec![];
        if !args.contains(&"--listen") {
            all.extend_from_slice(&["--listen", "127.0.0.1:0"]);
        }
        if !args.contains(&"--default-egress") {
            all.push("--allow-private");
        }
        all.extend(args.iter().filter(|a| **a != "--default-egress"));
        Proc::start(env!("CARGO_BIN_EXE_blocking-server"), &all)
    }

    /// A local for `server`, trusting the test CA unless `args` say otherwise.
    pub fn local(server: SocketAddr, args: &[&str]) -> Proc {
        let server = server.to_string();
        let mut all = vec!["--server", &server];
        if !args.contains(&"--listen") {
            all.extend_from_slice(&["--listen", "127.0.0.1:0"]);
        }
        if !args.iter().any(|a| ["--ca", "--insecure", "--pin", "--no-ca"].contains(a)) {
            all.extend_from_slice(&["--ca", CA]);
        }
        all.extend(args.iter().filter(|a| **a != "--no-ca"));
        Proc::start(env!("CARGO_BIN_EXE_blocking-local"), &all)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

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

    /// CPU time the main thread (the accept loop) has used, in clock ticks (1/100 s).
    pub fn main_thread_cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{0}/task/{0}/stat", self.pid())).unwrap();
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

pub const CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/ca.pem");

/// A server with the files in certs/ and a local trusting the test CA.
pub struct Pair {
    pub server: Proc,
    pub local: Proc,
}

impl Pair {
    pub fn start() -> Pair {
        Pair::with_args(&[], &[])
    }

    pub fn with_args(server_args: &[&str], local_args: &[&str]) -> Pair {
        let (c, k) = (cert("server.pem"), cert("server.key"));
        let mut s = vec!["--cert", &c, "--key", &k];
        s.extend_from_slice(server_args);
        let server = Proc::server(&s);
        let local = Proc::local(server.addr, local_args);
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
