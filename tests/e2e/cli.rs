//! Command lines: usage errors exit 2, failures exit 1, each with one line
//! naming what is wrong; every key format the README promises loads.

use std::net::TcpListener;
use std::process::Command;

use crate::support::*;

const LOCAL: &str = env!("CARGO_BIN_EXE_blocking-local");
const SERVER: &str = env!("CARGO_BIN_EXE_blocking-server");

fn one_line(stderr: &str) -> &str {
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    stderr.trim_end()
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for (bin, args, says) in [
        (LOCAL, &[][..], "--server is required"),
        (LOCAL, &["--server", "nowhere"][..], "--server wants HOST:PORT"),
        (LOCAL, &["--server", "h:1", "--bogus"][..], "bogus"),
        (LOCAL, &["--server", "h:1", "--idle-timeout", "0"][..], "--idle-timeout"),
        (LOCAL, &["--server", "h:1", "--ca", "x", "--insecure"][..], "exclude"),
        (LOCAL, &["--server", "h:1", "stray"][..], "unexpected argument"),
        (SERVER, &["--cert", "only.pem"][..], "--cert and --key go together"),
        (SERVER, &["--linger", "soon"][..], "--linger"),
        (
            SERVER,
            &["--listen", "127.0.0.1:0", "--proxy-from", "127.0.0.3/32"][..],
            "--proxy-from needs --proxy-protocol",
        ),
        (SERVER, &["--listen", "127.0.0.1:0", "--proxy-protocol"][..], "--proxy-protocol needs --proxy-from"),
        (
            SERVER,
            &["--listen", "127.0.0.1:0", "--proxy-protocol", "--proxy-from", "balancer"][..],
            "--proxy-from: not an address",
        ),
        (
            SERVER,
            &["--listen", "127.0.0.1:0", "--fallback-proxy-protocol"][..],
            "--fallback-proxy-protocol needs --fallback",
        ),
        (LOCAL, &["--server", "h:1", "--pin", &"+a".repeat(32)][..], "--pin wants 64 hex digits"),
        (LOCAL, &["--server", "h:1", "--pin", &format!(":{}", "ab".repeat(32))][..], "--pin wants"),
        (LOCAL, &["--server", "h:1", "--pin", &format!("{}:", "ab".repeat(32))][..], "--pin wants"),
        (LOCAL, &["--server", "h:1", "--pin", &format!("a:b{}", "ab".repeat(31))][..], "--pin wants"),
    ] {
        let (code, err) = run_to_exit(bin, args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(one_line(&err).contains(says), "{args:?}: {err}");
    }
}

#[test]
fn a_usage_error_never_echoes_a_stray_argument() {
    for (bin, args) in [
        (SERVER, &["--password", "correct", "horse", "battery"][..]),
        (LOCAL, &["--server", "h:1", "--password", "correct", "horse", "battery"][..]),
        (LOCAL, &["--server", "h:1", "--user", "alice:correct", "horse", "battery"][..]),
    ] {
        let (code, err) = run_to_exit(bin, args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        let line = one_line(&err);
        println!("{line}");
        assert!(line.contains("unexpected argument (2 in all)"), "{line}");
        for secret in ["correct", "horse", "battery"] {
            assert!(!line.contains(secret), "{line}");
        }
    }
}

#[test]
fn the_built_in_certificate_serves_loopback_only() {
    for listen in [None, Some("0.0.0.0:0"), Some("[::]:0")] {
        let args: Vec<&str> = listen.map(|l| vec!["--listen", l]).unwrap_or_default();
        let (code, err) = run_to_exit(SERVER, &args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        let line = one_line(&err);
        println!("{line}");
        let shown = listen.unwrap_or("0.0.0.0:9012");
        assert!(line.contains(&format!("--cert and --key are required when listening on {shown}")), "{line}");
        assert!(line.contains("certbot") && line.contains("self-signed"), "{line}");
    }
    // A name is resolved: localhost is loopback wherever it points.
    let server = server().args(&["--listen", "localhost:0"]).spawn();
    server.wait_line(|l| l.contains("WARN") && l.contains("built-in test certificate"));
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
}

#[test]
fn help_and_version_exit_0() {
    for bin in [LOCAL, SERVER] {
        let out = Command::new(bin).arg("--help").output().unwrap();
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains("--listen") && help.contains("--idle-timeout"), "{help}");
        let out = Command::new(bin).arg("--version").output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8(out.stdout).unwrap().contains(env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn unreadable_files_exit_1_naming_the_file() {
    let key = cert("server.key");
    let (code, err) = run_to_exit(SERVER, &["--cert", "/nonexistent/fullchain.pem", "--key", &key]);
    assert_eq!(code, Some(1));
    assert!(one_line(&err).contains("/nonexistent/fullchain.pem"), "{err}");

    let pem = cert("server.pem");
    let (code, err) = run_to_exit(SERVER, &["--cert", &pem, "--key", "/nonexistent/privkey.pem"]);
    assert_eq!(code, Some(1));
    assert!(one_line(&err).contains("/nonexistent/privkey.pem"), "{err}");

    // A certificate file given as the key: no key in it.
    let (code, err) = run_to_exit(SERVER, &["--cert", &pem, "--key", &pem]);
    assert_eq!(code, Some(1));
    assert!(one_line(&err).contains(&pem), "{err}");

    let (code, err) = run_to_exit(LOCAL, &["--server", "127.0.0.1:1", "--ca", "/nonexistent/ca.pem"]);
    assert_eq!(code, Some(1));
    assert!(one_line(&err).contains("/nonexistent/ca.pem"), "{err}");

    let (code, err) = run_to_exit(LOCAL, &["--server", "127.0.0.1:1", "--ca", &key]);
    assert_eq!(code, Some(1), "a key file is not a CA file");
    assert!(one_line(&err).contains(&key), "{err}");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused_at_start() {
    let dir = scratch("mismatch");
    let other = dir.join("other.key").display().to_string();
    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &other]);
    let (code, err) = run_to_exit(SERVER, &["--cert", &cert("server.pem"), "--key", &other]);
    assert_eq!(code, Some(1));
    let line = one_line(&err);
    assert!(line.contains(&other) && line.contains("server.pem"), "{line}");
}

#[test]
fn bind_failure_exits_1_naming_the_address() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    // Without SO_REUSEPORT a second listener on the same port is refused.
    let (code, err) = run_to_exit(SERVER, &["--listen", &addr]);
    assert_eq!(code, Some(1));
    assert!(one_line(&err).contains(&addr), "{err}");
    let (code, err) = run_to_exit(LOCAL, &["--server", "127.0.0.1:1", "--listen", &addr]);
    assert_eq!(code, Some(1));
    assert!(one_line(&err).contains(&addr), "{err}");
}

/// PKCS#8 (certs/server.key), SEC1 and PKCS#1 keys all load and serve.
#[test]
fn pkcs8_sec1_and_pkcs1_keys_all_work() {
    let dir = scratch("keys");
    let p = |f: &str| dir.join(f).display().to_string();

    let sec1 = p("sec1.key");
    openssl(&["ec", "-in", &cert("server.key"), "-out", &sec1]);
    assert!(std::fs::read_to_string(&sec1).unwrap().contains("BEGIN EC PRIVATE KEY"));

    // An RSA certificate for localhost signed by the test CA, its key in PKCS#1.
    let (rsa, csr, crt) = (p("rsa.key"), p("rsa.csr"), p("rsa.pem"));
    openssl(&["genrsa", "-traditional", "-out", &rsa, "2048"]);
    assert!(std::fs::read_to_string(&rsa).unwrap().contains("BEGIN RSA PRIVATE KEY"));
    openssl(&["req", "-new", "-key", &rsa, "-subj", "/CN=localhost", "-out", &csr]);
    let ext = cert("openssl.cnf");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &cert("ca.pem"),
        "-CAkey",
        &cert("ca.key"),
        "-CAcreateserial",
        "-CAserial",
        &p("ca.srl"),
        "-days",
        "2",
        "-out",
        &crt,
        "-extfile",
        &ext,
        "-extensions",
        "server_ext",
    ]);

    let web = http("127.0.0.1:0");
    for (chain, key) in [(cert("server.pem"), cert("server.key")), (cert("server.pem"), sec1), (crt, rsa)] {
        let server = server().args(&["--cert", &chain, "--key", &key]).start();
        let local = local(server.addr).start();
        let body = curl(&["--socks5", &local.addr.to_string(), &format!("http://{web}/")]);
        assert_eq!(body, PAGE, "key {key}");
    }
}

#[test]
fn insecure_warns_at_start() {
    let server = server().start();
    // A process: the warning is in the lines it logs at start.
    let local = local(server.addr).args(&["--insecure"]).spawn();
    local.wait_line(|l| l.contains("WARN") && l.contains("not verified"));
    let web = http("127.0.0.1:0");
    let body = curl(&["--socks5", &local.addr.to_string(), &format!("http://{web}/")]);
    assert_eq!(body, PAGE);
}

#[test]
fn sni_overrides_the_name_checked() {
    let server = server().start();
    let web = http("127.0.0.1:0");
    // The certificate is for localhost, 127.0.0.1 and ::1; any other name fails.
    let wrong = local(server.addr).args(&["--sni", "example.org"]).start();
    let (_s, rep) = socks_request(wrong.addr, &web.to_string());
    assert_eq!(rep, 1);
    let right = local(server.addr).args(&["--sni", "localhost"]).start();
    assert_eq!(curl(&["--socks5", &right.addr.to_string(), &format!("http://{web}/")]), PAGE);
}

/// One option as `--help` shows it: names and value, help, default.
#[derive(Debug, PartialEq)]
struct Shown {
    names: String,
    help: String,
    default: String,
}

/// The options of a binary's `--help`, one per line after "Options:".
fn options(bin: &str) -> Vec<Shown> {
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines = text.lines().skip_while(|l| *l != "Options:").skip(1);
    lines
        .map(|line| {
            let (names, help) = line.trim_start().split_once("  ").unwrap_or_else(|| panic!("{line:?}"));
            let help = help.trim_start();
            let (help, default) = if let Some(help) = help.strip_suffix(" (required)") {
                (help, "required")
            } else if let Some((help, default)) = help.rsplit_once(" (default ") {
                (help, default.strip_suffix(')').unwrap_or_else(|| panic!("{line:?}")))
            } else {
                (help, "")
            };
            Shown { names: names.to_owned(), help: help.to_owned(), default: default.to_owned() }
        })
        .collect()
}

/// A Markdown table of `shown`.
fn table(shown: &[&Shown]) -> String {
    let mut out = String::from("| Flag | Default | What it does |\n|---|---|---|\n");
    for s in shown {
        out.push_str(&format!("| `{}` | {} | {} |\n", s.names, s.default, s.help));
    }
    out
}

/// Where the text between `<!-- begin NAME -->` and `<!-- end NAME -->` is in `doc`.
fn section(doc: &str, name: &str) -> Option<std::ops::Range<usize>> {
    let begin = format!("<!-- begin {name} -->\n");
    let start = doc.find(&begin)? + begin.len();
    let end = doc[start..].find(&format!("<!-- end {name} -->"))?;
    Some(start..start + end)
}

/// docs/REFERENCE.md's flag tables are `--help`'s lines, flag for flag: the
/// options of both binaries, then each one's own. `UPDATE_REFERENCE=1`
/// writes the tables `--help` makes into the page.
#[test]
fn help_and_the_reference_agree() {
    let (local, server): (&'static [Shown], &'static [Shown]) =
        (options(LOCAL).leak(), options(SERVER).leak());
    let both: Vec<&Shown> = local.iter().filter(|o| server.contains(o)).collect();
    let own =
        |all: &'static [Shown]| -> Vec<&'static Shown> { all.iter().filter(|o| !both.contains(o)).collect() };
    let want = [("both", table(&both)), ("local", table(&own(local))), ("server", table(&own(server)))];
    let path = root().join("docs/REFERENCE.md");
    let mut doc = std::fs::read_to_string(&path).unwrap();
    let update = std::env::var_os("UPDATE_REFERENCE").is_some();
    for (name, table) in &want {
        let Some(found) = section(&doc, name) else { panic!("docs/REFERENCE.md has no {name} table") };
        if doc[found.clone()] != **table {
            assert!(update, "docs/REFERENCE.md's {name} table is not what --help says; want:\n{table}");
            doc.replace_range(found, table);
        }
    }
    if update {
        std::fs::write(&path, doc).unwrap();
    }
    assert!(both.iter().any(|o| o.names == "--metrics ADDR:PORT") && own(server).len() > 10);
}
