//! What a person reads when something is wrong: each test sets the
//! mistake up, prints the lines the pair writes about it (run with
//! `--nocapture` to see them), and checks that they say what happened and
//! what to do next.

use std::net::SocketAddr;

use crate::support::*;

/// Asks the local for a connection through `server` (SOCKS5), and returns
/// the local's line about reaching it.
fn reaching(local: &Proc, server: SocketAddr) -> String {
    let (mut s, _) = socks_request(local.addr, "example.com:80");
    let _ = read_answer(&mut s);
    local.wait_line(|l| {
        l.contains("] #") && l.contains(&format!("server {server}")) && l.contains("cannot reach")
    })
}

#[test]
fn certificate_failures_say_what_is_wrong_and_how_to_trust_the_server() {
    // Signed by the test CA, which this local does not trust.
    let srv = server_with_certs().spawn();
    let loc = local(srv.addr).public_roots().spawn();
    let line = reaching(&loc, srv.addr);
    eprintln!("unknown CA:\n  {line}");
    assert!(line.contains("not signed by a CA this local trusts") && line.contains("--pin"), "{line}");

    // Self-signed: the CA's own certificate as the server's.
    let srv = server().args(&["--cert", &cert("ca.pem"), "--key", &cert("ca.key")]).spawn();
    let loc = local(srv.addr).args(&["--ca", &cert("ca.pem")]).spawn();
    let line = reaching(&loc, srv.addr);
    eprintln!("self-signed:\n  {line}");
    assert!(line.contains("self-signed") && line.contains("--pin"), "{line}");

    // A name the certificate does not hold.
    let srv = server_with_certs().args(&["--listen", "127.0.0.2:0"]).spawn();
    let loc = local(srv.addr).spawn();
    let line = reaching(&loc, srv.addr);
    eprintln!("wrong name:\n  {line}");
    assert!(
        line.contains("not for 127.0.0.2 but for localhost, 127.0.0.1, 0::1") && line.contains("--sni"),
        "{line}"
    );

    // A pin that is not the server's.
    let srv = server_with_certs().spawn();
    let loc = local(srv.addr).args(&["--pin", &"ab".repeat(32)]).spawn();
    let line = reaching(&loc, srv.addr);
    eprintln!("wrong pin:\n  {line}");
    assert!(line.contains("not the one --pin names"), "{line}");
}
