//! Fuzzes `acl::Acl::parse`, the ACL file reader both programs run at
//! start, and the lookups they run on what it read.
//!
//! Input: the file's bytes (read as UTF-8, invalid sequences replaced).
//! Checks: no panic; a refused file names one of its lines; a file that
//! reads answers every lookup, for the names and addresses its own lines
//! hold and a few others.
#![no_main]

use std::net::IpAddr;

use blocking_proxy::proto::acl::Acl;
use libfuzzer_sys::fuzz_target;

const ADDRESSES: &[&str] = &["10.0.0.1", "8.8.8.8", "::1", "::ffff:192.168.1.1", "2001:db8::1"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let acl = match Acl::parse(&text) {
        Ok(acl) => acl,
        Err(e) => {
            assert!(e.line >= 1 && e.line <= text.split('\n').count(), "{e}");
            return;
        }
    };
    let mut ips: Vec<IpAddr> = ADDRESSES.iter().filter_map(|a| a.parse().ok()).collect();
    for word in text.split(|c: char| c.is_whitespace() || c == '|' || c == '/' || c == '$').take(64) {
        if let Ok(ip) = word.parse::<IpAddr>() {
            ips.push(ip);
        }
        let _ = (acl.route_name(word), acl.outbound_name(word));
        let _ = acl.route_name(&format!("www.{}.", word.replace("\\.", ".")));
    }
    for &ip in &ips {
        let _ = (acl.route_ip(ip), acl.client_refused(ip), acl.outbound_ip_blocked(ip));
    }
    let _ = (acl.route_resolved(&ips), acl.outbound_resolved_blocked(&ips), acl.route_resolved(&[]));
    let _ = (acl.needs_addresses(), acl.outbound_needs_addresses(), acl.default_route(), acl.rules(), acl.skipped());
    let _ = (acl.has_local_rules(), acl.has_client_rules(), acl.has_outbound_rules());
});
