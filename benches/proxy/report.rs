//! Figures, their medians, the table, the ratios and the latency chart (SVG
//! written by hand).

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::udp::{UDP_SIZES, WINDOW};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Fig {
    Up,
    Down,
    Cpu,
    C1Ops,
    C1P50,
    C1P99,
    C1Cpu,
    C32Ops,
    C32P99,
    C32Cpu,
    Mem,
    Threads,
    Ttfb,
    /// UDP figures, for a payload of this many bytes.
    UdpP50(usize),
    UdpP99(usize),
    UdpRate(usize),
    UdpLost(usize),
    ScaleHeld,
    ScaleRss,
    ScaleThreads,
    /// The routing table's own figures (see [`routing`]): a local's RSS once
    /// it listens, what its ACL adds to that, and the ACL's parse and lookups
    /// timed in the bench's process.
    LocalRss,
    AclRss,
    AclParse,
    AclLookupIp,
    AclLookupName,
    /// The DNS table's figures (see [`dns`]), with this many queries in
    /// flight: queries answered a second, latencies, the share of queries
    /// not answered (SERVFAIL or lost), and the local's and the server's
    /// CPU per query.
    DnsOps(usize),
    DnsP50(usize),
    DnsP99(usize),
    DnsFailed(usize),
    DnsLocalCpu(usize),
    DnsServerCpu(usize),
}

/// Every figure, in the order of the table's rows.
pub fn all() -> Vec<Fig> {
    let mut v = vec![
        Fig::Up,
        Fig::Down,
        Fig::Cpu,
        Fig::C1Ops,
        Fig::C1P50,
        Fig::C1P99,
        Fig::C1Cpu,
        Fig::C32Ops,
        Fig::C32P99,
        Fig::C32Cpu,
        Fig::Mem,
        Fig::Threads,
        Fig::Ttfb,
    ];
    for size in UDP_SIZES {
        v.extend([Fig::UdpP50(size), Fig::UdpP99(size), Fig::UdpRate(size), Fig::UdpLost(size)]);
    }
    v.extend([Fig::ScaleHeld, Fig::ScaleRss, Fig::ScaleThreads]);
    v
}

/// The figures of the routing table, in the order of its rows.
pub fn routing() -> Vec<Fig> {
    vec![
        Fig::C1Ops,
        Fig::C1P50,
        Fig::C1P99,
        Fig::C1Cpu,
        Fig::LocalRss,
        Fig::AclRss,
        Fig::AclParse,
        Fig::AclLookupIp,
        Fig::AclLookupName,
    ]
}

/// The figures of the DNS table, in the order of its rows.
pub fn dns() -> Vec<Fig> {
    let mut v = vec![];
    for c in [1, crate::dns::SOCKETS] {
        v.extend([
            Fig::DnsOps(c),
            Fig::DnsP50(c),
            Fig::DnsP99(c),
            Fig::DnsFailed(c),
            Fig::DnsLocalCpu(c),
            Fig::DnsServerCpu(c),
        ]);
    }
    v
}

impl Fig {
    pub fn label(self) -> String {
        match self {
            Fig::Up => "upload, 1 connection".into(),
            Fig::Down => "download, 1 connection".into(),
            Fig::Cpu => "proxy CPU per GiB moved".into(),
            Fig::C1Ops => "new connection c=1".into(),
            Fig::C1P50 => "new connection c=1 p50".into(),
            Fig::C1P99 => "new connection c=1 p99".into(),
            Fig::C1Cpu => "proxy CPU per new connection c=1".into(),
            Fig::C32Ops => "new connection c=32".into(),
            Fig::C32P99 => "new connection c=32 p99".into(),
            Fig::C32Cpu => "proxy CPU per new connection c=32".into(),
            Fig::Mem => "RSS per held connection".into(),
            Fig::Threads => "threads per held connection".into(),
            Fig::Ttfb => "first byte over a 20 ms RTT link".into(),
            Fig::UdpP50(n) => format!("UDP {n} B round trip p50"),
            Fig::UdpP99(n) => format!("UDP {n} B round trip p99"),
            Fig::UdpRate(n) => format!("UDP {n} B, {WINDOW} in flight"),
            Fig::UdpLost(n) => format!("UDP {n} B, {WINDOW} in flight, lost"),
            Fig::ScaleHeld => "scale: held and answering".into(),
            Fig::ScaleRss => "scale: RSS, all held".into(),
            Fig::ScaleThreads => "scale: threads, all held".into(),
            Fig::LocalRss => "local RSS once listening".into(),
            Fig::AclRss => "local RSS the ACL adds".into(),
            Fig::AclParse => "ACL parse (Acl::parse, in the bench)".into(),
            Fig::AclLookupIp => "ACL lookup of the target's address".into(),
            Fig::AclLookupName => "ACL lookup of a name no rule matches".into(),
            Fig::DnsOps(c) => format!("queries c={c}"),
            Fig::DnsP50(c) => format!("query c={c} p50"),
            Fig::DnsP99(c) => format!("query c={c} p99"),
            Fig::DnsFailed(c) => format!("queries failed c={c}"),
            Fig::DnsLocalCpu(c) => format!("local CPU per query c={c}"),
            Fig::DnsServerCpu(c) => format!("server CPU per query c={c}"),
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Fig::Up | Fig::Down => "MiB/s",
            Fig::Cpu => "s/GiB",
            Fig::C1Ops | Fig::C32Ops => "ops/s",
            Fig::C1P50 | Fig::C1P99 | Fig::C32P99 | Fig::C1Cpu | Fig::C32Cpu => "µs",
            Fig::UdpP50(_) | Fig::UdpP99(_) => "µs",
            Fig::UdpRate(_) => "dgram/s",
            Fig::UdpLost(_) => "%",
            Fig::Mem => "KiB",
            Fig::Threads => "",
            Fig::Ttfb => "RTT",
            Fig::ScaleHeld => "conns",
            Fig::ScaleRss => "MiB",
            Fig::ScaleThreads => "",
            Fig::LocalRss | Fig::AclRss => "KiB",
            Fig::AclParse => "ms",
            Fig::AclLookupIp | Fig::AclLookupName => "ns",
            Fig::DnsOps(_) => "q/s",
            Fig::DnsFailed(_) => "%",
            Fig::DnsP50(_) | Fig::DnsP99(_) | Fig::DnsLocalCpu(_) | Fig::DnsServerCpu(_) => "µs",
        }
    }

    fn decimals(self) -> usize {
        match self {
            Fig::Cpu | Fig::Threads | Fig::Ttfb | Fig::UdpLost(_) | Fig::DnsFailed(_) => 2,
            Fig::Mem | Fig::AclParse => 1,
            _ => 0,
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Fig::Up
                | Fig::Down
                | Fig::C1Ops
                | Fig::C32Ops
                | Fig::UdpRate(_)
                | Fig::ScaleHeld
                | Fig::DnsOps(_)
        )
    }
}

pub fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

#[derive(Default)]
pub struct Results {
    pub chains: Vec<String>,
    samples: HashMap<(usize, Fig), Vec<f64>>,
    pub notes: Vec<String>,
}

impl Results {
    pub fn new(chains: Vec<String>) -> Results {
        Results { chains, ..Results::default() }
    }

    pub fn add(&mut self, chain: usize, fig: Fig, v: f64) {
        self.samples.entry((chain, fig)).or_default().push(v);
    }

    pub fn note(&mut self, chain: usize, text: String) {
        let line = format!("{}: {text}", self.chains[chain]);
        if !self.notes.contains(&line) {
            self.notes.push(line);
        }
    }

    pub fn get(&self, chain: usize, fig: Fig) -> Option<f64> {
        median(self.samples.get(&(chain, fig))?)
    }

    /// Every sample of `fig` for `chain`, one a round.
    pub fn samples(&self, chain: usize, fig: Fig) -> &[f64] {
        self.samples.get(&(chain, fig)).map_or(&[], Vec::as_slice)
    }
}

pub fn fmt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.decimals$}"),
        _ => "n/a".into(),
    }
}

/// One table: a row per figure, a column per chain.
pub fn table(r: &Results, bytes_label: &str, scale_n: usize) -> String {
    table_of(r, &all(), bytes_label, scale_n)
}

/// [`table`] with the rows of `figs`.
pub fn table_of(r: &Results, figs: &[Fig], bytes_label: &str, scale_n: usize) -> String {
    let width: Vec<usize> = r.chains.iter().map(|c| c.chars().count().max(9) + 2).collect();
    let mut out = String::new();
    let _ = write!(out, "{:<42}{:<8}", "figure (median of rounds)", "unit");
    for (c, w) in r.chains.iter().zip(&width) {
        let _ = write!(out, "{c:>w$}");
    }
    out.push('\n');
    for &fig in figs {
        if (0..r.chains.len()).all(|c| r.get(c, fig).is_none()) {
            continue;
        }
        let label = match fig {
            Fig::Up | Fig::Down => format!("{}, {bytes_label}", fig.label()),
            Fig::ScaleHeld => format!("{} (of {scale_n})", fig.label()),
            _ => fig.label(),
        };
        let arrow = if fig.higher_is_better() { "↑" } else { "↓" };
        let _ = write!(out, "{:<42}{:<8}", format!("{arrow} {label}"), fig.unit());
        for (c, w) in width.iter().enumerate() {
            let _ = write!(out, "{:>w$}", fmt(r.get(c, fig), fig.decimals()), w = *w);
        }
        out.push('\n');
    }
    out
}

/// ours ÷ peer for each figure, a column per peer.
pub fn ratios(r: &Results, ours: usize) -> String {
    let peers: Vec<usize> = (0..r.chains.len()).filter(|c| *c != ours && r.chains[*c] != "direct").collect();
    if peers.is_empty() {
        return String::new();
    }
    let heads: Vec<String> = peers.iter().map(|p| format!("÷ {}", r.chains[*p])).collect();
    let width: Vec<usize> = heads.iter().map(|h| h.chars().count().max(9) + 2).collect();
    let mut out = String::new();
    let _ = write!(out, "{:<42}{:<8}", format!("{} ÷ peer (same run)", r.chains[ours]), "better");
    for (h, w) in heads.iter().zip(&width) {
        let _ = write!(out, "{h:>w$}");
    }
    out.push('\n');
    for fig in all() {
        let mine = r.get(ours, fig);
        let row: Vec<Option<f64>> = peers
            .iter()
            .map(|p| match (mine, r.get(*p, fig)) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            })
            .collect();
        if row.iter().all(Option::is_none) {
            continue;
        }
        let better = if fig.higher_is_better() { ">1" } else { "<1" };
        let _ = write!(out, "{:<42}{:<8}", fig.label(), better);
        for (v, w) in row.iter().zip(&width) {
            let s = v.map_or_else(|| "n/a".to_string(), |x| format!("{x:.2}×"));
            let _ = write!(out, "{s:>w$}");
        }
        out.push('\n');
    }
    out
}

/// Each other chain ÷ `base` for each of `figs`, a column per chain.
pub fn relative(r: &Results, base: usize, figs: &[Fig]) -> String {
    let others: Vec<usize> = (0..r.chains.len()).filter(|c| *c != base).collect();
    let width: Vec<usize> = others.iter().map(|c| r.chains[*c].chars().count().max(9) + 2).collect();
    let mut out = String::new();
    let _ = write!(out, "{:<42}{:<8}", format!("chain ÷ {} (same run)", r.chains[base]), "better");
    for (c, w) in others.iter().zip(&width) {
        let _ = write!(out, "{:>w$}", r.chains[*c]);
    }
    out.push('\n');
    for &fig in figs {
        let row: Vec<Option<f64>> = others
            .iter()
            .map(|c| match (r.get(*c, fig), r.get(base, fig)) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            })
            .collect();
        if row.iter().all(Option::is_none) {
            continue;
        }
        let better = if fig.higher_is_better() { ">1" } else { "<1" };
        let _ = write!(out, "{:<42}{:<8}", fig.label(), better);
        for (v, w) in row.iter().zip(&width) {
            let s = v.map_or_else(|| "n/a".to_string(), |x| format!("{x:.2}×"));
            let _ = write!(out, "{s:>w$}");
        }
        out.push('\n');
    }
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A bar chart of the c=1 p50 and p99 latencies, one group per chain.
pub fn latency_svg(r: &Results) -> String {
    let groups: Vec<(String, f64, f64)> = (0..r.chains.len())
        .filter_map(|c| Some((r.chains[c].clone(), r.get(c, Fig::C1P50)?, r.get(c, Fig::C1P99)?)))
        .collect();
    let top = groups.iter().map(|g| g.2.max(g.1)).fold(1.0, f64::max);
    // A round step: at most 6 ticks on the axis.
    let step = nice(top / 5.0);
    let ymax = (top / step).ceil() * step;
    let (x0, y0, ph, gw) = (80.0, 60.0, 300.0, 150.0);
    let width = (x0 + gw * groups.len().max(1) as f64 + 40.0).max(680.0);
    let height = y0 + ph + 70.0;
    let y = |v: f64| y0 + ph - v / ymax * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="20" y="24" font-size="15" font-weight="bold">New connection + 64 B echo, concurrency 1: latency (µs, lower is better)</text>"#
    );
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="34" width="12" height="12" fill="#4e79a7"/><text x="{}" y="45">p50</text><rect x="{}" y="34" width="12" height="12" fill="#e15759"/><text x="{}" y="45">p99</text>"##,
        x0 + 16.0,
        x0 + 60.0,
        x0 + 76.0
    );
    let mut v = 0.0;
    while v <= ymax + step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            width - 30.0,
            x0 - 6.0,
            yy + 4.0
        );
        v += step;
    }
    for (i, (name, p50, p99)) in groups.iter().enumerate() {
        let gx = x0 + gw * i as f64 + 25.0;
        for (k, (val, color)) in [(*p50, "#4e79a7"), (*p99, "#e15759")].iter().enumerate() {
            let bx = gx + 50.0 * k as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{bx:.1}" y="{:.1}" width="44" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{val:.0}</text>"#,
                y(*val),
                y0 + ph - y(*val),
                bx + 22.0,
                y(*val) - 4.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + 47.0,
            y0 + ph + 20.0,
            xml(name)
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{x0}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        y0 + ph,
        width - 30.0,
        y0 + ph
    );
    s.push_str("</svg>\n");
    s
}

/// The 1, 2 or 5 × 10^k at or above `x`.
fn nice(x: f64) -> f64 {
    let p = 10f64.powf(x.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|v| *v >= x).unwrap_or(10.0 * p)
}
