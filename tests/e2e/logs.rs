//! Logs a peer cannot forge: a target name made to look like the end of one
//! close line and the start of another goes through the pair, and every line
//! both processes log still parses into its own fields. And ordinary closes
//! read as such: a client that resets once the other end has finished (it
//! leaves the site's close_notify unread, as Python's urllib does) ends in
//! `eof (client reset after … closed)`, through the pair and at the fallback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rustls::pki_types::ServerName;
use rustls::ClientConnection;

use crate::support::*;

/// A name that ends a close line early (its own up=, down=, time=, end=) and
/// starts a forged one after U+2028, where some log viewers break lines. It is
/// no host name (the resolver refuses it without sending a query).
const FORGED: &str =
    "x.invalid:1 up=0 down=0 time=0.001s end=eof\u{2028}#9 closed client=127.0.0.1:9 target=x.invalid";
/// How both processes log it with port 80: quoted, the separator escaped.
const LOGGED: &str = r#""x.invalid:1 up=0 down=0 time=0.001s end=eof\u{2028}#9 closed client=127.0.0.1:9 target=x.invalid":80"#;

/// The keys of a close line, in order; `end` runs to the end of the line, or
/// to the local's `proto=` after it.
const CLOSE_KEYS: [&str; 6] = ["client", "target", "up", "down", "time", "end"];

/// Characters a peer must never get into a log line as they are.
fn forbidden(c: char) -> bool {
    (c.is_control() || c.is_whitespace()) && c != ' '
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Splits a message at spaces outside double quotes; inside them a backslash
/// escapes the next character.
fn words(msg: &str) -> Vec<String> {
    let (mut out, mut word, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = msg.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                word.push(c);
                word.extend(chars.next());
            }
            '"' => {
                quoted = !quoted;
                word.push(c);
            }
            ' ' if !quoted => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    assert!(!quoted, "a quote left open in {msg:?}");
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Checks every line of `p`; returns its close lines split into words.
fn check_lines(who: &str, p: &Proc) -> Vec<Vec<String>> {
    let mut closes = Vec::new();
    for line in p.lines().iter().filter(|l| *l != "<exit>") {
        assert!(!line.chars().any(forbidden), "{who}: a raw separator or control in {line:?}");
        // env_logger's "[TIME LEVEL ] message".
        let (head, msg) = line.split_once("] ").unwrap_or_else(|| panic!("{who}: no prefix in {line:?}"));
        let level = head.strip_prefix('[').and_then(|h| h.split_whitespace().nth(1));
        assert!(
            matches!(level, Some("ERROR" | "WARN" | "INFO" | "DEBUG" | "TRACE")),
            "{who}: not a log line: {line:?}"
        );
        assert!(!msg.starts_with("#9 "), "{who}: a forged line: {line:?}");
        if line.contains("x.invalid") {
            assert!(line.contains(LOGGED), "{who}: the name is not logged as {LOGGED}: {line:?}");
            assert!(!line.replacen(LOGGED, "", 1).contains("x.invalid"), "{who}: {line:?}");
        }
        let w = words(msg);
        if w.get(1).map(String::as_str) == Some("closed") {
            closes.push(w);
        }
    }
    for w in &closes {
        assert!(w[0].starts_with('#') && w[0][1..].parse::<u64>().is_ok(), "{who}: {w:?}");
        let keys: Vec<&str> = w[2..].iter().take(6).map(|f| f.split('=').next().unwrap_or("")).collect();
        assert_eq!(keys, CLOSE_KEYS, "{who}: the fields of {w:?}");
        assert_eq!(w[3], format!("target={LOGGED}"), "{who}");
        // The fields after end= (proto=, route=) are the trailing words with an `=`.
        let fields =
            w[8..].iter().rev().take_while(|f| f.starts_with("proto=") || f.starts_with("route=")).count();
        let end = &w[8..w.len() - fields];
        assert!(end.iter().all(|rest| !rest.contains('=')), "{who}: end= holds a field: {w:?}");
    }
    closes
}

#[test]
fn a_forged_target_name_stays_one_field_in_both_logs() {
    // No pool: the one connection in each log is the test's, #1.
    let pair = Pair::spawn(&[], &["--pool", "0"]);
    let (mut s, rep) = socks_request(pair.local.addr, &format!("{FORGED}:80"));
    assert_eq!(rep, 0, "the local hands the name on");
    // The server cannot resolve it and closes; so does the local.
    let _ = read_until_closed(&mut s);
    drop(s);
    let server = pair.server.wait_line(|l| l.contains("] #1 closed client="));
    let local = pair.local.wait_line(|l| l.contains("] #1 closed client="));
    println!("server: {server}\nlocal: {local}");
    for (who, p) in [("server", &pair.server), ("local", &pair.local)] {
        let closes = check_lines(who, p);
        assert_eq!(closes.len(), 1, "{who}: one close line: {:#?}", p.lines());
        assert_eq!(closes[0][0], "#1", "{who}");
    }
}

/// Waits (up to TIMEOUT) until the peer of `s` has finished sending: its FIN
/// has arrived, whatever is still unread before it.
fn await_fin(s: &TcpStream) {
    let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
    let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(s), rdhup)];
    let ready = poll(&mut fds, PollTimeout::try_from(TIMEOUT.as_millis() as u64).unwrap()).unwrap();
    // nix gives no revents with POLLRDHUP in them (it does not know the flag).
    assert!(ready == 1 && fds[0].revents().is_none_or(|r| r.contains(rdhup)), "no FIN within {TIMEOUT:?}");
}

/// Closes `s` with bytes unread, which makes the kernel reset the
/// connection, as a client that stops reading once it has its answer does.
fn close_leaving_bytes_unread(s: TcpStream) {
    let mut one = [0u8; 1];
    assert_eq!(s.peek(&mut one).unwrap(), 1, "something is left unread");
    drop(s);
}

#[test]
fn a_client_that_resets_after_the_site_has_closed_ends_in_eof_on_both_sides() {
    // The site answers, then sends a few bytes more (a stand-in for its TLS
    // close_notify inside the tunnel) and closes.
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    const MORE: &[u8] = b"close_notify";
    let site = target("127.0.0.1:0", |mut s| {
        let mut req = [0u8; 4];
        if s.read_exact(&mut req).is_ok() {
            let _ = s.write_all(&[ANSWER, MORE].concat());
        }
    });
    let pair = Pair::spawn(&[], &["--pool", "0"]);
    // An HTTP CONNECT, as urllib sends one.
    let mut s = connect(pair.local.addr);
    s.write_all(format!("CONNECT {site} HTTP/1.1\r\nHost: {site}\r\n\r\n").as_bytes()).unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    s.write_all(b"GET ").unwrap();
    let mut answer = vec![0u8; ANSWER.len()];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(answer, ANSWER);
    // The tunnel's end has reached the client; it closes with MORE unread.
    await_fin(&s);
    close_leaving_bytes_unread(s);
    let mine = |l: &str| l.contains(&format!(" target={site} "));
    let local = pair.local.wait_line(mine);
    let server = pair.server.wait_line(mine);
    eprintln!("local:  {local}\nserver: {server}");
    assert!(local.contains(" end=eof (client reset after server closed) proto=http"), "{local}");
    assert!(server.ends_with(" end=eof (client reset after target closed)"), "{server}");
}

#[test]
fn a_visitor_that_resets_after_the_fallback_has_closed_ends_in_eof() {
    let site = http("127.0.0.1:0").to_string();
    let server = server_with_certs().args(&["--password", "pw", "--fallback", &site]).spawn();
    let mut sock = connect(server.addr);
    let trust = blocking_proxy::tls::config::Trust::CaFile(CA.into());
    let config = blocking_proxy::tls::config::client_config(&trust, &[]).unwrap();
    let mut conn =
        ClientConnection::new(Arc::clone(&config), ServerName::try_from("localhost").unwrap()).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    conn.writer().write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    while conn.wants_write() {
        conn.write_tls(&mut sock).unwrap();
    }
    // Record by record, until the whole page is in: the site's close_notify,
    // which follows it, stays in the socket unread.
    let mut page = Vec::new();
    while !page.ends_with(PAGE.as_bytes()) {
        let mut header = [0u8; 5];
        sock.read_exact(&mut header).unwrap();
        let mut record = header.to_vec();
        record.resize(5 + usize::from(u16::from_be_bytes([header[3], header[4]])), 0);
        sock.read_exact(&mut record[5..]).unwrap();
        conn.read_tls(&mut &record[..]).unwrap();
        conn.process_new_packets().unwrap();
        let _ = conn.reader().read_to_end(&mut page);
    }
    await_fin(&sock);
    close_leaving_bytes_unread(sock);
    let line = server.wait_line(|l| l.contains(" closed client=") && l.contains(" target=fallback/"));
    eprintln!("server: {line}");
    assert!(line.ends_with(" end=eof (client reset after fallback closed)"), "{line}");
}
