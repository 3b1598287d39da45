//! The egress policy end to end: the host itself is never a target unless
//! loopback is allowed. Every target here is either on loopback or one of
//! this machine's own addresses, and each one is refused before any connect,
//! so no packet leaves the machine. Special-purpose ranges that lie elsewhere
//! are only unit-tested (src/net/egress.rs).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::{mpsc, Mutex};

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
