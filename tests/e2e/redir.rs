//! Transparent proxying (`--redir`, `--mark`) in a network namespace of the
//! test's own, where an nftables `redirect` rule sends the namespace's own
//! TCP to a web server on 127.0.0.2, when not marked 7, to the local's
//! redir port: plain curl reaches the web server through the pair, the
//! pair's own connections (marked 7: both run in this process, which
//! `--mark` marks) pass the rule by, and a connection that reaches the
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
    let web = http("127.0.0.2:0");
    let redir = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let server = server_with_certs().start();
    let local =
        local(server.addr).args(&["--pool", "0", "--redir", &redir.to_string(), "--mark", "7"]).start();
    nft("add table ip t");
    nft("add chain ip t out { type nat hook output priority -100; }");
    nft(&format!(
        "add rule ip t out meta mark != 7 ip daddr 127.0.0.2 tcp dport {} redirect to :{}",
        web.port(),
        redir.port()
    ));
    let rules = Command::new("nft").args(["list", "ruleset"]).output().unwrap();
    eprintln!("nft list ruleset:\n{}", String::from_utf8_lossy(&rules.stdout));

    // Plain curl, no proxy: the rule sends it to the local, which reads where it was going.
    assert_eq!(curl(&["--noproxy", "*", &format!("http://{web}/")]), PAGE);
    let line = local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={web} ")));
    eprintln!("local: {line}");
    assert!(line.contains(" end=eof proto=redir route=proxy"), "{line}");
    let line = server.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={web} ")));
    eprintln!("server: {line}");

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

/// Runs `nft COMMAND`; fails the test if it fails.
fn nft(command: &str) {
    let out = Command::new("nft")
        .arg(command)
        .output()
        .unwrap_or_else(|e| panic!("nft: {e} (`make deps` installs nftables)"));
    assert!(out.status.success(), "nft {command}: {}", String::from_utf8_lossy(&out.stderr));
}
