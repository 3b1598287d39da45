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

const LOCAL_BIN: &str = env!("CARGO_BIN_EXE_blocking-local");
const SERVER_BIN: &str = env!("CARGO_BIN_EXE_blocking-server");

#[test]
fn usage_errors_teach_the_right_form() {
    let key = cert("server.key");
    let other_key = cert("ca.key");
    let server_pem = cert("server.pem");
    let cases: &[(&str, &[&str], &str)] = &[
        (LOCAL_BIN, &["--server", "::1:9012"], "write an IPv6 address in brackets: [::1]:9012"),
        (LOCAL_BIN, &["--server", "127.0.0.1:99999"], "port 99999 is out of range (1 to 65535)"),
        (
            LOCAL_BIN,
            &["--server", "h:1", "--listen", "1190"],
            "--listen wants ADDR:PORT, such as 127.0.0.1:1190",
        ),
        (
            LOCAL_BIN,
            &["--server", "h:1", "--listen", ":1190"],
            "--listen wants ADDR:PORT, such as 127.0.0.1:1190",
        ),
        (LOCAL_BIN, &["--bogus"], "unknown option --bogus"),
        (LOCAL_BIN, &["--server"], "--server needs a value"),
        (
            SERVER_BIN,
            &["--listen", "127.0.0.1:0", "--cert", &server_pem, "--key", &other_key],
            "does not belong to the certificate",
        ),
        (
            SERVER_BIN,
            &["--listen", "127.0.0.1:0", "--cert", &server_pem, "--key", &key, "--bogus"],
            "unknown option --bogus",
        ),
    ];
    for (bin, args, says) in cases {
        let (code, said) = run_to_exit(bin, args);
        let said = said.trim_end();
        let name = if *bin == LOCAL_BIN { "blocking-local" } else { "blocking-server" };
        eprintln!("$ {name} {}\n  exit {code:?}: {said}", args.join(" "));
        assert!(said.contains(says), "{said}");
        assert_eq!(said.lines().count(), 1, "one line: {said}");
    }
}

#[test]
fn the_start_line_says_how_the_server_is_trusted_and_whether_a_login_is_needed() {
    let srv = server_with_certs().spawn();
    for (extra, says) in [
        (&[][..], "no login, server 127.0.0.1"),
        (&["--user", "ann:secret"][..], "login required (1 user)"),
        (&["--pin", &"ab".repeat(32)][..], "(certificate pinned by --pin)"),
    ] {
        let loc = local(srv.addr).args(extra).spawn();
        let line = loc.wait_line(|l| l.contains("listening on"));
        eprintln!("blocking-local {}:\n  {line}", extra.join(" "));
        assert!(line.contains(says), "{line}");
        if extra.is_empty() {
            let ca =
                format!("server {} (certificate for 127.0.0.1, by the CA in {})", srv.addr, cert("ca.pem"));
            assert!(line.contains(&ca), "{line}");
        }
    }
}

#[test]
fn a_server_name_that_does_not_resolve_is_said_at_start() {
    let dir = scratch("messages-resolv");
    let (hosts, resolv) = (dir.join("hosts"), dir.join("resolv.conf"));
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    // Nothing answers there: every lookup fails at once, and nothing leaves the namespace.
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let test = "messages::inside_a_server_name_that_does_not_resolve";
    let setup = "mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/resolv.conf &&";
    if !in_namespace(&["-n", "-m"], setup, test, &[&hosts, &resolv]) {
        eprintln!("skipped: `unshare -n -m` is not allowed here (it needs root)");
    }
}

#[test]
#[ignore = "run by a_server_name_that_does_not_resolve_is_said_at_start, inside its namespace"]
fn inside_a_server_name_that_does_not_resolve() {
    if !inside_namespace() {
        return;
    }
    let loc = Proc::start(LOCAL_BIN, &["--server", "proxy.invalid:9012", "--listen", "127.0.0.1:0"]);
    let line = loc.wait_line(|l| l.contains("cannot resolve"));
    eprintln!("blocking-local --server proxy.invalid:9012:\n  {line}");
    assert!(line.contains("server proxy.invalid:9012: cannot resolve proxy.invalid now"), "{line}");
    assert!(line.contains("check the name and this machine's DNS"), "{line}");
}

#[test]
fn verbose_shows_the_proxys_own_lines_not_its_libraries() {
    let srv = server_with_certs().spawn();
    let ca = cert("ca.pem");
    let server = srv.addr.to_string();
    let loc = Proc::start_with_env(
        LOCAL_BIN,
        &["-v", "--server", &server, "--ca", &ca, "--listen", "127.0.0.1:0", "--pool", "0"],
        &[("RUST_LOG", "")],
    );
    let web = http("127.0.0.1:0");
    let mut s = socks_connect(loc.addr, &web.to_string());
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let _ = read_answer(&mut s);
    drop(s);
    loc.wait_line(|l| l.contains(" closed "));
    let debug: Vec<String> = loc.lines().into_iter().filter(|l| l.contains("DEBUG")).collect();
    eprintln!("blocking-local -v, one connection: {} debug lines", debug.len());
    for l in &debug {
        eprintln!("  {l}");
    }
    assert!(!debug.is_empty());
    let theirs: Vec<&String> = debug
        .iter()
        .filter(|l| !l.contains("] #") && !l.contains("] pool") && !l.contains("] server "))
        .collect();
    assert!(theirs.is_empty(), "lines without a connection: {theirs:#?}");
}

#[test]
fn a_tunnel_the_server_ends_before_any_reply_says_why_it_may_have() {
    // A target nothing listens on: the server cannot reach it, and ends the tunnel.
    let pair = Pair::spawn(&[], &["--pool", "0"]);
    let closed = free_port();
    let mut s = socks_connect(pair.local.addr, &format!("127.0.0.1:{closed}"));
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(read_answer(&mut s), b"");
    drop(s);
    let line = pair.local.wait_line(|l| l.contains(" closed ") && l.contains(&format!(":{closed} ")));
    eprintln!("SOCKS5 to a closed port, the local:\n  {line}");
    assert!(
        line.contains("end=server closed before any byte (the target closed, refused or is unknown"),
        "{line}"
    );

    // The same as an HTTP proxy request: the 502's body says why.
    let out = std::process::Command::new("curl")
        .args(["--silent", "--max-time", "20", "-x", &format!("http://{}", pair.local.addr)])
        .arg(format!("http://127.0.0.1:{closed}/"))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    eprintln!("curl -x through the local to a closed port:\n  {}", body.trim_end());
    assert!(
        body.starts_with("502 Bad Gateway: the proxy's server ended the tunnel before any reply"),
        "{body}"
    );
}

#[test]
fn a_password_the_server_does_not_take_is_named_as_the_likely_cause() {
    let pair = Pair::spawn(&["--password", "right"], &["--password", "wrong", "--pool", "0"]);
    let web = http("127.0.0.1:0");
    let mut s = socks_connect(pair.local.addr, &web.to_string());
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let _ = read_answer(&mut s);
    drop(s);
    let line = pair.local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={web} ")));
    eprintln!("a wrong password, the local's close line:\n  {line}");
    assert!(line.contains("before any byte (does the password match the server's?"), "{line}");
    let down = pair.local.wait_line(|l| l.contains("down: a connection was cut"));
    eprintln!("and its server line:\n  {down}");
    assert!(down.contains("the same password"), "{down}");
}

#[test]
fn udp_on_a_seed_pair_says_it_needs_a_password_on_both_sides() {
    let pair = Pair::spawn(&[], &[]);
    let mut control = connect(pair.local.addr);
    std::io::Write::write_all(&mut control, &[5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
    let answer = read_answer(&mut control);
    assert_eq!(answer[..4], [5, 0, 5, 7], "command not supported");
    let line = pair.local.wait_line(|l| l.contains(" closed ") && l.contains("udp associate"));
    eprintln!("SOCKS5 UDP ASSOCIATE to a local without a password:\n  {line}");
    assert!(line.contains("needs a password on both sides"), "{line}");
}
