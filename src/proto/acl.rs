//! Shadowsocks ACL files: which targets a local sends directly, through the
//! server, or nowhere, and which clients and targets a server refuses.
//!
//! People route with ready-made lists (China's address ranges, gfwlist,
//! the LAN ranges) written for shadowsocks. This module reads them as
//! shadowsocks-rust does (`acl/mod.rs`) and answers its questions the same
//! way, so that a list routes here as it routes there; where it differs on
//! purpose, docs/ROUTING.md says how and why. It is pure: the caller reads
//! the file, resolves names and logs.
//!
//! Almost every line of those lists is an address range or a domain, the
//! latter mostly written as a regular expression of one shape,
//! `(^|\.)example\.com$`. Such lines never reach a regex engine: ranges are
//! merged and searched by bisection, and a domain is a hash set entry found
//! by walking the labels of the name asked about. The few general regular
//! expressions left (the `google.*` country domains, say) go to one
//! `regex::bytes::RegexSet` per list, each pattern checked on its own first
//! so that a bad one is refused with its line number.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use regex::bytes::{RegexBuilder, RegexSet, RegexSetBuilder};

/// The most heap one general regular expression may compile to; a pattern
/// larger than this (`a{1000}{1000}`, say) is refused.
pub const REGEX_SIZE_MAX: usize = 1 << 20;

/// The most heap the general regular expressions of one list may compile to together.
pub const REGEX_SET_SIZE_MAX: usize = 8 << 20;

/// The most heap the regex engine's lazy DFA may hold for one thread that
/// searches; past it, the engine clears its cache or falls back to a slower
/// search. Names are short, so this is rarely reached.
const REGEX_CACHE_MAX: usize = 256 << 10;

/// Where a local sends a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Straight to the target, not through the server.
    Direct,
    /// Through the server.
    Proxy,
    /// Nowhere: the local refuses it.
    Block,
}

impl Route {
    /// The route's name in logs: `direct`, `proxy` or `block`.
    pub fn name(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Proxy => "proxy",
            Route::Block => "block",
        }
    }
}

/// A line of an ACL file that cannot be read, and why.
#[derive(Debug)]
pub struct AclError {
    /// The line's number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

impl std::error::Error for AclError {}

/// What happens to what no rule names. `[proxy_all]`/`[accept_all]` set
/// `BlackList` (proxied, accepted), `[bypass_all]`/`[reject_all]` set
/// `WhiteList` (sent directly, refused); the outbound mode likewise, with
/// `[outbound_allow_all]` and `[outbound_block_all]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    BlackList,
    WhiteList,
}

/// The lists a rule can go to, by the section it follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum List {
    /// `[bypass_list]` or `[black_list]`, and the lines before any list section.
    Bypass,
    /// `[proxy_list]` or `[white_list]`.
    Proxy,
    /// `[block_list]`: not shadowsocks'.
    Block,
    /// `[outbound_block_list]`.
    OutboundBlock,
    /// `[outbound_allow_list]`.
    OutboundAllow,
}

impl List {
    fn section(self) -> &'static str {
        match self {
            List::Bypass => "[bypass_list]",
            List::Proxy => "[proxy_list]",
            List::Block => "[block_list]",
            List::OutboundBlock => "[outbound_block_list]",
            List::OutboundAllow => "[outbound_allow_list]",
        }
    }
}

/// One list's rules.
#[derive(Default)]
struct Rules {
    /// IPv4 ranges, first and last address, sorted and merged.
    v4: Box<[(u32, u32)]>,
    /// IPv6 ranges likewise.
    v6: Box<[(u128, u128)]>,
    /// Names matched exactly (`|name`, `^name$`).
    exact: HashSet<Box<str>>,
    /// Names matched with every name under them (`||name`, `(^|\.)name$`).
    suffix: HashSet<Box<str>>,
    /// The general regular expressions, lowercased.
    regex: Option<RegexSet>,
}

impl Rules {
    fn has_ip(&self) -> bool {
        !self.v4.is_empty() || !self.v6.is_empty()
    }

    fn has_host(&self) -> bool {
        !self.exact.is_empty() || !self.suffix.is_empty() || self.regex.is_some()
    }

    /// Whether `ip` is in one of the ranges. An IPv4 address is also looked
    /// for among the IPv6 ranges as `::ffff:a.b.c.d`, and such an IPv6
    /// address among the IPv4 ranges as `a.b.c.d`.
    fn ip(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                within(&self.v4, u32::from(v4)) || within(&self.v6, u128::from(v4.to_ipv6_mapped()))
            }
            IpAddr::V6(v6) => {
                within(&self.v6, u128::from(v6))
                    || v6.to_ipv4_mapped().is_some_and(|v4| within(&self.v4, u32::from(v4)))
            }
        }
    }

    /// Whether the name (lowercased, with no trailing dot) matches a name
    /// rule: exactly, under a suffix (the name itself, then each name left
    /// when its first label is cut off: `a.b.com`, `b.com`, `com`), or a
    /// general regular expression.
    fn host(&self, name: &str) -> bool {
        if self.exact.contains(name) {
            return true;
        }
        if !self.suffix.is_empty() {
            let mut rest = name;
            loop {
                if self.suffix.contains(rest) {
                    return true;
                }
                match rest.split_once('.') {
                    Some((_, after)) => rest = after,
                    None => break,
                }
            }
        }
        self.regex.as_ref().is_some_and(|set| set.is_match(name.as_bytes()))
    }
}

impl fmt::Debug for Rules {
    /// Counts only: a list may hold thousands of rules.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rules")
            .field("v4_ranges", &self.v4.len())
            .field("v6_ranges", &self.v6.len())
            .field("exact", &self.exact.len())
            .field("suffix", &self.suffix.len())
            .field("regex", &self.regex.as_ref().map_or(0, RegexSet::len))
            .finish()
    }
}

/// Whether `x` is in one of `ranges` (sorted, not overlapping).
fn within<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let after = ranges.partition_point(|&(first, _)| first <= x);
    ranges[..after].last().is_some_and(|&(_, last)| x <= last)
}

/// `ranges` sorted, with those that overlap or touch made one.
fn merged<T: Ord + Copy>(mut ranges: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Box<[(T, T)]> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match out.last_mut() {
            Some(prev) if next(prev.1).is_none_or(|n| first <= n) => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out.into_boxed_slice()
}

/// One list while the file is read.
#[derive(Default)]
struct Building {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    exact: HashSet<Box<str>>,
    suffix: HashSet<Box<str>>,
    regex: Vec<String>,
    /// The line of the last general regular expression, for an error about them all.
    regex_line: usize,
}

impl Building {
    /// A line that is not a section and does not start with `|`: an address
    /// range, an address, a regular expression of a domain's shape, or a
    /// general regular expression.
    fn add(&mut self, line: &str, number: usize) -> Result<(), AclError> {
        if let Some(net) = Net::parse(line) {
            match net {
                Net::V4(addr, len) => self.v4.push(range(u32::from(addr), len, 32)),
                Net::V6(addr, len) => self.v6.push(range(u128::from(addr), len, 128)),
            }
        } else if let Ok(ip) = line.parse::<IpAddr>() {
            match ip {
                IpAddr::V4(v4) => self.v4.push((u32::from(v4), u32::from(v4))),
                IpAddr::V6(v6) => self.v6.push((u128::from(v6), u128::from(v6))),
            }
        } else if let Some((shape, name)) = domain_shape(line) {
            let name = name_rule(&name);
            match shape {
                Shape::Suffix => self.suffix.insert(name),
                Shape::Exact => self.exact.insert(name),
            };
        } else {
            let pattern = line.to_ascii_lowercase();
            regex_builder(&pattern).build().map_err(|e| AclError { line: number, why: regex_error(&e) })?;
            self.regex.push(pattern);
            self.regex_line = number;
        }
        Ok(())
    }

    fn finish(self, list: List) -> Result<Rules, AclError> {
        let regex = if self.regex.is_empty() {
            None
        } else {
            let set = RegexSetBuilder::new(&self.regex)
                .unicode(false)
                .size_limit(REGEX_SET_SIZE_MAX)
                .dfa_size_limit(REGEX_CACHE_MAX)
                .build()
                .map_err(|e| {
                    let why = match e {
                        regex::Error::CompiledTooBig(limit) => format!(
                            "the regular expressions of {} together compile to more than {limit} bytes",
                            list.section()
                        ),
                        other => {
                            format!("the regular expressions of {}: {}", list.section(), regex_error(&other))
                        }
                    };
                    AclError { line: self.regex_line, why }
                })?;
            Some(set)
        };
        let mut exact = self.exact;
        let mut suffix = self.suffix;
        exact.shrink_to_fit();
        suffix.shrink_to_fit();
        Ok(Rules {
            v4: merged(self.v4, |x: u32| x.checked_add(1)),
            v6: merged(self.v6, |x: u128| x.checked_add(1)),
            exact,
            suffix,
            regex,
        })
    }
}

/// How a general regular expression is compiled: on bytes, ASCII only (as
/// shadowsocks-rust does), within the size limits.
fn regex_builder(pattern: &str) -> RegexBuilder {
    let mut b = RegexBuilder::new(pattern);
    b.unicode(false).size_limit(REGEX_SIZE_MAX).dfa_size_limit(REGEX_CACHE_MAX);
    b
}

/// The regex crate's error on one line: its syntax errors span several lines
/// (the pattern, a caret, the error), of which the last says what is wrong.
fn regex_error(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => {
            let last = text.lines().last().unwrap_or_default();
            format!("not a valid regular expression: {}", last.strip_prefix("error: ").unwrap_or(last))
        }
        regex::Error::CompiledTooBig(limit) => {
            format!("regular expression compiles to more than {limit} bytes")
        }
        other => format!("regular expression refused: {other}"),
    }
}

/// The first and last address of the network of `addr` with a prefix of
/// `len` bits out of `bits`, host bits ignored (`10.9.0.32/16` is `10.9.0.0/16`).
fn range<T>(addr: T, len: u8, bits: u32) -> (T, T)
where
    T: Copy + std::ops::Not<Output = T> + std::ops::BitAnd<Output = T> + std::ops::BitOr<Output = T>,
    T: std::ops::Shl<u32, Output = T> + From<u8>,
{
    let ones = !T::from(0u8);
    let mask = if len == 0 { T::from(0u8) } else { ones << (bits - u32::from(len)) };
    let first = addr & mask;
    (first, first | !mask)
}

/// A name rule as stored, and a name as looked up: trailing dots cut off,
/// ASCII letters lowercased.
fn name_rule(name: &str) -> Box<str> {
    name.trim_end_matches('.').to_ascii_lowercase().into_boxed_str()
}

/// A name asked about, as [`name_rule`] makes it, borrowed when it already is.
fn normalized(name: &str) -> Cow<'_, str> {
    let name = name.trim_end_matches('.');
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// What a regular expression of a domain's shape stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// The name and every name under it.
    Suffix,
    /// The name alone.
    Exact,
}

/// The domain rule a regular expression stands for, if it has one of the
/// shapes shadowsocks-rust reads as one (its `TREE_SET_RULE_EQUIV`):
///
/// ```text
/// ^(?:(?:\((?:\?:)?\^\|\\\.\)|(?:\^\.(?:\+|\*))?\\\.)((?:[\w-]+(?:\\\.)?)+)|\^((?:[\w-]+(?:\\\.)?)+))\$?$
/// ```
///
/// that is, a body of letters, digits, `_` and `-` in labels joined by
/// `\.` (a last `\.` allowed), then an optional `$`, after `(^|\.)`,
/// `(?:^|\.)`, `^.+\.`, `^.*\.` or `\.` (a suffix rule) or after `^` (an
/// exact rule). The name is the body with each `\.` made a `.`.
fn domain_shape(line: &str) -> Option<(Shape, String)> {
    let line = line.strip_suffix('$').unwrap_or(line);
    let (shape, body) = [r"(^|\.)", r"(?:^|\.)", r"^.+\.", r"^.*\.", r"\."]
        .iter()
        .find_map(|prefix| line.strip_prefix(prefix))
        .map(|body| (Shape::Suffix, body))
        .or_else(|| line.strip_prefix('^').map(|body| (Shape::Exact, body)))?;
    domain_body(body).then(|| (shape, body.replace(r"\.", ".")))
}

/// Whether `body` is one or more runs of `[A-Za-z0-9_-]`, each followed by
/// an optional `\.` (so it starts with a run and never has `\.\.`).
fn domain_body(body: &str) -> bool {
    let mut bytes = body.as_bytes();
    let mut after_run = false;
    while let Some((&b, rest)) = bytes.split_first() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            after_run = true;
            bytes = rest;
        } else if b == b'\\' && after_run && rest.first() == Some(&b'.') {
            after_run = false;
            bytes = &rest[1..];
        } else {
            return false;
        }
    }
    !body.is_empty()
}

/// An address range as written in a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Net {
    V4(Ipv4Addr, u8),
    V6(Ipv6Addr, u8),
}

impl Net {
    /// `ADDRESS/PREFIX`, as the `ipnet` crate (2.12.3) reads it, which
    /// shadowsocks-rust uses: the address as the standard library reads
    /// it, the prefix 1 or 2 digits up to 32 for IPv4, 1 to 3 digits up to
    /// 128 for IPv6 (leading zeros allowed: `/08`). Host bits are allowed.
    fn parse(s: &str) -> Option<Net> {
        let (addr, prefix) = s.split_once('/')?;
        let len = |max_digits: usize, max: u8| {
            let ok = (1..=max_digits).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_digit());
            ok.then(|| prefix.parse::<u8>().ok()).flatten().filter(|&len| len <= max)
        };
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(v4) => Some(Net::V4(v4, len(2, 32)?)),
            IpAddr::V6(v6) => Some(Net::V6(v6, len(3, 128)?)),
        }
    }
}

/// A parsed ACL file: the local's lists (bypass, proxy and block) and
/// mode, and the server's (clients by the bypass and proxy lists, targets
/// by the outbound lists) and outbound mode.
#[derive(Debug)]
pub struct Acl {
    mode: Mode,
    outbound_mode: Mode,
    bypass: Rules,
    proxy: Rules,
    block: Rules,
    outbound_block: Rules,
    outbound_allow: Rules,
    rules: usize,
    skipped: usize,
}

impl Acl {
    /// Reads an ACL file's text. Each line (`\n` or `\r\n`) is, in this order:
    /// empty or starting with `#` (skipped, as are lines of white space only
    /// and, once trimmed, lines starting with `#`), not ASCII (skipped and
    /// counted, [`Acl::skipped`]), `||name` (the name and every name under
    /// it), `|name` (the name alone), a section, or a rule for the current
    /// list: an address range (`10.9.0.32/16`, host bits allowed), an
    /// address, or a regular expression, of which those of a domain's shape
    /// become name rules. An unknown `[section]` or a regular expression
    /// the regex crate refuses (or one over [`REGEX_SIZE_MAX`]) is an error
    /// naming its line.
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let mut mode = Mode::BlackList;
        let mut outbound_mode = Mode::BlackList;
        let mut lists: [Building; 5] = Default::default();
        let index = |list: List| match list {
            List::Bypass => 0,
            List::Proxy => 1,
            List::Block => 2,
            List::OutboundBlock => 3,
            List::OutboundAllow => 4,
        };
        let mut current = List::Bypass;
        let mut rules = 0;
        let mut skipped = 0;
        for (i, line) in text.split('\n').enumerate() {
            let number = i + 1;
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            // shadowsocks-rust makes these regular expressions: an empty one,
            // which every name matches, and one made of a comment's text.
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !line.is_ascii() {
                skipped += 1;
                continue;
            }
            let list = &mut lists[index(current)];
            if let Some(name) = line.strip_prefix("||") {
                list.suffix.insert(name_rule(name));
                rules += 1;
                continue;
            }
            if let Some(name) = line.strip_prefix('|') {
                list.exact.insert(name_rule(name));
                rules += 1;
                continue;
            }
            match line {
                "[bypass_all]" | "[reject_all]" => mode = Mode::WhiteList,
                "[proxy_all]" | "[accept_all]" => mode = Mode::BlackList,
                "[outbound_block_all]" => outbound_mode = Mode::WhiteList,
                "[outbound_allow_all]" => outbound_mode = Mode::BlackList,
                "[bypass_list]" | "[black_list]" => current = List::Bypass,
                "[proxy_list]" | "[white_list]" => current = List::Proxy,
                "[block_list]" => current = List::Block,
                "[outbound_block_list]" => current = List::OutboundBlock,
                "[outbound_allow_list]" => current = List::OutboundAllow,
                _ if line.starts_with('[') && line.ends_with(']') => {
                    return Err(AclError { line: number, why: format!("unknown section {line}") });
                }
                _ => {
                    list.add(line, number)?;
                    rules += 1;
                }
            }
        }
        let [bypass, proxy, block, outbound_block, outbound_allow] = lists;
        Ok(Acl {
            mode,
            outbound_mode,
            bypass: bypass.finish(List::Bypass)?,
            proxy: proxy.finish(List::Proxy)?,
            block: block.finish(List::Block)?,
            outbound_block: outbound_block.finish(List::OutboundBlock)?,
            outbound_allow: outbound_allow.finish(List::OutboundAllow)?,
            rules,
            skipped,
        })
    }

    /// Rules read (all lists), and non-ASCII lines skipped.
    pub fn rules(&self) -> usize {
        self.rules
    }

    /// Lines skipped because they are not ASCII, as shadowsocks-rust skips
    /// them (with a warning, which is the caller's to log).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The local's route for a name by its name rules: `[block_list]` first
    /// ([`Route::Block`]), then the proxy list ([`Route::Proxy`]), then the
    /// bypass list ([`Route::Direct`]); `None` if no name rule matches, when
    /// [`Acl::route_resolved`] decides by the name's addresses. The name is
    /// matched lowercased and without its trailing dots.
    pub fn route_name(&self, name: &str) -> Option<Route> {
        let name = normalized(name);
        if self.block.host(&name) {
            Some(Route::Block)
        } else if self.proxy.host(&name) {
            Some(Route::Proxy)
        } else if self.bypass.host(&name) {
            Some(Route::Direct)
        } else {
            None
        }
    }

    /// The local's route for an address: `[block_list]` first, then the
    /// bypass list, then the proxy list, then [`Acl::default_route`]. (For
    /// a name the proxy list comes before the bypass list; for an address,
    /// after it, as in shadowsocks-rust.)
    pub fn route_ip(&self, ip: IpAddr) -> Route {
        if self.block.ip(ip) {
            Route::Block
        } else if self.bypass.ip(ip) {
            Route::Direct
        } else if self.proxy.ip(ip) {
            Route::Proxy
        } else {
            self.default_route()
        }
    }

    /// The local's route for what no rule names: [`Route::Proxy`] in
    /// `[proxy_all]` mode (the default), [`Route::Direct`] in `[bypass_all]`.
    pub fn default_route(&self) -> Route {
        match self.mode {
            Mode::BlackList => Route::Proxy,
            Mode::WhiteList => Route::Direct,
        }
    }

    /// Whether [`Acl::route_resolved`] can answer anything but
    /// [`Acl::default_route`], so that a name no name rule matched is worth
    /// resolving: `[block_list]` has address rules, or the list the mode
    /// checks does (`[proxy_all]`: the bypass list; `[bypass_all]`: the
    /// proxy list).
    pub fn needs_addresses(&self) -> bool {
        self.block.has_ip() || self.mode_list().has_ip()
    }

    /// The local's route for a name no name rule matched, by the addresses
    /// it resolved to (none if it did not resolve), as shadowsocks-rust's
    /// `check_target_bypassed`: [`Route::Block`] if any is in
    /// `[block_list]`; in `[proxy_all]` mode, [`Route::Direct`] if any is in
    /// the bypass list; in `[bypass_all]` mode, [`Route::Proxy`] if any is
    /// in the proxy list; else [`Acl::default_route`].
    pub fn route_resolved(&self, addrs: &[IpAddr]) -> Route {
        if addrs.iter().any(|&ip| self.block.ip(ip)) {
            return Route::Block;
        }
        if addrs.iter().any(|&ip| self.mode_list().ip(ip)) {
            return match self.mode {
                Mode::BlackList => Route::Direct,
                Mode::WhiteList => Route::Proxy,
            };
        }
        self.default_route()
    }

    /// The list that makes an exception to the mode: the bypass list when
    /// everything is proxied, the proxy list when nothing is.
    fn mode_list(&self) -> &Rules {
        match self.mode {
            Mode::BlackList => &self.bypass,
            Mode::WhiteList => &self.proxy,
        }
    }

    /// Whether a server refuses a client from `ip`: in `[accept_all]` mode
    /// (the default), if `ip` is in `[black_list]`; in `[reject_all]` mode,
    /// unless it is in `[white_list]`.
    pub fn client_refused(&self, ip: IpAddr) -> bool {
        match self.mode {
            Mode::BlackList => self.bypass.ip(ip),
            Mode::WhiteList => !self.proxy.ip(ip),
        }
    }

    /// Whether a server's name rules block a target name: `Some(true)` if it
    /// matches `[outbound_block_list]`, else `Some(false)` if it matches
    /// `[outbound_allow_list]`, else `None`, when
    /// [`Acl::outbound_resolved_blocked`] decides by its addresses.
    pub fn outbound_name(&self, name: &str) -> Option<bool> {
        let name = normalized(name);
        if self.outbound_block.host(&name) {
            Some(true)
        } else if self.outbound_allow.host(&name) {
            Some(false)
        } else {
            None
        }
    }

    /// Whether a server blocks a target address: if it is in
    /// `[outbound_block_list]`; else not if it is in
    /// `[outbound_allow_list]`; else as the outbound mode says
    /// (`[outbound_allow_all]`, the default: allowed).
    pub fn outbound_ip_blocked(&self, ip: IpAddr) -> bool {
        if self.outbound_block.ip(ip) {
            true
        } else if self.outbound_allow.ip(ip) {
            false
        } else {
            self.outbound_default_blocked()
        }
    }

    /// Whether [`Acl::outbound_resolved_blocked`] can answer anything but
    /// the outbound mode's default: the list the outbound mode checks has
    /// address rules.
    pub fn outbound_needs_addresses(&self) -> bool {
        self.outbound_mode_list().has_ip()
    }

    /// Whether a server blocks a target name no name rule matched, by the
    /// addresses it resolved to, as shadowsocks-rust's
    /// `check_outbound_blocked`: in `[outbound_allow_all]` mode, blocked if
    /// any is in `[outbound_block_list]`; in `[outbound_block_all]` mode,
    /// allowed if any is in `[outbound_allow_list]`; else the mode's default.
    pub fn outbound_resolved_blocked(&self, addrs: &[IpAddr]) -> bool {
        if addrs.iter().any(|&ip| self.outbound_mode_list().ip(ip)) {
            return self.outbound_mode == Mode::BlackList;
        }
        self.outbound_default_blocked()
    }

    fn outbound_default_blocked(&self) -> bool {
        self.outbound_mode == Mode::WhiteList
    }

    fn outbound_mode_list(&self) -> &Rules {
        match self.outbound_mode {
            Mode::BlackList => &self.outbound_block,
            Mode::WhiteList => &self.outbound_allow,
        }
    }

    /// Whether [`Acl::client_refused`] refuses any client: in
    /// `[reject_all]` mode, or with address rules in `[black_list]`.
    pub fn has_client_rules(&self) -> bool {
        self.mode == Mode::WhiteList || self.bypass.has_ip()
    }

    /// Whether a server's outbound checks can block any target: in
    /// `[outbound_block_all]` mode, or with rules in `[outbound_block_list]`.
    pub fn has_outbound_rules(&self) -> bool {
        self.outbound_mode == Mode::WhiteList
            || self.outbound_block.has_ip()
            || self.outbound_block.has_host()
    }

    /// Whether a local's route can be anything but [`Route::Proxy`]: in
    /// `[bypass_all]` mode, or with rules in the bypass list or `[block_list]`.
    pub fn has_local_rules(&self) -> bool {
        self.mode == Mode::WhiteList || [&self.bypass, &self.block].iter().any(|r| r.has_ip() || r.has_host())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> Acl {
        Acl::parse(text).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Where a name goes once resolved to `addrs`, as a local decides it.
    fn route(acl: &Acl, name: &str, addrs: &[&str]) -> Route {
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
        acl.route_name(name).unwrap_or_else(|| acl.route_resolved(&addrs))
    }

    #[test]
    fn route_names() {
        assert_eq!(
            [Route::Direct, Route::Proxy, Route::Block].map(Route::name),
            ["direct", "proxy", "block"]
        );
    }

    #[test]
    fn each_section_and_its_alias() {
        for (text, default) in [
            ("", Route::Proxy),
            ("[proxy_all]", Route::Proxy),
            ("[accept_all]", Route::Proxy),
            ("[bypass_all]", Route::Direct),
            ("[reject_all]", Route::Direct),
            ("[bypass_all]\n[proxy_all]", Route::Proxy),
        ] {
            assert_eq!(acl(text).default_route(), default, "{text:?}");
        }
        for section in ["[bypass_list]", "[black_list]"] {
            let a = acl(&format!("[proxy_list]\n{section}\n||a.com\n10.0.0.0/8"));
            assert_eq!(a.route_name("a.com"), Some(Route::Direct), "{section}");
            assert_eq!(a.route_ip(ip("10.1.2.3")), Route::Direct, "{section}");
        }
        for section in ["[proxy_list]", "[white_list]"] {
            let a = acl(&format!("[bypass_all]\n{section}\n||a.com\n10.0.0.0/8"));
            assert_eq!(a.route_name("a.com"), Some(Route::Proxy), "{section}");
            assert_eq!(a.route_ip(ip("10.1.2.3")), Route::Proxy, "{section}");
            assert_eq!(a.route_ip(ip("11.1.2.3")), Route::Direct, "{section}");
        }
        let a = acl("[block_list]\n||ads.example\n203.0.113.0/24");
        assert_eq!(a.route_name("x.ads.example"), Some(Route::Block));
        assert_eq!(a.route_ip(ip("203.0.113.9")), Route::Block);
        let a = acl("[outbound_block_list]\n||bad.example\n[outbound_allow_list]\n||good.example");
        assert_eq!(a.outbound_name("bad.example"), Some(true));
        assert_eq!(a.outbound_name("good.example"), Some(false));
        assert_eq!(a.route_name("bad.example"), None, "outbound lists are not the local's");
        assert!(!acl("").outbound_ip_blocked(ip("1.2.3.4")));
        assert!(acl("[outbound_block_all]").outbound_ip_blocked(ip("1.2.3.4")));
        assert!(!acl("[outbound_block_all]\n[outbound_allow_all]").outbound_ip_blocked(ip("1.2.3.4")));
    }

    #[test]
    fn lines_before_any_list_section_are_bypass_rules() {
        let a = acl("||direct.example\n[proxy_all]\n10.0.0.0/8\n[proxy_list]\n||proxied.example");
        assert_eq!(a.route_name("direct.example"), Some(Route::Direct));
        assert_eq!(a.route_ip(ip("10.0.0.1")), Route::Direct);
        assert_eq!(a.route_name("proxied.example"), Some(Route::Proxy));
        assert_eq!(a.rules(), 3);
    }

    #[test]
    fn each_line_shape() {
        let a = acl(concat!(
            "[proxy_list]\n",
            "||suffix.example\n",
            "|exact.example\n",
            "10.9.0.32/16\n",
            "192.0.2.7\n",
            "2001:db8::/32\n",
            "::1\n",
            "(^|\\.)regex-suffix\\.example$\n",
            "^regex-exact\\.example$\n",
            "(?:^|\\.)google(\\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?){1,2}$\n",
        ));
        assert_eq!(a.rules(), 9);
        let proxied = |n: &str| a.route_name(n) == Some(Route::Proxy);
        assert!(proxied("suffix.example") && proxied("a.b.suffix.example"));
        assert!(!proxied("xsuffix.example") && !proxied("example"));
        assert!(proxied("exact.example") && !proxied("a.exact.example"));
        assert!(proxied("regex-suffix.example") && proxied("www.regex-suffix.example"));
        assert!(proxied("regex-exact.example") && !proxied("www.regex-exact.example"));
        assert!(proxied("google.com") && proxied("www.google.co.jp") && proxied("google.de"));
        assert!(!proxied("google.a.b.c") && !proxied("notgoogle.com"));
        for inside in ["10.9.0.0", "10.9.255.255", "192.0.2.7", "2001:db8::1", "::1"] {
            assert_eq!(a.route_ip(ip(inside)), Route::Proxy, "{inside}");
        }
        let b =
            acl(&format!("[bypass_all]\n{}", "[proxy_list]\n10.9.0.32/16\n192.0.2.7\n2001:db8::/32\n::1"));
        for outside in ["10.8.255.255", "10.10.0.0", "192.0.2.8", "2001:db9::", "::2"] {
            assert_eq!(b.route_ip(ip(outside)), Route::Direct, "{outside}");
        }
    }

    #[test]
    fn address_ranges_are_read_as_the_ipnet_crate_reads_them() {
        // Each line, and the address it must cover (None: not a range, so a
        // regular expression or, if the regex crate refuses it, an error).
        let cases: &[(&str, Option<&str>)] = &[
            ("0.0.0.0/0", Some("255.255.255.255")),
            ("010.0.0.0/8", None), // no leading zeros in an octet (ipnet 2.12.0 took them)
            ("10.0.0.0/08", Some("10.1.0.0")),
            ("10.0.0.0/008", None),
            ("10.0.0.0/33", None),
            ("256.0.0.0/8", None),
            ("10.0.0/8", None),
            ("::/0", Some("ffff::1")),
            ("::ffff:127.0.0.1/104", Some("127.9.9.9")),
            ("::1:2:3:4:5:6:7:8/128", None), // `::` for no group (ipnet 2.12.0 took it)
            ("1:2:3:4:5:6:7::/112", Some("1:2:3:4:5:6:7:1")),
            ("1:2:3:4:5:6:1.2.3.4/128", Some("1:2:3:4:5:6:102:304")),
            ("1.2.3.4::/128", None),
            ("fe80::/0129", None),
            ("fe80::/129", None),
            ("FE80::/10", Some("febf::1")),
            ("fe80::00001/128", None),
            ("10.0.0.1", Some("10.0.0.1")),
            ("::ffff:10.0.0.1", Some("10.0.0.1")),
        ];
        for &(line, covered) in cases {
            assert_eq!(Net::parse(line).is_some(), covered.is_some() && line.contains('/'), "{line}");
            if let Some(covered) = covered {
                let a = acl(&format!("[bypass_list]\n{line}"));
                assert_eq!(a.route_ip(ip(covered)), Route::Direct, "{line} covers {covered}");
            }
        }
        // Not ranges, these lines are regular expressions, as in shadowsocks-rust.
        let a = acl("10.0.0.0/33");
        assert_eq!(a.route_ip(ip("10.0.0.0")), Route::Proxy);
        assert_eq!(a.route_name("10a0b0c0/33"), Some(Route::Direct));
    }

    #[test]
    fn regular_expressions_of_a_domains_shape_become_name_rules() {
        // (line, the rule shadowsocks-rust's TREE_SET_RULE_EQUIV makes of it)
        let converted: &[(&str, Shape, &str)] = &[
            (r"(^|\.)a\.com$", Shape::Suffix, "a.com"),
            (r"(?:^|\.)a\.com$", Shape::Suffix, "a.com"),
            (r"\.a\.com$", Shape::Suffix, "a.com"),
            (r"^.*\.a\.com", Shape::Suffix, "a.com"),
            (r"^.+\.a\.com$", Shape::Suffix, "a.com"),
            (r"(^|\.)a\.com", Shape::Suffix, "a.com"),
            (r"(^|\.)A-b_9\.Com\.$", Shape::Suffix, "A-b_9.Com."),
            (r"(^|\.)com$", Shape::Suffix, "com"),
            (r"(?:^|\.)xn--p1ai$", Shape::Suffix, "xn--p1ai"),
            (r"^a\.com$", Shape::Exact, "a.com"),
            (r"^a\.com", Shape::Exact, "a.com"),
            (r"^localhost$", Shape::Exact, "localhost"),
        ];
        for &(line, shape, name) in converted {
            assert_eq!(domain_shape(line), Some((shape, name.to_string())), "{line}");
        }
        let general = [
            r"(?:^|\.)google(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?){1,2}$",
            r"(?:^|\.)q=freedom$",
            r"(?:^|\.)bbs\.sina\.com%2f$",
            r"(^|\.)a\.com$$",
            r"(^|\.)\.a\.com$",
            r"(^|\.)a\.\.com$",
            r"(^|\.)a.com$",
            r"(^|\.)$",
            r"^$",
            r"^.?\.a\.com$",
            r"^.+a\.com$",
            r"\\.a\.com$",
            r"a\.com$",
            r"(^|\\.)a\.com$",
            r"(^|\.)a\.com$x",
            r"(?:^|\.)a\.c*m$",
        ];
        for line in general {
            assert_eq!(domain_shape(line), None, "{line}");
        }
        // What they match once read: the names the rule stands for,
        // including `a.com` itself for `\.a\.com$`, as in shadowsocks-rust.
        let a = acl("\\.a\\.com$\n^B\\.com$\n(^|\\.)C\\.com\\.$");
        assert_eq!(a.route_name("a.com"), Some(Route::Direct));
        assert_eq!(a.route_name("x.A.com"), Some(Route::Direct));
        assert_eq!(a.route_name("b.com"), Some(Route::Direct));
        assert_eq!(a.route_name("x.b.com"), None);
        assert_eq!(a.route_name("x.c.com."), Some(Route::Direct));
    }

    #[test]
    fn general_regular_expressions_are_lowercased_and_ascii_only() {
        // shadowsocks-rust lowercases the pattern: `[A-Z]` is `[a-z]`, `\D` is `\d`.
        let a = acl("^[A-Z]+\\.example$\n^\\D+\\.digits$");
        assert_eq!(a.route_name("ABC.example"), Some(Route::Direct));
        assert_eq!(a.route_name("123.digits"), Some(Route::Direct));
        assert_eq!(a.route_name("abc.digits"), None);
        // Without Unicode, `.` is any byte but a newline.
        let a = acl("^.\\.example$");
        assert_eq!(a.route_name("é.example"), None, "two bytes");
        assert_eq!(a.route_name("x.example"), Some(Route::Direct));
    }

    #[test]
    fn the_proxy_list_wins_for_names_and_the_bypass_list_for_addresses() {
        let a = acl("[bypass_list]\n||both.example\n10.0.0.0/8\n[proxy_list]\n||both.example\n10.0.0.0/8");
        assert_eq!(a.route_name("both.example"), Some(Route::Proxy));
        assert_eq!(a.route_ip(ip("10.0.0.1")), Route::Direct);
        let a = acl("[block_list]\n||both.example\n10.0.0.0/8\n[proxy_list]\n||both.example\n10.0.0.0/8");
        assert_eq!(a.route_name("both.example"), Some(Route::Block));
        assert_eq!(a.route_ip(ip("10.0.0.1")), Route::Block);
    }

    #[test]
    fn ipv4_mapped_addresses_match_both_ways() {
        let a = acl("[bypass_list]\n192.0.2.0/24\n::ffff:198.51.100.0/120\n[proxy_list]\n203.0.113.5");
        assert_eq!(a.route_ip(ip("::ffff:192.0.2.1")), Route::Direct);
        assert_eq!(a.route_ip(ip("198.51.100.9")), Route::Direct);
        assert_eq!(a.route_ip(ip("::ffff:203.0.113.5")), Route::Proxy);
        assert_eq!(a.route_ip(ip("::192.0.2.1")), Route::Proxy, "IPv4-compatible is not mapped");
        assert_eq!(a.route_ip(ip("198.51.101.0")), Route::Proxy);
    }

    #[test]
    fn names_match_whatever_their_case_and_trailing_dots() {
        let a = acl("||Example.COM.\n|Exact.Example.\n");
        for name in ["example.com", "EXAMPLE.com.", "www.Example.Com..", "exact.example", "EXACT.EXAMPLE."] {
            assert_eq!(a.route_name(name), Some(Route::Direct), "{name}");
        }
        assert_eq!(a.route_name("www.exact.example"), None);
    }

    #[test]
    fn suffix_rules_match_by_whole_labels() {
        let a = acl("||b.com\n||.dot\n||\n|");
        assert_eq!(a.route_name("b.com"), Some(Route::Direct));
        assert_eq!(a.route_name("a.b.com"), Some(Route::Direct));
        assert_eq!(a.route_name("ab.com"), None);
        assert_eq!(a.route_name("com"), None);
        // The odd rules match only the odd names shadowsocks-rust's tree gives them.
        assert_eq!(a.route_name("x..dot"), Some(Route::Direct));
        assert_eq!(a.route_name("x.dot"), None);
        assert_eq!(a.route_name(""), Some(Route::Direct));
        assert_eq!(a.route_name("."), Some(Route::Direct));
        assert_eq!(a.route_name("x"), None);
    }

    #[test]
    fn comments_blank_lines_and_windows_line_endings() {
        let text = "# a comment\r\n\r\n   \r\n\t\r\n  # an indented comment (a|)\r\n[bypass_all]\r\n\
                    [proxy_list]\r\n||a.com\r\n10.0.0.0/8 \r\n  ^b\\.com$\t\r\n";
        let a = acl(text);
        assert_eq!(a.rules(), 3);
        assert_eq!(a.default_route(), Route::Direct);
        assert_eq!(a.route_name("x.a.com"), Some(Route::Proxy));
        assert_eq!(a.route_name("b.com"), Some(Route::Proxy));
        assert_eq!(a.route_name("c.com"), None, "no line became a regex that matches everything");
        assert_eq!(a.route_ip(ip("10.1.1.1")), Route::Proxy);
    }

    #[test]
    fn non_ascii_lines_are_skipped_and_counted() {
        let a =
            acl("||a.com\n||bücher.example\n(^|\\.)例子\\.测试$\n# ünïcode comment\n\u{3000}\n10.0.0.0/8");
        assert_eq!((a.rules(), a.skipped()), (2, 2));
    }

    #[test]
    fn errors_name_their_line() {
        let err = |text: &str| Acl::parse(text).unwrap_err();
        let e = err("[proxy_all]\n||a.com\n\n[proxy-list]\n||b.com");
        assert_eq!((e.line, e.why.as_str()), (4, "unknown section [proxy-list]"));
        assert_eq!(e.to_string(), "line 4: unknown section [proxy-list]");
        for section in ["[PROXY_LIST]", "[ proxy_list ]", "[::1]", "[]", "[a-z]"] {
            assert_eq!(err(&format!("\n{section}")).line, 2, "{section}");
        }
        let e = err("||a.com\n(^|\\.)b\\.com$\n(unclosed\n[nope]");
        assert_eq!(e.line, 3);
        assert_eq!(e.why, "not a valid regular expression: unclosed group");
        let e = err("a{1000}{1000}");
        assert_eq!(e.line, 1);
        assert_eq!(e.why, "regular expression compiles to more than 1048576 bytes");
        // Each under the limit, together over the list's: the line of the last.
        let text: String = (0..12).map(|i| format!("^{i}[a-z]{{12000}}\n")).collect();
        let e = err(&format!("[proxy_list]\n{text}"));
        assert_eq!(e.line, 13);
        assert_eq!(
            e.why,
            "the regular expressions of [proxy_list] together compile to more than 8388608 bytes"
        );
        assert!(err("\\p{Greek}").why.starts_with("not a valid regular expression"), "no Unicode classes");
        let source: &dyn std::error::Error = &e;
        assert!(source.source().is_none());
    }

    #[test]
    fn the_local_resolves_only_when_addresses_can_change_the_route() {
        // [proxy_all]: a name no rule matches goes direct if any address is in the bypass list.
        let a = acl("[proxy_all]\n[bypass_list]\n10.0.0.0/8\n||lan.example\n[proxy_list]\n192.168.0.0/16");
        assert!(a.needs_addresses());
        assert_eq!(route(&a, "x.example", &["1.1.1.1", "10.0.0.1"]), Route::Direct);
        assert_eq!(route(&a, "x.example", &["1.1.1.1"]), Route::Proxy);
        assert_eq!(route(&a, "x.example", &[]), Route::Proxy);
        assert_eq!(route(&a, "lan.example", &["1.1.1.1"]), Route::Direct);
        // [bypass_all]: proxied if any address is in the proxy list; the bypass list is not checked.
        let a = acl("[bypass_all]\n[bypass_list]\n10.0.0.0/8\n[proxy_list]\n8.8.8.0/24");
        assert!(a.needs_addresses());
        assert_eq!(route(&a, "x.example", &["10.0.0.1", "8.8.8.8"]), Route::Proxy);
        assert_eq!(route(&a, "x.example", &["9.9.9.9"]), Route::Direct);
        // Address rules only in the list the mode does not check: no need to resolve.
        let a = acl("[bypass_all]\n[bypass_list]\n10.0.0.0/8\n[proxy_list]\n||p.example");
        assert!(!a.needs_addresses());
        assert_eq!(a.route_resolved(&[ip("10.0.0.1")]), Route::Direct);
        // [block_list] addresses: always worth resolving, and they come first.
        let a = acl("[bypass_list]\n10.0.0.0/8\n[block_list]\n192.0.2.0/24");
        assert!(a.needs_addresses());
        assert_eq!(route(&a, "x.example", &["10.0.0.1", "192.0.2.1"]), Route::Block);
        assert!(!acl("||a.com\n[proxy_list]\n10.0.0.0/8").needs_addresses());
    }

    #[test]
    fn the_server_decisions() {
        // [accept_all] (the default): clients in [black_list] are refused.
        let a = acl("[black_list]\n192.0.2.0/24\n[white_list]\n192.0.2.1");
        assert!(a.has_client_rules());
        assert!(a.client_refused(ip("192.0.2.1")));
        assert!(a.client_refused(ip("::ffff:192.0.2.9")));
        assert!(!a.client_refused(ip("198.51.100.1")));
        // [reject_all]: every client not in [white_list] is.
        let a = acl("[reject_all]\n[white_list]\n127.0.0.0/8\n::1");
        assert!(a.has_client_rules());
        assert!(!a.client_refused(ip("127.0.0.1")) && !a.client_refused(ip("::1")));
        assert!(a.client_refused(ip("192.0.2.1")));
        assert!(acl("[reject_all]").client_refused(ip("127.0.0.1")));
        assert!(!acl("[white_list]\n10.0.0.0/8\n||a.com").has_client_rules());

        // Targets.
        let a = acl(concat!(
            "[outbound_block_list]\n10.0.0.0/8\n||blocked.example\n",
            "[outbound_allow_list]\n10.1.0.0/16\n||allowed.example\n||blocked.example\n"
        ));
        assert!(a.has_outbound_rules() && a.outbound_needs_addresses());
        assert_eq!(a.outbound_name("x.blocked.example"), Some(true));
        assert_eq!(a.outbound_name("allowed.example"), Some(false));
        assert_eq!(a.outbound_name("other.example"), None);
        assert!(a.outbound_ip_blocked(ip("10.1.0.1")), "the block list first");
        assert!(!a.outbound_ip_blocked(ip("1.1.1.1")));
        assert!(a.outbound_resolved_blocked(&[ip("1.1.1.1"), ip("10.2.0.1")]));
        assert!(!a.outbound_resolved_blocked(&[ip("1.1.1.1")]));
        assert!(!a.outbound_resolved_blocked(&[]));
        // [outbound_block_all]: allowed only if an address is in the allow
        // list; the block list is not checked for a name's addresses.
        let a =
            acl("[outbound_block_all]\n[outbound_block_list]\n10.0.0.0/8\n[outbound_allow_list]\n10.0.0.0/7");
        assert!(a.has_outbound_rules() && a.outbound_needs_addresses());
        assert!(a.outbound_ip_blocked(ip("10.0.0.1")));
        assert!(!a.outbound_ip_blocked(ip("11.0.0.1")));
        assert!(a.outbound_ip_blocked(ip("12.0.0.1")));
        assert!(!a.outbound_resolved_blocked(&[ip("10.0.0.1")]));
        assert!(a.outbound_resolved_blocked(&[ip("12.0.0.1")]));
        assert!(a.outbound_resolved_blocked(&[]));
        let a = acl("[outbound_allow_list]\n10.0.0.0/8");
        assert!(!a.has_outbound_rules() && !a.outbound_needs_addresses());
        assert!(!acl("[outbound_block_list]\n||a.com").outbound_needs_addresses());
    }

    #[test]
    fn which_sides_a_file_has_rules_for() {
        let sides = |text: &str| {
            let a = acl(text);
            (a.has_local_rules(), a.has_client_rules(), a.has_outbound_rules())
        };
        assert_eq!(sides(""), (false, false, false));
        assert_eq!(sides("[proxy_list]\n||a.com"), (false, false, false));
        assert_eq!(sides("||a.com"), (true, false, false));
        assert_eq!(sides("10.0.0.0/8"), (true, true, false));
        assert_eq!(sides("[bypass_all]"), (true, true, false));
        assert_eq!(sides("[block_list]\n||a.com"), (true, false, false));
        assert_eq!(sides("[outbound_block_list]\n10.0.0.0/8"), (false, false, true));
        assert_eq!(sides("[outbound_block_all]"), (false, false, true));
    }

    /// The shape of android's bypass-lan-china list: everything proxied but
    /// the private ranges and some ranges and domains of one country, with a
    /// proxy list of domains and general regular expressions that wins over
    /// them for names.
    const BYPASS_LAN_CHINA_LIKE: &str = r"[proxy_all]

[bypass_list]
0.0.0.0/8
10.0.0.0/8
100.64.0.0/10
127.0.0.0/8
169.254.0.0/16
172.16.0.0/12
192.168.0.0/16
224.0.0.0/3
fc00::/7
fe80::/10
1.0.1.0/24
1.0.2.0/23
36.0.0.0/10
2400:da00::/32
2001:da8::/32
(?:^|\.)cn$
(?:^|\.)baidu\.com$
(?:^|\.)qq\.com$
[proxy_list]
(?:^|\.)googlevideo\.com$
(?:^|\.)google(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?){1,2}$
(?:^|\.)q=freedom$
(?:^|\.)gov\.cn$
";

    #[test]
    fn a_bypass_lan_china_like_file() {
        let a = acl(BYPASS_LAN_CHINA_LIKE);
        assert_eq!((a.rules(), a.skipped()), (22, 0));
        assert!(a.needs_addresses() && a.has_local_rules());
        assert_eq!(a.route_name("www.baidu.com"), Some(Route::Direct));
        assert_eq!(a.route_name("news.cn"), Some(Route::Direct));
        assert_eq!(a.route_name("www.gov.cn"), Some(Route::Proxy), "the proxy list first");
        assert_eq!(a.route_name("www.google.com.hk"), Some(Route::Proxy));
        assert_eq!(a.route_name("x.q=freedom"), Some(Route::Proxy));
        assert_eq!(a.route_name("example.org"), None);
        for (addr, want) in [
            ("192.168.1.1", Route::Direct),
            ("10.0.0.1", Route::Direct),
            ("36.1.2.3", Route::Direct),
            ("2001:da8::1", Route::Direct),
            ("fe80::1", Route::Direct),
            ("::1", Route::Proxy),
            ("8.8.8.8", Route::Proxy),
            ("1.0.3.0", Route::Direct),
            ("1.0.4.0", Route::Proxy),
        ] {
            assert_eq!(a.route_ip(ip(addr)), want, "{addr}");
        }
        assert_eq!(a.route_resolved(&[ip("36.1.2.3")]), Route::Direct);
    }

    /// The shape of a gfwlist: nothing proxied but a list of domains.
    const GFWLIST_LIKE: &str = r"#
# a list of blocked domains
#
[bypass_all]

[proxy_list]
(^|\.)blocked\.example$
(^|\.)twitter\.com$
(?:^|\.)blogspot(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?){1,2}$
^exact\.example$
1.0.0.0/24
";

    #[test]
    fn a_gfwlist_like_file() {
        let a = acl(GFWLIST_LIKE);
        assert_eq!(a.default_route(), Route::Direct);
        assert_eq!(route(&a, "mobile.twitter.com", &[]), Route::Proxy);
        assert_eq!(route(&a, "x.blogspot.co.uk", &[]), Route::Proxy);
        assert_eq!(route(&a, "exact.example", &[]), Route::Proxy);
        assert_eq!(route(&a, "baidu.com", &["220.181.38.148"]), Route::Direct);
        assert_eq!(route(&a, "cdn.example", &["1.0.0.1"]), Route::Proxy);
        assert!(
            a.has_client_rules() && a.client_refused(ip("8.8.8.8")),
            "[bypass_all] refuses the clients it does not list"
        );
    }

    #[test]
    fn a_server_block_list_like_file() {
        let a = acl(
            "# blocked targets\n\n[outbound_block_list]\n127.0.0.0/8\n::1/128\n::ffff:127.0.0.1/104\nfc00::/7\n",
        );
        assert!(a.has_outbound_rules() && !a.has_client_rules() && !a.has_local_rules());
        assert!(a.outbound_ip_blocked(ip("127.0.0.1")) && a.outbound_ip_blocked(ip("::ffff:127.0.0.2")));
        assert!(a.outbound_ip_blocked(ip("fd00::1")) && !a.outbound_ip_blocked(ip("2001:db8::1")));
        assert_eq!(a.outbound_name("localhost"), None);
        assert!(a.outbound_resolved_blocked(&[ip("127.0.0.1")]));
    }

    #[test]
    fn ranges_are_merged() {
        let a = acl("10.0.0.0/9\n10.128.0.0/9\n10.0.0.0/16\n11.0.0.0\n11.0.0.1\n255.255.255.255\n0.0.0.0/1\n::/0\n::1");
        assert_eq!((a.bypass.v4.len(), a.bypass.v6.len()), (2, 1));
        assert_eq!(a.bypass.v4[0], (0, u32::MAX >> 1));
        assert_eq!(
            merged(vec![(5u8, 9), (0, 4), (11, 12), (8, 10), (255, 255)], |x| x.checked_add(1)).as_ref(),
            [(0, 12), (255, 255)]
        );
        assert!(within(&[(1u8, 3), (7, 7)], 7) && !within(&[(1u8, 3), (7, 7)], 4) && !within(&[(1u8, 3)], 0));
        assert!(!within::<u8>(&[], 0));
    }

    #[test]
    fn debug_shows_counts_not_rules() {
        let text: String = (0..2000).map(|i| format!("||n{i}.example\n")).collect();
        let shown = format!("{:?}", acl(&text));
        assert!(shown.len() < 1000, "{shown}");
        assert!(shown.contains("suffix: 2000"), "{shown}");
    }

    #[test]
    fn an_acl_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Acl>();
    }

    /// 10,000 lines, half address ranges and half domain regular
    /// expressions, as the large real lists are: read in milliseconds.
    #[test]
    fn ten_thousand_rules() {
        let mut text = String::from("[proxy_all]\n[bypass_list]\n");
        for i in 0..5000u32 {
            let [a, b, c, _] = (0x0100_0000 + i * 4096).to_be_bytes();
            text.push_str(&format!("{a}.{b}.{c}.0/20\n(^|\\.)site{i}\\.example$\n"));
        }
        let start = std::time::Instant::now();
        let a = acl(&text);
        println!("10,000 rules parsed in {:?}", start.elapsed());
        assert_eq!(a.rules(), 10_000);
        assert_eq!(a.bypass.v4.len(), 1, "the ranges follow each other");
        assert_eq!(a.bypass.suffix.len(), 5000);
        assert_eq!(a.route_name("www.site4999.example"), Some(Route::Direct));
        assert_eq!(a.route_name("site5000.example"), None);
        assert_eq!(a.route_ip(ip("1.0.0.1")), Route::Direct);
        assert_eq!(a.route_ip(ip("2.56.127.255")), Route::Direct);
        assert_eq!(a.route_ip(ip("2.56.128.0")), Route::Proxy);
    }
}
