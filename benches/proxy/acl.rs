//! Routing by an ACL: the pair with `blocking-local --acl` next to it
//! without, for new connections the ACL sends through the server and new
//! connections it sends direct.
//!
//! The ACL is generated, in the shape of the lists people route with
//! (shadowsocks-android's bypass-lan-china): `[proxy_all]`, then a
//! `[bypass_list]` of the LAN ranges, some 4,000 IPv4 and 1,000 IPv6 ranges,
//! about 5,000 domains written as `(?:^|\.)name\.tld$`, and a few `||name`
//! and `|name` lines: 10,000 rules. Names and ranges are made up here from
//! a fixed seed; no real list is copied. Two files are written, differing
//! in one line: with `127.0.0.0/8` among the LAN ranges, the generator's
//! targets (on 127.0.0.1) are routed direct; without it, no rule matches
//! them and they are proxied, the mode's default, after every address list
//! has been searched.
//!
//! The ACL chains' server listens on [`SERVER_IP`], 127.0.0.2: the local
//! always sends a target on its server's host direct, whatever the ACL
//! says, so a server on the targets' 127.0.0.1 would decide first.
//!
//! Also measured here, in the bench's own process: `Acl::parse` on the
//! generated text, and one lookup of the targets' address and of a name no
//! rule matches.

use std::collections::HashSet;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use blocking_proxy::proto::acl::{Acl, Route};

use crate::chains::{self, Chain, Workdir};
use crate::loadgen;

/// Where the ACL chains' server listens (the targets are on 127.0.0.1).
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The line that routes the targets direct, left out of the proxy file.
const LOOPBACK: &str = "127.0.0.0/8";
/// The ranges of the LAN and of special use, as such lists begin; the
/// loopback range goes after the first three.
const LAN: [&str; 19] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];
/// Generated ranges: with the LAN's 20, 5,000 address lines.
const V4_RANGES: usize = 3_980;
const V6_RANGES: usize = 1_000;
/// Generated domains: 5,000 name lines.
const PATTERNS: usize = 4_940;
const SUFFIX_LINES: usize = 30;
const EXACT_LINES: usize = 30;

/// Lines the direct file holds that are rules; the proxy file has one fewer.
pub const RULES: usize = LAN.len() + 1 + V4_RANGES + V6_RANGES + PATTERNS + SUFFIX_LINES + EXACT_LINES;

/// The name looked up in [`lookups`]: no rule matches it.
const UNLISTED_NAME: &str = "www.bench-target.example";

/// splitmix64: the same file every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// First octets of the generated IPv4 ranges: allocated public space, never 127.
const V4_FIRST: [u8; 40] = [
    1, 14, 27, 36, 39, 42, 43, 49, 58, 59, 60, 61, 101, 103, 106, 110, 111, 112, 113, 114, 115, 116, 117,
    118, 119, 120, 121, 122, 123, 124, 125, 139, 140, 175, 180, 182, 183, 202, 210, 211,
];
/// Prefix lengths, about as often as such lists have them: most between 16 and 24.
const V4_PREFIX: [u8; 25] =
    [11, 12, 13, 14, 15, 16, 16, 17, 18, 19, 20, 20, 21, 21, 22, 22, 22, 23, 23, 24, 24, 24, 24, 24, 24];
/// First 16 bits of the generated IPv6 ranges: inside 2001::/16 and 2400::/12.
const V6_FIRST: [u16; 8] = [0x2001, 0x2400, 0x2401, 0x2402, 0x2403, 0x2406, 0x2408, 0x240e];
const V6_PREFIX: [u8; 10] = [20, 28, 29, 30, 32, 32, 32, 36, 40, 48];

const SYLLABLES: [&str; 44] = [
    "an", "ba", "bai", "bei", "bo", "chang", "chen", "da", "dian", "dong", "fang", "fei", "gao", "guo",
    "hai", "hong", "hua", "jia", "jin", "jing", "kai", "kang", "le", "li", "long", "mei", "ming", "nan",
    "ping", "qi", "qing", "shan", "shi", "tian", "tong", "wang", "wei", "xin", "yang", "yun", "zhi", "zhong",
    "zhou", "zu",
];
const TLDS: [&str; 20] = [
    "com", "com", "com", "com", "com", "com", "com", "cn", "cn", "cn", "cn", "net", "net", "com.cn",
    "com.cn", "org", "net.cn", "top", "cc", "tv",
];
const HOSTS: [&str; 10] = ["cdn", "img", "static", "api", "dl", "m", "news", "pic", "v", "mail"];

fn v4_ranges(rng: &mut Rng) -> Vec<(u32, u8)> {
    let mut seen = HashSet::new();
    while seen.len() < V4_RANGES {
        let first = u32::from(V4_FIRST[rng.below(V4_FIRST.len())]);
        let len = V4_PREFIX[rng.below(V4_PREFIX.len())];
        let addr = (first << 24) | (rng.next() as u32 & 0x00ff_ffff);
        seen.insert((addr & (u32::MAX << (32 - len)), len));
    }
    let mut v: Vec<(u32, u8)> = seen.into_iter().collect();
    v.sort_unstable();
    v
}

fn v6_ranges(rng: &mut Rng) -> Vec<(u128, u8)> {
    let mut seen = HashSet::new();
    while seen.len() < V6_RANGES {
        let first = u128::from(V6_FIRST[rng.below(V6_FIRST.len())]);
        let len = V6_PREFIX[rng.below(V6_PREFIX.len())];
        let low = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 16;
        seen.insert((((first << 112) | low) & (u128::MAX << (128 - len)), len));
    }
    let mut v: Vec<(u128, u8)> = seen.into_iter().collect();
    v.sort_unstable();
    v
}

/// A made-up name: one to three syllables, sometimes digits or a hyphen,
/// a TLD, and now and then a host label in front.
fn name(rng: &mut Rng) -> String {
    let mut label = String::new();
    for i in 0..1 + rng.below(3) {
        if i > 0 && rng.below(8) == 0 {
            label.push('-');
        }
        label += rng.pick(&SYLLABLES);
    }
    if rng.below(6) == 0 {
        label += &(rng.below(999) + 1).to_string();
    }
    let host = if rng.below(10) == 0 { format!("{}.", rng.pick(&HOSTS)) } else { String::new() };
    format!("{host}{label}.{}", rng.pick(&TLDS))
}

/// The generated ACL: with `direct`, the targets' 127.0.0.1 is in the bypass list.
pub fn generate(direct: bool) -> String {
    let mut rng = Rng(0x00ac_1bec_4c40_5e55);
    let mut t = String::from(
        "# A generated ACL for the proxy bench (benches/proxy/acl.rs), in the shape of\n\
         # shadowsocks-android's bypass-lan-china.acl; names and ranges are made up.\n\
         [proxy_all]\n\n[bypass_list]\n",
    );
    for (i, range) in LAN.iter().enumerate() {
        if i == 3 {
            t += &if direct {
                format!("{LOOPBACK}\n")
            } else {
                format!("# {LOOPBACK} left out: the bench's targets, on 127.0.0.1, go through the server\n")
            };
        }
        t += range;
        t.push('\n');
    }
    for (addr, len) in v4_ranges(&mut rng) {
        t += &format!("{}/{len}\n", Ipv4Addr::from(addr));
    }
    for (addr, len) in v6_ranges(&mut rng) {
        t += &format!("{}/{len}\n", Ipv6Addr::from(addr));
    }
    // In the order made, so that the `||` and `|` names are not the last in the alphabet.
    let (mut seen, mut names) = (HashSet::new(), vec![]);
    while names.len() < PATTERNS + SUFFIX_LINES + EXACT_LINES {
        let n = name(&mut rng);
        if seen.insert(n.clone()) {
            names.push(n);
        }
    }
    let (patterns, rest) = names.split_at_mut(PATTERNS);
    patterns.sort_unstable();
    for n in patterns.iter() {
        t += &format!("(?:^|\\.){}$\n", n.replace('.', "\\."));
    }
    for (i, n) in rest.iter().enumerate() {
        t += if i < SUFFIX_LINES { "||" } else { "|" };
        t += n;
        t.push('\n');
    }
    t
}

/// Parses `text` and checks that it routes `target` as `want`.
pub fn check(text: &str, target: Ipv4Addr, want: Route) -> Result<Acl, String> {
    let acl = Acl::parse(text).map_err(|e| format!("the generated ACL: {e}"))?;
    let got = acl.route_ip(IpAddr::V4(target));
    if got != want {
        return Err(format!("the generated ACL routes {target} {}, not {}", got.name(), want.name()));
    }
    Ok(acl)
}

/// Milliseconds `Acl::parse` takes on `text`: the median of `n` parses.
pub fn parse_ms(text: &str, n: usize) -> Option<f64> {
    let mut ms = vec![];
    for _ in 0..n {
        let start = Instant::now();
        let parsed = Acl::parse(black_box(text));
        let took = start.elapsed();
        black_box(parsed.ok()?);
        ms.push(took.as_secs_f64() * 1e3);
    }
    crate::report::median(&ms)
}

/// Lookups timed for each figure: enough to dwarf the clock's resolution.
const LOOKUPS: u32 = 200_000;

/// Nanoseconds per lookup of `target` (the route of every connection the
/// generator makes) and of a name no rule matches (every label looked up).
pub fn lookups(acl: &Acl, target: Ipv4Addr) -> (f64, f64) {
    let ip = IpAddr::V4(target);
    let start = Instant::now();
    for _ in 0..LOOKUPS {
        black_box(acl.route_ip(black_box(ip)));
    }
    let by_ip = start.elapsed().as_secs_f64() * 1e9 / f64::from(LOOKUPS);
    let start = Instant::now();
    for _ in 0..LOOKUPS {
        black_box(acl.route_name(black_box(UNLISTED_NAME)));
    }
    let by_name = start.elapsed().as_secs_f64() * 1e9 / f64::from(LOOKUPS);
    (by_ip, by_name)
}

/// The ACL chains, in the routing table's order after `ours`.
pub const CHAINS: [&str; 2] = ["ours-acl-proxy", "ours-acl-direct"];

/// One of the ACL chains: the pair with the local given one generated file.
pub struct AclChain {
    pub chain: Chain,
    /// The ACL's text, its file, and the ACL parsed.
    pub text: String,
    pub file: PathBuf,
    pub acl: Acl,
}

/// Starts the two ACL chains (in [`CHAINS`]' order) with `local_args`
/// before `--acl`, each after checking that its file routes `target` as
/// its name says; then sends one request through each and checks that the
/// local's close line says the route.
pub fn start(w: &Workdir, local_args: &[String], target: SocketAddrV4) -> Result<Vec<AclChain>, String> {
    let mut all = vec![];
    for (name, route) in CHAINS.into_iter().zip([Route::Proxy, Route::Direct]) {
        let text = generate(route == Route::Direct);
        let acl = check(&text, *target.ip(), route)?;
        let file = w.write(&format!("{name}.acl"), &text)?;
        let mut args = local_args.to_vec();
        args.extend(["--acl".into(), file.display().to_string()]);
        let mut chain = chains::ours_on(w, name, SERVER_IP, &args, None, false)?;
        let extra = if local_args.is_empty() { String::new() } else { format!("{} ", local_args.join(" ")) };
        chain.about = format!(
            "blocking-local {extra}--acl {name}.acl ({} rules) → TLS → blocking-server on {SERVER_IP}: \
             the targets routed {}",
            acl.rules(),
            route.name()
        );
        loadgen::request(chain.via, target, 7).map_err(|e| format!("{name}: a request failed: {e}"))?;
        let said = format!("route={}", route.name());
        if !w.logged(&format!("{name}-local"), &said, Duration::from_secs(5)) {
            return Err(format!("{name}: no close line with {said} in its local's log"));
        }
        all.push(AclChain { chain, text, file, acl });
    }
    Ok(all)
}

/// The routing table's heading: what the ACL holds and what was measured.
pub fn about(c1: (usize, usize), parses: usize, starts: usize) -> String {
    let (ops, warm) = c1;
    format!(
        "routing by an ACL: blocking-local --acl FILE, a generated file of {RULES} rules: [proxy_all], then a\n\
         [bypass_list] of {} LAN, {V4_RANGES} IPv4 and {V6_RANGES} IPv6 ranges, {PATTERNS} (?:^|\\.)name\\.tld$ \
         domains, {SUFFIX_LINES} ||name\n\
         and {EXACT_LINES} |name lines. The server is on {SERVER_IP}, the targets on 127.0.0.1: ours-acl-direct has\n\
         127.0.0.0/8 among the LAN ranges, ours-acl-proxy not ({} rules). New connections one at a time as\n\
         at c=1 ({ops} after {warm}). RSS: a local alone once listening, {starts} starts a round. Acl::parse: \
         median of\n\
         {parses} a round. Lookups: timed over {LOOKUPS}.\n\n",
        LAN.len() + 1,
        RULES - 1,
    )
}
