//! UDP ASSOCIATE through the pair, with a real SOCKS5 UDP client (Debian's
//! PySocks), and against Debian's trojan on either side: datagrams arrive
//! byte-exact, a denied target gets nothing, the association ends with its
//! control connection, and the seed format refuses UDP.

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// The Python that has Debian's python3-socks (the distribution's own, not a user's).
const PYTHON: &str = "/usr/bin/python3";

/// Sends one datagram of each size in `sizes` through the SOCKS5 proxy to
/// `target` with PySocks, and checks that each comes back whole. With
/// `expect_reply` false, checks instead that nothing comes back.
const CLIENT: &str = r#"
import socket, sys, socks
proxy, port, target, tport, sizes, expect = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6] == "1"
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, proxy, port)
s.settimeout(3 if not expect else 15)
for n in [int(x) for x in sizes.split(",")]:
    data = bytes((i * 7 + n) % 251 for i in range(n))
    s.sendto(data, (target, tport))
    try:
        got, frm = s.recvfrom(65535)
    except socket.timeout:
        if expect:
            sys.exit("no reply for %d bytes" % n)
        print("%d none" % n)
        continue
    if not expect:
        sys.exit("a reply came for %d bytes" % n)
    if got != data:
        sys.exit("%d bytes sent, %d different bytes back" % (n, len(got)))
    print("%d ok from %s" % (n, frm))
s.close()
"#;

/// Runs the PySocks client; returns its output, failing with its stderr.
fn pysocks(proxy: SocketAddr, target: SocketAddr, sizes: &[usize], expect_reply: bool) -> String {
    let sizes = sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let mut child = Command::new(PYTHON)
        .args(["-c", CLIENT, &proxy.ip().to_string(), &proxy.port().to_string()])
        .args([&target.ip().to_string(), &target.port().to_string(), &sizes])
        .arg(if expect_reply { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is installed, with python3-socks (make deps)");
    let status = wait_child(&mut child);
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status, "the PySocks client failed: {err}{out}");
    out
}

/// Waits (bounded) for a child; kills it after TIMEOUT. True when it exited 0.
fn wait_child(child: &mut Child) -> bool {
    let until = Instant::now() + 3 * TIMEOUT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.success();
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

const SIZES: &[usize] = &[1, 100, 512, 1400, 4096, 8192, 60_000];

#[test]
fn datagrams_of_every_size_cross_the_pair_byte_exact() {
    let pair = Pair::with_args(&["--password", "pw"], &["--password", "pw"]);
    let (echo, seen) = udp_echo();
    let out = pysocks(pair.local.addr, echo, SIZES, true);
    assert_eq!(out.lines().filter(|l| l.contains(" ok from ")).count(), SIZES.len(), "{out}");
    assert_eq!(seen.try_iter().collect::<Vec<_>>(), SIZES, "each datagram arrived once, whole");
    // The client closed its control connection: both sides end the association and count it.
    let line = pair.server.wait_line(|l| l.contains("target=udp ") && l.contains(" closed "));
    assert!(line.contains(&format!("datagrams={n}/{n} dropped=0", n = SIZES.len())), "{line}");
    let line = pair.local.wait_line(|l| l.contains("target=udp ") && l.contains(" closed "));
    assert!(line.contains("end=client closed the control connection"), "{line}");
}

#[test]
fn a_datagram_to_a_denied_address_goes_nowhere_and_is_counted() {
    let pair = Pair::with_args(&["--password", "pw", "--deny", "127.0.0.0/8", "-v"], &["--password", "pw"]);
    let (echo, seen) = udp_echo();
    let out = pysocks(pair.local.addr, echo, &[10], false);
    assert!(out.contains("10 none"), "{out}");
    let line = pair.server.wait_line(|l| l.contains("target=udp ") && l.contains(" closed "));
    assert!(line.contains("datagrams=0/0 dropped=1"), "{line}");
    pair.server.wait_line(|l| l.contains(&format!("udp to {echo}: denied")) && l.contains("dropped"));
    assert!(seen.try_recv().is_err(), "the target got nothing");
}

#[test]
fn an_association_ends_with_its_control_connection_and_leaves_no_thread() {
    // No pool: a ready connection would hold threads on both sides.
    let pair = Pair::spawn(&["--password", "pw"], &["--password", "pw", "--pool", "0"]);
    let idle = [pair.local.threads(), pair.server.threads()];
    let (echo, _seen) = udp_echo();
    // By hand: UDP ASSOCIATE, one datagram, then the control connection closes.
    let (control, relay) = associate(pair.local.addr, 0);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    udp.send_to(&datagram(0, echo, b"ping"), relay).unwrap();
    let mut back = [0u8; 64];
    let (n, _) = udp.recv_from(&mut back).unwrap();
    assert_eq!(&back[n - 4..n], b"ping");
    assert_eq!(back[2], 0, "not a fragment");
    drop(control);
    pair.local
        .wait_line(|l| l.contains("target=udp ") && l.contains("end=client closed the control connection"));
    pair.server.wait_line(|l| l.contains("target=udp ") && l.contains(" closed "));
    pair.local.wait_threads(idle[0]);
    pair.server.wait_threads(idle[1]);
}

#[test]
fn a_quiet_association_outlives_the_deadlines_of_its_handshake() {
    // The TLS connection comes with the socket timeouts of its handshake's
    // deadline (here at most a second); the association must not inherit them.
    let pair = Pair::with_args(&["--password", "pw"], &["--password", "pw", "--connect-timeout", "1"]);
    let (echo, _seen) = udp_echo();
    let (control, relay) = associate(pair.local.addr, 0);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    // Quiet for longer than any deadline left over from the handshake (the pause is the point).
    thread::sleep(Duration::from_millis(1500));
    udp.send_to(&datagram(0, echo, b"late"), relay).unwrap();
    let mut back = [0u8; 64];
    let (n, _) = udp.recv_from(&mut back).unwrap();
    assert!(back[..n].ends_with(b"late"));
    drop(control);
    let line = pair.local.wait_line(|l| l.contains("target=udp ") && l.contains(" closed "));
    assert!(
        line.contains("end=client closed the control connection") && line.contains("datagrams=1/1"),
        "{line}"
    );
}

#[test]
fn a_fragment_or_a_stranger_is_dropped() {
    let pair = Pair::with_args(&["--password", "pw"], &["--password", "pw"]);
    let (echo, seen) = udp_echo();
    // The request names the client's port: datagrams from any other port are dropped.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (control, relay) = associate(pair.local.addr, udp.local_addr().unwrap().port());
    udp.send_to(&datagram(1, echo, b"fragment"), relay).unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(&datagram(0, echo, b"stranger"), relay).unwrap();
    udp.send_to(&datagram(0, echo, b"welcome"), relay).unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut back = [0u8; 64];
    let (n, _) = udp.recv_from(&mut back).unwrap();
    assert!(back[..n].ends_with(b"welcome"));
    assert_eq!(seen.try_iter().collect::<Vec<_>>(), [7], "only the welcome datagram reached the target");
    drop(control);
    let line = pair.local.wait_line(|l| l.contains("target=udp ") && l.contains(" closed "));
    assert!(line.contains("datagrams=1/1 dropped=2"), "{line}");
}

#[test]
fn an_association_that_names_no_port_belongs_to_the_first_source_that_uses_it() {
    let pair = Pair::with_args(&["--password", "pw"], &["--password", "pw", "--user", "alice:wonder"]);
    let (echo, seen) = udp_echo();
    let mut control = connect(pair.local.addr);
    control.write_all(&[5, 1, 2, 1, 5]).unwrap();
    control.write_all(b"alice\x06wonder").unwrap();
    // Port 0, what most clients send: the client does not know its port yet.
    control.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
    let mut reply = [0u8; 2 + 2 + 10];
    control.read_exact(&mut reply).unwrap();
    assert_eq!([reply[1], reply[3], reply[5]], [2, 0, 0], "logged in, then success");
    let relay = SocketAddr::from((
        [reply[8], reply[9], reply[10], reply[11]],
        u16::from_be_bytes([reply[12], reply[13]]),
    ));

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut back = [0u8; 64];
    client.send_to(&datagram(0, echo, b"first"), relay).unwrap();
    let (n, _) = client.recv_from(&mut back).unwrap();
    assert!(back[..n].ends_with(b"first"));
    // Another process on the client's address, without the login, finds the
    // relay port: its datagrams go nowhere and draw no reply away.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    other.send_to(&datagram(0, echo, b"not logged in"), relay).unwrap();
    client.send_to(&datagram(0, echo, b"second"), relay).unwrap();
    let (n, _) = client.recv_from(&mut back).unwrap();
    assert!(back[..n].ends_with(b"second"), "the reply to the client's datagram came back to it");
    assert_eq!(seen.try_iter().collect::<Vec<_>>(), [5, 6], "only the client's datagrams reached the target");
    drop(control);
    let line = pair.local.wait_line(|l| l.contains("target=udp ") && l.contains(" closed "));
    assert!(line.contains("datagrams=2/2 dropped=1"), "{line}");
}

#[test]
fn the_seed_format_has_no_udp_and_says_so() {
    let pair = Pair::start();
    let mut control = connect(pair.local.addr);
    control.write_all(&[5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
    let got = read_until_closed(&mut control).expect("a clean close");
    assert_eq!(got, [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0], "command not supported");
}

/// A trojan process; killed on drop.
struct Trojan(Child);

impl Drop for Trojan {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn trojan(dir: &Path, name: &str, config: String, port: u16) -> Trojan {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, config).unwrap();
    let child = Command::new("trojan")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("trojan is installed (make deps)");
    let t = Trojan(child);
    let until = Instant::now() + TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "trojan did not start");
        thread::sleep(Duration::from_millis(20));
    }
    t
}

/// Debian's trojan buffers 8 KiB, so its datagrams stay at 4 KB or less.
const TROJAN_SIZES: &[usize] = &[1, 100, 1400, 4000];

#[test]
fn the_trojan_client_carries_udp_to_blocking_server() {
    let dir = scratch("udp-trojan-client");
    let server = server_with_certs().args(&["--password", "pw"]).start();
    let port = free_port();
    let _client = trojan(&dir, "client", trojan::client_config(port, server.addr, "pw", CA), port);
    let (echo, seen) = udp_echo();
    let out = pysocks(SocketAddr::from(([127, 0, 0, 1], port)), echo, TROJAN_SIZES, true);
    assert_eq!(out.lines().filter(|l| l.contains(" ok from ")).count(), TROJAN_SIZES.len(), "{out}");
    assert_eq!(seen.try_iter().collect::<Vec<_>>(), TROJAN_SIZES);
}

#[test]
fn blocking_local_carries_udp_to_the_trojan_server() {
    let dir = scratch("udp-trojan-server");
    let port = free_port();
    let fallback = http("127.0.0.1:0");
    let config = trojan::server_config(port, fallback.port(), "pw", &cert("server.pem"), &cert("server.key"));
    let _server = trojan(&dir, "server", config, port);
    let local = local(SocketAddr::from(([127, 0, 0, 1], port)))
        .args(&["--password", "pw", "--sni", "localhost"])
        .start();
    let (echo, seen) = udp_echo();
    let out = pysocks(local.addr, echo, TROJAN_SIZES, true);
    assert_eq!(out.lines().filter(|l| l.contains(" ok from ")).count(), TROJAN_SIZES.len(), "{out}");
    assert_eq!(seen.try_iter().collect::<Vec<_>>(), TROJAN_SIZES);
}
