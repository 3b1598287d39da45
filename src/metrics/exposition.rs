//! The Prometheus text exposition format, written by hand: a few lines of
//! text per family. [`render`] writes every family that applies to a
//! binary, then what the collectors registered with [`add_collector`] add.

use std::fmt::{self, Write as _};
use std::sync::{Mutex, PoisonError};

use super::counters::*;

/// The media type of the text exposition format.
pub const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a collector writes at each scrape: whole families, with [`family`] and [`sample`].
pub type Collector = Box<dyn Fn(&mut String) + Send + Sync>;

static COLLECTORS: Mutex<Vec<Collector>> = Mutex::new(Vec::new());

/// Adds series known only at run time, written after the static families
/// at every scrape. A collector runs on the scrape's thread and should only
/// read (atomics, or a lock held briefly).
pub fn add_collector(c: Collector) {
    COLLECTORS.lock().unwrap_or_else(PoisonError::into_inner).push(c);
}

/// A family's type, as its `# TYPE` line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A count that only goes up (its name ends in `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
}

/// Starts a family: its `# HELP` (backslashes and newlines escaped) and `# TYPE` lines.
pub fn family(out: &mut String, name: &str, kind: Kind, help: &str) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// One sample: `name{label="value",…} value`, each label value escaped.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label_value(v, out);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Writes `v` as a label value may hold it: backslash, double quote and
/// line feed escaped, as the text format requires.
pub fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A family with a fixed label set: one sample per `(value, count)` of `series`.
fn labelled(out: &mut String, name: &str, help: &str, label: &str, series: &[(&str, u64)]) {
    family(out, name, Kind::Counter, help);
    for (value, count) in series {
        sample(out, name, &[(label, value)], count);
    }
}

/// `(label, count)` for each value of a fixed label set.
fn counts<L: Copy, const N: usize>(
    all: [L; N],
    label: fn(L) -> &'static str,
    counters: &[Counter],
) -> [(&'static str, u64); N] {
    let mut i = 0;
    all.map(|v| {
        let c = (label(v), counters[i].get());
        i += 1;
        c
    })
}

/// The whole exposition for `role`: every family that applies to it, then the collectors'.
pub fn render(role: Role) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let o = &mut out;
    family(
        o,
        "blocking_proxy_build_info",
        Kind::Gauge,
        "Always 1; the labels name the version and the role.",
    );
    sample(
        o,
        "blocking_proxy_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("role", role.label())],
        1,
    );
    // The closed counts are read before the accepted one, so that within one
    // scrape accepted = open + closed, and open is never negative.
    let closed = counts(Closed::ALL, Closed::label, &CLOSED);
    let accepted = ACCEPTED.get();
    let n = "blocking_proxy_connections_accepted_total";
    family(o, n, Kind::Counter, "Connections admitted under the cap; each is logged when it closes.");
    sample(o, n, &[], accepted);
    labelled(
        o,
        "blocking_proxy_connections_refused_total",
        "Connections turned away at accept: over the cap, or too many pending from one source.",
        "reason",
        &counts(Refusal::ALL, Refusal::label, &REFUSED),
    );
    let n = "blocking_proxy_connections_open";
    family(o, n, Kind::Gauge, "Admitted connections not yet closed.");
    sample(o, n, &[], accepted.saturating_sub(closed.iter().map(|(_, c)| c).sum()));
    labelled(
        o,
        "blocking_proxy_connections_closed_total",
        "Admitted connections closed, by how they ended.",
        "end",
        &closed,
    );
    labelled(
        o,
        "blocking_proxy_relayed_bytes_total",
        "Payload bytes of closed connections; up is from the client towards the target.",
        "direction",
        &counts(Way::ALL, Way::label, &BYTES),
    );
    labelled(
        o,
        "blocking_proxy_tls_handshakes_total",
        "Completed TLS handshakes, in full or resumed from a session ticket.",
        "kind",
        &counts(Handshake::ALL, Handshake::label, &HANDSHAKES),
    );
    let n = "blocking_proxy_tls_handshake_failures_total";
    family(o, n, Kind::Counter, "TLS handshakes that failed or ran out of time.");
    sample(o, n, &[], HANDSHAKE_FAILURES.get());
    let n = "blocking_proxy_name_lookups_in_flight";
    family(o, n, Kind::Gauge, "Name lookups running now, including those past their deadline.");
    sample(o, n, &[], LOOKUPS_IN_FLIGHT.get());
    let n = "blocking_proxy_udp_associations_total";
    family(o, n, Kind::Counter, "UDP associations started.");
    sample(o, n, &[], UDP_ASSOCIATIONS.get());
    labelled(
        o,
        "blocking_proxy_udp_datagrams_total",
        "UDP datagrams relayed; up is from the client towards the targets.",
        "direction",
        &counts(Way::ALL, Way::label, &DATAGRAMS),
    );
    let n = "blocking_proxy_udp_datagrams_dropped_total";
    family(o, n, Kind::Counter, "UDP datagrams dropped: from a stranger, a fragment, denied, unsendable.");
    sample(o, n, &[], DATAGRAMS_DROPPED.get());
    match role {
        Role::Server => {
            let n = "blocking_proxy_header_failures_total";
            family(
                o,
                n,
                Kind::Counter,
                "Connections whose TLS handshake completed but whose header was not valid.",
            );
            sample(o, n, &[], HEADER_FAILURES.get());
            let n = "blocking_proxy_fallback_handovers_total";
            family(o, n, Kind::Counter, "Connections handed to the fallback site.");
            sample(o, n, &[], FALLBACK_HANDOVERS.get());
            let n = "blocking_proxy_unused_connections_total";
            family(
                o,
                n,
                Kind::Counter,
                "Connections closed after their TLS handshake without a header: a local's ready connections that aged out unused (logged at debug).",
            );
            sample(o, n, &[], UNUSED.get());
            let n = "blocking_proxy_egress_denials_total";
            family(o, n, Kind::Counter, "Connections and datagrams refused by the egress policy.");
            sample(o, n, &[], EGRESS_DENIALS.get());
        }
        Role::Local => {
            let n = "blocking_proxy_pool_ready";
            family(o, n, Kind::Gauge, "TLS connections to the server ready in the pool.");
            sample(o, n, &[], POOL_READY.get());
            let n = "blocking_proxy_pool_taken_total";
            family(o, n, Kind::Counter, "Ready connections taken from the pool by clients.");
            sample(o, n, &[], POOL_TAKEN.get());
            labelled(
                o,
                "blocking_proxy_routed_connections_total",
                "Connections by where the ACL sent them: direct, through a server (proxy), or refused (block).",
                "route",
                &counts(Routed::ALL, Routed::label, &ROUTED),
            );
            labelled(
                o,
                "blocking_proxy_dns_queries_total",
                "DNS queries to --dns by how they were answered: cache, remote (through the tunnel), direct, joined (the same question in flight), refused (the ACL blocks the name), failed (SERVFAIL).",
                "answer",
                &counts(DnsSource::ALL, DnsSource::label, &DNS),
            );
            labelled(
                o,
                "blocking_proxy_routed_datagrams_total",
                "UDP datagrams from clients by where the ACL sent them; blocked ones are dropped.",
                "route",
                &counts(Routed::ALL, Routed::label, &ROUTED_DATAGRAMS),
            );
        }
    }
    for c in COLLECTORS.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        c(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        let mut out = String::new();
        sample(&mut out, "m", &[("server", "a\\b\"c\nd"), ("x", "plain")], 3);
        assert_eq!(out, "m{server=\"a\\\\b\\\"c\\nd\",x=\"plain\"} 3\n");
        let mut out = String::new();
        sample(&mut out, "m_total", &[], 0);
        assert_eq!(out, "m_total 0\n");
    }

    #[test]
    fn every_family_has_help_and_type_and_every_sample_a_family() {
        add_collector(Box::new(|out| {
            family(out, "blocking_proxy_upstream_up", Kind::Gauge, "Whether an upstream server answers.");
            sample(out, "blocking_proxy_upstream_up", &[("server", "example.com:443")], 1);
        }));
        for role in [Role::Server, Role::Local] {
            let text = render(role);
            let mut typed = Vec::new();
            let mut helped = Vec::new();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# HELP ") {
                    helped.push(rest.split(' ').next().unwrap().to_owned());
                } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                    let (name, kind) = rest.split_once(' ').unwrap();
                    assert!(kind == "counter" || kind == "gauge", "{line}");
                    assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
                    typed.push(name.to_owned());
                } else {
                    let name = line.split(['{', ' ']).next().unwrap();
                    assert!(typed.iter().any(|t| t == name), "{name} has no # TYPE before it");
                    let value = line.rsplit(' ').next().unwrap();
                    assert!(value.parse::<f64>().is_ok(), "{line}");
                }
            }
            assert_eq!(helped, typed, "one # HELP and one # TYPE per family, in order");
            assert!(text.contains("blocking_proxy_upstream_up{server=\"example.com:443\"} 1\n"));
            let server_only = text.contains("blocking_proxy_header_failures_total");
            let local_only = text.contains("blocking_proxy_pool_ready");
            assert_eq!((server_only, local_only), (role == Role::Server, role == Role::Local), "{role:?}");
        }
    }

    #[test]
    fn closing_counts_the_end_and_the_bytes() {
        let before = render(Role::Local);
        closed(Closed::Reset, 10, 20);
        let after = render(Role::Local);
        let value = |text: &str, series: &str| -> u64 {
            let line =
                text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' ')).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let reset = "blocking_proxy_connections_closed_total{end=\"reset\"}";
        let up = "blocking_proxy_relayed_bytes_total{direction=\"up\"}";
        let down = "blocking_proxy_relayed_bytes_total{direction=\"down\"}";
        assert!(value(&after, reset) > value(&before, reset));
        assert!(value(&after, up) >= value(&before, up) + 10);
        assert!(value(&after, down) >= value(&before, down) + 20);
    }
}
