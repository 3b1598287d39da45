//! The live view on the metrics address of both binaries: `/connections`
//! lists each open connection with the exact bytes it has moved, with
//! totals and sums (by server on the local, by user on the server), parsed
//! by Python's json module; a hostile target name comes out escaped in the
//! JSON and the page; and headless Chromium (Debian's, `make deps`) shows
//! 20 open connections and their totals in the page's DOM, with its script
//! and without, and saves a screenshot.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use blocking_proxy::text::Escaped;
use blocking_proxy::tls::config::{parse_alpn, server_config, Identity, DEFAULT_ALPN};

use crate::support::*;

/// Where `p` serves its metrics and live view, as its start-up logs say.
fn view_addr(p: &Proc) -> SocketAddr {
    let line = p.wait_line(|l| l.contains("metrics served on http://"));
    let url = line.split("http://").nth(1).unwrap();
    url.strip_suffix("/metrics").unwrap().parse().unwrap()
}

/// `GET path`: the answer's head and body.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = connect(addr);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).unwrap();
    let answer = String::from_utf8(read_all(&mut s)).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {answer:?}"));
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    (head.to_owned(), body.to_owned())
}

/// Runs `cmd` with `input` on its stdin; its stdout, or a failed test if it
/// exits with an error or runs past TIMEOUT.
fn run(cmd: &str, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let until = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd} {args:?} did not finish within {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "{cmd} {args:?}: {status}: {}", String::from_utf8_lossy(&err));
    String::from_utf8(out).unwrap()
}

/// Reads `/connections` with Python's json module, which prints each
/// string as hex (`~` for null) so that it comes back exactly.
const PARSE: &str = r#"
import json, sys
d = json.load(sys.stdin)
s = lambda v: "~" if v is None else v.encode().hex()
print("total", d["role"], d["by"], d["open"], d["up"], d["down"])
for g in d["sums"]:
    print("sum", s(g["name"]), g["open"], g["up"], g["down"])
for c in d["connections"]:
    assert c["age"] >= 0
    print("conn", c["id"], s(c["client"]), s(c["target"]), s(c["protocol"]), s(c["route"]),
          s(c["user"]), s(c["server"]), c["up"], c["down"])
"#;

/// One open connection as `/connections` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Conn {
    client: Option<String>,
    target: Option<String>,
    protocol: Option<String>,
    route: Option<String>,
    user: Option<String>,
    server: Option<String>,
    up: u64,
    down: u64,
}

/// `/connections`, parsed.
#[derive(Debug)]
struct Listed {
    role: String,
    by: String,
    /// Open, up, down.
    total: [u64; 3],
    /// By name: open, up, down.
    sums: Vec<(Option<String>, [u64; 3])>,
    conns: Vec<Conn>,
    json: String,
}

fn unhex(s: &str) -> Option<String> {
    if s == "~" {
        return None;
    }
    let bytes = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect();
    Some(String::from_utf8(bytes).unwrap())
}

fn list(addr: SocketAddr) -> Listed {
    let (head, json) = get(addr, "/connections");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let out = run("python3", &["-c", PARSE], json.as_bytes());
    let mut listed = Listed {
        role: String::new(),
        by: String::new(),
        total: [0; 3],
        sums: Vec::new(),
        conns: Vec::new(),
        json: json.clone(),
    };
    for line in out.lines() {
        let w: Vec<&str> = line.split(' ').collect();
        let n = |i: usize| w[i].parse::<u64>().unwrap();
        match w[0] {
            "total" => {
                (listed.role, listed.by) = (w[1].to_owned(), w[2].to_owned());
                listed.total = [n(3), n(4), n(5)];
            }
            "sum" => listed.sums.push((unhex(w[1]), [n(2), n(3), n(4)])),
            "conn" => listed.conns.push(Conn {
                client: unhex(w[2]),
                target: unhex(w[3]),
                protocol: unhex(w[4]),
                route: unhex(w[5]),
                user: unhex(w[6]),
                server: unhex(w[7]),
                up: n(8),
                down: n(9),
            }),
            _ => panic!("{line}"),
        }
    }
    listed
}

/// Lists `addr`'s connections until `done` holds (the copy threads count a
/// write just after it returns), or fails the test after TIMEOUT.
fn list_until(addr: SocketAddr, done: impl Fn(&Listed) -> bool) -> Listed {
    let until = Instant::now() + TIMEOUT;
    loop {
        let listed = list(addr);
        if done(&listed) {
            return listed;
        }
        assert!(Instant::now() < until, "not as expected within {TIMEOUT:?}: {listed:#?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Opens a SOCKS5 connection through `local` to the echo target `to`, and
/// sends and reads back `len` bytes; it stays open.
fn echoed(local: SocketAddr, to: SocketAddr, len: usize) -> TcpStream {
    let mut s = socks_connect(local, &to.to_string());
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    for chunk in data.chunks(4096) {
        s.write_all(chunk).unwrap();
        let mut back = vec![0; chunk.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, chunk);
    }
    s
}

#[test]
fn both_sides_list_their_open_connections_with_the_exact_bytes_moved() {
    let pair = Pair::spawn(&["--metrics", "127.0.0.1:0"], &["--metrics", "127.0.0.1:0", "--pool", "0"]);
    let (local_view, server_view) = (view_addr(&pair.local), view_addr(&pair.server));
    let to = echo("127.0.0.1:0");
    let sizes = [100u64, 5_000, 70_000];
    let open: Vec<TcpStream> = sizes.iter().map(|&n| echoed(pair.local.addr, to, n as usize)).collect();
    let sum: u64 = sizes.iter().sum();
    let mut moved: Vec<u64> = sizes.to_vec();
    moved.sort_unstable();
    let exact = |l: &Listed| {
        let mut seen: Vec<u64> = l.conns.iter().filter(|c| c.up == c.down).map(|c| c.up).collect();
        seen.sort_unstable();
        l.total == [3, sum, sum] && seen == moved
    };

    let local = list_until(local_view, exact);
    println!("local /connections: {}", local.json.trim());
    assert_eq!((local.role.as_str(), local.by.as_str()), ("local", "server"));
    let server_name = pair.server.addr.to_string();
    assert_eq!(local.sums, [(Some(server_name.clone()), [3, sum, sum])]);
    for c in &local.conns {
        assert_eq!(c.target.as_deref(), Some(to.to_string().as_str()), "{c:?}");
        assert_eq!((c.protocol.as_deref(), c.route.as_deref()), (Some("socks5"), Some("proxy")), "{c:?}");
        assert_eq!((c.server.as_deref(), c.user.as_deref()), (Some(server_name.as_str()), None), "{c:?}");
        assert!(c.client.as_deref().is_some_and(|a| a.starts_with("127.0.0.1:")), "{c:?}");
    }

    let server = list_until(server_view, exact);
    println!("server /connections: {}", server.json.trim());
    assert_eq!((server.role.as_str(), server.by.as_str()), ("server", "user"));
    assert_eq!(server.sums, [(None, [3, sum, sum])], "no named users: one sum, without a name");
    for c in &server.conns {
        assert_eq!(c.target.as_deref(), Some(to.to_string().as_str()), "{c:?}");
        assert_eq!((c.route.as_deref(), c.server.as_deref(), c.user.as_deref()), (None, None, None), "{c:?}");
    }

    // The page shows the same, rendered on the server.
    let (head, page) = get(local_view, "/");
    assert!(head.contains("Content-Type: text/html; charset=utf-8"), "{head}");
    assert!(head.contains("Content-Security-Policy: default-src 'none'"), "{head}");
    assert!(page.contains(&format!("<td id=\"total-open\">3</td><td id=\"total-up\">{sum}</td>")), "{page}");
    assert_eq!(page.matches("<tr data-id=").count(), 3, "{page}");

    // Closed, they leave both lists.
    drop(open);
    for view in [local_view, server_view] {
        list_until(view, |l| l.total == [0, 0, 0] && l.conns.is_empty() && l.sums.is_empty());
    }
}

/// A name made of HTML and JSON: closing a cell, a script, quotes, an entity.
const HOSTILE: &str = "</td><script>alert(\"x\")</script><b a='1'>&amp;\\.invalid";

/// A TLS server (the built-in test certificate) that completes each
/// handshake, then reads and never answers: a tunnel to it stays open.
fn silent_server() -> SocketAddr {
    let alpn = parse_alpn(DEFAULT_ALPN).unwrap();
    let config = server_config(&Identity::TestCertificate, &alpn, None).unwrap().config;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            timeouts(&s);
            let config = Arc::clone(&config);
            thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, &mut s);
                let mut buf = [0u8; 4096];
                while matches!(tls.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[test]
fn a_hostile_target_name_is_escaped_in_the_json_and_the_page() {
    let local = local(silent_server()).args(&["--pool", "0", "--metrics", "127.0.0.1:0"]).spawn();
    let view = view_addr(&local);
    let mut s = socks_connect(local.addr, &format!("{HOSTILE}:80"));
    s.write_all(b"hello").unwrap();
    // The name as the close line writes it, which the view shows too.
    let shown = format!("{}:80", Escaped(HOSTILE));
    let listed = list_until(view, |l| l.conns.iter().any(|c| c.target.as_deref() == Some(shown.as_str())));
    println!("/connections: {}", listed.json.trim());
    assert!(!listed.json.contains('<') && !listed.json.contains('>'), "{}", listed.json);
    let (_, page) = get(view, "/");
    let cell =
        "&lt;/td&gt;&lt;script&gt;alert(\\&quot;x\\&quot;)&lt;/script&gt;&lt;b a=&#39;1&#39;&gt;&amp;amp;";
    assert!(page.contains(cell), "the name is not escaped as {cell}:\n{page}");
    assert_eq!(page.matches("<script>").count(), 1, "only the page's own script:\n{page}");
    assert!(!page.contains("<b a="), "{page}");
    drop(s);
}

/// Runs headless Chromium on `args`; its stdout, or `None` if it cannot run here.
fn chromium(profile: &std::path::Path, args: &[&str]) -> String {
    let profile = format!("--user-data-dir={}", profile.display());
    let all = [&["--headless", "--no-sandbox", "--disable-gpu", &profile][..], args].concat();
    run("chromium", &all, b"")
}

/// Whether Debian's chromium runs here.
fn chromium_runs() -> bool {
    Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

const OPEN: u64 = 20;

#[test]
fn chromium_shows_twenty_open_connections_and_their_totals() {
    if !chromium_runs() {
        println!("skipped: chromium cannot run here (make deps installs Debian's chromium)");
        return;
    }
    let pair = Pair::spawn(&["--metrics", "127.0.0.1:0"], &["--metrics", "127.0.0.1:0", "--pool", "0"]);
    let view = view_addr(&pair.local);
    let to = echo("127.0.0.1:0");
    let sizes: Vec<u64> = (1..=OPEN).map(|i| i * 1_000).collect();
    let open: Vec<TcpStream> = sizes.iter().map(|&n| echoed(pair.local.addr, to, n as usize)).collect();
    let sum: u64 = sizes.iter().sum();
    list_until(view, |l| l.total == [OPEN, sum, sum]);

    let url = format!("http://{view}/");
    let dir = scratch("live-chromium");
    let totals = format!(
        "<td id=\"total-open\">{OPEN}</td><td id=\"total-up\">{sum}</td><td id=\"total-down\">{sum}</td>"
    );
    let server_sum = format!("<td>{}</td><td>{OPEN}</td><td>{sum}</td><td>{sum}</td>", pair.server.addr);
    // As loaded: the tables as the server rendered them (the script first
    // refreshes them 2 s later; --dump-dom itself needs script, so the page
    // is not loaded with it off). Then after 5 s of virtual time: the script
    // has refreshed them from /connections.
    for (how, flags) in
        [("as loaded", &[][..]), ("refreshed by its script", &["--virtual-time-budget=5000"][..])]
    {
        let dom = chromium(&dir.join(how.replace(' ', "-")), &[flags, &["--dump-dom", &url]].concat());
        let rows = dom.matches("<tr data-id=\"").count();
        let refreshed = dom.contains("data-refreshed=\"");
        println!(
            "chromium {how}: {rows} rows, totals shown: {}, refreshed by script: {refreshed}",
            dom.contains(&totals)
        );
        assert_eq!(rows as u64, OPEN, "{how}: {dom}");
        assert!(dom.contains(&totals), "{how}: no {totals} in {dom}");
        assert!(dom.contains(&server_sum), "{how}: no {server_sum} in {dom}");
        for n in &sizes {
            assert!(
                dom.contains(&format!("<td>{n}</td><td>{n}</td>")),
                "{how}: no row of {n} bytes in {dom}"
            );
        }
        if flags.is_empty() {
            continue;
        }
        assert!(refreshed, "{how}: {dom}");
    }
    let png = dir.join("live-view.png");
    let shot = format!("--screenshot={}", png.display());
    chromium(&dir.join("shot"), &["--window-size=1200,800", &shot, &url]);
    let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    println!("screenshot: {} ({len} bytes)", png.display());
    assert!(len > 0, "no screenshot at {}", png.display());
    drop(open);
}
