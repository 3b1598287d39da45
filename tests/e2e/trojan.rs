//! Interoperability with Debian's trojan (1.16, C++), the reference
//! implementation of the trojan format, in both directions.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::*;

/// A trojan process; killed on drop.
pub struct Trojan {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for Trojan {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Trojan {
    /// Runs trojan with `config` (written to `dir`/`name`.json) and waits
    /// until it accepts on 127.0.0.1:`port`.
    pub fn start(dir: &Path, name: &str, config: String, port: u16) -> Trojan {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new("trojan")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("trojan is installed (make deps)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // trojan cannot report a port it chose, so wait (bounded) until it accepts.
        let until = std::time::Instant::now() + TIMEOUT;
        while std::net::TcpStream::connect_timeout(&addr, TIMEOUT).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "trojan did not start: {}",
                std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Trojan { child, addr }
    }
}

#[test]
fn curl_through_the_trojan_client_to_blocking_server() {
    let dir = scratch("trojan-client");
    let server = server().args(&["--password", "correct horse"]).start();
    let web = http("127.0.0.1:0");
    let port = free_port();
    let config = trojan::client_config(port, server.addr, "correct horse", CA);
    let client = Trojan::start(&dir, "client", config, port);
    let body =
        curl(&["--socks5-hostname", &client.addr.to_string(), &format!("http://localhost:{}/", web.port())]);
    assert_eq!(body, PAGE);
    server.wait_line(|l| l.contains(&format!("target=localhost:{} ", web.port())) && l.ends_with("end=eof"));
}

#[test]
fn curl_through_blocking_local_to_the_trojan_server() {
    let dir = scratch("trojan-server");
    let web = http("127.0.0.1:0");
    let fallback = http_page("127.0.0.1:0", "fallback\n");
    let port = free_port();
    let config = trojan::server_config(
        port,
        fallback.port(),
        "correct horse",
        &cert("server.pem"),
        &cert("server.key"),
    );
    let server = Trojan::start(&dir, "server", config, port);
    let local = local(server.addr).args(&["--password", "correct horse", "--sni", "localhost"]).start();
    let proxy = local.addr.to_string();
    let body = curl(&["--socks5-hostname", &proxy, &format!("http://localhost:{}/", web.port())]);
    assert_eq!(body, PAGE);
    let body = curl(&["--socks5", &proxy, &format!("http://127.0.0.1:{}/", web.port())]);
    assert_eq!(body, PAGE);

    // And the trojan server does not take a wrong password: its fallback answers.
    let wrong =
        crate::support::local(server.addr).args(&["--password", "wrong", "--sni", "localhost"]).start();
    let body =
        curl(&["--socks5-hostname", &wrong.addr.to_string(), &format!("http://localhost:{}/", web.port())]);
    assert_eq!(body, "fallback\n");
}
