//! Transparent proxying (`--redir`, `--mark`) in a network namespace of the
//! test's own, where nftables `redirect` rules send the namespace's own
//! TCP to web servers on 127.0.0.2, .3 and .4, when not marked 7, to the
//! local's redir port: plain curl reaches the first through the pair, the
//! second directly and the third not at all, as the ACL's IP rules say;
//! the pair's own connections (marked 7: both run in this process, which
//! `--mark` marks) pass the rules by, and a connection that reaches the
//! redir port without a redirect (its original destination the listener
//! itself, as a loop's would be) is refused and logged.

use std::net::SocketAddr;
use std::process::Command;

use crate::support::*;

#[test]
fn curl_redirected_by_nftables_reaches_its_target_through_the_pair() {
    let test = "redir::in_a_namespace_that_redirects_its_own_tcp_to_the_local";
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
