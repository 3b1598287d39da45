//! Routing by a shadowsocks ACL file (`--acl`): each connection and each
//! datagram goes straight to its target, through the server, or nowhere.
//!
//! Inside a network namespace of their own, whose `/etc/hosts` maps the
//! test names to loopback, curl, PySocks (TCP and UDP) and curl as an HTTP
//! proxy client reach targets that say which process connected to them:
//! the target looks its client's socket up in `/proc` and answers with the
//! name of the process that holds it, blocking-local (direct) or
//! blocking-server (through the server). Both close lines must agree.
//! Outside a namespace: the refusals of a blocked target in each protocol,
//! a malformed file at start and on reload, and the server's ACL. A resolver
//! of its own (dnsmasq, logging every query) shows that no name is resolved
//! at the local to route it, unless `--acl-resolve` asks for it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;

use crate::support::*;

/// The Python that has Debian's python3-socks.
const PYTHON: &str = "/usr/bin/python3";

/// The test names, all on loopback in the namespace's `/etc/hosts`.
const NAMES: &[&str] = &[
    "direct.test",
    "www.direct.test",
    "forced.direct.test",
    "exact.test",
    "www.exact.test",
    "a.suffix.test",
    "regex.one.two",
    "regex.one.two.three",
    "proxied.test",
    "www.proxied.test",
    "blocked.test",
    "x.blocked.test",
];

/// Like shadowsocks-android's bypass-lan-china.acl: everything through the
/// server but the LAN and the listed sites, some of them blocked.
const PROXY_ALL: &str = "\
# everything through the server, but what the bypass list names
[proxy_all]

[bypass_list]
127.0.0.0/24
::1
(?:^|\\.)direct\\.test$
(^|\\.)regex(\\.[a-z0-9]+){1,2}$
|exact.test
||suffix.test

[proxy_list]
(?:^|\\.)forced\\.direct\\.test$
127.0.0.4

[block_list]
||blocked.test
127.0.0.9
";

/// Like shadowsocks-libev's gfwlist.acl: everything direct, but the listed
/// sites through the server.
const BYPASS_ALL: &str = "\
[bypass_all]

[proxy_list]
(^|\\.)proxied\\.test$
127.0.0.0/24
";

/// Each case of [`PROXY_ALL`]: a target host and where it must go.
const PROXY_ALL_CASES: &[(&str, &str)] = &[
    ("direct.test", "direct"),
    ("www.direct.test", "direct"),
    // A name in both lists goes through the server (the proxy list wins for names).
    ("forced.direct.test", "proxy"),
    ("exact.test", "direct"),
    ("www.exact.test", "proxy"),
    ("a.suffix.test", "direct"),
    // A general regex: one or two labels after `regex`.
    ("regex.one.two", "direct"),
    ("regex.one.two.three", "proxy"),
    // No rule names it, and it is not resolved to test the IP rules.
    ("proxied.test", "proxy"),
    ("127.0.0.1", "direct"),
    // An address in both lists goes direct (the bypass list wins for addresses).
    ("127.0.0.4", "direct"),
    ("127.0.1.1", "proxy"),
    ("[::1]", "direct"),
    // IPv4-mapped IPv6 is matched by the IPv4 rule.
    ("[::ffff:127.0.0.1]", "direct"),
    ("blocked.test", "block"),
    ("x.blocked.test", "block"),
    ("127.0.0.9", "block"),
];

/// Each case of [`BYPASS_ALL`].
const BYPASS_ALL_CASES: &[(&str, &str)] = &[
    ("proxied.test", "proxy"),
    ("www.proxied.test", "proxy"),
    ("direct.test", "direct"),
    ("127.0.0.1", "proxy"),
    // The server's own host always goes direct, whatever the rules say.
    ("127.0.0.2", "direct"),
    ("127.0.1.1", "direct"),
    ("[::1]", "direct"),
];

#[test]
fn in_a_namespace_each_target_goes_where_the_acl_says() {
    let dir = scratch("routing-hosts");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost {}\n::1 localhost ip6-localhost\n", NAMES.join(" ")))
        .unwrap();
    let test = "routing::inside_each_target_goes_where_the_acl_says";
    if !in_namespace(&["-n", "-m"], "mount --bind \"$1\" /etc/hosts &&", test, &[&hosts]) {
        eprintln!("skipped: `unshare -n -m` is not allowed here (it needs root)");
    }
}

#[test]
#[ignore = "run by in_a_namespace_each_target_goes_where_the_acl_says, inside its namespace"]
fn inside_each_target_goes_where_the_acl_says() {
    if !inside_namespace() {
        return;
    }
    for (acl, cases) in [(PROXY_ALL, PROXY_ALL_CASES), (BYPASS_ALL, BYPASS_ALL_CASES)] {
        let dir = scratch("routing-acl");
        let path = dir.join("rules.acl");
        std::fs::write(&path, acl).unwrap();
        // The server on an address of its own, so that its host is not the targets'.
        let server = server().args(&["--listen", "127.0.0.2:0", "--password", "pw"]).spawn();
        let local = local(server.addr)
            .args(&["--sni", "localhost", "--password", "pw", "--pool", "0", "--acl", path.to_str().unwrap()])
            .args(&["--metrics", "127.0.0.1:0"])
            .spawn();
        let procs = Arc::new(vec![(local.pid(), "direct"), (server.pid(), "proxy")]);
        // One target on every address of the namespace, IPv4 and IPv6.
        let seen = Arc::clone(&procs);
        let web = target("[::]:0", move |s| answer_who(s, &seen));
        let (udp, _udp_thread) = udp_who(Arc::clone(&procs));
        for (i, (host, route)) in cases.iter().enumerate() {
            let url = format!("http://{host}:{}/", web.port());
            // curl through SOCKS5 for every case, and one more client in turn.
            let got = through_curl(&["--socks5-hostname", &local.addr.to_string()], &url);
            check(&got, route, &format!("curl socks5h {url}"));
            let http_proxy = format!("http://{}", local.addr);
            let other = match (i % 4, host.starts_with('[')) {
                (0, _) | (2, true) => ("curl http proxy", through_curl(&["--proxy", &http_proxy], &url)),
                (1, _) | (3, true) => ("curl CONNECT", through_curl(&["-p", "--proxy", &http_proxy], &url)),
                (2, false) => ("PySocks socks5", pysocks_tcp("SOCKS5", local.addr, host, web.port())),
                _ => ("PySocks socks4a", pysocks_tcp("SOCKS4", local.addr, host, web.port())),
            };
            check(&other.1, route, &format!("{} {url}", other.0));
            // Both close lines: the local's names the route, the server's exists only when proxied.
            let target = format!("target={host}:{} ", web.port());
            let closes = local.wait_lines(2, |l| l.contains(" closed ") && l.contains(&target));
            for line in &closes {
                assert!(line.ends_with(&format!(" route={route}")), "{host}: {line}");
            }
            if *route == "proxy" {
                server.wait_lines(2, |l| l.contains(" closed ") && l.contains(&target));
            } else {
                assert!(
                    !server.lines().iter().any(|l| l.contains(&target)),
                    "{host} went {route}, yet the server saw it: {:?}",
                    server.lines()
                );
            }
        }
        // UDP, datagram by datagram, through one association.
        let names: Vec<&str> =
            cases.iter().map(|(h, _)| *h).filter(|h| !h.starts_with('[') && h.contains(".test")).collect();
        let got = pysocks_udp(local.addr, &names, udp.port());
        for ((host, route), line) in cases.iter().filter(|(h, _)| names.contains(h)).zip(got.lines()) {
            let want = if *route == "block" { format!("{host} none") } else { format!("{host} {route}") };
            assert_eq!(line, want, "udp to {host}");
        }
        let assoc = local.wait_line(|l| l.contains(" closed ") && l.contains("target=udp"));
        let routes: Vec<&str> = cases.iter().filter(|(h, _)| names.contains(h)).map(|(_, r)| *r).collect();
        for route in ["direct", "proxy", "block"] {
            let named = assoc.rsplit("route=").next().unwrap_or("").split('+').any(|r| r == route);
            assert_eq!(named, routes.contains(&route), "{route} in {assoc}");
        }
        // The metrics count every decision: two connections a case, one datagram a name.
        let metrics = scrape(&local);
        for route in ["direct", "proxy", "block"] {
            let connections = 2 * cases.iter().filter(|(_, r)| *r == route).count();
            let datagrams = routes.iter().filter(|r| **r == route).count();
            for (family, n) in [("connections", connections), ("datagrams", datagrams)] {
                let series = format!("blocking_proxy_routed_{family}_total{{route=\"{route}\"}} {n}\n");
                assert!(metrics.contains(&series), "{series} in {metrics}");
            }
        }
    }
}

/// Answers an HTTP request with the route its client took: which process
/// holds the other end of this connection.
fn answer_who(mut s: TcpStream, procs: &[(u32, &'static str)]) {
    let (peer, me) = (s.peer_addr().unwrap(), s.local_addr().unwrap());
    let who = owner("tcp", peer.port(), Some(me.port()), procs);
    let mut req = Vec::new();
    let mut b = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => req.push(b[0]),
            _ => return,
        }
    }
    let body = format!("{who}\n");
    let resp =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _ = s.write_all(resp.as_bytes());
    let _ = s.shutdown(std::net::Shutdown::Write);
    let _ = s.read(&mut b);
}

/// A UDP target on every address that answers each datagram with the
/// route its sender took.
fn udp_who(procs: Arc<Vec<(u32, &'static str)>>) -> (SocketAddr, thread::JoinHandle<()>) {
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let addr = sock.local_addr().unwrap();
    let t = thread::spawn(move || {
        let mut buf = vec![0u8; 2048];
        while let Ok((_, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(owner("udp", from.port(), None, &procs).as_bytes(), from);
        }
    });
    (addr, t)
}

/// The name in `procs` of the process holding a `proto` (`tcp`, `udp`)
/// socket on local port `port` (connected to remote port `remote`, when
/// given) in this namespace, from `/proc/net` and each process's
/// descriptors; `nobody` if none does.
fn owner(proto: &str, port: u16, remote: Option<u16>, procs: &[(u32, &'static str)]) -> &'static str {
    let mut inodes = Vec::new();
    for file in [proto.to_owned(), format!("{proto}6")] {
        let text = std::fs::read_to_string(format!("/proc/net/{file}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port_of = |field: usize| {
                f.get(field).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if port_of(1) == Some(port) && remote.is_none_or(|r| port_of(2) == Some(r)) {
                inodes.push(format!("socket:[{}]", f.get(9).unwrap_or(&"")));
            }
        }
    }
    for (pid, name) in procs {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| inodes.contains(&l.to_string_lossy().into_owned()))
            {
                return name;
            }
        }
    }
    "nobody"
}

/// What curl printed for `url` with the proxy `args`: the body, or
/// `block` when the proxy refused it.
fn through_curl(args: &[&str], url: &str) -> String {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl is installed (make deps)");
    let err = String::from_utf8_lossy(&out.stderr);
    let body = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // SOCKS5 reply 2, connection not allowed by ruleset; 403 for CONNECT; the 403 page.
    if err.contains("(2)") || err.contains("403") || body.starts_with("403 Forbidden") {
        return "block".to_owned();
    }
    assert!(out.status.success(), "curl {args:?} {url}: {err}");
    body
}

/// A request through PySocks (`SOCKS5` or `SOCKS4`, with names sent to
/// the proxy): the body, or `block` when the proxy refused it.
fn pysocks_tcp(kind: &str, proxy: SocketAddr, host: &str, port: u16) -> String {
    const SCRIPT: &str = r#"
import socket, sys, socks
kind, proxy, pport, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
s = socks.socksocket(socket.AF_INET)
s.set_proxy(getattr(socks, kind), proxy, pport, rdns=True)
s.settimeout(15)
try:
    s.connect((host.strip("[]"), port))
except socks.ProxyError as e:
    print("refused:", e)
    sys.exit(0)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
got = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    got += b
print(got.split(b"\r\n\r\n", 1)[1].decode().strip())
"#;
    let out = Command::new(PYTHON)
        .args([
            "-c",
            SCRIPT,
            kind,
            &proxy.ip().to_string(),
            &proxy.port().to_string(),
            host,
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("python3 with python3-socks (make deps)");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success(), "PySocks {kind} {host}: {}{text}", String::from_utf8_lossy(&out.stderr));
    // SOCKS5 0x02 "Connection not allowed by ruleset"; SOCKS4 0x5B "Request rejected or failed".
    if text.starts_with("refused:") && (text.contains("0x02") || text.contains("0x5b")) {
        return "block".to_owned();
    }
    text
}

/// One datagram to each of `names` through one PySocks association: a
/// line per name, `NAME ROUTE` from the reply, or `NAME none`.
fn pysocks_udp(proxy: SocketAddr, names: &[&str], port: u16) -> String {
    const SCRIPT: &str = r#"
import socket, sys, socks
proxy, pport, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, proxy, pport, rdns=True)
for name in sys.argv[4:]:
    s.settimeout(15)
    s.sendto(name.encode(), (name, port))
    if name.startswith("blocked") or name.startswith("x.blocked"):
        s.settimeout(1)
    try:
        got, frm = s.recvfrom(2048)
        print(name, got.decode())
    except socket.timeout:
        print(name, "none")
s.close()
"#;
    let mut args = vec![
        "-c".to_owned(),
        SCRIPT.to_owned(),
        proxy.ip().to_string(),
        proxy.port().to_string(),
        port.to_string(),
    ];
    args.extend(names.iter().map(|n| n.to_string()));
    let out = Command::new(PYTHON).args(&args).stdin(Stdio::null()).output().expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "PySocks udp: {}{text}", String::from_utf8_lossy(&out.stderr));
    text
}

fn check(got: &str, route: &str, what: &str) {
    assert_eq!(got, route, "{what}");
}

/// The local's ACL for the tests outside a namespace.
const BLOCKING: &str = "[proxy_all]\n[block_list]\n||blocked.invalid\n192.0.2.0/24\n";

fn acl_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = scratch(name).join("rules.acl");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_blocked_target_gets_each_protocols_refusal() {
    let path = acl_file("routing-block", BLOCKING);
    let server = server().start();
    let local = local(server.addr).args(&["--pool", "0", "--acl", path.to_str().unwrap()]).start();
    // SOCKS5: reply 0x02, connection not allowed by ruleset.
    let (_s, rep) = socks_request(local.addr, "www.blocked.invalid:80");
    assert_eq!(rep, 0x02);
    let (_s, rep) = socks_request(local.addr, "192.0.2.7:80");
    assert_eq!(rep, 0x02);
    // SOCKS4a: 0x5B, request rejected.
    let mut s = connect(local.addr);
    s.write_all(&[&[4, 1, 0, 80, 0, 0, 0, 1, 0][..], b"blocked.invalid\0"].concat()).unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..2], [0, 0x5B]);
    // HTTP: 403 with a short body that says why, for CONNECT and a forwarded request.
    for request in [
        "CONNECT blocked.invalid:443 HTTP/1.1\r\nHost: blocked.invalid:443\r\n\r\n",
        "GET http://blocked.invalid/ HTTP/1.1\r\nHost: blocked.invalid\r\n\r\n",
    ] {
        let mut s = connect(local.addr);
        s.write_all(request.as_bytes()).unwrap();
        let answer = String::from_utf8(read_answer(&mut s)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n403 Forbidden: this proxy's rules block the site\n"), "{answer}");
    }
    let lines = local.wait_lines(5, |l| l.contains(" closed ") && l.contains("end=blocked by the acl"));
    assert!(lines.iter().all(|l| l.ends_with(" route=block")), "{lines:?}");
    let blocked = ["blocked.invalid", "192.0.2.7"];
    assert!(
        !server
            .lines()
            .iter()
            .any(|l| l.contains(" closed client=") && blocked.iter().any(|b| l.contains(b))),
        "the server saw none: {:?}",
        server.lines()
    );
}

#[test]
fn a_malformed_acl_is_refused_at_start_and_on_reload_keeps_the_old_rules() {
    let path = acl_file("routing-reload", "[proxy_all]\n\n[no_such_section]\n||blocked.invalid\n");
    let out = Command::new(env!("CARGO_BIN_EXE_blocking-local"))
        .args(["--server", "127.0.0.1:1", "--acl", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&format!("ACL file {} line 3: ", path.display())), "{err}");

    std::fs::write(&path, BLOCKING).unwrap();
    let server = server().spawn();
    let local = local(server.addr).args(&["--acl", path.to_str().unwrap()]).spawn();
    assert_eq!(socks_request(local.addr, "blocked.invalid:80").1, 0x02);
    // A regex that does not compile, on line 4.
    std::fs::write(&path, "[proxy_all]\n[block_list]\n||blocked.invalid\n(?:^|\\.)bad(\\.invalid$\n")
        .unwrap();
    hang_up(&local);
    let warned = local.wait_line(|l| l.contains("reload failed"));
    assert!(warned.contains(&format!("ACL file {} line 4: ", path.display())), "{warned}");
    assert_eq!(socks_request(local.addr, "blocked.invalid:80").1, 0x02, "the old rules hold");
    std::fs::write(&path, "[proxy_all]\n[block_list]\n||other.invalid\n").unwrap();
    hang_up(&local);
    local.wait_line(|l| l.contains("reloaded") && l.contains("ACL"));
    assert_eq!(socks_request(local.addr, "blocked.invalid:80").1, 0, "through the server now");
    assert_eq!(socks_request(local.addr, "other.invalid:80").1, 0x02);
    assert_eq!(local.lines().iter().filter(|l| l.contains("WARN")).count(), 1, "{:?}", local.lines());
}

fn hang_up(p: &Proc) {
    let status = Command::new("kill").args(["-HUP", &p.pid().to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn the_server_refuses_targets_and_clients_by_its_acl() {
    let web = http("127.0.0.1:0");
    // Targets: a name by its domain rule (before any lookup, which the leak test shows with a
    // resolver that logs), an address by its network.
    let outbound = acl_file("routing-server", "[outbound_block_list]\n|localhost\n127.0.0.0/8\n");
    let server = server().args(&["--acl", outbound.to_str().unwrap()]).start();
    let local = local(server.addr).start();
    for target in [format!("localhost:{}", web.port()), web.to_string()] {
        let mut s = socks_connect(local.addr, &target);
        assert!(read_until_closed(&mut s).unwrap_or_default().is_empty());
        let line = server.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={target} ")));
        assert!(line.contains("is blocked by the acl"), "{line}");
    }
    // Clients: only 10.0.0.0/8 may use it, so this local, on loopback, is refused.
    let clients = acl_file("routing-clients", "[reject_all]\n[white_list]\n10.0.0.0/8\n");
    let refusing = crate::support::server().args(&["--acl", clients.to_str().unwrap()]).start();
    let refused = crate::support::local(refusing.addr).start();
    let (_s, rep) = socks_request(refused.addr, &web.to_string());
    assert_ne!(rep, 0, "the tunnel is not opened");
    let line = refusing.wait_line(|l| l.contains(" closed ") && l.contains("end=blocked by the acl"));
    assert!(line.contains("target=-"), "{line}");
}

#[test]
fn in_a_namespace_no_name_is_resolved_to_route_it_unless_asked() {
    let dir = scratch("routing-leak");
    let (hosts, resolv) = (dir.join("hosts"), dir.join("resolv.conf"));
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let test = "routing::inside_no_name_is_resolved_to_route_it_unless_asked";
    let setup = "mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/resolv.conf &&";
    if !in_namespace(&["-n", "-m"], setup, test, &[&hosts, &resolv]) {
        eprintln!("skipped: `unshare -n -m` is not allowed here (it needs root)");
    }
}

#[test]
#[ignore = "run by in_a_namespace_no_name_is_resolved_to_route_it_unless_asked, inside its namespace"]
fn inside_no_name_is_resolved_to_route_it_unless_asked() {
    if !inside_namespace() {
        return;
    }
    // A resolver that logs every query it gets, and answers leak.test.
    let dnsmasq = Dnsmasq::start();
    let dir = scratch("routing-leak-acl");
    // IP rules, which a name would have to be resolved to be tested against.
    let acl = dir.join("local.acl");
    std::fs::write(&acl, "[proxy_all]\n[bypass_list]\n10.0.0.0/8\n").unwrap();
    // The server refuses leak.test by name, before any lookup of its own.
    let server_acl = dir.join("server.acl");
    std::fs::write(&server_acl, "[outbound_block_list]\n|leak.test\n").unwrap();
    let server = server().args(&["--acl", server_acl.to_str().unwrap()]).spawn();
    for (n, extra) in [(0, None), (1, Some("--acl-resolve"))] {
        let mut args = vec!["--pool", "0", "--acl", acl.to_str().unwrap()];
        args.extend(extra);
        let local = local(server.addr).args(&args).spawn();
        let (mut s, _) = socks_request(local.addr, "leak.test:80");
        let _ = read_until_closed(&mut s);
        drop(s);
        let line = local.wait_line(|l| l.contains(" closed ") && l.contains("target=leak.test:80"));
        assert!(line.ends_with(" route=proxy"), "{line}");
        server.wait_lines(n + 1, |l| l.contains("target=leak.test:80") && l.contains("blocked by the acl"));
        match extra {
            // Every query before the marker's was made while the local ran without --acl-resolve.
            None => {
                let _ = std::net::ToSocketAddrs::to_socket_addrs(&("marker.test", 80));
                dnsmasq.0.wait_line(|l| l.contains("query[") && l.contains(" marker.test "));
            }
            Some(_) => {
                dnsmasq.0.wait_line(|l| l.contains("query[") && l.contains(" leak.test "));
            }
        }
    }
    let lines = dnsmasq.lines();
    let first =
        |name: &str| lines.iter().position(|l| l.contains("query[") && l.contains(&format!(" {name} ")));
    assert!(
        first("leak.test") > first("marker.test"),
        "no query for leak.test without --acl-resolve: {lines:?}"
    );
}

/// dnsmasq on 127.0.0.1:53, answering `leak.test` and `marker.test` with
/// 127.0.0.1 and logging every query to its stderr.
struct Dnsmasq(Proc);

impl Dnsmasq {
    fn start() -> Dnsmasq {
        Dnsmasq(dnsmasq(53, &["--address=/leak.test/127.0.0.1", "--address=/marker.test/127.0.0.1"]))
    }

    fn lines(&self) -> Vec<String> {
        self.0.lines()
    }
}

#[test]
fn a_direct_connection_is_made_by_the_local_with_the_same_framing() {
    // The server on an address of its own, so that the targets' host is not its host.
    let path = acl_file("routing-direct", "[bypass_all]\n");
    let server = server().args(&["--listen", "127.0.0.2:0"]).start();
    let local = local(server.addr)
        .args(&["--sni", "localhost", "--pool", "0", "--acl", path.to_str().unwrap()])
        .start();
    // SOCKS5 to an echo.
    let echo = echo("127.0.0.1:0");
    let mut s = socks_connect(local.addr, &echo.to_string());
    s.write_all(b"ping").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut s), b"ping");
    // A forwarded request: its head and its body's bytes reach the site, nothing after them.
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let site = target("127.0.0.1:0", move |mut s| {
        // Up to the body's end (or the connection's), then the answer, then anything after it.
        let mut got = Vec::new();
        let mut b = [0u8; 1];
        while !got.ends_with(b"0\r\n\r\n") && matches!(s.read(&mut b), Ok(1)) {
            got.push(b[0]);
        }
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let _ = s.shutdown(std::net::Shutdown::Write);
        got.extend(read_until_closed(&mut s).unwrap_or_default());
        let _ = tx.lock().unwrap().send(got);
    });
    let head = format!("POST http://{site}/ HTTP/1.1\r\nHost: {site}\r\nTransfer-Encoding: chunked\r\n\r\n");
    let mut s = connect(local.addr);
    s.write_all(format!("{head}5\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n").as_bytes()).unwrap();
    assert!(read_answer(&mut s).ends_with(b"ok"));
    drop(s);
    let got = String::from_utf8(rx.recv_timeout(TIMEOUT).unwrap()).unwrap();
    assert!(got.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), "{got:?}");
    assert!(got.starts_with("POST / HTTP/1.1\r\n"), "{got:?}");
    // A body whose framing is broken before anything went: 400, and the site gets no byte.
    let mut s = connect(local.addr);
    s.write_all(format!("{head}zz\r\n").as_bytes()).unwrap();
    assert_eq!(status_line(&read_answer(&mut s)), "HTTP/1.1 400 Bad Request");
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), b"", "the site got nothing");
    let lines = local.wait_lines(3, |l| l.contains(" closed ") && l.contains("target=127.0.0.1:"));
    assert!(lines.iter().all(|l| l.ends_with(" route=direct")), "{lines:?}");
    assert!(
        !server.lines().iter().any(|l| l.contains(" closed client=") && l.contains("target=127.0.0.1:")),
        "the server saw none: {:?}",
        server.lines()
    );
}

#[test]
fn a_udp_association_outlives_its_link_to_the_server_while_datagrams_go_direct() {
    // Everything direct but 127.0.0.3; the server ends a link quiet for a second.
    let path = acl_file("routing-udp-link", "[bypass_all]\n[proxy_list]\n127.0.0.3\n");
    let server =
        server().args(&["--listen", "127.0.0.2:0", "--password", "pw", "--udp-timeout", "1"]).start();
    let local = local(server.addr)
        .args(&["--sni", "localhost", "--password", "pw", "--pool", "0", "--acl", path.to_str().unwrap()])
        .start();
    let (direct_echo, _) = udp_echo();
    let proxied_echo = {
        let sock = UdpSocket::bind("127.0.0.3:0").unwrap();
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        let addr = sock.local_addr().unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        });
        addr
    };
    let (control, relay) = associate(local.addr, 0);
    let app = UdpSocket::bind("127.0.0.1:0").unwrap();
    app.set_read_timeout(Some(TIMEOUT)).unwrap();
    let round_trip = |to: SocketAddr, payload: &[u8]| {
        app.send_to(&datagram(0, to, payload), relay).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = app.recv_from(&mut buf).expect("a reply");
        assert_eq!(&buf[10..n], payload, "from {to}");
    };
    round_trip(direct_echo, b"direct before");
    // The server ends the association's link, which carried nothing.
    server.wait_line(|l| l.contains(" closed ") && l.contains("target=udp") && l.contains("end=udp timeout"));
    round_trip(direct_echo, b"direct after");
    // A proxied datagram opens another link.
    round_trip(proxied_echo, b"proxied");
    server.wait_line(|l| l.contains("udp association") || l.contains("target=udp"));
    drop(control);
    let line = local.wait_line(|l| l.contains(" closed ") && l.contains("target=udp"));
    assert!(line.contains("end=client closed the control connection"), "{line}");
    assert!(line.contains("datagrams=3/3 dropped=0"), "{line}");
    assert!(line.ends_with(" route=direct+proxy"), "{line}");
}
