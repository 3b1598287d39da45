//! The server's users file (`--users`): who may open connections, under
//! which name, and with which limits. It exists so that an operator can tell
//! whose connection a close line is, count each person's traffic and limit
//! it, where a plain password list can do none of that.
//!
//! One user a line; `#` starts a comment, blank lines are skipped:
//!
//! ```text
//! # NAME:PASSWORD [max_conns=N] [rate=SIZE] [quota=SIZE[/PERIOD]]
//! alice:correct-horse max_conns=4 rate=2MiB quota=10GiB/30d
//! bob:battery-staple
//! ```
//!
//! A name is 1 to [`NAME_MAX`] of `A-Z a-z 0-9 . _ -`; the password is
//! everything after the first colon up to the first space or tab (1 to
//! [`PASSWORD_MAX`] bytes, no spaces; a `#` in it is kept, as a comment
//! starts only at a `#` that begins the line or follows a space or a tab). A SIZE is a whole number of bytes,
//! with an optional unit: `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024) or
//! `KB`, `MB`, `GB`, `TB` (powers of 1000). A PERIOD is a whole number with
//! `s`, `m`, `h` or `d`. `rate` applies to each direction on its own. Two
//! users may not share a name or a password (the password's trojan hash is
//! what identifies the user). Nothing of a password appears in an error.

use std::fmt;
use std::time::Duration;

use super::wire::{trojan_hash, TrojanHash};

/// The longest user name.
pub const NAME_MAX: usize = 32;

/// The longest password.
pub const PASSWORD_MAX: usize = 255;

/// One user of the file, with the hash of its password (the password itself is not kept).
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// Its name, as the close line and the metrics give it.
    pub name: String,
    /// The trojan hash of its password.
    pub hash: TrojanHash,
    /// `max_conns=`: the connections it may have open at once.
    pub max_conns: Option<u64>,
    /// `rate=`: bytes per second in each direction, shared by its connections.
    pub rate: Option<u64>,
    /// `quota=`: the bytes (both directions together) it may move.
    pub quota: Option<Quota>,
}

impl fmt::Debug for Account {
    /// Everything but the hash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Account({} max_conns={:?} rate={:?} quota={:?})",
            self.name, self.max_conns, self.rate, self.quota
        )
    }
}

/// A quota: bytes per period, or in all if no period is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// The bytes, both directions together.
    pub bytes: u64,
    /// How often the count starts again; None: never.
    pub period: Option<Duration>,
}

/// A line the file cannot hold, by its number (from 1) and why.
#[derive(Debug, PartialEq, Eq)]
pub struct LineError {
    /// The line's number, from 1.
    pub line: usize,
    /// What is wrong with it; never any of the password.
    pub why: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

/// Reads a users file's text. An empty file (only comments) has no users,
/// which is allowed: nobody may connect with a name.
pub fn parse(text: &str) -> Result<Vec<Account>, LineError> {
    let mut accounts: Vec<(usize, Account)> = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let bad = |why: String| LineError { line, why };
        let content = without_comment(raw).trim_matches([' ', '\t', '\r']);
        if content.is_empty() {
            continue;
        }
        let account = parse_line(content).map_err(bad)?;
        if let Some((first, _)) = accounts.iter().find(|(_, a)| a.name == account.name) {
            return Err(bad(format!("user {} is already on line {first}", account.name)));
        }
        if let Some((first, other)) = accounts.iter().find(|(_, a)| a.hash == account.hash) {
            return Err(bad(format!(
                "user {} has the same password as user {} on line {first}: each user needs a password of its own",
                account.name, other.name
            )));
        }
        accounts.push((line, account));
    }
    Ok(accounts.into_iter().map(|(_, a)| a).collect())
}

/// A line up to its comment: a `#` that starts it or follows a space or a
/// tab (a password may hold a `#`).
fn without_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    match (0..bytes.len()).find(|&i| bytes[i] == b'#' && (i == 0 || matches!(bytes[i - 1], b' ' | b'\t'))) {
        Some(i) => &line[..i],
        None => line,
    }
}

/// One line without its comment: `NAME:PASSWORD` and its limits.
fn parse_line(content: &str) -> Result<Account, String> {
    let mut fields = content.split([' ', '\t']).filter(|f| !f.is_empty());
    let first = fields.next().unwrap_or("");
    let Some((name, password)) = first.split_once(':') else {
        return Err("wants NAME:PASSWORD first".to_owned());
    };
    if name.is_empty() || name.len() > NAME_MAX || !name.bytes().all(name_byte) {
        return Err(format!("a user name is 1 to {NAME_MAX} of A-Z a-z 0-9 . _ -"));
    }
    if password.is_empty() || password.len() > PASSWORD_MAX {
        return Err(format!("user {name}: a password is 1 to {PASSWORD_MAX} bytes, without spaces"));
    }
    if password.chars().any(char::is_control) {
        return Err(format!("user {name}: the password holds a control character"));
    }
    let mut account = Account {
        name: name.to_owned(),
        hash: trojan_hash(password),
        max_conns: None,
        rate: None,
        quota: None,
    };
    for (n, field) in fields.enumerate() {
        let wrong = || {
            format!(
                "user {name}: field {} is not a limit (max_conns=N, rate=SIZE, quota=SIZE[/PERIOD]); a password holds no spaces",
                n + 2
            )
        };
        let (key, value) = field.split_once('=').ok_or_else(wrong)?;
        let twice = |set: bool| if set { Err(format!("user {name}: {key}= is given twice")) } else { Ok(()) };
        let bad_value = |what: &str| format!("user {name}: {key}= wants {what}");
        match key {
            "max_conns" => {
                twice(account.max_conns.is_some())?;
                let n = number(value).filter(|n| *n > 0).ok_or_else(|| bad_value("a positive number"))?;
                account.max_conns = Some(n);
            }
            "rate" => {
                twice(account.rate.is_some())?;
                let n =
                    size(value).filter(|n| *n > 0).ok_or_else(|| bad_value("a positive SIZE per second"))?;
                account.rate = Some(n);
            }
            "quota" => {
                twice(account.quota.is_some())?;
                let q = quota(value)
                    .ok_or_else(|| bad_value("a positive SIZE, or SIZE/PERIOD (30d, 12h, 90m, 60s)"))?;
                account.quota = Some(q);
            }
            _ => return Err(wrong()),
        }
    }
    Ok(account)
}

/// The bytes a user name may hold.
fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// A whole number of at most 19 digits, no sign.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A SIZE: a number with an optional unit (see the module header).
pub fn size(s: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 8] = [
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
        ("KB", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("TB", 1_000_000_000_000),
    ];
    let (digits, unit) = match UNITS.iter().find(|(u, _)| s.ends_with(u)) {
        Some((u, times)) => (&s[..s.len() - u.len()], *times),
        None => (s, 1),
    };
    number(digits)?.checked_mul(unit)
}

/// A quota: SIZE, or SIZE/PERIOD, both positive.
fn quota(s: &str) -> Option<Quota> {
    let (bytes, period) = match s.split_once('/') {
        Some((bytes, period)) => (bytes, Some(period)),
        None => (s, None),
    };
    let bytes = size(bytes).filter(|b| *b > 0)?;
    let period = match period {
        None => None,
        Some(p) => Some(self::period(p)?),
    };
    Some(Quota { bytes, period })
}

/// A PERIOD: a positive number and one of `s`, `m`, `h`, `d`.
fn period(s: &str) -> Option<Duration> {
    let unit = match s.as_bytes().last()? {
        b's' => 1,
        b'm' => 60,
        b'h' => 3_600,
        b'd' => 86_400,
        _ => return None,
    };
    let n = number(&s[..s.len() - 1]).filter(|n| *n > 0)?;
    Some(Duration::from_secs(n.checked_mul(unit)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_file_reads_names_hashes_and_limits() {
        let text = "# team\n\nalice:s3cret max_conns=2 rate=1MiB quota=10GiB/30d # boss\r\nbob:a:b#c\n  carol:x\trate=1500 quota=2KB\n";
        let users = parse(text).unwrap();
        assert_eq!(users.len(), 3);
        assert_eq!(users[0].name, "alice");
        assert_eq!(users[0].hash, trojan_hash("s3cret"));
        assert_eq!(users[0].max_conns, Some(2));
        assert_eq!(users[0].rate, Some(1 << 20));
        assert_eq!(
            users[0].quota,
            Some(Quota { bytes: 10 << 30, period: Some(Duration::from_secs(30 * 86_400)) })
        );
        assert_eq!((users[1].name.as_str(), users[1].hash), ("bob", trojan_hash("a:b#c")));
        assert_eq!((users[1].max_conns, users[1].rate, users[1].quota), (None, None, None));
        assert_eq!(users[2].rate, Some(1500));
        assert_eq!(users[2].quota, Some(Quota { bytes: 2000, period: None }));
        assert_eq!(parse("# nobody\n\n").unwrap(), Vec::new());
    }

    #[test]
    fn sizes_and_periods_take_their_units() {
        assert_eq!(size("7"), Some(7));
        assert_eq!(size("3KiB"), Some(3072));
        assert_eq!(size("3KB"), Some(3000));
        assert_eq!(size("1TiB"), Some(1 << 40));
        assert_eq!(size("99999999999TiB"), None);
        assert_eq!(size("1.5MiB"), None);
        assert_eq!(size("MiB"), None);
        assert_eq!(size("-1"), None);
        assert_eq!(period("12h"), Some(Duration::from_secs(43_200)));
        assert_eq!(period("90m"), Some(Duration::from_secs(5_400)));
        assert_eq!(period("0d"), None);
        assert_eq!(period("3w"), None);
    }

    #[test]
    fn each_bad_line_is_named_and_why_is_said() {
        assert_eq!(err("ok:a\nnocolon\n"), "line 2: wants NAME:PASSWORD first");
        assert_eq!(err(":pw"), "line 1: a user name is 1 to 32 of A-Z a-z 0-9 . _ -");
        assert_eq!(err("b\u{e9}a:pw"), "line 1: a user name is 1 to 32 of A-Z a-z 0-9 . _ -");
        assert_eq!(
            err(&format!("{}:pw", "n".repeat(33))),
            "line 1: a user name is 1 to 32 of A-Z a-z 0-9 . _ -"
        );
        assert_eq!(err("a:"), "line 1: user a: a password is 1 to 255 bytes, without spaces");
        assert_eq!(err("a:x max_conns=0"), "line 1: user a: max_conns= wants a positive number");
        assert_eq!(err("a:x rate=fast"), "line 1: user a: rate= wants a positive SIZE per second");
        assert_eq!(
            err("a:x quota=1GiB/1y"),
            "line 1: user a: quota= wants a positive SIZE, or SIZE/PERIOD (30d, 12h, 90m, 60s)"
        );
        assert_eq!(err("a:x rate=1 rate=2"), "line 1: user a: rate= is given twice");
        assert_eq!(err("a:x\n\na:y"), "line 3: user a is already on line 1");
        assert_eq!(
            err("a:same\nb:same"),
            "line 2: user b has the same password as user a on line 1: each user needs a password of its own"
        );
    }

    #[test]
    fn no_error_shows_any_of_the_password() {
        let e = err("a:secret xyzzy");
        assert_eq!(
            e,
            "line 1: user a: field 2 is not a limit (max_conns=N, rate=SIZE, quota=SIZE[/PERIOD]); a password holds no spaces"
        );
        for text in ["a:secret xyzzy", "a:secret\nb:secret", "a:secret rate=x", "a:secret speed=1"] {
            let e = err(text);
            assert!(!e.contains("secret") && !e.contains("xyzzy"), "{e}");
        }
        let shown = format!("{:?}", parse("a:secret").unwrap());
        let hash = trojan_hash("secret");
        assert!(!shown.contains("secret") && !shown.contains(std::str::from_utf8(&hash).unwrap()), "{shown}");
    }
}
