//! `--users` on the server: named users, each with a local of its own,
//! run traffic at once; the close lines and the metrics give each user's
//! exact bytes; `max_conns` refuses a user's next connection while the
//! others go on; `rate` holds one user to its rate, compared with an
//! unlimited user's transfer of the same size in the same run; a quota
//! ends a user's connections; SIGHUP locks a removed user out, and with
//! `--cut-removed` cuts what it has open.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Instant;

use crate::support::*;

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A local for `server` with `password`, no ready connections.
fn local_with(server: SocketAddr, password: &str) -> Proc {
    local(server).args(&["--password", password, "--pool", "0"]).spawn()
}

/// Sends `len` bytes through the echo connection `s` while reading them
/// back; returns how many came back, after the echo's end.
fn round_trip(mut s: TcpStream, seed: u64, len: usize) -> usize {
    let mut w = s.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let digest = send_pattern(&mut w, seed, len);
        w.shutdown(Shutdown::Write).unwrap();
        digest
    });
    let (n, got) = recv_digest(&mut s);
    assert_eq!(got, sender.join().unwrap(), "the echo came back whole");
    n
}

/// A SOCKS5 CONNECT through `proxy` the server is expected to refuse:
/// whatever the local answers (a failure reply, a success then an end, or
/// an end before any reply), no byte may come back through it.
fn refused_through(proxy: SocketAddr, target: &str) {
    let mut s = connect(proxy);
    let mut req = vec![5, 1, 0, 5, 1, 0];
    req.extend(socks_addr(target));
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 12];
    if s.read_exact(&mut reply).is_err() || reply[3] != 0 {
        return;
    }
    let _ = s.write_all(b"ping");
    let echoed = read_until_closed(&mut s).unwrap_or_default();
    assert!(echoed.is_empty(), "a refused connection echoed {echoed:?}");
}

/// Where `p` serves its metrics, as its start-up logs say.
fn metrics_text(p: &Proc) -> String {
    get(p, "/metrics")
}

/// The body of `path` on `p`'s metrics address (its start-up logs name it).
fn get(p: &Proc, path: &str) -> String {
    let line = p.wait_line(|l| l.contains("metrics served on http://"));
    let url = line.split("http://").nth(1).unwrap();
    let addr: SocketAddr = url.strip_suffix("/metrics").unwrap().parse().unwrap();
    let mut s = connect(addr);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).unwrap();
    let answer = String::from_utf8(read_all(&mut s)).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.to_owned()
}

/// The value of `series` in a scrape.
fn value(text: &str, series: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
    let line = line.unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

/// The rate of `bob`, in bytes per second each way.
const RATE: usize = 512 * 1024;
/// What bob and carol each send (and get back): two seconds at bob's rate.
const TRANSFER: usize = 1024 * 1024;
/// What each of alice's connections sends.
const ALICE: usize = 100_000;

#[test]
fn three_users_at_once_are_counted_exactly_and_held_to_their_limits() {
    let dir = scratch("users-three");
    let file = dir.join("users");
    write(
        &file,
        &format!(
            "# three users\nalice:pw-alice max_conns=2\nbob:pw-bob rate={RATE}\ncarol:pw-carol # no limits\n"
        ),
    );
    let server =
        server_with_certs().args(&["--users", file.to_str().unwrap(), "--metrics", "127.0.0.1:0"]).spawn();
    let (alice, bob, carol) = (
        local_with(server.addr, "pw-alice"),
        local_with(server.addr, "pw-bob"),
        local_with(server.addr, "pw-carol"),
    );
    let target = echo("127.0.0.1:0").to_string();

    // alice holds her two connections open while bob and carol transfer.
    let held: Vec<TcpStream> = (0..2).map(|_| socks_connect(alice.addr, &target)).collect();
    for s in &held {
        let mut s = s.try_clone().unwrap();
        s.write_all(b"ping").unwrap();
        let mut pong = [0u8; 4];
        s.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"ping");
    }
    // The live view names the user of each of her connections. A byte is
    // counted just after it is written, so the last echo may show a moment
    // after the client has read it.
    let until = std::time::Instant::now() + TIMEOUT;
    let live = loop {
        let live = get(&server, "/connections");
        if live.contains("\"down\":8}") || std::time::Instant::now() > until {
            break live;
        }
        thread::sleep(std::time::Duration::from_millis(10));
    };
    println!("server /connections while alice holds two: {live}");
    assert_eq!(live.matches("\"user\":\"alice\"").count(), 2, "{live}");
    assert!(live.contains("{\"name\":\"alice\",\"open\":2,\"up\":8,\"down\":8}"), "{live}");

    let timed = |proxy: SocketAddr, seed: u64| {
        let target = target.clone();
        thread::spawn(move || {
            let s = socks_connect(proxy, &target);
            let start = Instant::now();
            let n = round_trip(s, seed, TRANSFER);
            (n, start.elapsed())
        })
    };
    let (bob_run, carol_run) = (timed(bob.addr, 2), timed(carol.addr, 3));

    // Her third is refused at the header while the others go on.
    refused_through(alice.addr, &target);
    let refused = server.wait_line(|l| l.contains("closed ") && l.contains("max_conns"));
    println!("{refused}");
    assert!(
        refused.contains("end=header: denied: user alice has 2 connections open, its max_conns user=alice"),
        "{refused}"
    );

    let (carol_n, carol_time) = carol_run.join().unwrap();
    let (bob_n, bob_time) = bob_run.join().unwrap();
    assert_eq!((carol_n, bob_n), (TRANSFER, TRANSFER));
    for (i, s) in held.into_iter().enumerate() {
        assert_eq!(round_trip(s, 10 + i as u64, ALICE), ALICE);
    }

    // bob's rate: never faster than it (less its burst), and no slower than
    // it plus what carol's unlimited transfer of the same size took.
    let expected = TRANSFER as f64 / RATE as f64;
    let (bob_s, carol_s) = (bob_time.as_secs_f64(), carol_time.as_secs_f64());
    println!(
        "bob (rate={RATE}) moved {TRANSFER} each way in {bob_s:.3}s ({:.0} B/s), carol (unlimited) in {carol_s:.3}s; bob's limit alone takes {expected:.3}s",
        TRANSFER as f64 / bob_s
    );
    assert!(bob_s >= 0.9 * expected, "bob ran faster than his rate: {bob_s:.3}s for {expected:.3}s");
    assert!(
        bob_s <= 1.1 * expected + carol_s,
        "bob ran slower than his rate: {bob_s:.3}s, {expected:.3}s at the rate and {carol_s:.3}s unlimited"
    );

    // Each user's close lines and series show its exact bytes.
    let lines =
        server.wait_lines(4, |l| l.contains(" closed ") && l.contains("end=eof") && l.contains(" user="));
    for l in &lines {
        println!("{l}");
    }
    let with = |user: &str, bytes: usize| {
        let fields = format!("up={bytes} down={bytes} ");
        lines.iter().filter(|l| l.ends_with(&format!(" user={user}")) && l.contains(&fields)).count()
    };
    assert_eq!(with("bob", TRANSFER), 1, "{lines:#?}");
    assert_eq!(with("carol", TRANSFER), 1, "{lines:#?}");
    assert_eq!(with("alice", ALICE + 4), 2, "{lines:#?}");
    let text = metrics_text(&server);
    let series: Vec<&str> = text.lines().filter(|l| l.starts_with("blocking_proxy_user_")).collect();
    println!("{}", series.join("\n"));
    for (user, bytes, opened, refused) in
        [("alice", 2 * (ALICE + 4), 2, 1), ("bob", TRANSFER, 1, 0), ("carol", TRANSFER, 1, 0)]
    {
        for way in ["up", "down"] {
            let name = format!("blocking_proxy_user_bytes_total{{user=\"{user}\",direction=\"{way}\"}}");
            assert_eq!(value(&text, &name), bytes as u64, "{name}");
        }
        assert_eq!(
            value(&text, &format!("blocking_proxy_user_connections_total{{user=\"{user}\"}}")),
            opened
        );
        assert_eq!(value(&text, &format!("blocking_proxy_user_refused_total{{user=\"{user}\"}}")), refused);
    }
    promtool("server with users", &text);
    assert!(!text.contains("pw-") && !server.lines().iter().any(|l| l.contains("pw-")));
}

/// A server with alice and bob, bob connected through his own local; after
/// SIGHUP with bob removed, his password opens nothing new. Returns bob's
/// open connection and the server.
fn remove_bob(name: &str, extra: &[&str]) -> (Proc, TcpStream, Proc, Proc, String) {
    let dir = scratch(name);
    let file = dir.join("users");
    write(&file, "alice:pw-alice\nbob:pw-bob\n");
    let server = server_with_certs().args(&[&["--users", file.to_str().unwrap()], extra].concat()).spawn();
    let (alice, bob) = (local_with(server.addr, "pw-alice"), local_with(server.addr, "pw-bob"));
    let target = echo("127.0.0.1:0").to_string();
    let mut open = socks_connect(bob.addr, &target);
    open.write_all(b"before").unwrap();
    let mut got = [0u8; 6];
    open.read_exact(&mut got).unwrap();
    write(&file, "alice:pw-alice\n");
    let line = reload(&server, 1);
    assert!(line.contains(" 1 user;"), "{line}");
    let removed = server.wait_line(|l| l.contains("user bob removed"));
    println!("{removed}");
    // A new connection of bob's is refused; alice's goes on.
    refused_through(bob.addr, &target);
    let mut still = socks_connect(alice.addr, &target);
    still.write_all(b"alice").unwrap();
    let mut back = [0u8; 5];
    still.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"alice");
    (server, open, alice, bob, target)
}

#[test]
fn a_removed_user_is_locked_out_after_sighup_and_its_open_connection_goes_on() {
    let (server, mut open, _alice, _bob, _) = remove_bob("users-removed", &[]);
    open.write_all(b"after").unwrap();
    let mut got = [0u8; 5];
    open.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"after");
    open.shutdown(Shutdown::Write).unwrap();
    assert!(read_until_closed(&mut open).unwrap().is_empty());
    let line = server.wait_line(|l| l.contains(" closed ") && l.ends_with(" user=bob"));
    println!("{line}");
    assert!(line.contains("up=11 down=11 ") && line.contains("end=eof"), "{line}");
}

#[test]
fn with_cut_removed_a_removed_users_open_connections_are_cut() {
    let (server, mut open, _alice, _bob, _) = remove_bob("users-cut", &["--cut-removed"]);
    let line = server.wait_line(|l| l.contains(" closed ") && l.ends_with(" user=bob"));
    println!("{line}");
    assert!(line.contains("end=stream: denied: user bob was removed user=bob"), "{line}");
    // Cut: the client's connection ends (reset by its local, or closed).
    let _ = open.write_all(b"after");
    let rest = read_until_closed(&mut open).unwrap_or_default();
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn a_quota_ends_the_users_connections_and_holds_across_a_reload() {
    let dir = scratch("users-quota");
    let file = dir.join("users");
    write(&file, "dora:pw-dora quota=100KiB/30d\nerin:pw-erin\n");
    let server = server_with_certs().args(&["--users", file.to_str().unwrap()]).spawn();
    let dora = local_with(server.addr, "pw-dora");
    let target = echo("127.0.0.1:0").to_string();
    // An idle connection of hers is cut too when another one reaches the quota.
    let idle = socks_connect(dora.addr, &target);
    let mut s = socks_connect(dora.addr, &target);
    let mut w = s.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let mut p = Pattern::new(7);
        let mut buf = vec![0u8; 16 * 1024];
        // 200 KiB up, more than the quota of both ways together: a write fails once cut.
        for _ in 0..12 {
            p.fill(&mut buf);
            if w.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let echoed = read_until_closed(&mut s).unwrap_or_default();
    sender.join().unwrap();
    assert!(echoed.len() < 100 * 1024, "{} bytes came back", echoed.len());
    let lines = server.wait_lines(2, |l| l.contains(" closed ") && l.ends_with(" user=dora"));
    for l in &lines {
        println!("{l}");
        assert!(l.contains("end=stream: denied: user dora reached its quota of 102400 bytes"), "{l}");
    }
    drop(idle);
    let refused = |n: usize| {
        refused_through(dora.addr, &target);
        let lines = server.wait_lines(n, |l| l.contains(" closed ") && l.contains("has used its quota"));
        println!("{}", lines[n - 1]);
    };
    refused(1);
    // A reload keeps what she has used.
    let line = reload(&server, 1);
    assert!(line.contains(" 2 users;"), "{line}");
    refused(2);
}

#[test]
fn a_bad_users_file_is_a_one_line_error_naming_the_file_and_line() {
    let dir = scratch("users-bad");
    let file = dir.join("users");
    for (text, why) in [
        ("ok:pw-one\nbad:pw-two speed=3\n", "line 2: user bad: field 2 is not a limit"),
        ("a:pw-same\nb:pw-same\n", "line 2: user b has the same password as user a on line 1"),
    ] {
        write(&file, text);
        let args = ["--listen", "127.0.0.1:0", "--users", file.to_str().unwrap()];
        let (code, err) = run_to_exit(env!("CARGO_BIN_EXE_blocking-server"), &args);
        println!("{}", err.trim());
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let expected = format!("blocking-server: users file {} {why}", file.display());
        assert!(err.starts_with(&expected), "{err}");
        assert!(!err.contains("pw-"), "{err}");
    }
}

/// Runs one of dora's connections past her quota of 100 KiB; returns once it is cut.
fn use_up_quota(local: SocketAddr, target: &str) {
    let mut s = socks_connect(local, target);
    let mut w = s.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let buf = vec![7u8; 16 * 1024];
        for _ in 0..12 {
            if w.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let _ = read_until_closed(&mut s);
    sender.join().unwrap();
}

#[test]
fn with_quota_state_what_a_user_used_survives_a_restart() {
    let dir = scratch("users-state");
    let (file, state) = (dir.join("users"), dir.join("quota"));
    write(&file, "dora:pw-dora quota=100KiB/30d\n");
    let args = ["--users", file.to_str().unwrap(), "--quota-state", state.to_str().unwrap()];
    let target = echo("127.0.0.1:0").to_string();
    let mut first = server_with_certs().args(&args).spawn();
    let dora = local_with(first.addr, "pw-dora");
    use_up_quota(dora.addr, &target);
    first.wait_line(|l| l.contains("reached its quota"));
    let ok = Command::new("kill").args(["-TERM", &first.pid().to_string()]).status().unwrap();
    assert!(ok.success());
    assert_eq!(first.wait_exit(), Some(0));
    let saved = std::fs::read_to_string(&state).unwrap();
    println!("{}: {saved:?}", state.display());
    assert!(saved.starts_with("dora 102400 "), "{saved:?}");

    let second = server_with_certs().args(&args).spawn();
    let dora = local_with(second.addr, "pw-dora");
    refused_through(dora.addr, &target);
    let line = second.wait_line(|l| l.contains(" closed ") && l.contains("has used its quota"));
    println!("{line}");
}

#[test]
fn a_users_file_that_names_nobody_opens_nothing_even_after_a_reload_empties_it() {
    let dir = scratch("users-nobody");
    let file = dir.join("users");
    write(&file, "# nobody yet\n");
    let server = server_with_certs().args(&["--users", file.to_str().unwrap()]).spawn();
    let warned = server.wait_line(|l| l.contains("--users names no user"));
    println!("{warned}");
    let target = echo("127.0.0.1:0").to_string();
    // Neither a trojan client nor a seed-format one gets through.
    let (trojan, seed) =
        (local_with(server.addr, "anything"), local(server.addr).args(&["--pool", "0"]).spawn());
    refused_through(trojan.addr, &target);
    refused_through(seed.addr, &target);

    // A user added, then removed again: the seed format stays off.
    write(&file, "erin:pw-erin\n");
    println!("{}", reload(&server, 1));
    let erin = local_with(server.addr, "pw-erin");
    assert_eq!(round_trip(socks_connect(erin.addr, &target), 7, 1000), 1000);
    write(&file, "# nobody again\n");
    println!("{}", reload(&server, 2));
    refused_through(erin.addr, &target);
    refused_through(seed.addr, &target);
    let opened = server.lines().iter().filter(|l| l.contains(" closed ") && l.contains("end=eof")).count();
    assert_eq!(opened, 1, "only erin's connection, while she was a user: {:#?}", server.lines());
}
