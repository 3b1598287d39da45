//! Only the people you allow: trojan passwords, the fallback that probes see,
//! certificate pinning, the egress policy and SOCKS5 logins.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::Command;
use std::sync::mpsc;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::support::*;

/// A target that reports every connection it gets on `rx`, then serves `body`.
fn watched_target(body: &'static str) -> (SocketAddr, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let addr = target("127.0.0.1:0", move |mut s| {
        let _ = tx.lock().unwrap().send(());
        let mut req = [0u8; 1024];
        let _ = s.read(&mut req);
        let _ =
            write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    });
    (addr, rx)
}

#[test]
fn the_right_password_reaches_the_target_and_every_wrong_client_gets_the_fallback() {
    let fallback = http_page("127.0.0.1:0", "fallback site\n");
    let fb = fallback.to_string();
    let server = server().args(&["--password", "other", "--password", "secret", "--fallback", &fb]).start();
    let (tgt, seen) = watched_target("the real target\n");
    let url = format!("http://{tgt}/");

    let right = local(server.addr).args(&["--password", "secret"]).start();
    assert_eq!(curl(&["--socks5", &right.addr.to_string(), &url]), "the real target\n");
    seen.recv_timeout(TIMEOUT).unwrap();

    // A wrong password and the seed format (no password) both land on the fallback.
    let wrong = local(server.addr).args(&["--password", "guess"]).start();
    assert_eq!(curl(&["--socks5", &wrong.addr.to_string(), &url]), "fallback site\n");
    let seed = local(server.addr).start();
    assert_eq!(curl(&["--socks5", &seed.addr.to_string(), &url]), "fallback site\n");
    // So does a browser.
    let https = format!("https://127.0.0.1:{}/", server.addr.port());
    assert_eq!(curl(&["-k", &https]), "fallback site\n");

    server.wait_lines(3, |l| l.contains(&format!("target=fallback/{fb} ")));
    assert!(seen.try_recv().is_err(), "the target saw none of them");
}

fn tls_to(server: SocketAddr) -> StreamOwned<ClientConnection, std::net::TcpStream> {
    let trust = blocking_proxy::tls::config::Trust::CaFile(CA.into());
    let tls = blocking_proxy::tls::config::client_config(&trust, &[]).unwrap();
    let conn = ClientConnection::new(tls, ServerName::try_from("localhost").unwrap()).unwrap();
    StreamOwned::new(conn, connect(server))
}

#[test]
fn a_header_cut_short_then_silence_goes_to_the_fallback_with_every_byte() {
    let echo_fallback = echo("127.0.0.1:0").to_string();
    let server = server()
        .args(&["--password", "secret", "--fallback", &echo_fallback, "--handshake-timeout", "0.3"])
        .start();
    let mut tls = tls_to(server.addr);
    // 20 of the 56 hex digits, then nothing: at the deadline they go to the fallback, an echo.
    tls.write_all(b"0123456789abcdef0123").unwrap();
    let mut back = [0u8; 20];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"0123456789abcdef0123");
    tls.write_all(b" and the rest").unwrap();
    let mut more = [0u8; 13];
    tls.read_exact(&mut more).unwrap();
    assert_eq!(&more, b" and the rest");
}

#[test]
fn without_a_fallback_a_bad_header_is_closed() {
    let server = server().args(&["--password", "secret"]).start();
    let mut tls = tls_to(server.addr);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    assert!(rest.is_empty());
    server.wait_line(|l| l.contains("end=header: protocol: not a trojan header"));
}

#[test]
fn a_pinned_certificate_is_trusted_without_a_ca_and_any_other_is_refused() {
    // A process: the fingerprint is in the line it logs at start.
    let server = server().spawn();
    let line = server.wait_line(|l| l.contains("fingerprint "));
    let logged = line.split("fingerprint ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    // The same fingerprint openssl computes, which --pin also takes with colons.
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in", &cert("server.pem")])
        .output()
        .unwrap();
    let openssl = String::from_utf8(out.stdout).unwrap();
    let colons = openssl.trim().rsplit('=').next().unwrap().to_owned();
    assert_eq!(colons.replace(':', "").to_lowercase(), logged);

    let (tgt, seen) = watched_target("pinned\n");
    let url = format!("http://{tgt}/");
    for pin in [&logged, &colons] {
        let local = local(server.addr).args(&["--pin", pin]).start();
        assert_eq!(curl(&["--socks5", &local.addr.to_string(), &url]), "pinned\n");
        seen.recv_timeout(TIMEOUT).unwrap();
    }
    let wrong = local(server.addr).args(&["--pin", &"ab".repeat(32)]).start();
    let (mut s, rep) = socks_request(wrong.addr, &tgt.to_string());
    assert_eq!(rep, 1);
    read_until_closed(&mut s).unwrap();
    server.wait_line(|l| l.contains("end=tls handshake"));
    assert!(seen.try_recv().is_err(), "nothing reached the target");
}

/// Requests through a pair whose server has the default egress policy.
fn refused(server_args: &[&str], local_args: &[&str], targets: &[String]) -> Running {
    let server = server().default_egress().args(server_args).start();
    let local = local(server.addr).args(local_args).start();
    for t in targets {
        let mut s = socks_connect(local.addr, t);
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(read_until_closed(&mut s).unwrap_or_default(), b"", "{t}");
    }
    server
}

#[test]
fn private_targets_are_refused_by_default_and_allowed_with_allow_private() {
    let (tgt4, seen4) = watched_target("v4\n");
    let tgt6 = echo("[::1]:0");
    let targets = vec![
        tgt4.to_string(),
        tgt6.to_string(),
        format!("localhost:{}", tgt4.port()),
        "169.254.169.254:80".to_owned(),
        "10.0.0.1:80".to_owned(),
        "[::ffff:127.0.0.1]:80".to_owned(),
    ];
    let server = refused(&[], &[], &targets);
    let lines = server.wait_lines(targets.len(), |l| l.contains("end=target: denied"));
    for t in &targets {
        assert!(lines.iter().any(|l| l.contains(&format!("target={t} "))), "{t} refused: {lines:#?}");
    }
    assert!(seen4.try_recv().is_err(), "nothing reached the target");

    // The same in trojan mode: refused before anything is sent.
    let server = refused(&["--password", "pw"], &["--password", "pw"], &targets[..3]);
    server.wait_lines(3, |l| l.contains("end=target: denied"));
    assert!(seen4.try_recv().is_err());

    // With --allow-private the loopback ones work (the others would leave this machine).
    let server = crate::support::server().default_egress().args(&["--allow-private"]).start();
    let local = local(server.addr).start();
    let proxy = local.addr.to_string();
    assert_eq!(curl(&["--socks5", &proxy, &format!("http://{tgt4}/")]), "v4\n");
    assert_eq!(curl(&["--socks5-hostname", &proxy, &format!("http://localhost:{}/", tgt4.port())]), "v4\n");
    let mut s = socks_connect(local.addr, &tgt6.to_string());
    s.write_all(b"v6").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut s), b"v6");
}

#[test]
fn deny_refuses_a_network_even_with_allow_private() {
    let (tgt, seen) = watched_target("x\n");
    let server = refused(&["--allow-private", "--deny", "127.0.0.0/8"], &[], &[tgt.to_string()]);
    server.wait_line(|l| l.contains("end=target: denied"));
    assert!(seen.try_recv().is_err());
}

#[test]
fn socks5_login_right_wrong_and_missing() {
    let dir = scratch("users");
    let file = dir.join("users");
    std::fs::write(&file, "carol:from-file\n").unwrap();
    let file = file.display().to_string();
    let pair = Pair::with_args(&[], &["--user", "alice:wonder", "--user-file", &file]);
    let web = http("127.0.0.1:0");
    let proxy = |who: &str| format!("socks5h://{who}@{}", pair.local.addr);
    assert_eq!(curl(&["-x", &proxy("alice:wonder"), &format!("http://{web}/")]), PAGE);
    assert_eq!(curl(&["-x", &proxy("carol:from-file"), &format!("http://{web}/")]), PAGE);

    let exchange = |bytes: &[u8]| {
        let mut s = connect(pair.local.addr);
        s.write_all(bytes).unwrap();
        read_until_closed(&mut s).expect("a clean close")
    };
    let mut wrong = vec![5, 1, 2, 1, 5];
    wrong.extend_from_slice(b"alice");
    wrong.push(8);
    wrong.extend_from_slice(b"guessed!");
    assert_eq!(exchange(&wrong), [5, 2, 1, 1], "status 0x01, then a close");
    assert_eq!(exchange(&[5, 1, 0]), [5, 0xFF], "no auth offered: no acceptable method");

    let line = pair.local.wait_line(|l| l.contains("end=socks5: denied: login failed"));
    assert!(line.contains("alice"));
    assert!(pair.local.lines().iter().all(|l| !l.contains("guessed!") && !l.contains("wonder")));
}

/// RFC 1929 login bytes, after a greeting that offers only username/password.
fn login(name: &str, password: &str) -> Vec<u8> {
    let mut v = vec![5, 1, 2, 1, name.len() as u8];
    v.extend_from_slice(name.as_bytes());
    v.push(password.len() as u8);
    v.extend_from_slice(password.as_bytes());
    v
}

#[test]
fn over_the_cap_a_local_with_users_offers_no_method() {
    // A process: the test stops it (SIGSTOP) to queue a greeting in the kernel.
    let pair = Pair::spawn(&[], &["--user", "alice:wonder", "--max-conns", "1"]);
    let echo = echo("127.0.0.1:0");
    // The one place under the cap, held by a logged-in client.
    let mut held = connect(pair.local.addr);
    let mut req = login("alice", "wonder");
    req.extend_from_slice(&[5, 1, 0]);
    req.extend(socks_addr(&echo.to_string()));
    held.write_all(&req).unwrap();
    let mut reply = [0u8; 2 + 2 + 10];
    held.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..5], [5, 2, 1, 0, 5], "logged in");
    assert_eq!(reply[5], 0, "connected");

    // Over the cap, a client offering only username/password: method 0xFF
    // (none acceptable), never 0x00, which would let it skip the login.
    // The answer needs the greeting to be there when the local accepts:
    // with the local stopped, the kernel completes the connection and queues
    // the greeting, and the local finds both when it continues.
    let mut over = {
        let _stopped = Stopped::new(pair.local.pid());
        let mut over = connect(pair.local.addr);
        over.write_all(&[5, 1, 2]).unwrap();
        over
    };
    let mut method = [0u8; 2];
    over.read_exact(&mut method).unwrap();
    println!("over the cap: {method:?}");
    assert_eq!(method, [5, 0xFF]);
    // Then a close (a reset, if the local closed before the greeting arrived).
    if let Ok(more) = read_until_closed(&mut over) {
        assert!(more.is_empty(), "nothing after the method: {more:?}");
    }
    pair.local.wait_line(|l| l.contains("at capacity (1 connections)"));

    held.write_all(b"still here").unwrap();
    let mut back = [0u8; 10];
    held.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still here");
}

#[test]
fn passwords_from_a_file_or_the_environment_stay_out_of_logs_and_ps() {
    let dir = scratch("secrets");
    let file = dir.join("passwords");
    std::fs::write(&file, "first-secret\r\nsecond-secret\n").unwrap();
    let file = file.display().to_string();
    // Processes: their command lines are what `ps` shows, and the variable is the local's alone.
    let server = server().args(&["--password-file", &file, "-vv"]).spawn();
    let web = http("127.0.0.1:0");
    let local = local(server.addr).args(&["-vv"]).env("BLOCKING_PROXY_PASSWORD", "second-secret").spawn();
    assert_eq!(curl(&["--socks5", &local.addr.to_string(), &format!("http://{web}/")]), PAGE);
    server.wait_line(|l| l.contains(&format!("target={web} ")) && l.ends_with("end=eof"));
    for p in [&server, &local] {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid())).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(!cmdline.contains("first-secret") && !cmdline.contains("second-secret"), "{cmdline}");
        assert!(p.lines().iter().all(|l| !l.contains("first-secret") && !l.contains("second-secret")));
    }
}

#[test]
fn open_proxies_warn_at_start() {
    // Processes: the warnings are in the lines they log at start.
    let server = server_with_certs().args(&["--listen", "0.0.0.0:0"]).spawn();
    let warning = server.wait_line(|l| l.contains("WARN") && l.contains("open proxy"));
    println!("{warning}");
    assert!(
        warning.contains("anyone who finds the port") && warning.contains("--password-file"),
        "{warning}"
    );
    let local = local(server.addr).args(&["--listen", "0.0.0.0:0"]).spawn();
    local.wait_line(|l| l.contains("WARN") && l.contains("no --user"));
    let quiet = server_with_certs().args(&["--listen", "0.0.0.0:0", "--password", "x"]).spawn();
    quiet.wait_line(|l| l.contains("listening on"));
    assert!(quiet.lines().iter().all(|l| !l.contains("open proxy")));
}

#[test]
fn a_right_password_with_an_unserved_command_is_closed_never_handed_to_the_fallback() {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let fallback = target("127.0.0.1:0", move |mut s| {
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let _ = tx.lock().unwrap().send(got);
    })
    .to_string();
    let server = server().args(&["--password", "secret", "--fallback", &fallback]).start();
    // A trojan client asking for a command the server does not serve (2, as SOCKS5's BIND).
    let mut header = blocking_proxy::proto::wire::trojan_hash("secret").to_vec();
    header.extend_from_slice(b"\r\n\x02\x01\x08\x08\x08\x08\x00\x35\r\n");
    let mut tls = tls_to(server.addr);
    tls.write_all(&header).unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    assert!(rest.is_empty());
    server.wait_line(|l| l.contains("end=header: protocol: only CONNECT and UDP ASSOCIATE are served"));
    // The fallback's connection is opened as the handshake ends, and closed unused.
    let got = rx.recv_timeout(TIMEOUT).unwrap();
    assert!(got.is_empty(), "the fallback never saw the hash: {got:?}");
}
