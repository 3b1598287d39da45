//! The local's DNS server (`--dns`) with `dig`, against two real
//! resolvers on loopback (dnsmasq, each logging every query it gets): one
//! as `--dns-remote`, reached only through the server, one as
//! `--dns-direct`. Each name is answered by the resolver its route says,
//! and neither resolver ever sees the other's names.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;

use crate::support::*;

/// The local's ACL: names under direct.test direct, ads.test blocked, the rest through the server.
const ACL: &str = "[proxy_all]\n[bypass_list]\n||direct.test\n[block_list]\n||ads.test\n";

/// A TXT record larger than a 512-byte UDP answer.
fn big_txt() -> String {
    let part = |c: char| c.to_string().repeat(250);
    format!("--txt-record=big.remote.test,{},{},{}", part('a'), part('b'), part('c'))
}

/// The two resolvers, a server, and a local with `--dns` on `dns` (a process,
/// so that its metrics are its own).
struct Setup {
    remote: Proc,
    direct: Proc,
    local: Proc,
    dns: SocketAddr,
    acl: std::path::PathBuf,
    _server: Running,
}

fn setup(name: &str) -> Setup {
    let (remote_port, direct_port, dns_port) = (free_port(), free_port(), free_port());
    let big = big_txt();
    let remote = dnsmasq(
        remote_port,
        &[
            "--address=/remote.test/192.0.2.1",
            "--address=/remote.test/2001:db8::1",
            "--address=/both.test/192.0.2.1",
            "--address=/bulk.test/192.0.2.9",
            "--address=/nx.remote.test/",
            "--host-record=target.remote.test,192.0.2.5",
            "--cname=alias1.remote.test,alias2.remote.test",
            "--cname=alias2.remote.test,target.remote.test",
            &big,
        ],
    );
    let direct = dnsmasq(
        direct_port,
        &[
            "--address=/direct.test/198.51.100.1",
            "--address=/both.test/198.51.100.1",
            "--address=/moved.test/198.51.100.2",
        ],
    );
    let server = server().start();
    let acl = scratch(name).join("rules.acl");
    std::fs::write(&acl, ACL).unwrap();
    let dns: SocketAddr = format!("127.0.0.1:{dns_port}").parse().unwrap();
    let local = local(server.addr)
        .args(&["--acl", acl.to_str().unwrap(), "--dns", &dns.to_string()])
        .args(&["--dns-remote", &format!("127.0.0.1:{remote_port}")])
        .args(&["--dns-direct", &format!("127.0.0.1:{direct_port}")])
        .args(&["--metrics", "127.0.0.1:0"])
        .spawn();
    local.wait_line(|l| l.contains("dns served on"));
    Setup { remote, direct, local, dns, acl, _server: server }
}

/// What `dig` prints for `args` against `dns` (it exits 0 on any answer).
fn dig(dns: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args([format!("@{}", dns.ip()), "-p".into(), dns.port().to_string()])
        .args(["+time=5", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is installed (make deps: bind9-dnsutils)");
    assert!(out.status.success(), "dig {args:?}: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stdout).unwrap()
}

/// `dig +short`, its lines.
fn short(dns: SocketAddr, args: &[&str]) -> Vec<String> {
    dig(dns, &[&["+short"], args].concat()).lines().map(str::to_owned).collect()
}

/// The queries `resolver` logged for names that hold `part`.
fn asked(resolver: &Proc, part: &str) -> usize {
    resolver.lines().iter().filter(|l| l.contains("query[") && l.contains(part)).count()
}

#[test]
fn each_name_is_answered_by_the_resolver_its_route_says_over_udp_and_tcp() {
    let s = setup("dns-routes");
    for transport in ["+notcp", "+tcp"] {
        let q = |args: &[&str]| short(s.dns, &[&[transport], args].concat());
        assert_eq!(q(&["remote.test", "A"]), ["192.0.2.1"], "{transport}");
        assert_eq!(q(&["remote.test", "AAAA"]), ["2001:db8::1"], "{transport}");
        // No rule names both.test: through the server, as the ACL's default says.
        assert_eq!(q(&["both.test"]), ["192.0.2.1"], "{transport}");
        assert_eq!(q(&["direct.test"]), ["198.51.100.1"], "{transport}");
        assert_eq!(q(&["www.direct.test"]), ["198.51.100.1"], "{transport}");
        assert_eq!(
            q(&["alias1.remote.test"]),
            ["alias2.remote.test.", "target.remote.test.", "192.0.2.5"],
            "a CNAME chain, {transport}"
        );
        let nx = dig(s.dns, &[transport, "nx.remote.test"]);
        assert!(nx.contains("status: NXDOMAIN"), "{nx}");
        let blocked = dig(s.dns, &[transport, "ads.test"]);
        assert!(blocked.contains("status: REFUSED"), "{blocked}");
    }
    // A large answer over UDP to a client without EDNS (512 bytes): cut, TC set; over TCP, whole.
    let udp = dig(s.dns, &["+noedns", "+ignore", "big.remote.test", "TXT"]);
    assert!(udp.contains(" tc ") || udp.contains(" tc;"), "{udp}");
    assert!(udp.contains("ANSWER: 0"), "{udp}");
    let tcp = dig(s.dns, &["+tcp", "big.remote.test", "TXT"]);
    assert!(tcp.contains("ANSWER: 1") && tcp.contains(&"c".repeat(250)), "{tcp}");
    // Each resolver saw only its own names.
    for name in ["remote.test", "both.test", "alias1", "nx.remote.test", "ads.test"] {
        assert_eq!(asked(&s.direct, name), 0, "{name} reached the direct resolver: {:?}", s.direct.lines());
    }
    assert!(asked(&s.remote, "both.test") > 0);
    for name in ["direct.test", "ads.test"] {
        assert_eq!(asked(&s.remote, name), 0, "{name} reached the remote resolver: {:?}", s.remote.lines());
    }
}

#[test]
fn a_thousand_queries_come_mostly_from_the_cache_across_tunnels_the_resolver_ends() {
    let s = setup("dns-cache");
    // 200 names, each asked 5 times, one dig process reading them in turn. dnsmasq
    // closes a TCP connection after 100 queries: the tunnel is replaced on the way.
    let dir = scratch("dns-batch");
    let batch = dir.join("queries");
    let mut f = std::fs::File::create(&batch).unwrap();
    for _ in 0..5 {
        for n in 0..200 {
            writeln!(f, "n{n}.bulk.test A +short").unwrap();
        }
    }
    drop(f);
    let answers = batch_answers(s.dns, &batch);
    let odd: Vec<&String> = answers.iter().filter(|a| *a != "192.0.2.9").collect();
    assert_eq!(answers.len() - odd.len(), 1000, "{odd:?}");
    // The remote resolver was asked each name once; the rest came from the cache.
    assert_eq!(asked(&s.remote, ".bulk.test"), 200, "{:?}", s.remote.lines());
    let metrics = scrape(&s.local);
    for (answer, n) in [("cache", 800), ("remote", 200), ("direct", 0), ("failed", 0)] {
        let series = format!("blocking_proxy_dns_queries_total{{answer=\"{answer}\"}} {n}\n");
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
}

/// What `dig -f FILE` answered, a line each.
fn batch_answers(dns: SocketAddr, file: &Path) -> Vec<String> {
    let out = dig(dns, &["-f", file.to_str().unwrap()]);
    out.lines().map(str::to_owned).collect()
}

#[test]
fn a_malformed_query_gets_formerr_and_garbage_no_answer() {
    let s = setup("dns-malformed");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    // A header that asks no question: FORMERR, with its ID.
    sock.send_to(&[0x12, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], s.dns).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..2], [0x12, 0x34]);
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR: {:?}", &buf[..n]);
    // Five bytes: no header to answer; then a good query is still answered.
    sock.send_to(&[1, 2, 3, 4, 5], s.dns).unwrap();
    assert_eq!(short(s.dns, &["remote.test"]), ["192.0.2.1"]);
}

#[test]
fn identical_questions_in_flight_are_asked_of_the_upstream_once() {
    // A remote resolver of our own over TCP, which answers only when told to.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let remote = listener.local_addr().unwrap();
    let (go, release) = std::sync::mpsc::channel::<()>();
    let (asked_tx, asked) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else { return };
        timeouts(&s);
        while let Ok(Some(query)) = blocking_proxy::proto::dns::read_tcp(&mut s) {
            let _ = asked_tx.send(query.clone());
            let _ = release.recv_timeout(TIMEOUT);
            // The query with QR set and one A record after its question.
            let mut answer = query;
            answer[2] |= 0x80;
            answer[7] = 1;
            answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 77]);
            if blocking_proxy::proto::dns::write_tcp(&mut s, &answer).is_err() {
                return;
            }
        }
    });
    let server = server().start();
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let local = local(server.addr)
        .args(&[
            "--dns",
            &dns.to_string(),
            "--dns-remote",
            &remote.to_string(),
            "--dns-direct",
            "127.0.0.1:9",
        ])
        .args(&["--metrics", "127.0.0.1:0"])
        .spawn();
    local.wait_line(|l| l.contains("dns served on"));
    let clients: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.set_read_timeout(Some(TIMEOUT)).unwrap();
                let question = blocking_proxy::proto::dns::Question {
                    name: "same.test".into(),
                    qtype: blocking_proxy::proto::dns::TYPE_A,
                    qclass: blocking_proxy::proto::dns::CLASS_IN,
                };
                sock.send_to(&blocking_proxy::proto::dns::query(42, &question, true).unwrap(), dns).unwrap();
                let mut buf = [0u8; 512];
                let (n, _) = sock.recv_from(&mut buf).unwrap();
                buf[..n].ends_with(&[192, 0, 2, 77])
            })
        })
        .collect();
    // The first is asked of the resolver; the other 19 wait for its answer.
    asked.recv_timeout(TIMEOUT).unwrap();
    local.wait_lines(19, |l| l.contains("same.test 1 joins the same question in flight"));
    go.send(()).unwrap();
    assert!(clients.into_iter().all(|c| c.join().unwrap()), "every client got the answer");
    assert!(asked.try_recv().is_err(), "the resolver was asked once");
    let metrics = scrape(&local);
    assert!(metrics.contains("blocking_proxy_dns_queries_total{answer=\"joined\"} 19\n"), "{metrics}");
    assert!(metrics.contains("blocking_proxy_dns_queries_total{answer=\"remote\"} 1\n"), "{metrics}");
}

#[test]
fn sighup_moves_a_name_to_the_resolver_the_new_rules_say() {
    let s = setup("dns-reload");
    assert_eq!(short(s.dns, &["moved.test", "AAAA"]), [] as [&str; 0], "nothing for it at the remote");
    let moved = "[proxy_all]\n[bypass_list]\n||direct.test\n||moved.test\n[block_list]\n||ads.test\n";
    std::fs::write(&s.acl, moved).unwrap();
    let status = Command::new("kill").args(["-HUP", &s.local.pid().to_string()]).status().unwrap();
    assert!(status.success());
    s.local.wait_line(|l| l.contains("reloaded") && l.contains("ACL"));
    assert_eq!(short(s.dns, &["moved.test", "A"]), ["198.51.100.2"], "now asked of the direct resolver");
}
