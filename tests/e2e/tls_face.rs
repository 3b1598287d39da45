//! The TLS handshake as a prober sees it, before the site says a word:
//! blocking-server (trojan, `--fallback`, as deployed) against nginx serving
//! HTTPS itself (TLS 1.2 and 1.3, the test certificate, nginx's defaults
//! otherwise), one ClientHello at a time.
//!
//! Each ClientHello is written byte by byte ([`crate::support::hello`]):
//! the common browsers', curl's, and a prober's (one protocol it cannot
//! have, old versions, CBC suites, one group, no SNI or an unknown one).
//! What each server shows in the clear is compared: the alert and the
//! version of its record, or the version, suite and key exchange chosen;
//! how the first flight is cut into records; and the session tickets for
//! that version (their number and lifetime hint, which `openssl s_client`
//! reads after a whole handshake). Every difference must be one of the
//! known differences listed in docs/PROTOCOL.md, whose list this test reads.
//! The same hellos, with no server between, give `proto::sniff` their names.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::support::hello::{self, ext, Hello, Outcome, TLS12, TLS13};
use crate::support::nginx::Nginx;
use crate::support::*;

/// What one server shows one ClientHello.
#[derive(Clone)]
struct Face {
    outcome: Outcome,
    /// How the first flight is cut into records.
    split: String,
    /// The session tickets of a whole handshake in the version chosen.
    tickets: Option<String>,
}

impl Face {
    /// The alert, or the version and suite, without the group.
    fn answer(&self) -> String {
        match &self.outcome {
            Outcome::Hello { version, suite, .. } => {
                format!("{} {}", hello::version_name(*version), hello::suite_name(*suite))
            }
            other => other.to_string(),
        }
    }

    fn group(&self) -> Option<u16> {
        match self.outcome {
            Outcome::Hello { group, .. } => group,
            _ => None,
        }
    }
}

impl std::fmt::Display for Face {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}", self.outcome)?;
        if let Some(t) = &self.tickets {
            write!(f, ", tickets {t}")?;
        }
        write!(f, ", records {}>", self.split)
    }
}

/// A part of the face that may differ.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    /// The alert, or the version and suite chosen.
    Answer,
    Group,
    Tickets,
    Records,
}

/// A way blocking-server's handshake differs from nginx's that rustls does
/// not let it change: `name` is a bold item of "Known differences from
/// nginx" in docs/PROTOCOL.md, which says why.
struct Known {
    name: &'static str,
    part: Part,
    /// Whether nginx's face and ours differ in this way.
    applies: fn(&Face, &Face) -> bool,
}

const KNOWN: &[Known] = &[
    Known {
        name: "One record per flight",
        part: Part::Records,
        applies: |nginx, ours| coalesced(&nginx.split) == coalesced(&ours.split) && nginx.split != ours.split,
    },
    Known {
        name: "Post-quantum key exchange",
        part: Part::Group,
        applies: |nginx, ours| {
            nginx.group() == Some(hello::X25519) && ours.group() == Some(hello::X25519MLKEM768)
        },
    },
    Known {
        name: "No CBC suites",
        part: Part::Answer,
        applies: |nginx, ours| {
            let cbc = matches!(nginx.outcome, Outcome::Hello { suite, .. } if hello::suite_name(suite).contains("_CBC_"));
            cbc && ours.outcome == Outcome::Alert { description: 40, record: TLS12 }
        },
    },
];

/// A record split with the handshake messages of one flight in one record,
/// and its encrypted records as one: `SH|Cert|SKE|SHD` is `SH+Cert+SKE+SHD`.
fn coalesced(split: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for part in split.split('|') {
        let handshake = |p: &str| p.split('+').all(|m| m.chars().next().is_some_and(char::is_uppercase));
        match out.last_mut() {
            Some(last) if last == "enc" && part == "enc" => {}
            Some(last) if last != "CCS" && part != "CCS" && handshake(last) && handshake(part) => {
                last.push('+');
                last.push_str(part);
            }
            _ => out.push(part.to_owned()),
        }
    }
    out.join("|")
}

/// The names of the bold items of "Known differences from nginx" in docs/PROTOCOL.md.
fn documented() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(root().join("docs/PROTOCOL.md")).unwrap();
    let start =
        doc.find("### Known differences from nginx").expect("PROTOCOL.md lists the known differences");
    let section = &doc[start..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |e| e + 4)];
    section
        .lines()
        .filter_map(|l| l.strip_prefix("- **"))
        .filter_map(|l| l.split_once(".**").map(|(name, _)| name.to_owned()))
        .collect()
}

/// The session tickets `openssl s_client` reads from `addr` after a whole
/// handshake in `version` (sending a request, so that a TLS 1.3 server's
/// tickets arrive before the site's answer and close): `2×300s`.
fn tickets(addr: SocketAddr, version: u16) -> String {
    let flag = if version == TLS13 { "-tls1_3" } else { "-tls1_2" };
    let mut child = Command::new("timeout")
        .arg(TIMEOUT.as_secs().to_string())
        .args(["openssl", "s_client", "-connect", &addr.to_string(), "-servername", "localhost"])
        .args(["-CAfile", CA, flag, "-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    child.stdin.take().unwrap().write_all(request).unwrap();
    let out = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("HTTP/1.1 200 OK"), "{addr}: s_client saw no page:\n{out}");
    let hints: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("TLS session ticket lifetime hint: "))
        .map(|h| h.trim_end_matches(" (seconds)"))
        .collect();
    let first = hints.first().copied().unwrap_or("none");
    if hints.iter().all(|h| *h == first) {
        format!("{}×{first}s", hints.len())
    } else {
        hints.join(",")
    }
}

fn face(addr: SocketAddr, hello: &Hello, tickets: &BTreeMap<u16, String>) -> Face {
    let answer = hello::exchange(addr, &hello.bytes());
    let outcome = answer.outcome();
    let tickets = match outcome {
        Outcome::Hello { version, .. } => tickets.get(&version).cloned(),
        _ => None,
    };
    Face { outcome, split: answer.split(), tickets }
}

/// Each ClientHello of the comparison, by name.
fn hellos() -> Vec<(&'static str, Hello)> {
    let h2 = hello::alpn(&["h2"]);
    vec![
        ("h2 only", hello::curl().with(ext::ALPN, Some(h2.clone()))),
        ("h2 only, TLS 1.2", hello::curl().tls12_only().with(ext::ALPN, Some(h2))),
        ("an unknown protocol only", hello::curl().with(ext::ALPN, Some(hello::alpn(&["x-unknown/1"])))),
        ("TLS 1.0 only", hello::legacy(hello::TLS10)),
        ("TLS 1.1 only", hello::legacy(hello::TLS11)),
        ("CBC suites only", hello::cbc_only()),
        ("P-521 only", hello::p521_only()),
        ("P-521 only, TLS 1.2", hello::p521_only().tls12_only()),
        ("no SNI", hello::curl().with(ext::SERVER_NAME, None)),
        ("an unknown SNI", hello::curl().with(ext::SERVER_NAME, Some(hello::sni("unknown.example.org")))),
        ("Chrome", hello::chrome()),
        ("Chrome, TLS 1.2", hello::chrome().tls12_only()),
        ("Firefox", hello::firefox()),
        ("Firefox, TLS 1.2", hello::firefox().tls12_only()),
        ("Safari", hello::safari()),
        ("Safari, TLS 1.2", hello::safari().tls12_only()),
        ("curl (OpenSSL 3.0)", hello::curl()),
        ("curl, TLS 1.2", hello::curl().tls12_only()),
    ]
}

#[test]
fn every_client_hello_is_answered_as_nginx_answers_it_or_with_a_known_difference() {
    let nginx = Nginx::start();
    let server = server().args(&["--password", "secret", "--fallback", &nginx.plain.to_string()]).start();
    let tickets_of = |addr| -> BTreeMap<u16, String> { [TLS12, TLS13].map(|v| (v, tickets(addr, v))).into() };
    let (site_tickets, our_tickets) = (tickets_of(nginx.tls), tickets_of(server.addr));

    let mut unexplained = Vec::new();
    let mut used = BTreeSet::new();
    for (name, hello) in hellos() {
        let site = face(nginx.tls, &hello, &site_tickets);
        let ours = face(server.addr, &hello, &our_tickets);
        // An alert for one and a handshake for the other (or another
        // version) makes the rest different too: only the answer counts then.
        let same_kind = match (&site.outcome, &ours.outcome) {
            (Outcome::Hello { version: a, .. }, Outcome::Hello { version: b, .. }) => a == b,
            (a, b) => a == b,
        };
        let parts: Vec<Part> = if !same_kind {
            vec![Part::Answer]
        } else {
            [
                (Part::Answer, site.answer() != ours.answer()),
                (Part::Group, site.group() != ours.group()),
                (Part::Tickets, site.tickets != ours.tickets),
                (Part::Records, site.split != ours.split),
            ]
            .into_iter()
            .filter_map(|(p, differs)| differs.then_some(p))
            .collect()
        };
        let mut reasons = Vec::new();
        for part in parts {
            match KNOWN.iter().find(|k| k.part == part && (k.applies)(&site, &ours)) {
                Some(k) => {
                    reasons.push(k.name.to_owned());
                    used.insert(k.name.to_owned());
                }
                None => reasons.push(format!("UNEXPLAINED {part:?}")),
            }
        }
        let verdict = if reasons.is_empty() {
            "match".to_owned()
        } else if reasons.iter().any(|r| r.starts_with("UNEXPLAINED")) {
            unexplained.push(name);
            format!("DIFFERENT ({})", reasons.join("; "))
        } else {
            format!("known difference ({})", reasons.join("; "))
        };
        println!("{name}: nginx={site} ours={ours} -> {verdict}");
    }
    assert!(
        unexplained.is_empty(),
        "differences from nginx that docs/PROTOCOL.md does not list: {unexplained:?}"
    );
    let known: BTreeSet<String> = KNOWN.iter().map(|k| k.name.to_owned()).collect();
    assert_eq!(known, documented(), "the known differences here and in docs/PROTOCOL.md");
    let unused: Vec<_> = known.difference(&used).collect();
    assert!(unused.is_empty(), "known differences no ClientHello shows any more: {unused:?}");
}

/// What `openssl s_client` prints about a handshake with `addr` given
/// `args`, sending nothing: its output, whether or not the handshake completed.
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg(TIMEOUT.as_secs().to_string())
        .args(["openssl", "s_client", "-connect", &addr.to_string(), "-servername", "localhost"])
        .args(["-CAfile", CA])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// nginx leaves the choice of suite to the client (`ssl_prefer_server_ciphers
/// off`), so a client that puts AES-256-GCM first gets it, in TLS 1.3 and 1.2.
#[test]
fn the_clients_order_of_suites_decides_as_on_nginx() {
    let server = server().start();
    let cases = [
        (
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
        ),
        (
            "-tls1_3",
            "-ciphersuites",
            "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
            "TLS_CHACHA20_POLY1305_SHA256",
        ),
        (
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
        ),
    ];
    let mut chosen = Vec::new();
    for (version, flag, offered, expected) in cases {
        let out = s_client(server.addr, &[version, flag, offered]);
        let line = out.lines().find(|l| l.contains(", Cipher is ")).unwrap_or("no handshake").to_owned();
        println!("{version} {offered}: {line}");
        chosen.push((line, expected));
    }
    for (line, expected) in chosen {
        assert!(line.ends_with(&format!("Cipher is {expected}")), "{line}");
    }
}

/// OpenSSL, and so nginx, offers P-521 among its key exchanges: a TLS 1.3
/// client that offers only P-521 is served with it. Over TLS 1.2 OpenSSL
/// refuses such a client (the certificate's curve, P-256, is not among the
/// client's), and so does blocking-server.
#[test]
fn a_client_offering_only_p521_is_served_over_tls13_and_refused_over_tls12_as_by_nginx() {
    let server = server().start();
    let tls13 = s_client(server.addr, &["-tls1_3", "-groups", "P-521"]);
    let tls12 = s_client(server.addr, &["-tls1_2", "-groups", "P-521"]);
    let show = |out: &str| {
        out.lines()
            .filter(|l| l.contains("Temp Key") || l.contains("Cipher is") || l.contains("alert"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    println!("TLS 1.3: {}\nTLS 1.2: {}", show(&tls13), show(&tls12));
    assert!(tls13.contains("Server Temp Key: ECDH, secp521r1, 521 bits"), "{tls13}");
    assert!(tls13.contains("New, TLSv1.3, Cipher is TLS_AES_"), "{tls13}");
    assert!(tls12.contains("alert handshake failure"), "{tls12}");
}

/// nginx's sessions last `ssl_session_timeout`, 5 minutes by default, and its
/// tickets say so: a lifetime hint of 300 seconds, two tickets in TLS 1.3 and
/// one in TLS 1.2. blocking-server's tickets say the same.
#[test]
fn session_tickets_say_they_last_300_seconds_as_nginxs_do() {
    let nginx = Nginx::start();
    let server = server().args(&["--password", "secret", "--fallback", &nginx.plain.to_string()]).start();
    let ours = [TLS13, TLS12].map(|v| tickets(server.addr, v));
    println!("TLS 1.3: {}, TLS 1.2: {}", ours[0], ours[1]);
    assert_eq!(ours, ["2×300s", "1×300s"]);
}

/// What `--sniff` reads from each of these hellos: its server_name, in one
/// record, split across two, and with bytes after it; nothing without one.
#[test]
fn sniff_reads_the_name_of_every_client_hello() {
    use blocking_proxy::proto::sniff::{sniff, Sniffed};
    for (label, hello) in hellos() {
        let named = label != "no SNI";
        let hello =
            if named { hello.with(ext::SERVER_NAME, Some(hello::sni("WWW.Example.org"))) } else { hello };
        let want = if named { Sniffed::Name("www.example.org".into()) } else { Sniffed::None };
        let one = hello.bytes();
        assert_eq!(sniff(&one), want, "{label}");
        let msg = &one[5..];
        let mut two = Vec::new();
        for part in [&msg[..msg.len() / 2], &msg[msg.len() / 2..]] {
            two.extend_from_slice(&[22, 3, 1]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        for n in 0..two.len() {
            assert_eq!(sniff(&two[..n]), Sniffed::NeedMore, "{label}: {n} bytes");
        }
        two.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
        assert_eq!(sniff(&two), want, "{label}, in two records");
    }
}
