//! Several blocking-servers behind HAProxy (Debian's `haproxy`, installed by
//! `make deps`) in TCP mode, as docs/OPERATING.md configures it: each
//! connection goes to one of three servers with a PROXY protocol v2 header
//! (`send-proxy-v2`), from a second loopback address (`source 127.0.0.3`),
//! and health checks take a dead server out. One blocking-local's requests
//! are all answered while a server is killed, and the servers name the
//! local, not the balancer, as the client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// Requests through the local, one after another; after the first
/// `KILL_AFTER` a server is killed, and before the one numbered `DOWN_BY`
/// the test waits for haproxy's health checks to mark it down.
const REQUESTS: usize = 180;
const KILL_AFTER: usize = 60;
const DOWN_BY: usize = 120;

/// Where the balancer connects from, as `--proxy-from` trusts it.
const BALANCER_SOURCE: &str = "127.0.0.3";

/// HAProxy in the foreground; its log (one line per connection: the
/// client's address, the server, the retries) and its messages collected
/// line by line. Dropping it kills it.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Haproxy {
    fn start(servers: &[SocketAddr]) -> Haproxy {
        let port = free_port();
        let dir = scratch(&format!("haproxy-{port}"));
        let mut cfg = format!(
            "global\n    log stdout format raw local0\n\n\
             defaults\n    mode tcp\n    log global\n    option log-health-checks\n    \
             log-format \"client=%ci:%cp server=%s retries=%rc\"\n    \
             timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n    timeout check 1s\n    \
             retries 3\n    option redispatch 1\n\n\
             frontend proxy\n    bind 127.0.0.1:{port}\n    default_backend servers\n\n\
             backend servers\n    balance roundrobin\n"
        );
        for (i, s) in servers.iter().enumerate() {
            cfg.push_str(&format!(
                "    server s{} {s} check send-proxy-v2 check-send-proxy source {BALANCER_SOURCE} \
                 inter 200ms fall 1 rise 2\n",
                i + 1
            ));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, &cfg).unwrap();
        let mut child = Command::new(haproxy_binary())
            .args(["-f", &path.display().to_string(), "-db"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run haproxy ({e}): run make deps, which installs it"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [out, err] {
            let sink = Arc::clone(&log);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Haproxy { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), log }
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `done()` holds, polling; fails the test after TIMEOUT, or
    /// at once with haproxy's output if haproxy exits.
    fn wait_until(&mut self, what: &str, done: impl Fn() -> bool) {
        let until = Instant::now() + TIMEOUT;
        while !done() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("haproxy exited ({status}) before {what}: {:#?}", self.lines());
            }
            assert!(
                Instant::now() < until,
                "{what}: not within {TIMEOUT:?}; haproxy said {:#?}",
                self.lines()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for `n` lines of haproxy's matching `pred`, and returns every matching line.
    fn wait_lines(&mut self, n: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let log = Arc::clone(&self.log);
        let matching = move || log.lock().unwrap().iter().filter(|l| pred(l)).cloned().collect::<Vec<_>>();
        self.wait_until(&format!("{n} matching haproxy lines"), || matching().len() >= n);
        matching()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn haproxy_binary() -> PathBuf {
    ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("haproxy is not installed: run make deps (Debian's haproxy package)"))
}

/// One HTTP request through the local's SOCKS5 port; the whole response.
fn get(local: SocketAddr, web: SocketAddr) -> String {
    let mut s = socks_connect(local, &web.to_string());
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n").unwrap();
    String::from_utf8(read_all(&mut s)).unwrap()
}

/// The value of `name=` in a log line, up to the next space.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = format!("{name}=");
    let at = line.split(' ').find(|f| f.starts_with(&start));
    at.map_or("", |f| &f[start.len()..])
}

/// The close lines of every server, waiting (up to TIMEOUT) until there are at least `n`.
fn close_lines(servers: &[Proc], n: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let until = Instant::now() + TIMEOUT;
    loop {
        let all: Vec<String> = servers
            .iter()
            .flat_map(Proc::lines)
            .filter(|l| l.contains(" closed client=") && pred(l))
            .collect();
        if all.len() >= n {
            return all;
        }
        assert!(Instant::now() < until, "{} of {n} close lines: {all:#?}", all.len());
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_run_through_haproxy_is_answered_while_a_server_dies_and_servers_log_the_local() {
    // Processes: one is killed, cutting what it holds.
    let mut servers: Vec<Proc> = (0..3)
        .map(|_| {
            server()
                .args(&["--password", "secret", "--proxy-protocol", "--proxy-from", "127.0.0.3/32"])
                .spawn()
        })
        .collect();
    let mut haproxy = Haproxy::start(&servers.iter().map(|s| s.addr).collect::<Vec<_>>());
    // Two health checks each (rise 2): haproxy is listening and every server is up.
    let checked = |s: &Proc| s.lines().iter().filter(|l| l.ends_with("end=health check")).count() >= 2;
    haproxy.wait_until("two health checks of each server", || servers.iter().all(checked));
    let local =
        local(haproxy.addr).args(&["--sni", "localhost", "--password", "secret", "--pool", "0"]).start();
    let web = http("127.0.0.1:0");
    let served = |l: &str| l.contains(&format!(" target={web} "));

    for i in 0..REQUESTS {
        if i == KILL_AFTER {
            // Once the requests so far are logged, the second server dies without a word.
            haproxy.wait_lines(KILL_AFTER, |l| l.starts_with("client="));
            close_lines(&servers, KILL_AFTER, served);
            let killed =
                Command::new("kill").args(["-KILL", &servers[1].pid().to_string()]).status().unwrap();
            assert!(killed.success());
            servers[1].wait_exit();
        }
        if i == DOWN_BY {
            let down = haproxy.wait_lines(1, |l| l.contains("servers/s2") && l.contains("DOWN")).remove(0);
            println!("haproxy: {down}");
            haproxy.wait_lines(DOWN_BY, |l| l.starts_with("client="));
        }
        let response = get(local.addr, web);
        assert!(
            response.starts_with("HTTP/1.1 200 OK\r\n") && response.ends_with(PAGE),
            "request {i}: {response:?}"
        );
    }
    println!("{REQUESTS} requests answered, s2 killed after {KILL_AFTER}");

    // Each request as haproxy logged it: from the local's address, to one server.
    let sessions = haproxy.wait_lines(REQUESTS, |l| l.starts_with("client="));
    assert_eq!(sessions.len(), REQUESTS, "{sessions:#?}");
    println!("haproxy: {} (and {} more)", sessions[0], REQUESTS - 1);
    let locals: Vec<&str> = sessions.iter().map(|l| field(l, "client")).collect();
    let retried =
        |range: std::ops::Range<usize>| sessions[range].iter().filter(|l| field(l, "retries") != "0").count();
    assert_eq!(retried(0..KILL_AFTER), 0, "none retried while every server was up");
    // Until a health check noticed, a connection sent to the dead server was retried on another.
    println!(
        "{} of the next {} retried elsewhere until s2 was marked down",
        retried(KILL_AFTER..DOWN_BY),
        DOWN_BY - KILL_AFTER
    );
    assert!(sessions[KILL_AFTER..].iter().all(|l| field(l, "server") != "s2"), "{sessions:#?}");
    assert_eq!(retried(DOWN_BY..REQUESTS), 0, "once it is down, none is tried there: {sessions:#?}");

    // The servers served each request once, naming the local as its client.
    let requests = close_lines(&servers, REQUESTS, served);
    assert_eq!(requests.len(), REQUESTS, "{requests:#?}");
    println!("a server: {}", requests[0]);
    for line in &requests {
        let client = field(line, "client");
        assert!(client.starts_with("127.0.0.1:") && locals.contains(&client), "{line}");
        assert!(line.ends_with("end=eof"), "{line}");
    }
    let per_server: Vec<usize> = servers
        .iter()
        .map(|s| s.lines().iter().filter(|l| l.contains(" closed client=") && served(l)).count())
        .collect();
    println!("requests per server: {per_server:?}");
    assert!(per_server.iter().all(|n| *n > 0), "round robin reached every server: {per_server:?}");
    // Everything else was a health check: the balancer's own address, a clean end.
    let checks = close_lines(&servers, 0, |l| !served(l));
    println!("a health check: {}", checks[0]);
    for line in &checks {
        assert!(
            field(line, "client").starts_with("127.0.0.3:") && line.ends_with("end=health check"),
            "{line}"
        );
    }
    drop(haproxy);
}
