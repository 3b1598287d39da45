//! Fixed forwards (`--forward LISTEN=HOST:PORT`): curl through a port that
//! leads to one web server, connections open at once, the local's one cap
//! shared by every port, a stop, Debian's trojan as the server, and the
//! start-up line.

use std::io::{Read, Write};
use std::process::Command;
use std::thread;

use crate::support::*;
use crate::trojan::Trojan;

#[test]
fn curl_through_a_forward_reaches_its_one_target_and_both_sides_log_it() {
    let server = server_with_certs().start();
    let web = http("127.0.0.1:0");
    let echo = echo("127.0.0.1:0");
    let local = local(server.addr)
        .args(&["--forward", &format!("127.0.0.1:0={web}"), "--forward", &format!("127.0.0.1:0={echo}")])
        .start();
    let url = format!("http://{}/", local.forwards[0]);
    assert_eq!(curl(&[&url]), PAGE);
    let line = local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={web} ")));
    assert!(line.contains(" end=eof proto=forward route=proxy"), "{line}");
    server.wait_line(|l| {
        l.contains(" closed ") && l.contains(&format!("target={web} ")) && l.ends_with("end=eof")
    });

    // Several at once: eight connections open together, each echoed on its own.
    let mut open: Vec<_> = (0..8).map(|_| connect(local.forwards[1])).collect();
    for (i, s) in open.iter_mut().enumerate() {
        s.write_all(format!("ping {i}").as_bytes()).unwrap();
    }
    for (i, mut s) in open.into_iter().enumerate() {
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_all(&mut s), format!("ping {i}").as_bytes());
    }
    let lines =
        local.wait_lines(8, |l| l.contains(&format!("target={echo} ")) && l.contains(" up=6 down=6 "));
    assert!(lines.iter().all(|l| l.contains(" proto=forward route=proxy")), "{lines:#?}");
    server.wait_lines(8, |l| l.contains(&format!("target={echo} ")) && l.contains(" up=6 down=6 "));
    // And curls side by side.
    let curls: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || curl(&[&url]))
        })
        .collect();
    for c in curls {
        assert_eq!(c.join().unwrap(), PAGE);
    }
}

#[test]
fn forwards_share_the_locals_cap_and_stop_with_it() {
    let server = server_with_certs().start();
    let echo = echo("127.0.0.1:0");
    let web = http("127.0.0.1:0");
    let local = local(server.addr)
        .args(&["--max-conns", "1", "--pool", "0"])
        .args(&["--forward", &format!("127.0.0.1:0={echo}"), "--forward", &format!("127.0.0.1:0={web}")])
        .start();
    // A forward's connection takes the one place...
    let mut held = connect(local.forwards[0]);
    held.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    held.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    // ...so the proxy port and the other forward are turned away.
    let mut socks = connect(local.addr);
    socks.write_all(&[&[5, 1, 0, 5, 1, 0][..], &socks_addr(&web.to_string())].concat()).unwrap();
    let answer = read_answer(&mut socks);
    assert!(answer.is_empty() || answer == [5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0], "{answer:?}");
    let mut other = connect(local.forwards[1]);
    let _ = other.write_all(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(read_answer(&mut other), b"", "closed unanswered");
    // A stop closes every listener; the open connection drains.
    local.stop();
    for addr in [local.addr, local.forwards[0], local.forwards[1]] {
        assert!(std::net::TcpStream::connect_timeout(&addr, TIMEOUT).is_err(), "{addr} still listens");
    }
    held.write_all(b"pong").unwrap();
    held.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"pong", "still relayed while draining");
    drop(held);
    let line = local.wait_line(|l| l.contains(" closed ") && l.contains(&format!("target={echo} ")));
    assert!(line.contains(" up=8 down=8 ") && line.contains(" proto=forward"), "{line}");
}

#[test]
fn a_forward_through_the_trojan_server() {
    let dir = scratch("forward-trojan");
    let web = http("127.0.0.1:0");
    let fallback = http_page("127.0.0.1:0", "fallback\n");
    let port = free_port();
    let config = trojan::server_config(port, fallback.port(), "pw", &cert("server.pem"), &cert("server.key"));
    let server = Trojan::start(&dir, "server", config, port);
    let local = local(server.addr)
        .args(&["--password", "pw", "--sni", "localhost", "--forward", &format!("127.0.0.1:0={web}")])
        .start();
    assert_eq!(curl(&[&format!("http://{}/", local.forwards[0])]), PAGE);
    local.wait_line(|l| {
        l.contains(" closed ")
            && l.contains(&format!("target={web} "))
            && l.contains(" end=eof proto=forward")
    });
}

#[test]
fn the_start_up_line_lists_the_forwards_and_sigterm_stops_them() {
    let web = http("127.0.0.1:0");
    let mut pair = Pair::spawn(&[], &["--forward", &format!("127.0.0.1:0={web}")]);
    let start = pair.local.wait_line(|l| l.contains("listening on "));
    let at = start
        .split(", forwarding ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{start}"));
    assert!(start.contains(&format!("forwarding {at} to {web}, ")), "{start}");
    assert_eq!(curl(&[&format!("http://{at}/")]), PAGE);
    pair.local.wait_line(|l| l.contains(" closed ") && l.contains(" proto=forward route=proxy"));
    let stop = Command::new("kill").args(["-TERM", &pair.local.pid().to_string()]).status().unwrap();
    assert!(stop.success());
    assert_eq!(pair.local.wait_exit(), Some(0));
}
