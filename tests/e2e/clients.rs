//! One port, every client: real tools (curl, wget, Python's urllib and
//! openssl s_server as an HTTPS site) through blocking-local with SOCKS5,
//! SOCKS4, SOCKS4a, the HTTP proxy's absolute form and CONNECT; logins for
//! each; request bodies passed exactly; and bad input over a real socket
//! answered or closed, never left hanging.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// Every variable through which a tool may pick a proxy, or skip one.
const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// Runs `cmd` with `args` and only the proxy variables in `env`.
fn run(cmd: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(cmd);
    for v in PROXY_VARS {
        c.env_remove(v);
    }
    c.args(args).envs(env.iter().copied()).stdin(Stdio::null());
    c.output().unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// curl, bounded, with its proxy from the arguments alone.
fn curl_run(args: &[&str]) -> Output {
    let mut all = vec!["--silent", "--show-error", "--max-time", "20", "--noproxy", ""];
    all.extend_from_slice(args);
    run("curl", &all, &[])
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// wget, bounded, with `http_proxy` / `https_proxy` from `env`.
fn wget(url: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec!["-q", "-O", "-", "--tries=1", "--timeout=20"];
    args.extend_from_slice(extra);
    args.push(url);
    run("wget", &args, env)
}

/// Debian's Python fetching `urls` in turn with urllib, its proxies from the
/// environment; prints each body, or `HTTP <code>` and exits 3.
fn urllib(urls: &[&str], env: &[(&str, &str)]) -> Output {
    const SCRIPT: &str = r#"
import ssl, sys, urllib.error, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[1])
opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
for url in sys.argv[2:]:
    try:
        sys.stdout.write(opener.open(url, timeout=20).read().decode("latin-1"))
    except urllib.error.HTTPError as e:
        print("HTTP", e.code)
        sys.exit(3)
"#;
    let mut args = vec!["-c", SCRIPT, CA];
    args.extend_from_slice(urls);
    run("/usr/bin/python3", &args, env)
}

fn proxy_url(local: SocketAddr) -> String {
    format!("http://{local}")
}

/// openssl s_server -www on 127.0.0.1 with the test certificate; killed on drop.
struct SServer {
    child: Child,
    port: u16,
}

impl SServer {
    fn start() -> SServer {
        let port = free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}")])
            .args(["-cert", &cert("server.pem"), "-key", &cert("server.key")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl is installed");
        let s = SServer { child, port };
        // s_server cannot report that it listens: poll (bounded) until it accepts.
        let until = Instant::now() + TIMEOUT;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        while TcpStream::connect_timeout(&addr, TIMEOUT).is_err() {
            assert!(Instant::now() < until, "openssl s_server did not listen");
            thread::sleep(Duration::from_millis(20));
        }
        s
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads an HTTP head byte by byte, up to its empty line.
fn read_head(s: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b)?;
        head.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Reads a chunked body and returns it decoded.
fn read_chunked(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            s.read_exact(&mut b)?;
            line.push(b[0]);
        }
        let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
        let size = usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, text.clone()))?;
        if size == 0 {
            // Trailers, up to the empty line.
            let mut rest = b"\r\n".to_vec();
            while !rest.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut b)?;
                rest.push(b[0]);
            }
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size + 2, 0);
        s.read_exact(&mut body[start..])?;
        body.truncate(start + size);
    }
}

/// An HTTP target that answers each request with the body it received
/// (decoded, if chunked), and passes the request head on to the test.
fn body_echo() -> (SocketAddr, Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let addr = target("127.0.0.1:0", move |mut s| {
        let Ok(head) = read_head(&mut s) else { return };
        let lower = head.to_ascii_lowercase();
        let body = if lower.contains("\r\ntransfer-encoding: chunked\r\n") {
            read_chunked(&mut s)
        } else {
            let len = lower
                .split("\r\ncontent-length:")
                .nth(1)
                .and_then(|v| v.split("\r\n").next())
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).map(|()| body)
        };
        let _ = tx.lock().unwrap().send(head);
        let Ok(body) = body else { return };
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        let _ = s.write_all(resp.as_bytes());
        let _ = s.write_all(&body);
        let _ = s.shutdown(Shutdown::Write);
        let _ = s.read(&mut [0u8; 1]);
    });
    (addr, rx)
}

/// Writes `input` (one byte per write, or at once), half-closes when asked,
/// and returns everything read until the local closes (an EOF or a reset).
/// A local that keeps the connection open fails the test after TIMEOUT.
fn exchange(local: SocketAddr, input: &[u8], one_byte: bool, half_close: bool) -> Vec<u8> {
    let mut s = connect(local);
    s.set_nodelay(true).unwrap();
    let written =
        if one_byte { input.chunks(1).try_for_each(|b| s.write_all(b)) } else { s.write_all(input) };
    if written.is_ok() && half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    read_answer(&mut s)
}

/// A SOCKS4 request; `domain` makes it SOCKS4a.
fn socks4(target: SocketAddr, userid: &[u8], domain: Option<&str>) -> Vec<u8> {
    let SocketAddr::V4(t) = target else { panic!("socks4 is IPv4 only") };
    let mut v = vec![4, 1];
    v.extend_from_slice(&t.port().to_be_bytes());
    v.extend_from_slice(&if domain.is_some() { [0, 0, 0, 1] } else { t.ip().octets() });
    v.extend_from_slice(userid);
    v.push(0);
    if let Some(d) = domain {
        v.extend_from_slice(d.as_bytes());
        v.push(0);
    }
    v
}

#[test]
fn curl_through_socks5_socks4_and_socks4a_on_the_one_port() {
    let pair = Pair::start();
    let web = http("127.0.0.1:0");
    let local = pair.local.addr;
    let url = format!("http://{web}/");
    let by_name = format!("http://localhost:{}/", web.port());
    for (proxy, url, proto) in [
        (format!("socks5h://{local}"), &url, "socks5"),
        (format!("socks4://{local}"), &url, "socks4"),
        (format!("socks4a://{local}"), &by_name, "socks4"),
    ] {
        assert_eq!(ok(curl_run(&["--proxy", &proxy, url]), &proxy), PAGE, "{proxy}");
        pair.local
            .wait_line(|l| l.contains(" closed ") && l.ends_with(&format!("proto={proto} route=proxy")));
    }
    assert_eq!(ok(curl_run(&["--socks5-hostname", &local.to_string(), &by_name]), "socks5-hostname"), PAGE);
    // SOCKS4a hands the name to the server, which resolves it.
    pair.local.wait_line(|l| {
        l.contains(&format!("target=localhost:{} ", web.port())) && l.contains("proto=socks4")
    });
}

#[test]
fn plain_http_through_the_http_proxy_with_curl_wget_and_urllib() {
    let pair = Pair::start();
    let web = http("127.0.0.1:0");
    let proxy = proxy_url(pair.local.addr);
    let url = format!("http://{web}/page?x=1");
    assert_eq!(ok(curl_run(&["--proxy", &proxy, &url]), "curl"), PAGE);
    assert_eq!(ok(wget(&url, &[], &[("http_proxy", &proxy)]), "wget"), PAGE);
    assert_eq!(ok(urllib(&[&url], &[("http_proxy", &proxy)]), "urllib"), PAGE);
    let lines = pair
        .local
        .wait_lines(3, |l| l.contains(&format!("target={web} ")) && l.ends_with("proto=http route=proxy"));
    assert!(lines.iter().all(|l| l.contains(" end=eof ")), "{lines:#?}");
}

#[test]
fn connect_tunnels_plain_http_and_https_to_openssl_s_server() {
    let pair = Pair::start();
    let web = http("127.0.0.1:0");
    let site = SServer::start();
    let proxy = proxy_url(pair.local.addr);
    // -p: CONNECT even for a plain http URL.
    assert_eq!(ok(curl_run(&["-p", "--proxy", &proxy, &format!("http://{web}/")]), "curl -p"), PAGE);
    let https = format!("https://127.0.0.1:{}/", site.port);
    let page = ok(curl_run(&["--proxy", &proxy, "--cacert", CA, &https]), "curl https");
    assert!(page.contains("s_server"), "{page}");
    let by_name = format!("https://localhost:{}/", site.port);
    let page = ok(urllib(&[&by_name], &[("https_proxy", &proxy)]), "urllib https");
    assert!(page.contains("s_server"), "{page}");
    let page =
        ok(wget(&https, &[&format!("--ca-certificate={CA}")], &[("https_proxy", &proxy)]), "wget https");
    assert!(page.contains("s_server"), "{page}");
    pair.local
        .wait_lines(3, |l| l.contains(&format!(":{} ", site.port)) && l.ends_with("proto=http route=proxy"));
}

#[test]
fn two_requests_in_a_row_for_two_hosts_reach_each() {
    let pair = Pair::start();
    let (one, two) = (http_page("127.0.0.1:0", "first site\n"), http_page("127.0.0.1:0", "second site\n"));
    let proxy = proxy_url(pair.local.addr);
    let (u1, u2) = (format!("http://{one}/"), format!("http://{two}/"));
    // One curl, one python: each sends its second request on a new connection.
    assert_eq!(ok(curl_run(&["--proxy", &proxy, &u1, &u2]), "curl"), "first site\nsecond site\n");
    assert_eq!(ok(urllib(&[&u2, &u1], &[("http_proxy", &proxy)]), "urllib"), "second site\nfirst site\n");
    assert_eq!(ok(wget(&u1, &[], &[("http_proxy", &proxy)]), "wget"), "first site\n");
    assert_eq!(ok(wget(&u2, &[], &[("http_proxy", &proxy)]), "wget"), "second site\n");
}

#[test]
fn request_bodies_pass_exactly_with_content_length_and_chunked() {
    let pair = Pair::start();
    let (web, heads) = body_echo();
    let proxy = proxy_url(pair.local.addr);
    let dir = scratch("bodies");
    let mut data = vec![0u8; 300 * 1024 + 7];
    Pattern::new(7).fill(&mut data);
    let file = dir.join("body");
    std::fs::write(&file, &data).unwrap();
    let at = format!("@{}", file.display());
    let url = format!("http://{web}/upload");
    for chunked in [false, true] {
        let mut args = vec!["--proxy", &proxy, "--data-binary", &at, "-o", "-", &url];
        if chunked {
            args.extend_from_slice(&["-H", "Transfer-Encoding: chunked"]);
        }
        let out = curl_run(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout == data, "chunked={chunked}: {} bytes back of {}", out.stdout.len(), data.len());
        let head = heads.recv_timeout(TIMEOUT).unwrap();
        assert!(head.starts_with("POST /upload HTTP/1.1\r\nHost: 127.0.0.1:"), "{head}");
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("proxy-"), "{head}");
        assert_eq!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), chunked, "{head}");
    }
    // Coalesced: the head and the whole body in one write.
    let mut raw = format!("PUT http://{web}/x HTTP/1.1\r\nContent-Length: 5\r\n\r\n").into_bytes();
    raw.extend_from_slice(b"hello");
    let resp = exchange(pair.local.addr, &raw, false, false);
    assert!(resp.ends_with(b"\r\n\r\nhello"), "{}", String::from_utf8_lossy(&resp));
    // One byte per write.
    let resp = exchange(pair.local.addr, &raw, true, false);
    assert!(resp.ends_with(b"\r\n\r\nhello"), "{}", String::from_utf8_lossy(&resp));
}

#[test]
fn with_users_each_client_must_log_in_and_socks4_is_refused() {
    let pair = Pair::with_args(&[], &["--user", "alice:wonder"]);
    let web = http("127.0.0.1:0");
    let site = SServer::start();
    let local = pair.local.addr;
    let proxy = proxy_url(local);
    let with_login = format!("http://alice:wonder@{local}");
    let url = format!("http://{web}/");
    let https = format!("https://127.0.0.1:{}/", site.port);

    // curl: absolute form, CONNECT, SOCKS5.
    let code = ok(curl_run(&["--proxy", &proxy, "-w", "%{http_code}", "-o", "/dev/null", &url]), "curl 407");
    assert_eq!(code, "407");
    assert_eq!(ok(curl_run(&["--proxy", &proxy, "--proxy-user", "alice:wonder", &url]), "curl login"), PAGE);
    let wrong = curl_run(&["--proxy", &proxy, "--proxy-user", "alice:guessed", "-w", "%{http_code}", &url]);
    assert!(String::from_utf8_lossy(&wrong.stdout).ends_with("407"), "{wrong:?}");
    let out = curl_run(&["--proxy", &proxy, "--cacert", CA, &https]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("407"), "{out:?}");
    let page = ok(curl_run(&["--proxy", &with_login, "--cacert", CA, &https]), "curl CONNECT login");
    assert!(page.contains("s_server"), "{page}");
    assert_eq!(ok(curl_run(&["--proxy", &format!("socks5h://alice:wonder@{local}"), &url]), "socks5"), PAGE);

    // wget and urllib.
    assert!(!wget(&url, &[], &[("http_proxy", &proxy)]).status.success(), "wget without a login");
    let login = ["--proxy-user=alice", "--proxy-password=wonder"];
    assert_eq!(ok(wget(&url, &login, &[("http_proxy", &proxy)]), "wget login"), PAGE);
    let out = urllib(&[&url], &[("http_proxy", &proxy)]);
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).trim()), (Some(3), "HTTP 407"));
    assert_eq!(ok(urllib(&[&url], &[("http_proxy", &with_login)]), "urllib login"), PAGE);
    let page = ok(urllib(&[&https], &[("https_proxy", &with_login)]), "urllib https login");
    assert!(page.contains("s_server"), "{page}");

    // SOCKS4 has no password: refused with 91, and the log says why.
    let out = curl_run(&["--proxy", &format!("socks4://alice@{local}"), &url]);
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(exchange(local, &socks4(web, b"alice", None), false, false), [0, 91, 0, 0, 0, 0, 0, 0]);
    let line = pair.local.wait_line(|l| l.contains("WARN") && l.contains("socks4 client 127.0.0.1:"));
    assert!(line.contains("no password and users are configured"), "{line}");
    pair.local.wait_line(|l| {
        l.contains("WARN") && l.contains("http client 127.0.0.1:") && l.contains("no proxy credentials")
    });
    pair.local
        .wait_line(|l| l.contains("http client 127.0.0.1:") && l.contains("login failed for user alice"));
    // No password reaches the log.
    assert!(pair.local.lines().iter().all(|l| !l.contains("wonder") && !l.contains("guessed")));
}

#[test]
fn bad_http_and_socks4_get_their_answer_or_a_close_never_a_hang() {
    let pair = Pair::with_args(&[], &["--handshake-timeout", "2"]);
    let local = pair.local.addr;
    let web = http("127.0.0.1:0");
    let mut long_line = b"GET http://h.example/".to_vec();
    long_line.resize(9000, b'a');
    long_line.extend_from_slice(b" HTTP/1.1\r\n\r\n");
    let mut many = b"GET http://h.example/ HTTP/1.1\r\n".to_vec();
    for i in 0..150 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let http_cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GET /relative HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), "400 Bad Request"),
        (b"GET https://h.example/ HTTP/1.1\r\n\r\n".to_vec(), "400 Bad Request"),
        (b"GET http://h.example/ HTTP/9\r\n\r\n".to_vec(), "400 Bad Request"),
        (b"GET http://h.example/ HTTP/1.1\r\nno colon\r\n\r\n".to_vec(), "400 Bad Request"),
        (b"CONNECT h.example HTTP/1.1\r\n\r\n".to_vec(), "400 Bad Request"),
        (b"TRACE http://h.example/ HTTP/1.1\r\n\r\n".to_vec(), "405 Method Not Allowed"),
        (long_line, "414 URI Too Long"),
        (many, "431 Request Header Fields Too Large"),
    ];
    for (input, want) in &http_cases {
        for (one_byte, extra) in [(false, &b""[..]), (true, b""), (false, b"GET http://x/ HTTP/1.1\r\n\r\n")]
        {
            let sent = [&input[..], extra].concat();
            let resp = exchange(local, &sent, one_byte, false);
            let text = String::from_utf8_lossy(&resp);
            assert_eq!(
                status_line(&resp),
                format!("HTTP/1.1 {want}"),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{text}");
            assert!(head.contains("\r\nConnection: close"), "{text}");
        }
    }
    let resp = exchange(local, b"TRACE http://h.example/ HTTP/1.1\r\n\r\n", false, false);
    assert!(String::from_utf8_lossy(&resp).contains("\r\nAllow: GET, HEAD, POST"));

    let rejected = vec![0u8, 91, 0, 0, 0, 0, 0, 0];
    let mut bind = socks4(web, b"", None);
    bind[1] = 2;
    let socks4_cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (bind, rejected.clone()),
        ([&[4, 1, 0, 80, 1, 2, 3, 4][..], &[b'u'; 300]].concat(), rejected.clone()),
        ([&[4, 1, 0, 80, 0, 0, 0, 1, 0][..], &[b'h'; 300]].concat(), rejected.clone()),
        (vec![4, 1, 0, 80, 0, 0, 0, 1, 0, 0], rejected.clone()),
    ];
    for (input, want) in &socks4_cases {
        for one_byte in [false, true] {
            assert_eq!(&exchange(local, input, one_byte, false), want, "{input:?}");
        }
    }
    // A valid SOCKS4 request, one byte per write, then payload coalesced after it.
    let mut req = socks4(web, b"", None);
    req.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    for one_byte in [false, true] {
        let resp = exchange(local, &req, one_byte, false);
        assert_eq!(resp[..8], [0, 90, 0, 0, 0, 0, 0, 0]);
        assert!(resp.ends_with(PAGE.as_bytes()), "{}", String::from_utf8_lossy(&resp));
    }

    // Cut short (then an end, or silence until the handshake deadline),
    // and a first byte no protocol starts with: closed without an answer.
    let full_http = format!("GET http://{web}/ HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
    let full_socks4 = socks4(web, b"user", Some("localhost"));
    for full in [&full_http, &full_socks4] {
        for cut in [1, 5, full.len() - 1] {
            assert_eq!(exchange(local, &full[..cut], false, true), b"", "cut at {cut}");
        }
        assert_eq!(exchange(local, &full[..full.len() - 1], true, false), b"", "silent after the cut");
    }
    for first in [0x16u8, 0, b' ', 0xff] {
        assert_eq!(exchange(local, &[first, 1, 2, 3], false, false), b"", "first byte {first:#x}");
    }
    pair.local.wait_line(|l| l.contains("end=unknown protocol: first byte 0x16"));
    pair.local.wait_line(|l| l.contains("end=http: deadline passed") || l.contains("end=http: timed out"));
}

#[test]
fn unreachable_servers_and_targets_get_502_504_and_91() {
    // No server at all: refused at once.
    let dead: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let local = local(dead).start();
    let web = http("127.0.0.1:0");
    let get = format!("GET http://{web}/ HTTP/1.1\r\n\r\n").into_bytes();
    let connect = format!("CONNECT {web} HTTP/1.1\r\n\r\n").into_bytes();
    for input in [&get, &connect] {
        assert_eq!(status_line(&exchange(local.addr, input, false, false)), "HTTP/1.1 502 Bad Gateway");
    }
    assert_eq!(exchange(local.addr, &socks4(web, b"", None), false, false), [0, 91, 0, 0, 0, 0, 0, 0]);

    // A server that accepts and never answers: the connect deadline.
    let silent = target("127.0.0.1:0", |mut s| {
        let _ = s.read_to_end(&mut Vec::new());
    });
    let local = crate::support::local(silent).args(&["--connect-timeout", "1"]).start();
    assert_eq!(status_line(&exchange(local.addr, &get, false, false)), "HTTP/1.1 504 Gateway Timeout");

    // The server cannot reach the target: the tunnel ends before any byte of a response.
    let pair = Pair::start();
    let closed: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let url = format!("http://{closed}/");
    let code =
        curl_run(&["--proxy", &proxy_url(pair.local.addr), "-w", "%{http_code}", "-o", "/dev/null", &url]);
    assert_eq!(String::from_utf8_lossy(&code.stdout), "502", "{code:?}");
    pair.local.wait_line(|l| l.contains(&format!("target={closed} ")) && l.contains("before any byte"));
}

#[test]
fn over_the_cap_each_protocol_is_answered_in_its_own() {
    // A process: the test stops it (SIGSTOP) to queue requests in the kernel.
    let pair = Pair::spawn(&[], &["--max-conns", "1"]);
    let echo = echo("127.0.0.1:0");
    let mut held = socks_connect(pair.local.addr, &echo.to_string());
    held.write_all(b"x").unwrap();
    held.read_exact(&mut [0u8; 1]).unwrap();
    let web: SocketAddr = ([127, 0, 0, 1], 9).into();
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"GET http://h.example/ HTTP/1.1\r\n\r\n".to_vec(), http_busy()),
        (socks4(web, b"", None), vec![0, 91, 0, 0, 0, 0, 0, 0]),
        (vec![5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 9], vec![5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0]),
    ];
    for (input, want) in &cases {
        // The answer needs the first byte to be there when the local accepts:
        // with the local stopped, the kernel completes the connection and
        // queues the request, and the local finds both when it continues.
        let mut s = {
            let _stopped = Stopped::new(pair.local.pid());
            let mut s = connect(pair.local.addr);
            s.write_all(input).unwrap();
            s
        };
        assert_eq!(&read_until_closed(&mut s).expect("a clean close, not a reset"), want);
    }
    // No byte yet: closed at once, without an answer.
    let mut s = connect(pair.local.addr);
    assert_eq!(read_until_closed(&mut s).unwrap_or_default(), b"");
    // Refusals are logged at most once a second.
    pair.local.wait_line(|l| l.contains("refusing 127.0.0.1:"));
}

fn http_busy() -> Vec<u8> {
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n\
Connection: close\r\n\r\n503 Service Unavailable\n"
        .to_vec()
}

/// docs/CLIENTS.md as a person reads it: every flag of ours it names is in a
/// binary's `--help`; it says that idle sessions are cut at `--idle-timeout`
/// and gives the ssh recipe and Chromium's loopback note; and the recipe's
/// ProxyCommand (OpenBSD netcat, `make deps` installs it) goes through the pair.
#[test]
fn clients_md_names_real_flags_and_its_ssh_proxy_command_goes_through() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CLIENTS.md")).unwrap();
    let help = |bin: &str| String::from_utf8(run(bin, &["--help"], &[]).stdout).unwrap();
    let helps = [help(env!("CARGO_BIN_EXE_blocking-local")), help(env!("CARGO_BIN_EXE_blocking-server"))];
    // Other programs' flags: curl's, Chromium's.
    let theirs = ["--socks5-hostname", "--proxy-server", "--proxy-bypass-list"];
    let mut ours = Vec::new();
    for (at, _) in doc.match_indices("--") {
        let flag: String = doc[at..].chars().take_while(|c| *c == '-' || c.is_ascii_alphanumeric()).collect();
        if flag.len() > 2 && !theirs.contains(&flag.as_str()) && !ours.contains(&flag) {
            ours.push(flag);
        }
    }
    for flag in &ours {
        // `      --flag ARG  text`, or `  -h, --help  text`.
        let listed = helps.iter().any(|h| h.lines().any(|l| l.split_whitespace().take(2).any(|w| w == flag)));
        assert!(listed, "docs/CLIENTS.md names {flag}, which neither binary's --help lists");
    }
    eprintln!("docs/CLIENTS.md names {ours:?}, all in --help");
    for said in [
        "is closed,\nand its close line says `end=idle timeout`",
        "ProxyCommand nc -X 5 -x 127.0.0.1:1081 %h %p",
        "ServerAliveInterval 30",
        "--proxy-bypass-list=\"<-loopback>\"",
    ] {
        assert!(doc.contains(said), "docs/CLIENTS.md does not say {said:?}");
    }
    let section = |title: &str| {
        let start = doc.find(title).unwrap();
        let end = doc[start + title.len()..].find("\n## ").map_or(doc.len(), |e| start + title.len() + e);
        doc[start..end].to_owned()
    };
    eprintln!("{}\n{}", section("## Long-lived idle sessions"), section("## ssh"));

    let nc_help = Command::new("nc").arg("-h").output();
    let openbsd = nc_help
        .is_ok_and(|o| String::from_utf8_lossy(&[o.stdout, o.stderr].concat()).contains("-X proxy_protocol"));
    if !openbsd {
        eprintln!("SKIPPED: the ProxyCommand through the pair (no OpenBSD netcat; `make deps` installs netcat-openbsd)");
        return;
    }
    let pair = Pair::spawn(&[], &[]);
    let echo = echo("127.0.0.1:0");
    // What ssh runs for `ssh -p PORT localhost` with the recipe's ProxyCommand
    // (-N: end the connection when the input ends, as ssh's would; timeout bounds it).
    let proxy = pair.local.addr.to_string();
    let port = echo.port().to_string();
    let mut nc = Command::new("timeout")
        .args(["20", "nc", "-N", "-X", "5", "-x", &proxy, "localhost", &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    nc.stdin.take().unwrap().write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    let out = nc.wait_with_output().unwrap();
    eprintln!(
        "nc -X 5 -x {proxy} localhost {port}: exit {:?}, echoed {:?} {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "nc failed");
    assert_eq!(out.stdout, b"SSH-2.0-OpenSSH_9.2\r\n");
    let line = pair.local.wait_line(|l| l.contains(&format!(" target=localhost:{port} ")));
    assert!(line.contains(" proto=socks5 route=proxy"), "{line}");
}
