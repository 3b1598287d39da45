//! Generated inputs through the ACL file reader: files of every line shape
//! (sections, ranges, addresses, `||` and `|` names, regular expressions of
//! a domain's shape and general ones, comments, blank lines, `\r\n`), then
//! spoiled, and random text. A fixed seed makes any failure reproducible. No
//! input may panic or allocate more than a bound; reading is deterministic,
//! and every file that reads answers every lookup.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use blocking_proxy::proto::acl::{Acl, REGEX_SIZE_MAX};

use crate::generated::{mutate, Rng, LARGEST};

const CASES: usize = 20_000;

/// The most one allocation may take while a file of a few KiB is read and
/// asked about: what the regex crate may reach compiling one pattern up to
/// its limit, and no more.
const ALLOCATION_MAX: usize = 2 * REGEX_SIZE_MAX;

const SECTIONS: &[&str] = &[
    "[proxy_all]",
    "[accept_all]",
    "[bypass_all]",
    "[reject_all]",
    "[bypass_list]",
    "[black_list]",
    "[proxy_list]",
    "[white_list]",
    "[block_list]",
    "[outbound_block_list]",
    "[outbound_allow_list]",
    "[outbound_block_all]",
    "[outbound_allow_all]",
    "[proxy-list]",
];

const REGEXES: &[&str] = &[
    r"(?:^|\.)google(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?){1,2}$",
    r"(?:^|\.)q=freedom$",
    r"(?:^|\.)bbs\.sina\.com%2f$",
    r"^[A-Z]+\.example$",
    r"\D+\.digits",
    r"(a|b)*c",
    r"a{1000}{1000}",
    r"(unclosed",
    r"[z-a]",
    r"\p{Greek}",
    ".*",
    "^$",
];

fn name(r: &mut Rng) -> String {
    let labels = 1 + r.below(4);
    (0..labels).map(|_| r.name()).collect::<Vec<_>>().join(".")
}

fn ip(r: &mut Rng) -> IpAddr {
    match r.below(3) {
        0 => IpAddr::V4(Ipv4Addr::from(r.next() as u32)),
        1 => IpAddr::V6(Ipv6Addr::from(u128::from(r.next()) << 64 | u128::from(r.next()))),
        _ => IpAddr::V6(Ipv4Addr::from(r.next() as u32).to_ipv6_mapped()),
    }
}

/// One line of an ACL file, of any shape.
fn line(r: &mut Rng) -> String {
    match r.below(16) {
        0 | 1 => SECTIONS[r.below(SECTIONS.len())].to_string(),
        2 => format!("||{}", name(r)),
        3 => format!("|{}", name(r)),
        4 => format!("{}/{}", ip(r), r.below(140)),
        5 => ip(r).to_string(),
        6..=8 => {
            let prefix = [r"(^|\.)", r"(?:^|\.)", r"\.", r"^.*\.", r"^.+\.", "^"][r.below(6)];
            format!("{prefix}{}{}", name(r).replace('.', r"\."), if r.below(2) == 0 { "$" } else { "" })
        }
        9 => REGEXES[r.below(REGEXES.len())].to_string(),
        10 => format!("# {}", name(r)),
        11 => " \t ".to_string(),
        12 => format!("  {}\t", name(r)),
        13 => format!("||{}.例子", name(r)),
        _ => String::new(),
    }
}

fn file(r: &mut Rng) -> Vec<u8> {
    let lines = r.below(40);
    let mut text = String::new();
    for _ in 0..lines {
        text.push_str(&line(r));
        text.push_str(if r.below(8) == 0 { "\r\n" } else { "\n" });
    }
    text.into_bytes()
}

/// Every lookup, on names and addresses from the file and others: their
/// answers, to compare two reads of one file.
fn answers(acl: &Acl, text: &str, r: &mut Rng) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().trim_start_matches('|').split(['$', '/', '\\']).next())
        .map(|n| format!("www.{n}."))
        .take(8)
        .collect();
    names.extend((0..4).map(|_| name(r)));
    let ips: Vec<IpAddr> = text
        .lines()
        .filter_map(|l| l.trim().split('/').next()?.parse().ok())
        .take(8)
        .chain((0..4).map(|_| ip(r)))
        .collect();
    let mut out = vec![format!(
        "{} {} {:?} {} {} {} {} {}",
        acl.rules(),
        acl.skipped(),
        acl.default_route(),
        acl.needs_addresses(),
        acl.outbound_needs_addresses(),
        acl.has_local_rules(),
        acl.has_client_rules(),
        acl.has_outbound_rules()
    )];
    for n in &names {
        out.push(format!("{n} {:?} {:?}", acl.route_name(n), acl.outbound_name(n)));
    }
    for &a in &ips {
        out.push(format!(
            "{a} {:?} {} {}",
            acl.route_ip(a),
            acl.client_refused(a),
            acl.outbound_ip_blocked(a)
        ));
    }
    out.push(format!("{:?} {}", acl.route_resolved(&ips), acl.outbound_resolved_blocked(&ips)));
    out.push(format!("{:?} {}", acl.route_resolved(&[]), acl.outbound_resolved_blocked(&[])));
    out
}

#[test]
fn generated_acl_files() {
    let mut r = Rng(0x0ac1_0ac1);
    let (mut read, mut refused, mut largest) = (0usize, 0usize, 0usize);
    for _ in 0..CASES {
        let bytes = match r.below(8) {
            0 => {
                let n = r.below(600);
                r.bytes(n)
            }
            1 => file(&mut r),
            _ => {
                let whole = file(&mut r);
                mutate(&mut r, whole)
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        LARGEST.with(|l| l.set(0));
        let first = Acl::parse(&text);
        let again = Acl::parse(&text);
        match (&first, &again) {
            (Ok(a), Ok(b)) => {
                let seed = r.next();
                let answers_a = answers(a, &text, &mut Rng(seed));
                assert_eq!(answers_a, answers(b, &text, &mut Rng(seed)), "{text:?}");
                read += 1;
            }
            (Err(a), Err(b)) => {
                assert_eq!((a.line, &a.why), (b.line, &b.why), "{text:?}");
                assert!(a.line >= 1 && a.line <= text.split('\n').count(), "{a} in {text:?}");
                refused += 1;
            }
            _ => panic!("two reads of one file disagree: {text:?}"),
        }
        let most = LARGEST.with(Cell::get);
        assert!(most <= ALLOCATION_MAX, "{most} bytes at once for {text:?}");
        largest = largest.max(most);
    }
    println!("{read} files read, {refused} refused; largest allocation {largest} bytes");
    assert!(
        read > CASES / 4 && refused > CASES / 20,
        "both kinds are exercised: {read} read, {refused} refused"
    );
}
