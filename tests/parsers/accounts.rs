//! Generated inputs through the server's users file reader (`--users`):
//! files of every line shape (names, passwords with colons and `#`, each
//! limit with each unit, comments, blank lines, `\r\n`), then spoiled, and
//! random text. A fixed seed makes any failure reproducible. No input may
//! panic or allocate more than a bound; reading is deterministic; a refused
//! file names one of its lines, and an unspoiled one shows none of its passwords.

use std::cell::Cell;

use blocking_proxy::proto::accounts::{parse, NAME_MAX};

use crate::generated::{mutate, Rng, LARGEST};

const CASES: usize = 20_000;

/// The most one allocation may take while a file of a few KiB is read.
const ALLOCATION_MAX: usize = 64 * 1024;

const UNITS: &[&str] = &["", "KiB", "MiB", "GiB", "TiB", "KB", "MB", "GB", "TB", "kb", "B"];
const PERIODS: &[&str] = &["s", "m", "h", "d", "w", ""];

fn number(r: &mut Rng) -> String {
    match r.below(10) {
        0 => "0".to_owned(),
        1 => r.next().to_string(),
        _ => (1 + r.below(5000)).to_string(),
    }
}

fn limit(r: &mut Rng) -> String {
    let unit = UNITS[r.below(UNITS.len())];
    match r.below(4) {
        0 => format!("max_conns={}", number(r)),
        1 => format!("rate={}{unit}", number(r)),
        2 => format!("quota={}{unit}", number(r)),
        _ => format!("quota={}{unit}/{}{}", number(r), number(r), PERIODS[r.below(PERIODS.len())]),
    }
}

fn line(r: &mut Rng, n: usize) -> String {
    match r.below(8) {
        0 => String::new(),
        1 => format!("# user {n}"),
        _ => {
            let name = if r.below(10) == 0 { "x".repeat(NAME_MAX + 1) } else { format!("{}{n}", r.name()) };
            let password = format!("secret{n}{}", ["", ":a", "#b", "c"][r.below(4)]);
            let limits: Vec<String> = (0..r.below(4)).map(|_| limit(r)).collect();
            let comment = if r.below(4) == 0 { " # note" } else { "" };
            format!("{name}:{password} {}{comment}", limits.join(" "))
        }
    }
}

fn file(r: &mut Rng) -> Vec<u8> {
    let ending = if r.below(3) == 0 { "\r\n" } else { "\n" };
    (0..r.below(12)).map(|n| line(r, n)).collect::<Vec<_>>().join(ending).into_bytes()
}

#[test]
fn generated_users_files() {
    let mut r = Rng(0x05e5_0005);
    let (mut read, mut refused, mut largest) = (0usize, 0usize, 0usize);
    for _ in 0..CASES {
        let (bytes, whole) = match r.below(8) {
            0 => {
                let n = r.below(600);
                (r.bytes(n), false)
            }
            1 | 2 => (file(&mut r), true),
            _ => {
                let whole = file(&mut r);
                (mutate(&mut r, whole), false)
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        LARGEST.with(|l| l.set(0));
        let first = parse(&text);
        match (&first, &parse(&text)) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "{text:?}");
                for u in a {
                    assert!(!u.name.is_empty() && u.name.len() <= NAME_MAX, "{u:?}");
                    assert!(u.max_conns != Some(0) && u.rate != Some(0), "{u:?}");
                }
                read += 1;
            }
            (Err(a), Err(b)) => {
                assert_eq!(a, b, "{text:?}");
                assert!(a.line >= 1 && a.line <= text.split('\n').count(), "{a} in {text:?}");
                // A spoiled colon may make a password part of a name; a whole file shows none.
                assert!(!whole || !a.why.contains("secret"), "{a} in {text:?}");
                refused += 1;
            }
            _ => panic!("two reads of one file disagree: {text:?}"),
        }
        let most = LARGEST.with(Cell::get);
        assert!(most <= ALLOCATION_MAX, "{most} bytes at once for {text:?}");
        largest = largest.max(most);
    }
    println!("{read} files read, {refused} refused; largest allocation {largest} bytes");
    assert!(read > CASES / 10 && refused > CASES / 4, "{read} read, {refused} refused");
}
