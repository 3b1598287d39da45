//! Logs a peer cannot forge: a target name made to look like the end of one
//! close line and the start of another goes through the pair, and every line
//! both processes log still parses into its own fields.

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
