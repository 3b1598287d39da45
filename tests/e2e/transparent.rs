//! Transparent proxying (`--redir`, `--tproxy`, `--sniff`, `--mark`), in
//! network namespaces the tests make.
//!
//! On one host: nftables `redirect` rules send the namespace's own TCP to
//! web servers on 127.0.0.2, .3 and .4, when not marked 7, to the local's
//! redir port: plain curl reaches the first through the pair, the second
//! directly and the third not at all, as the ACL's IP rules say; the
//! pair's own connections (marked 7: both run in this process, which
//! `--mark` marks) pass the rules by, and a connection that reaches the
//! redir port without a redirect (its original destination the listener
//! itself, as a loop's would be) is refused and logged. Without `--mark`,
//! the local's own direct connection is sent back to it: that loop goes
//! round once, and is refused.
//!
//! A router: a "client" namespace whose only way out is a "router"
//! namespace, where blocking-local runs and nftables hands the client's
//! traffic to it, first with `redirect` (TCP), then with `tproxy` (TCP and
//! UDP, with policy routing); the targets and blocking-server are in the
//! test's own namespace (the "world"). curl over IPv4 and IPv6, HTTPS
//! routed by the name in its ClientHello (`--sniff` and the ACL's domain
//! rules), and DNS over UDP, proxied and direct.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::support::*;

#[test]
fn curl_redirected_by_nftables_reaches_its_target_through_the_pair() {
    let test = "transparent::in_a_namespace_that_redirects_its_own_tcp_to_the_local";
    if !in_namespace(&["-n"], "", test, &[]) {
        eprintln!(
            "skipped: `unshare -n` is not allowed here (it needs root); no namespace for nftables rules"
        );
    }
}

#[test]
#[ignore = "run by curl_redirected_by_nftables_reaches_its_target_through_the_pair, inside its namespace"]
fn in_a_namespace_that_redirects_its_own_tcp_to_the_local() {
    if !inside_namespace() {
        return;
    }
    // 127.0.0.2 through the server, 127.0.0.3 direct, 127.0.0.4 blocked, by the ACL's IP rules.
    let (web, direct, blocked) = (http("127.0.0.2:0"), http("127.0.0.3:0"), http("127.0.0.4:0"));
    let acl = scratch("redir-acl").join("rules.acl");
    std::fs::write(&acl, "[proxy_all]\n\n[bypass_list]\n127.0.0.3/32\n\n[block_list]\n127.0.0.4/32\n")
        .unwrap();
    let redir = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = server_with_certs().start();
    let local = local(server.addr)
        .args(&["--pool", "0", "--redir", &redir.to_string(), "--mark", "7", "--acl", acl.to_str().unwrap()])
        .start();
    nft("add table ip t");
    nft("add chain ip t out { type nat hook output priority -100; }");
    for to in [web, direct, blocked] {
        nft(&format!(
            "add rule ip t out meta mark != 7 ip daddr {} tcp dport {} redirect to :{}",
            to.ip(),
            to.port(),
            redir.port()
        ));
    }
    let rules = Command::new("nft").args(["list", "ruleset"]).output().unwrap();
    eprintln!("nft list ruleset:\n{}", String::from_utf8_lossy(&rules.stdout));

    // Plain curl, no proxy: the rule sends it to the local, which reads where it was going.
    assert_eq!(curl(&["--noproxy", "*", &format!("http://{web}/")]), PAGE);
    let line = local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={web} ")));
    eprintln!("local: {line}");
    assert!(line.contains(" end=eof proto=redir route=proxy"), "{line}");
    let line = server.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={web} ")));
    eprintln!("server: {line}");

    // Direct: the local's own connect, marked, passes the rule by.
    assert_eq!(curl(&["--noproxy", "*", &format!("http://{direct}/")]), PAGE);
    let line = local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={direct} ")));
    eprintln!("local: {line}");
    assert!(line.contains(" end=eof proto=redir route=direct"), "{line}");

    // Blocked: closed with nothing sent.
    let out = Command::new("curl")
        .args(["--silent", "--max-time", "20", "--noproxy", "*", &format!("http://{blocked}/")])
        .output()
        .unwrap();
    assert!(!out.status.success() && out.stdout.is_empty(), "{out:?}");
    let line = local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={blocked} ")));
    eprintln!("local: {line}");
    assert!(line.contains("end=blocked by the acl proto=redir route=block"), "{line}");

    // Straight to the redir port: its original destination is the listener itself.
    let mut s = connect(redir);
    assert_eq!(read_answer(&mut s), b"", "closed without a byte");
    let line = local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={redir} ")));
    eprintln!("local: {line}");
    assert!(line.contains("proto=redir"), "{line}");
    assert!(line.contains("a loop"), "{line}");
    let warned = local
        .wait_line(|l| l.contains(&format!("original destination {redir} is this local's own listener")));
    eprintln!("local: {warned}");
}

#[test]
fn without_mark_the_locals_own_connection_loops_once_and_is_refused() {
    let test = "transparent::in_a_namespace_without_mark";
    if !in_namespace(&["-n"], "", test, &[]) {
        eprintln!(
            "skipped: `unshare -n` is not allowed here (it needs root); no namespace for nftables rules"
        );
    }
}

#[test]
#[ignore = "run by without_mark_the_locals_own_connection_loops_once_and_is_refused, inside its namespace"]
fn in_a_namespace_without_mark() {
    if !inside_namespace() {
        return;
    }
    // The ACL sends 127.0.0.3 direct; the rule would let marked packets pass, but nothing is marked.
    let direct = http("127.0.0.3:0");
    let acl = scratch("redir-loop-acl").join("rules.acl");
    std::fs::write(&acl, "[proxy_all]\n\n[bypass_list]\n127.0.0.3/32\n").unwrap();
    let redir = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = server_with_certs().start();
    let local = local(server.addr)
        .args(&["--pool", "0", "--redir", &redir.to_string(), "--acl", acl.to_str().unwrap()])
        .start();
    nft("add table ip t");
    nft("add chain ip t out { type nat hook output priority -100; }");
    nft(&format!(
        "add rule ip t out meta mark != 7 ip daddr {} tcp dport {} redirect to :{}",
        direct.ip(),
        direct.port(),
        redir.port()
    ));

    // curl's connection is redirected; so is the local's own direct connect, which comes back.
    let out = Command::new("curl")
        .args(["--silent", "--max-time", "20", "--noproxy", "*", &format!("http://{direct}/")])
        .output()
        .unwrap();
    eprintln!("curl without --mark: {:?}, {:?}", out.status, String::from_utf8_lossy(&out.stdout));
    assert!(!out.status.success() && out.stdout.is_empty(), "{out:?}");
    let warned = local.wait_line(|l| l.contains("is the local's own, sent back by a firewall rule"));
    eprintln!("local: {warned}");
    let lines = local.wait_lines(2, |l| l.contains(" closed ") && l.contains(&format!("target={direct} ")));
    for line in &lines {
        eprintln!("local: {line}");
    }
    assert!(lines.iter().any(|l| l.contains("a loop") && l.contains("proto=redir")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("route=direct")), "{lines:?}");
    // Round once, then refused: no third connection to the target.
    let all = local.lines();
    let turns =
        all.iter().filter(|l| l.contains(" closed ") && l.contains(&format!("target={direct} "))).count();
    assert_eq!(turns, 2, "{all:#?}");
}

/// The world's addresses (this namespace's, on `w0`): targets, resolver and server.
const WORLD_V4: &str = "198.51.100.1";
const WORLD_V6: &str = "2001:db8:100::1";
/// Another of its addresses, which the ACL sends direct.
const WORLD_DIRECT_V4: &str = "198.51.100.2";
/// The server's: a target on a server's host always goes direct.
const SERVER_V4: &str = "198.51.100.9";
/// The router's address towards the world (`r1`).
const ROUTER_WORLD_V4: &str = "198.51.100.200";

/// The names the HTTPS requests use, in the world's `/etc/hosts` (for the server).
const HOSTS: &str = "127.0.0.1 localhost\n198.51.100.1 proxied.example direct.example blocked.example\n";

/// The local's ACL: everything through the server, but for one name and
/// one address sent direct and one name blocked.
const ROUTER_ACL: &str =
    "[proxy_all]\n\n[bypass_list]\n||direct.example\n198.51.100.2/32\n\n[block_list]\n||blocked.example\n";

#[test]
fn a_router_hands_a_client_namespaces_traffic_to_the_local() {
    let dir = scratch("transparent-router");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, HOSTS).unwrap();
    let test = "transparent::in_a_world_with_a_router_and_a_client";
    if !in_namespace(&["-n", "-m"], "mount --bind \"$1\" /etc/hosts &&", test, &[&hosts]) {
        eprintln!("skipped: `unshare -n -m` is not allowed here (it needs root); no namespaces for a router");
    }
}

#[test]
#[ignore = "run by a_router_hands_a_client_namespaces_traffic_to_the_local, inside its namespaces"]
fn in_a_world_with_a_router_and_a_client() {
    if !inside_namespace() {
        return;
    }
    let (router, client) = (Netns::new(), Netns::new());
    // world w0 <-> r1 router r0 <-> c0 client; the client's default routes lead to the router.
    ip(&format!("link add w0 type veth peer name r1 netns {}", router.pid()));
    ip(&format!("addr add {WORLD_V4}/24 dev w0"));
    ip(&format!("addr add {WORLD_DIRECT_V4}/24 dev w0"));
    ip(&format!("addr add {SERVER_V4}/24 dev w0"));
    ip(&format!("addr add {WORLD_V6}/64 dev w0 nodad"));
    ip("link set w0 up");
    router.run(&["ip", "addr", "add", &format!("{ROUTER_WORLD_V4}/24"), "dev", "r1"]);
    router.run(&["ip", "addr", "add", "2001:db8:100::200/64", "dev", "r1", "nodad"]);
    router.run(&["ip", "link", "set", "r1", "up"]);
    router.run(&[
        "ip",
        "link",
        "add",
        "r0",
        "type",
        "veth",
        "peer",
        "name",
        "c0",
        "netns",
        &client.pid().to_string(),
    ]);
    router.run(&["ip", "addr", "add", "10.23.0.1/24", "dev", "r0"]);
    router.run(&["ip", "addr", "add", "fd23::1/64", "dev", "r0", "nodad"]);
    router.run(&["ip", "link", "set", "r0", "up"]);
    client.run(&["ip", "addr", "add", "10.23.0.2/24", "dev", "c0"]);
    client.run(&["ip", "addr", "add", "fd23::2/64", "dev", "c0", "nodad"]);
    client.run(&["ip", "link", "set", "c0", "up"]);
    client.run(&["ip", "route", "add", "default", "via", "10.23.0.1"]);
    client.run(&["ip", "-6", "route", "add", "default", "via", "fd23::1"]);

    // The world: web servers on both families, an HTTPS server, a resolver, and the server.
    let web4 = http(&format!("{WORLD_V4}:0"));
    let web6 = http(&format!("[{WORLD_V6}]:0"));
    let https_port = free_port();
    let _https = Proc::start_waiting(
        "sh",
        &[
            "-c",
            "exec openssl s_server -accept \"$0\" -cert \"$1\" -key \"$2\" -www 1>&2",
            &format!("{WORLD_V4}:{https_port}"),
            &cert("server.pem"),
            &cert("server.key"),
        ],
        |l| l.contains("ACCEPT"),
    );
    let dns_port = free_port();
    let _dns = dnsmasq(
        dns_port,
        &[
            &format!("--listen-address={WORLD_V4}"),
            &format!("--listen-address={WORLD_DIRECT_V4}"),
            &format!("--listen-address={WORLD_V6}"),
            "--address=/name.example/192.0.2.7",
            "--address=/name.example/2001:db8::7",
        ],
    );
    let server =
        server_with_certs().args(&["--listen", &format!("{SERVER_V4}:0"), "--password", "pw"]).start();

    // The router: blocking-local, its transparent listeners on both families.
    let acl = scratch("transparent-router-acl").join("rules.acl");
    std::fs::write(&acl, ROUTER_ACL).unwrap();
    let (redir_port, tproxy_port) = (free_port(), free_port());
    let local = local(server.addr)
        .args(&[
            "--insecure",
            "--password",
            "pw",
            "--redir",
            &format!("[::]:{redir_port}"),
            "--tproxy",
            &format!("[::]:{tproxy_port}"),
            "--sniff",
            "--udp-timeout",
            "1",
            "--acl",
            acl.to_str().unwrap(),
        ])
        .in_netns(&router)
        .spawn();

    // REDIRECT: the client's TCP to the router's local, by nftables' nat hook.
    let rules = dir_of(&acl).join("redirect.nft");
    std::fs::write(
        &rules,
        format!(
            "table inet t {{\n  chain pre {{\n    type nat hook prerouting priority dstnat; policy accept;\n    iifname \"r0\" meta l4proto tcp redirect to :{redir_port}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    router.run(&["nft", "-f", rules.to_str().unwrap()]);
    eprintln!("router, redirect:\n{}", router.run(&["nft", "list", "ruleset"]));
    for (web, family) in [(web4, "-4"), (web6, "-6")] {
        let page = client_curl(&client, &[family, &format!("http://{web}/")]);
        assert_eq!(page, PAGE);
        let line = local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={web} ")));
        eprintln!("local: {line}");
        assert!(line.contains(" end=eof proto=redir route=proxy"), "{line}");
        assert!(line.contains(&format!(" dst={web}")), "{line}");
        let line = server.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={web} ")));
        eprintln!("server: {line}");
    }
    router.run(&["nft", "flush", "ruleset"]);

    // TPROXY: TCP and UDP, nothing rewritten; marked packets are routed to the host itself.
    let rules = dir_of(&acl).join("tproxy.nft");
    std::fs::write(
        &rules,
        format!(
            "table inet t {{\n  chain pre {{\n    type filter hook prerouting priority mangle; policy accept;\n    iifname \"r0\" meta l4proto {{ tcp, udp }} tproxy to :{tproxy_port} meta mark set 1 accept\n  }}\n}}\n"
        ),
    )
    .unwrap();
    router.run(&["nft", "-f", rules.to_str().unwrap()]);
    for family in ["-4", "-6"] {
        let (local_route, default) = if family == "-4" {
            ("0.0.0.0/0", "fwmark 1 lookup 100")
        } else {
            ("::/0", "fwmark 1 lookup 100")
        };
        let mut rule = vec!["ip", family, "rule", "add"];
        rule.extend(default.split(' '));
        router.run(&rule);
        router.run(&["ip", family, "route", "add", "local", local_route, "dev", "lo", "table", "100"]);
    }
    eprintln!("router, tproxy:\n{}", router.run(&["nft", "list", "ruleset"]));
    eprintln!("{}", router.run(&["ip", "rule", "list"]));
    for (web, family) in [(web4, "-4"), (web6, "-6")] {
        let page = client_curl(&client, &[family, &format!("http://{web}/")]);
        assert_eq!(page, PAGE);
        let line = local.wait_line(|l| {
            l.contains(" closed ") && l.contains(&format!("target={web} ")) && l.contains("proto=tproxy")
        });
        eprintln!("local: {line}");
        assert!(line.contains(" end=eof proto=tproxy route=proxy"), "{line}");
    }

    // HTTPS by name: the ClientHello's server_name decides, as the ACL's domain rules say.
    let https = |name: &str| {
        client
            .command(&[
                "curl",
                "--silent",
                "--show-error",
                "--max-time",
                "20",
                "--insecure",
                "--resolve",
                &format!("{name}:{https_port}:{WORLD_V4}"),
                &format!("https://{name}:{https_port}/"),
            ])
            .output()
            .unwrap()
    };
    for (name, route) in [("proxied.example", "proxy"), ("direct.example", "direct")] {
        let out = https(name);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("s_server"), "{name}: {out:?}");
        let target = format!("target={name}:{https_port} ");
        let line = local.wait_line(|l| l.contains(" closed ") && l.contains(&target));
        eprintln!("local: {line}");
        assert!(line.contains(&format!("proto=tproxy route={route} dst={WORLD_V4}:{https_port}")), "{line}");
    }
    let line = server.wait_line(|l| {
        l.contains(" closed ") && l.contains(&format!("target=proxied.example:{https_port} "))
    });
    eprintln!("server: {line}");
    let out = https("blocked.example");
    assert!(!out.status.success(), "{out:?}");
    let line = local.wait_line(|l| {
        l.contains(" closed ") && l.contains(&format!("target=blocked.example:{https_port} "))
    });
    eprintln!("local: {line}");
    assert!(line.contains("end=blocked by the acl proto=tproxy route=block"), "{line}");

    // DNS over UDP: through the server (the resolver sees the world's address ask), and direct
    // (the router's own address asks).
    for (resolver, kind, answer, route, asker) in [
        (WORLD_V4, "A", "192.0.2.7", "proxy", WORLD_V4),
        (WORLD_V6, "AAAA", "2001:db8::7", "proxy", WORLD_V6),
        (WORLD_DIRECT_V4, "A", "192.0.2.7", "direct", ROUTER_WORLD_V4),
    ] {
        let out = client.run(&[
            "dig",
            &format!("@{resolver}"),
            "-p",
            &dns_port.to_string(),
            "name.example",
            kind,
            "+short",
            "+tries=1",
            "+timeout=10",
        ]);
        eprintln!("dig @{resolver} name.example {kind}: {}", out.trim());
        assert_eq!(out.trim(), answer);
        let at = SocketAddr::new(resolver.parse().unwrap(), dns_port);
        let line = local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target=udp/{at} ")));
        eprintln!("local: {line}");
        let closed = format!("end=udp timeout datagrams=1/1 dropped=0 proto=tproxy route={route}");
        assert!(line.contains(&closed), "{line}");
        let asked = _dns.wait_line(|l| l.contains("query[") && l.contains(&format!("from {asker}")));
        eprintln!("dnsmasq: {asked}");
    }
}

/// curl in `client`, no proxy: what it got, or the test fails.
fn client_curl(client: &Netns, args: &[&str]) -> String {
    let mut all = vec!["curl", "--silent", "--show-error", "--max-time", "20"];
    all.extend_from_slice(args);
    client.run(&all)
}

/// The folder `file` is in.
fn dir_of(file: &Path) -> &Path {
    file.parent().unwrap()
}

#[test]
fn the_transparent_drop_in_grants_net_admin_alone_and_its_command_line_parses() {
    let path = root().join("dist/systemd/blocking-local-transparent.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    let keys: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && l.contains('=')).collect();
    eprintln!("{}:\n{}", path.display(), keys.join("\n"));
    assert!(keys.contains(&"AmbientCapabilities=CAP_NET_ADMIN"), "{keys:?}");
    assert!(keys.contains(&"CapabilityBoundingSet=CAP_NET_ADMIN"), "{keys:?}");
    assert_eq!(keys.iter().filter(|k| k.contains("Capabilit")).count(), 2, "no other capability: {keys:?}");

    // The command line it sets is one blocking-local takes.
    let exec = keys.iter().rev().find_map(|k| k.strip_prefix("ExecStart=")).unwrap();
    let argv: Vec<String> = exec
        .split_whitespace()
        .skip(1)
        .map(|a| a.replace("${CREDENTIALS_DIRECTORY}", "/run/credentials/blocking-local.service"))
        .collect();
    let args =
        blocking_proxy::cli::local::LocalArgs::parse(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert_eq!((args.tproxy.as_deref(), args.redir.as_deref()), (Some("[::]:12346"), Some("[::]:12345")));
    assert!(args.sniff && args.mark == Some(255));

    let Ok(found) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!(
            "SKIPPED: systemd-analyze verify (systemd-analyze is not installed; `make deps` installs it)"
        );
        return;
    };
    assert!(found.status.success());
    // The unit, with the drop-in beside it, naming this build's binary.
    let bin = Path::new(env!("CARGO_BIN_EXE_blocking-local")).parent().unwrap().display().to_string();
    let dir = scratch("transparent-unit");
    let unit = std::fs::read_to_string(root().join("dist/systemd/blocking-local.service")).unwrap();
    std::fs::write(dir.join("blocking-local.service"), unit.replace("@BINDIR@", &bin)).unwrap();
    std::fs::create_dir_all(dir.join("blocking-local.service.d")).unwrap();
    std::fs::write(
        dir.join("blocking-local.service.d/transparent.conf"),
        text.replace("/usr/local/bin", &bin),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("blocking-local.service"))
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!(
        "systemd-analyze verify blocking-local.service with transparent.conf: {:?}\n{said}",
        out.status
    );
    assert!(out.status.success(), "{said}");
    let about_ours: Vec<&str> = said.lines().filter(|l| l.contains("blocking-")).collect();
    assert!(about_ours.is_empty(), "{about_ours:?}");
}
