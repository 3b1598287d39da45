//! SIGHUP: both binaries read their files again. New connections use what
//! was loaded, connections already open go on untouched, and a file that is
//! missing or invalid keeps everything as it was, with one warning.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;

use crate::support::*;

/// A SOCKS5 CONNECT after logging in as `name`; the reply code.
fn login_and_connect(local: SocketAddr, name: &str, password: &str, target: SocketAddr) -> (TcpStream, u8) {
    let mut s = connect(local);
    let mut req = vec![5, 1, 2, 1, name.len() as u8];
    req.extend_from_slice(name.as_bytes());
    req.push(password.len() as u8);
    req.extend_from_slice(password.as_bytes());
    s.write_all(&req).unwrap();
    let mut answer = [0u8; 4];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(answer[..2], [5, 2], "username/password chosen");
    if answer[3] != 0 {
        return (s, 0xff);
    }
    let mut request = vec![5, 1, 0];
    request.extend(socks_addr(&target.to_string()));
    s.write_all(&request).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    (s, reply[1])
}

fn echoes(s: &mut TcpStream, what: &[u8]) {
    s.write_all(what).unwrap();
    let mut back = vec![0u8; what.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, what);
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
}

#[test]
fn the_local_reads_its_user_file_and_ca_again_and_open_connections_go_on() {
    let dir = scratch("reload-local");
    let (users, ca) = (dir.join("users"), dir.join("ca.pem"));
    write(&users, "alice:wonder\n");
    fs::copy(CA, &ca).unwrap();
    let pair = Pair::spawn(&[], &["--user-file", users.to_str().unwrap(), "--ca", ca.to_str().unwrap()]);
    let echo = echo("127.0.0.1:0");

    let (mut open, rep) = login_and_connect(pair.local.addr, "alice", "wonder", echo);
    assert_eq!(rep, 0);
    echoes(&mut open, b"before the reload");

    // Alice leaves, Bob arrives.
    write(&users, "bob:builder\n");
    let line = reload(&pair.local, 1);
    assert!(line.contains("INFO") && line.contains("reloaded CA ") && line.contains("1 user;"), "{line}");
    echoes(&mut open, b"after the reload, on the connection alice opened before it");
    assert_eq!(login_and_connect(pair.local.addr, "alice", "wonder", echo).1, 0xff, "alice is gone");
    let (mut bob, rep) = login_and_connect(pair.local.addr, "bob", "builder", echo);
    assert_eq!(rep, 0, "bob is in");
    echoes(&mut bob, b"bob");

    // An empty user file, then a missing one: each keeps Bob, with one warning naming the file.
    write(&users, "\n");
    let line = reload(&pair.local, 2);
    assert!(line.contains("WARN") && line.contains(&format!("no user in {}", users.display())), "{line}");
    fs::remove_file(&users).unwrap();
    let line = reload(&pair.local, 3);
    assert!(line.contains("WARN") && line.contains("cannot read user file"), "{line}");
    assert_eq!(login_and_connect(pair.local.addr, "bob", "builder", echo).1, 0, "bob is still in");

    // A CA file that trusts nobody the server knows: new connections fail
    // verification; the one open since the start goes on.
    write(&users, "bob:builder\n");
    let other = dir.join("other-ca");
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-subj", "/CN=another CA", "-days", "2", "-keyout"])
        .arg(other.with_extension("key"))
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    fs::copy(&other, &ca).unwrap();
    reload(&pair.local, 4);
    let (_, rep) = login_and_connect(pair.local.addr, "bob", "builder", echo);
    assert_ne!(rep, 0, "the server's certificate is no longer trusted");
    pair.local.wait_line(|l| l.contains("cannot reach server") && l.contains("certificate"));
    echoes(&mut open, b"still there");

    // A CA file that does not parse keeps the one loaded.
    write(&ca, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
    let line = reload(&pair.local, 5);
    assert!(line.contains("WARN") && line.contains(&ca.display().to_string()), "{line}");
    fs::copy(CA, &ca).unwrap();
    let line = reload(&pair.local, 6);
    assert!(line.contains("INFO"), "{line}");
    let (mut bob, rep) = login_and_connect(pair.local.addr, "bob", "builder", echo);
    assert_eq!(rep, 0, "trusted again");
    echoes(&mut bob, b"bob again");
    drop(open);
}

/// A certificate for localhost and 127.0.0.1 signed by the test CA, valid
/// `days` days, with a key of its own: (cert, key) in `dir`.
fn new_certificate(dir: &Path, name: &str, days: u32) -> (String, String) {
    let (cert, key, csr) =
        (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")), dir.join("csr"));
    let certs = root().join("certs");
    let steps: [Vec<String>; 2] = [
        [
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["-keyout".into(), key.display().to_string(), "-out".into(), csr.display().to_string()])
        .collect(),
        ["x509", "-req", "-extensions", "server_ext"]
            .iter()
            .map(|s| s.to_string())
            .chain([
                "-in".into(),
                csr.display().to_string(),
                "-CA".into(),
                certs.join("ca.pem").display().to_string(),
                "-CAkey".into(),
                certs.join("ca.key").display().to_string(),
                "-set_serial".into(),
                format!("{}", 1000 + days),
                "-days".into(),
                days.to_string(),
                "-extfile".into(),
                certs.join("openssl.cnf").display().to_string(),
                "-out".into(),
                cert.display().to_string(),
            ])
            .collect(),
    ];
    for args in steps {
        let out = Command::new("openssl").args(&args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn the_server_reads_its_certificate_and_passwords_again_while_a_transfer_runs_across() {
    let dir = scratch("reload-server");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    fs::copy(root().join("certs/server.pem"), &cert).unwrap();
    fs::copy(root().join("certs/server.key"), &key).unwrap();
    let (server_pw, local_pw) = (dir.join("server-password"), dir.join("local-password"));
    write(&server_pw, "old secret\n");
    write(&local_pw, "old secret\n");
    let (c, k, sp, lp) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        server_pw.to_str().unwrap(),
        local_pw.to_str().unwrap(),
    );
    let server = server().args(&["--cert", c, "--key", k, "--password-file", sp]).spawn();
    let local = local(server.addr).args(&["--password-file", lp]).spawn();
    let echo = echo("127.0.0.1:0");
    let start = server.wait_line(|l| l.contains("certificate sha256 fingerprint"));
    assert!(start.contains("valid ") && start.contains(" more days"), "{start}");

    // A transfer that runs across both reloads: half before, half after.
    let s = socks_connect(local.addr, &echo.to_string());
    let mut reader = s.try_clone().unwrap();
    let got = std::thread::spawn(move || recv_digest(&mut reader));
    let (to_writer, halfway) = std::sync::mpsc::channel::<()>();
    let (reloaded, go_on) = std::sync::mpsc::channel::<()>();
    let mut writer = s.try_clone().unwrap();
    let sent = std::thread::spawn(move || {
        let mut d = Digest::new();
        let mut p = Pattern::new(7);
        let mut buf = vec![0u8; 64 * 1024];
        for i in 0..256 {
            if i == 128 {
                to_writer.send(()).unwrap();
                go_on.recv_timeout(TIMEOUT).unwrap();
            }
            p.fill(&mut buf);
            d.update(&buf);
            writer.write_all(&buf).unwrap();
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
        d.hex()
    });
    halfway.recv_timeout(TIMEOUT).unwrap();

    // A new certificate, valid 10 days, and only the new password.
    let (new_cert, new_key) = new_certificate(&dir, "renewed", 10);
    fs::copy(&new_cert, &cert).unwrap();
    fs::copy(&new_key, &key).unwrap();
    write(&server_pw, "new secret\n");
    let line = reload(&server, 1);
    assert!(line.contains("INFO") && line.contains("reloaded certificate sha256 fingerprint"), "{line}");
    assert!(line.contains("valid 9 more days") && line.contains("1 password;"), "{line}");
    assert!(!line.contains("secret"), "{line}");
    server.wait_line(|l| l.contains("WARN") && l.contains("the certificate expires in 9 days"));

    // The local still sends the old password: a new connection is refused.
    let (mut refused, rep) = socks_request(local.addr, &echo.to_string());
    assert_eq!(rep, 0, "the local answers once its TLS connection is up");
    let _ = refused.write_all(b"ping");
    assert_eq!(
        read_until_closed(&mut refused).unwrap_or_default(),
        b"",
        "the server closes an unknown password"
    );
    write(&local_pw, "new secret\n");
    let line = reload(&local, 1);
    assert!(line.contains("reloaded ") && line.contains("the password;"), "{line}");
    let mut fresh = socks_connect(local.addr, &echo.to_string());
    echoes(&mut fresh, b"with the new password and the new certificate");
    reloaded.send(()).unwrap();

    let want = sent.join().unwrap();
    let (n, digest) = got.join().unwrap();
    assert_eq!((n, digest), (256 * 64 * 1024, want), "the transfer across the reloads is byte-exact");

    // A key that does not match the certificate, a certificate that does not
    // parse, then an empty password file: each keeps what was loaded, with
    // one warning naming the file.
    fs::copy(root().join("certs/server.key"), &key).unwrap();
    let line = reload(&server, 2);
    assert!(line.contains("WARN") && line.contains("reload failed") && line.contains(k), "{line}");
    fs::copy(&new_key, &key).unwrap();
    // A certificate file that does not parse.
    let renewed = fs::read(&cert).unwrap();
    write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
    let line = reload(&server, 3);
    assert!(line.contains("WARN") && line.contains("reload failed") && line.contains(c), "{line}");
    fs::write(&cert, renewed).unwrap();
    write(&server_pw, "\n");
    let line = reload(&server, 4);
    assert!(line.contains("WARN") && line.contains(&format!("no password in {sp}")), "{line}");
    let mut still = socks_connect(local.addr, &echo.to_string());
    echoes(&mut still, b"the new password still works");
}

#[test]
fn a_certificate_near_its_end_is_warned_about_at_start() {
    let dir = scratch("expiry");
    let (cert, key) = new_certificate(&dir, "short", 5);
    let server = server().args(&["--cert", &cert, "--key", &key]).spawn();
    let line = server.wait_line(|l| l.contains("the certificate expires in"));
    assert!(line.contains("WARN") && line.contains("expires in 4 days"), "{line}");
}

/// Replaces `path` with a FIFO that nobody writes: reading it blocks forever.
fn fifo(path: &Path) {
    let _ = fs::remove_file(path);
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success());
}

fn signal(p: &Proc, name: &str) {
    let ok = Command::new("kill").args([&format!("-{name}"), &p.pid().to_string()]).status().unwrap();
    assert!(ok.success());
}

#[test]
fn a_reload_of_a_file_that_would_block_never_delays_a_stop() {
    let dir = scratch("reload-fifo");
    let (users, pw) = (dir.join("users"), dir.join("password"));
    write(&users, "alice:wonder\n");
    write(&pw, "secret\n");
    let (u, p) = (users.to_str().unwrap(), pw.to_str().unwrap());
    let mut server = server().args(&["--password-file", p]).spawn();
    let mut local = local(server.addr).args(&["--user-file", u, "--password-file", p]).spawn();
    let echo = echo("127.0.0.1:0");

    // A deploy swaps the files for FIFOs: a reload must neither hang on
    // them nor take them, and SIGTERM must still stop each process.
    fifo(&users);
    fifo(&pw);
    for (name, proc_) in [("server", &server), ("local", &local)] {
        hup(proc_);
        let line = proc_.wait_line(|l| l.contains("reload failed"));
        let named = line.contains(p) || line.contains(u);
        assert!(named && line.contains("not a regular file"), "{name}: {line}");
    }
    assert_eq!(login_and_connect(local.addr, "alice", "wonder", echo).1, 0, "what was loaded stays");
    for (name, proc_) in [("local", &mut local), ("server", &mut server)] {
        signal(proc_, "TERM");
        assert_eq!(proc_.wait_exit(), Some(0), "{name} stops on SIGTERM after the reload");
    }
}

#[test]
fn a_credential_file_with_control_characters_or_too_large_replaces_nothing() {
    let dir = scratch("reload-bounds");
    let (users, pw) = (dir.join("users"), dir.join("password"));
    write(&users, "alice:wonder\n");
    write(&pw, "secret\n");
    let (u, p) = (users.to_str().unwrap(), pw.to_str().unwrap());
    let pair = Pair::spawn(&["--password-file", p], &["--user-file", u, "--password-file", p]);
    let echo = echo("127.0.0.1:0");

    let big = vec![0u8; 2 << 20];
    let long = format!("{}\n", "a".repeat(2000));
    let long_user = format!("alice:{}\n", "w".repeat(2000));
    let cases: [(&Proc, &Path, &[u8], &str); 8] = [
        (&pair.server, &pw, &big, "bytes, more than the 1048576 a credential file may hold"),
        (&pair.server, &pw, b"new\0secret\n", "line 1 holds a control character"),
        (&pair.server, &pw, b"secret\nnew\x1bsecret\n", "line 2 holds a control character"),
        (&pair.server, &pw, long.as_bytes(), "line 1 is longer than 1024 bytes"),
        (&pair.server, &pw, b"\xff\xfe\n", "line 1 is not UTF-8"),
        (&pair.local, &users, &big, "bytes, more than the 1048576 a credential file may hold"),
        (&pair.local, &users, b"alice:won\x7fder\n", "line 1 holds a control character"),
        (&pair.local, &users, long_user.as_bytes(), "line 1 is longer than 1024 bytes"),
    ];
    let mut failed = [0, 0];
    for (proc_, path, text, says) in cases {
        fs::write(path, text).unwrap();
        let i = usize::from(std::ptr::eq(proc_, &pair.local));
        failed[i] += 1;
        let line = reload(proc_, failed[i]);
        assert!(line.contains("WARN") && line.contains("reload failed, keeping what was loaded"), "{line}");
        assert!(line.contains(&path.display().to_string()) && line.contains(says), "{says}: {line}");
        assert!(!line.contains("secret") && !line.contains("wonder"), "{line}");
        write(&pw, "secret\n");
        write(&users, "alice:wonder\n");
        let (mut s, rep) = login_and_connect(pair.local.addr, "alice", "wonder", echo);
        assert_eq!(rep, 0, "{says}: the old password and user still work");
        echoes(&mut s, says.as_bytes());
    }
}
