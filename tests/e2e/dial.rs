//! Happy Eyeballs end to end, in a network namespace of the test's own
//! whose /etc/hosts gives one name both ::1 and 127.0.0.1, and where
//! nftables silently drops the SYNs to one of them: `net::dial::connect`,
//! and blocking-server through it, reach IPv4 after the Connection Attempt
//! Delay instead of at the deadline; with both silent the connect times out
//! at its deadline, and a refusal from one outweighs the other's silence.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blocking_proxy::error::Error;
use blocking_proxy::net::dial::{self, CONNECTION_ATTEMPT_DELAY};
use blocking_proxy::proto::addr::Target;

use crate::support::*;

/// The name the namespace's /etc/hosts gives ::1 and then 127.0.0.1.
const NAME: &str = "both.test";

/// A name on three addresses, ::1, 127.0.0.2 and 127.0.0.3.
const THREE: &str = "three.test";

/// The deadline of a connect that must not need it.
const DEADLINE: Duration = Duration::from_secs(10);

/// The deadline of a connect that runs into it.
const SHORT: Duration = Duration::from_millis(1500);

#[test]
fn a_silent_ipv6_address_gives_way_to_ipv4_after_the_attempt_delay() {
    let dir = scratch("dial");
    let hosts = dir.join("hosts");
    let lines = format!(
        "127.0.0.1 localhost\n::1 localhost\n::1 {NAME}\n127.0.0.1 {NAME}\n::1 {THREE}\n127.0.0.2 {THREE}\n127.0.0.3 {THREE}\n"
    );
    std::fs::write(&hosts, lines).unwrap();
    let setup = "mount --bind \"$1\" /etc/hosts &&";
    let test = "dial::in_a_namespace_where_syns_to_one_address_are_dropped";
    if !in_namespace(&["-m", "-n"], setup, test, &[&hosts]) {
        eprintln!(
            "skipped: `unshare -m -n` is not allowed here (it needs root); no namespace to drop packets in"
        );
    }
}

#[test]
#[ignore = "run by a_silent_ipv6_address_gives_way_to_ipv4_after_the_attempt_delay, inside its namespace"]
fn in_a_namespace_where_syns_to_one_address_are_dropped() {
    if !inside_namespace() {
        return;
    }
    // One port on both addresses, each listener saying which it is.
    let (v4, v4_reached) = saying_who("127.0.0.1:0");
    let (v6, v6_reached) = saying_who(&format!("[::1]:{}", v4.port()));
    let port = v4.port();
    let resolved: Vec<SocketAddr> = (NAME, port).to_socket_addrs().unwrap().collect();
    assert_eq!(resolved, [v6, v4], "the resolver's order: IPv6 first");
    nft("add table inet dial");
    nft("add chain inet dial input { type filter hook input priority 0; policy accept; }");
    drop_syns_to(v6);

    // net::dial alone: IPv4 after the attempt delay, well before the deadline.
    let (out, took) = dial_name(port, DEADLINE);
    let mut s = out.unwrap();
    eprintln!("{NAME}:{port} with {v6} silent: connected to {} after {took:?}", s.peer_addr().unwrap());
    assert_eq!(s.peer_addr().unwrap(), v4);
    timeouts(&s);
    assert_eq!(read_all(&mut s), b"127.0.0.1\n");
    assert!(took >= CONNECTION_ATTEMPT_DELAY, "IPv4 was tried before the attempt delay: {took:?}");
    assert!(took < DEADLINE / 2, "{took:?}");

    // blocking-server, the real binary, reaching the name for a SOCKS5 client.
    let server = server().args(&["--connect-timeout", "4"]).spawn();
    let local = local(server.addr).args(&["--pool", "0"]).start();
    let start = Instant::now();
    let mut s = socks_connect(local.addr, &format!("{NAME}:{port}"));
    assert_eq!(read_all(&mut s), b"127.0.0.1\n");
    let took = start.elapsed();
    eprintln!("through blocking-server: the first byte from {v4} after {took:?}");
    assert!(took >= CONNECTION_ATTEMPT_DELAY && took < Duration::from_secs(4), "{took:?}");
    drop(s);
    server.wait_line(|l| l.contains(&format!("target={NAME}:{port} ")) && l.contains(" end="));
    assert_eq!(v6_reached.load(Ordering::SeqCst), 0, "a SYN to {v6} got through");

    // Both silent: a timeout at the deadline, not before it.
    drop_syns_to(v4);
    let (out, took) = dial_name(port, SHORT);
    let e = out.unwrap_err();
    eprintln!("{NAME}:{port} with both silent: {e} after {took:?}");
    assert!(matches!(&e, Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut), "{e}");
    assert!(took >= SHORT && took < SHORT + Duration::from_secs(5), "{took:?}");
    let (mut s, _) = socks_request(local.addr, &format!("{NAME}:{port}"));
    let _ = read_until_closed(&mut s);
    let line = server.wait_line(|l| l.contains(&format!("target={NAME}:{port} ")) && l.contains("timed out"));
    eprintln!("through blocking-server: {line}");
    assert_eq!(v4_reached.load(Ordering::SeqCst), 2, "the two connects before IPv4 went silent too");

    // ::1 refuses at once and 127.0.0.1 is silent: the refusal, at the deadline.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    drop_syns_to(closed);
    let (out, took) = dial_name(closed.port(), SHORT);
    let e = out.unwrap_err();
    eprintln!("{NAME}:{} with ::1 refusing and 127.0.0.1 silent: {e} after {took:?}", closed.port());
    assert!(matches!(&e, Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused), "{e}");
    assert!(took >= SHORT && took < SHORT + Duration::from_secs(5), "{took:?}");

    // Three addresses, the first two in the race's order silent: the oldest
    // attempt gives way, and the third is reached (two attempts at most in flight).
    let port = free_port();
    let resolved: Vec<SocketAddr> = (THREE, port).to_socket_addrs().unwrap().collect();
    let order = dial::interleave(&resolved);
    assert_eq!(order.len(), 3, "{resolved:?}");
    let reached: Vec<_> = order.iter().map(|a| saying_who(&a.to_string())).collect();
    drop_syns_to(order[0]);
    drop_syns_to(order[1]);
    let start = Instant::now();
    let mut s = dial::connect(&Target::Domain(THREE.to_owned(), port), start + DEADLINE, None, &()).unwrap();
    let took = start.elapsed();
    eprintln!(
        "{THREE}:{port} in the order {order:?}, the first two silent: {} after {took:?}",
        s.peer_addr().unwrap()
    );
    assert_eq!(s.peer_addr().unwrap(), order[2]);
    timeouts(&s);
    assert_eq!(read_all(&mut s), format!("{}\n", order[2].ip()).as_bytes());
    assert!(took >= 2 * CONNECTION_ATTEMPT_DELAY, "{took:?}");
    assert_eq!(reached.iter().map(|(_, n)| n.load(Ordering::SeqCst)).sum::<usize>(), 1);
}

/// `net::dial::connect` to the name and `port`, with a deadline `within`
/// from now: what it returned, and when.
fn dial_name(port: u16, within: Duration) -> (Result<std::net::TcpStream, Error>, Duration) {
    let start = Instant::now();
    let out = dial::connect(&Target::Domain(NAME.to_owned(), port), start + within, None, &());
    (out, start.elapsed())
}

/// A listener on `bind` that writes its own IP address to every
/// connection, and the count of connections it has taken.
fn saying_who(bind: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    let addr = target(bind, move |mut s| {
        counted.fetch_add(1, Ordering::SeqCst);
        let me = s.local_addr().unwrap().ip();
        let _ = writeln!(s, "{me}");
    });
    (addr, count)
}

/// From now on, SYNs to `to` are dropped without an answer.
fn drop_syns_to(to: SocketAddr) {
    let family = if to.is_ipv6() { "ip6" } else { "ip" };
    let (ip, port) = (to.ip(), to.port());
    nft(&format!(
        "add rule inet dial input {family} daddr {ip} tcp dport {port} tcp flags & (syn | ack) == syn drop"
    ));
}
