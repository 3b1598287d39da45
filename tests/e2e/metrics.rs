//! `--metrics` on both binaries: the counters move by exactly the traffic
//! sent, Debian's `promtool check metrics` accepts the exposition, other
//! paths and methods are refused, and scrapers that never send a request
//! hold up neither the proxy nor the scrapes that come after them.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// Where `p` serves its metrics, as its start-up logs say.
fn metrics_addr(p: &Proc) -> SocketAddr {
    let line = p.wait_line(|l| l.contains("metrics served on http://"));
    let url = line.split("http://").nth(1).unwrap();
    url.strip_suffix("/metrics").unwrap().parse().unwrap()
}

/// Sends `request` and reads the answer to its end: the status line and the body.
fn ask(addr: SocketAddr, request: &str) -> (String, String) {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).unwrap();
    let answer = String::from_utf8(read_all(&mut s)).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no head: {answer:?}"));
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// One scrape: its text, and each series' value.
struct Scrape {
    text: String,
    values: HashMap<String, f64>,
}

impl Scrape {
    fn of(p: &Proc) -> Scrape {
        let (status, text) = ask(metrics_addr(p), "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
        let values = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                (series.to_owned(), value.parse().unwrap())
            })
            .collect();
        Scrape { text, values }
    }

    fn get(&self, series: &str) -> f64 {
        *self.values.get(series).unwrap_or_else(|| panic!("no {series} in\n{}", self.text))
    }

    /// How much `series` moved since `before`.
    fn since(&self, before: &Scrape, series: &str) -> f64 {
        self.get(series) - before.get(series)
    }
}

const CONNECTIONS: usize = 4;
const UP: usize = 3_000;
const DOWN: usize = 70_000;
const DATAGRAMS: usize = 3;
const DATAGRAM: usize = 100;

#[test]
fn the_counters_move_by_exactly_the_traffic_sent_and_promtool_accepts_them() {
    let pair = Pair::spawn(
        &["--password", "pw", "--deny", "127.0.0.2/32", "--metrics", "127.0.0.1:0"],
        // No pool: every connection counted here is one the test made.
        &["--password", "pw", "--metrics", "127.0.0.1:0", "--pool", "0"],
    );
    let (local, server) = (&pair.local, &pair.server);
    // A target that reads everything the client sends, then answers with DOWN bytes.
    let tgt = target("127.0.0.1:0", |mut s| {
        let mut got = Vec::new();
        if s.read_to_end(&mut got).is_ok() && got.len() == UP {
            let _ = s.write_all(&[7u8; DOWN]);
        }
        let _ = s.shutdown(Shutdown::Write);
    });
    let (echo, _seen) = udp_echo();
    let local_before = Scrape::of(local);
    let server_before = Scrape::of(server);

    // Known TCP traffic: CONNECTIONS connections, UP bytes up and DOWN down each.
    for _ in 0..CONNECTIONS {
        let mut s = socks_connect(local.addr, &tgt.to_string());
        s.write_all(&[1u8; UP]).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut s).len(), DOWN);
    }
    // One connection to a target the server's egress policy denies.
    let mut denied = socks_connect(local.addr, "127.0.0.2:9");
    let _ = read_until_closed(&mut denied);
    drop(denied);
    // One UDP association: DATAGRAMS datagrams of DATAGRAM bytes, each echoed.
    let (control, relay) = associate(local.addr, 0);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    udp.set_write_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..DATAGRAMS {
        udp.send_to(&datagram(0, echo, &[i as u8; DATAGRAM]), relay).unwrap();
        let (n, _) = udp.recv_from(&mut buf).unwrap();
        assert_eq!(n, 10 + DATAGRAM, "a SOCKS5 UDP header and the payload back");
    }
    drop(control);
    // One client that is no TLS client at all.
    let mut plain = connect(server.addr);
    plain.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let _ = read_until_closed(&mut plain);

    // Every connection is counted before its close line is logged.
    let local_lines = local.wait_lines(CONNECTIONS + 2, |l| l.contains(" closed client="));
    let server_lines = server.wait_lines(CONNECTIONS + 3, |l| l.contains(" closed client="));
    let local_after = Scrape::of(local);
    let server_after = Scrape::of(server);
    println!("local close lines: {local_lines:#?}\nserver close lines: {server_lines:#?}");
    println!("local after:\n{}", local_after.text);
    println!("server after:\n{}", server_after.text);
    promtool("local", &local_after.text);
    promtool("server", &server_after.text);

    let (n, udp_bytes) = (CONNECTIONS as f64, (DATAGRAMS * DATAGRAM) as f64);
    let closed = |end: &str| format!("blocking_proxy_connections_closed_total{{end=\"{end}\"}}");
    let ends = |s: &Scrape| -> Vec<f64> {
        let family = "blocking_proxy_connections_closed_total{";
        s.values.iter().filter(|(k, _)| k.starts_with(family)).map(|(_, v)| *v).collect()
    };
    assert_eq!(ends(&local_after).len(), 9, "one series for each way to end");
    let total_closed = |s: &Scrape| -> f64 { ends(s).iter().sum() };
    // The server ends the denied tunnel with close_notify: a clean end at the local.
    for (who, before, after, accepted, clean) in [
        ("local", &local_before, &local_after, n + 2.0, n + 2.0),
        ("server", &server_before, &server_after, n + 3.0, n + 1.0),
    ] {
        let moved = |series: &str| after.since(before, series);
        println!(
            "{who}: accepted +{}, closed eof +{}, bytes up +{}, down +{}, handshakes full +{} resumed +{}",
            moved("blocking_proxy_connections_accepted_total"),
            moved(&closed("eof")),
            moved("blocking_proxy_relayed_bytes_total{direction=\"up\"}"),
            moved("blocking_proxy_relayed_bytes_total{direction=\"down\"}"),
            moved("blocking_proxy_tls_handshakes_total{kind=\"full\"}"),
            moved("blocking_proxy_tls_handshakes_total{kind=\"resumed\"}"),
        );
        assert_eq!(moved("blocking_proxy_connections_accepted_total"), accepted, "{who}");
        assert_eq!(total_closed(after) - total_closed(before), accepted, "{who}: every one closed");
        assert_eq!(after.get("blocking_proxy_connections_open"), 0.0, "{who}");
        // The TCP connections and the UDP association ended cleanly.
        assert_eq!(moved(&closed("eof")), clean, "{who}");
        assert_eq!(
            moved("blocking_proxy_relayed_bytes_total{direction=\"up\"}"),
            n * UP as f64 + udp_bytes,
            "{who}"
        );
        assert_eq!(
            moved("blocking_proxy_relayed_bytes_total{direction=\"down\"}"),
            n * DOWN as f64 + udp_bytes,
            "{who}"
        );
        // One TLS connection for each TCP connection, the denied one and the association.
        let handshakes = moved("blocking_proxy_tls_handshakes_total{kind=\"full\"}")
            + moved("blocking_proxy_tls_handshakes_total{kind=\"resumed\"}");
        assert_eq!(handshakes, n + 2.0, "{who}");
        assert_eq!(moved("blocking_proxy_udp_associations_total"), 1.0, "{who}");
        assert_eq!(moved("blocking_proxy_udp_datagrams_total{direction=\"up\"}"), DATAGRAMS as f64, "{who}");
        assert_eq!(
            moved("blocking_proxy_udp_datagrams_total{direction=\"down\"}"),
            DATAGRAMS as f64,
            "{who}"
        );
        assert_eq!(moved("blocking_proxy_udp_datagrams_dropped_total"), 0.0, "{who}");
        assert_eq!(moved("blocking_proxy_connections_refused_total{reason=\"cap\"}"), 0.0, "{who}");
        assert_eq!(after.get("blocking_proxy_name_lookups_in_flight"), 0.0, "{who}");
    }
    // The server saw the denial, and a TLS handshake fail.
    let moved = |series: &str| server_after.since(&server_before, series);
    assert_eq!(moved(&closed("denied")), 1.0);
    assert_eq!(moved("blocking_proxy_egress_denials_total"), 1.0);
    assert_eq!(moved(&closed("tls_error")), 1.0);
    assert_eq!(moved("blocking_proxy_tls_handshake_failures_total"), 1.0);
    assert_eq!(moved("blocking_proxy_header_failures_total"), 0.0);
    assert_eq!(moved("blocking_proxy_fallback_handovers_total"), 0.0);
    assert!(!server_after.text.contains("blocking_proxy_pool_"), "the pool is the local's");
    // The local had no failed handshake, and no pool to take from.
    let moved = |series: &str| local_after.since(&local_before, series);
    assert_eq!(moved("blocking_proxy_tls_handshake_failures_total"), 0.0);
    assert_eq!(local_after.get("blocking_proxy_pool_ready"), 0.0);
    assert_eq!(moved("blocking_proxy_pool_taken_total"), 0.0);
    assert!(!local_after.text.contains("blocking_proxy_header_failures_total"), "headers are the server's");
    assert_eq!(local_after.get("blocking_proxy_build_info{version=\"0.1.0\",role=\"local\"}"), 1.0);
}

#[test]
fn a_pooled_connection_taken_by_a_client_is_counted() {
    let pair = Pair::spawn(&["--metrics", "127.0.0.1:0"], &["--pool", "1", "--metrics", "127.0.0.1:0"]);
    let web = http("127.0.0.1:0");
    // Waits until the filler has one connection ready: the gauge says so.
    let until = Instant::now() + TIMEOUT;
    while Scrape::of(&pair.local).get("blocking_proxy_pool_ready") < 1.0 {
        assert!(Instant::now() < until, "the pool never filled");
        thread::sleep(Duration::from_millis(10));
    }
    let before = Scrape::of(&pair.local);
    let page = curl(&["--socks5", &pair.local.addr.to_string(), &format!("http://{web}/")]);
    assert_eq!(page, PAGE);
    let after = Scrape::of(&pair.local);
    assert_eq!(after.since(&before, "blocking_proxy_pool_taken_total"), 1.0, "{}", after.text);
}

#[test]
fn another_path_is_404_another_method_405_and_a_bad_request_line_400() {
    let server = server().args(&["--metrics", "127.0.0.1:0"]).spawn();
    let at = metrics_addr(&server);
    let (status, _) = ask(at, "GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = ask(at, "GET /metrics/x HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = ask(at, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let (status, _) = ask(at, "hello\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    let (status, body) = ask(at, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""), "HEAD has no body");
}

#[test]
fn scrapers_that_never_send_a_request_hold_up_neither_the_proxy_nor_later_scrapes() {
    const SILENT: usize = 8;
    let pair = Pair::spawn(&[], &["--metrics", "127.0.0.1:0"]);
    let at = metrics_addr(&pair.local);
    let mut silent: Vec<TcpStream> = (0..SILENT).map(|_| connect(at)).collect();
    // More than can be answered at once: the last is turned away at once, not left waiting.
    let mut last = silent.pop().unwrap();
    let turned_away = String::from_utf8(read_all(&mut last)).unwrap();
    assert!(turned_away.starts_with("HTTP/1.1 503 "), "{turned_away:?}");
    // Meanwhile the proxy serves as ever.
    let echo = echo("127.0.0.1:0");
    let mut s = socks_connect(pair.local.addr, &echo.to_string());
    s.write_all(b"still served").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut s), b"still served");
    // Once the silent ones go, scrapes are answered again.
    drop(silent);
    let until = Instant::now() + TIMEOUT;
    loop {
        let (status, _) = ask(at, "GET /metrics HTTP/1.1\r\n\r\n");
        if status == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(status.starts_with("HTTP/1.1 503 ") && Instant::now() < until, "{status}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_metrics_address_off_loopback_is_served_with_a_warning() {
    let server = server().args(&["--metrics", "0.0.0.0:0"]).spawn();
    server.wait_line(|l| l.contains("WARN") && l.contains("--metrics on 0.0.0.0:"));
    let port = metrics_addr(&server).port();
    let (status, _) = ask(SocketAddr::from(([127, 0, 0, 1], port)), "GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[test]
fn a_metrics_address_that_cannot_be_bound_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) =
        run_to_exit(env!("CARGO_BIN_EXE_blocking-server"), &["--listen", "127.0.0.1:0", "--metrics", &addr]);
    let last = err.lines().last().unwrap_or_default();
    println!("{last}");
    assert_eq!(code, Some(1), "{err}");
    assert!(
        last.starts_with("blocking-server: --metrics: cannot listen on ") && last.contains(&addr),
        "{err}"
    );
}

#[test]
fn each_upstream_server_shows_its_state_and_its_failures() {
    let dead = format!("127.0.0.1:{}", free_port());
    let server = server().spawn();
    let live = server.addr.to_string();
    let local = local(server.addr).args(&["--server", &dead, "--metrics", "127.0.0.1:0"]).spawn();
    let before = Scrape::of(&local);
    for s in [&live, &dead] {
        assert_eq!(
            before.get(&format!("blocking_proxy_upstream_up{{server=\"{s}\"}}")),
            1.0,
            "every server starts up"
        );
    }
    // The live server is first: kill it, and the next client fails over to... the dead one.
    drop(server);
    let (_, rep) = socks_request(local.addr, "127.0.0.1:9");
    assert_ne!(rep, 0, "no server is left");
    let after = Scrape::of(&local);
    for s in [&live, &dead] {
        assert_eq!(
            after.get(&format!("blocking_proxy_upstream_up{{server=\"{s}\"}}")),
            0.0,
            "{}",
            after.text
        );
        let failures = format!("blocking_proxy_upstream_connect_failures_total{{server=\"{s}\"}}");
        assert!(after.since(&before, &failures) >= 1.0, "{}", after.text);
    }
    promtool("local with two servers", &after.text);
}

#[test]
fn a_default_local_keeps_nothing_ready_until_clients_come_then_as_many_as_came_at_once() {
    let pair = Pair::spawn(&[], &["--metrics", "127.0.0.1:0"]);
    let echo = echo("127.0.0.1:0");
    assert_eq!(Scrape::of(&pair.local).get("blocking_proxy_pool_ready"), 0.0, "no client yet");
    assert!(
        !pair.server.lines().iter().any(|l| l.contains(" closed client=")),
        "the server has seen no connection"
    );
    // Five clients at once (well within one second).
    let open: Vec<TcpStream> = (0..5).map(|_| socks_connect(pair.local.addr, &echo.to_string())).collect();
    let until = Instant::now() + TIMEOUT;
    let mut ready = 0.0;
    while ready < 5.0 {
        assert!(Instant::now() < until, "the pool did not grow to the demand: {ready}");
        thread::sleep(Duration::from_millis(10));
        ready = Scrape::of(&pair.local).get("blocking_proxy_pool_ready");
    }
    // The next five clients take ready connections.
    let before = Scrape::of(&pair.local);
    for _ in 0..5 {
        let mut s = socks_connect(pair.local.addr, &echo.to_string());
        s.write_all(b"ready").unwrap();
        let mut back = [0u8; 5];
        s.read_exact(&mut back).unwrap();
    }
    let after = Scrape::of(&pair.local);
    assert_eq!(after.since(&before, "blocking_proxy_pool_taken_total"), 5.0, "{}", after.text);
    assert!(after.get("blocking_proxy_pool_ready") <= 16.0, "never more than the cap");
    drop(open);
}

#[test]
fn ready_connections_that_age_out_unused_are_counted_and_logged_at_debug_only() {
    const AGED: usize = 6;
    let site = http("127.0.0.1:0").to_string();
    let echo = echo("127.0.0.1:0").to_string();
    // -v: the server logs its debug lines too, where these close lines now are.
    let pair = Pair::spawn(
        &["--password", "pw", "--fallback", &site, "--metrics", "127.0.0.1:0", "-v"],
        &["--password", "pw", "--pool", "2", "--pool-age", "0.2"],
    );
    // The local replaces its two ready connections every 0.2 s; none is used.
    let unused = |l: &str| l.contains(" closed client=") && l.contains(" end=header: client closed before");
    let ends = pair.server.wait_lines(AGED, unused);
    let scrape = Scrape::of(&pair.server);
    for end in &ends {
        eprintln!("server (-v), a ready connection that aged out: {end}");
        assert!(end.contains(" DEBUG] "), "{end}");
        assert!(end.ends_with("end=header: client closed before its first record"), "{ends:#?}");
    }
    // Counted before each line is logged: every line seen is in the scrape.
    let counted = scrape.get("blocking_proxy_unused_connections_total");
    eprintln!("blocking_proxy_unused_connections_total {counted}");
    assert!(counted >= AGED as f64, "{}", scrape.text);
    assert_eq!(scrape.get("blocking_proxy_fallback_handovers_total"), 0.0);
    promtool("server", &scrape.text);
    // A request on a ready connection: its line is at info, and its time=
    // counts from its header, not from when the connection was made ready.
    let mut s = socks_connect(pair.local.addr, &echo);
    s.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).unwrap();
    drop(s);
    let served = |l: &str| l.contains(&format!(" target={echo} "));
    let server = pair.server.wait_line(served);
    let local = pair.local.wait_line(served);
    eprintln!("server, a request on a ready connection: {server}\nlocal, the same request: {local}");
    assert!(server.contains(" INFO ] ") && server.contains(" end=eof"), "{server}");
    let at_info: Vec<String> =
        pair.server.lines().into_iter().filter(|l| unused(l) && !l.contains(" DEBUG] ")).collect();
    assert!(at_info.is_empty(), "unused ready connections logged above debug: {at_info:#?}");
}

/// A connection to `addr` from the loopback address `source` (port 0: any).
fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    sock.connect_timeout(&addr.into(), TIMEOUT).unwrap();
    let sock: TcpStream = sock.into();
    timeouts(&sock);
    sock
}

#[test]
fn idle_sockets_from_one_address_never_starve_the_scrapes_of_another() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const IDLE: usize = blocking_proxy::endpoint::MAX_SCRAPES;
    let server = server().args(&["--metrics", "127.0.0.1:0"]).spawn();
    let at = metrics_addr(&server);
    // 127.0.0.1 keeps as many idle sockets open as the endpoint serves at
    // once, each opened again as soon as it is closed (a 503, or the head
    // deadline), at most every 50 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let idle: Vec<TcpStream> = (0..IDLE).map(|_| connect_from("127.0.0.1", at)).collect();
    let hog = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut opened = 0;
            let workers: Vec<_> = idle
                .into_iter()
                .map(|mut s| {
                    let stop = Arc::clone(&stop);
                    thread::spawn(move || {
                        let mut n = 1;
                        while !stop.load(Ordering::Relaxed) {
                            let since = Instant::now();
                            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                            let mut buf = [0u8; 256];
                            match s.read(&mut buf) {
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                                _ => {}
                            }
                            // Closed by the server: open another.
                            thread::sleep(Duration::from_millis(50).saturating_sub(since.elapsed()));
                            s = connect_from("127.0.0.1", at);
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            for w in workers {
                opened += w.join().unwrap();
            }
            opened
        })
    };
    // Scrapes from 127.0.0.2, another address, for longer than a head deadline.
    let mut answers = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        let mut s = connect_from("127.0.0.2", at);
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let answer = String::from_utf8_lossy(&read_all(&mut s)).into_owned();
        answers.push(answer.lines().next().unwrap_or_default().to_owned());
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let opened = hog.join().unwrap();
    let ok = answers.iter().filter(|a| *a == "HTTP/1.1 200 OK").count();
    println!(
        "127.0.0.1 opened {opened} idle sockets; 127.0.0.2 got {ok} of {} scrapes answered: {answers:?}",
        answers.len()
    );
    assert_eq!(ok, answers.len(), "{answers:?}");
}

#[test]
fn scrapes_asked_one_after_another_are_never_refused() {
    // Each scrape's place is given back before its answer ends, so the next
    // one finds it free however late the answering thread runs.
    let server = server().args(&["--metrics", "127.0.0.1:0"]).spawn();
    let at = metrics_addr(&server);
    let statuses: Vec<String> = (0..200).map(|_| ask(at, "HEAD /metrics HTTP/1.1\r\n\r\n").0).collect();
    let refused = statuses.iter().filter(|s| *s != "HTTP/1.1 200 OK").count();
    println!("{refused} of {} back-to-back scrapes refused", statuses.len());
    assert_eq!(refused, 0, "{statuses:?}");
}
