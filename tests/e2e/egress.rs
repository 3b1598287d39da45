//! The egress policy end to end: the host itself is never a target unless
//! loopback is allowed. Every target here is either on loopback or one of
//! this machine's own addresses, and each one is refused before any connect,
//! so no packet leaves the machine. Special-purpose ranges that lie elsewhere
//! are only unit-tested (src/net/egress.rs).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// The flags that allow every private target except the host's loopback.
const DENY_LOOPBACK: [&str; 5] = ["--allow-private", "--deny", "127.0.0.0/8", "--deny", "::1/128"];

/// A service on 127.0.0.1 that reports every connection it gets on the receiver.
fn watched_service() -> (SocketAddr, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let addr = target("127.0.0.1:0", move |mut s| {
        let _ = tx.lock().unwrap().send(());
        let _ = s.write_all(b"reached\n");
    });
    (addr, rx)
}

/// Asks for each target through a pair whose server has `server_args` (and
/// otherwise the default egress policy): the SOCKS5 reply is a success, then
/// the connection closes with nothing relayed, and the server logs the target
/// as denied.
fn assert_refused(server_args: &[&str], targets: &[String]) {
    let server = server().default_egress().args(server_args).start();
    let local = local(server.addr).start();
    for t in targets {
        let mut s = socks_connect(local.addr, t);
        let _ = s.write_all(b"hello?");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert_eq!(got, b"", "{t}: nothing relayed");
    }
    let lines = server.wait_lines(targets.len(), |l| l.contains("end=target: denied"));
    for t in targets {
        assert!(lines.iter().any(|l| l.contains(&format!("target={t} "))), "{t} refused: {lines:#?}");
    }
}

#[test]
fn the_unspecified_addresses_are_the_host_and_refused_with_loopback() {
    let (service, seen) = watched_service();
    let port = service.port();
    let targets: Vec<String> =
        ["0.0.0.0", "[::]", "0", "[::ffff:0.0.0.0]"].iter().map(|host| format!("{host}:{port}")).collect();
    // "0" goes as a name and resolves to 0.0.0.0.
    assert_eq!(socks_addr(&targets[2])[0], 3, "sent as a domain name");
    assert_refused(&DENY_LOOPBACK, &targets);
    assert_refused(&[], &targets);
    assert!(seen.try_recv().is_err(), "the service on 127.0.0.1 was never reached");
}

#[test]
fn deny_matches_the_ipv6_form_of_a_mapped_ipv4_address() {
    let (service, seen) = watched_service();
    let target = format!("[::ffff:127.0.0.1]:{}", service.port());
    assert_refused(&["--allow-private", "--deny", "::/0"], std::slice::from_ref(&target));
    assert_refused(&["--allow-private", "--deny", "::ffff:0:0/96"], &[target]);
    assert!(seen.try_recv().is_err(), "the service on 127.0.0.1 was never reached");
}

/// This machine's own addresses that are not loopback, as the kernel lists
/// them; link-local ones are left out, as a target cannot name their scope.
fn own_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().unwrap() {
        let Some(a) = ifa.address else { continue };
        let ip = if let Some(v4) = a.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = a.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        };
        if !ip.is_loopback() && !ip.is_unspecified() && !link_local && !found.contains(&ip) {
            found.push(ip);
        }
    }
    found
}

#[test]
fn the_hosts_own_addresses_are_refused_by_default_and_with_loopback() {
    let own = own_addresses();
    if own.is_empty() {
        eprintln!("skipped: this machine has no address but loopback");
        return;
    }
    // The port of a service on 127.0.0.1: the refusal comes before any connect.
    let (service, seen) = watched_service();
    let targets: Vec<String> =
        own.iter().map(|ip| SocketAddr::new(*ip, service.port()).to_string()).collect();
    eprintln!("the host's own addresses as targets: {targets:?}");
    assert_refused(&[], &targets);
    assert_refused(&DENY_LOOPBACK, &targets);
    assert!(seen.try_recv().is_err());
}

/// What one read of the host's addresses (getifaddrs) costs here, printed.
fn print_what_a_read_of_the_host_addresses_costs(where_: &str) {
    const READS: u32 = 2000;
    let n = blocking_proxy::net::egress::interface_addresses().unwrap().len();
    let start = Instant::now();
    for _ in 0..READS {
        std::hint::black_box(blocking_proxy::net::egress::interface_addresses().unwrap());
    }
    let each = start.elapsed() / READS;
    eprintln!("{where_}: one read of the host's {n} addresses (getifaddrs) takes {each:?}");
}

#[test]
fn an_address_added_to_the_host_after_start_is_refused_within_seconds() {
    print_what_a_read_of_the_host_addresses_costs("this host");
    // A network namespace of our own: the address is added to its loopback
    // interface, and every packet stays inside it.
    let test = "egress::in_a_namespace_an_address_is_added_after_start";
    if !in_namespace(&["-n"], "", test, &[]) {
        eprintln!(
            "skipped: `unshare -n` is not allowed here (it needs root); no namespace to add an address in"
        );
    }
}

#[test]
#[ignore = "run by an_address_added_to_the_host_after_start_is_refused_within_seconds, inside its namespace"]
fn in_a_namespace_an_address_is_added_after_start() {
    if !inside_namespace() {
        return;
    }
    print_what_a_read_of_the_host_addresses_costs("a namespace with only loopback");
    // A service on every address of the namespace, counting the connections it gets.
    let reached = Arc::new(AtomicUsize::new(0));
    let service = {
        let reached = Arc::clone(&reached);
        target("0.0.0.0:0", move |mut s| {
            reached.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(b"reached\n");
        })
    };
    // Private targets allowed, loopback (and so the host itself) denied.
    let server = server().default_egress().args(&DENY_LOOPBACK).start();
    let local = local(server.addr).start();
    let ask = |to: &str| -> Vec<u8> {
        let mut s = socks_connect(local.addr, to);
        let _ = s.write_all(b"hello?");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    };
    let on_lo = format!("127.0.0.1:{}", service.port());
    assert_eq!(ask(&on_lo), b"", "loopback is denied");
    server.wait_line(|l| l.contains(&format!("target={on_lo} ")) && l.contains("end=target: denied"));
    // The host gains an address after the server started.
    let added = format!("10.200.0.1:{}", service.port());
    let out = Command::new("ip").args(["addr", "add", "10.200.0.1/32", "dev", "lo"]).output().unwrap();
    assert!(out.status.success(), "ip addr add: {}", String::from_utf8_lossy(&out.stderr));
    let since = Instant::now();
    // Asked again and again: how long until the server refuses it as the host itself?
    let (mut asked, mut served) = (0, 0);
    loop {
        asked += 1;
        if ask(&added) == b"reached\n" {
            served += 1;
        }
        let denied = server
            .lines()
            .iter()
            .any(|l| l.contains(&format!("target={added} ")) && l.contains("end=target: denied"));
        if denied {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{added} is still served {:?} after it was added: {served} of {asked} requests reached it",
            since.elapsed()
        );
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{added} refused {:?} after it was added; before that, {served} of {asked} requests reached it",
        since.elapsed()
    );
    let after = reached.load(Ordering::SeqCst);
    assert_eq!(ask(&added), b"", "refused from then on");
    assert_eq!(reached.load(Ordering::SeqCst), after, "and never reached again");
}
