//! The web site the probe tests hold the server up against: Debian's
//! nginx-light (installed by `make deps`) serving one small page on a plain
//! port, on a TLS port with the test certificate, and on a plain port that
//! takes a PROXY protocol header first.
//!
//! The TLS port is configured as deployed sites run it: TLS 1.2 and 1.3
//! (`ssl_protocols TLSv1.2 TLSv1.3`, nginx 1.23.4's default; 1.22 alone
//! would leave TLS 1.3 off), and everything else nginx's defaults: its
//! cipher list (`HIGH:!aNULL:!MD5`) in the client's order, OpenSSL's key
//! exchanges, sessions for 5 minutes with tickets.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{cert, free_port, scratch, TIMEOUT};

/// nginx's header timeout in these tests: how long a silent client is kept.
pub const HEADER_TIMEOUT_SECS: u64 = 2;

/// An nginx serving one small site on a plain port, on a TLS port, and on a
/// plain port that takes a PROXY protocol header first and logs the client
/// it names, in the foreground as one process, so that dropping it stops it.
pub struct Nginx {
    child: Child,
    /// Plain HTTP: what a server's `--fallback` names.
    pub plain: SocketAddr,
    /// HTTPS, with the test certificate: the reference a server is compared with.
    pub tls: SocketAddr,
    /// Plain HTTP after a PROXY protocol header.
    pub proxied: SocketAddr,
    /// Where the proxied port logs each request: `CLIENT to DESTINATION via PEER "REQUEST" STATUS`.
    proxied_log: PathBuf,
}

impl Nginx {
    /// Starts nginx and waits until its plain and TLS ports take connections.
    pub fn start() -> Nginx {
        let (plain, tls, proxied) = (free_port(), free_port(), free_port());
        let dir = scratch(&format!("nginx-{plain}"));
        let www = dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), "<html><body>an ordinary web site</body></html>\n").unwrap();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_header_timeout {HEADER_TIMEOUT_SECS}s;\n  \
             keepalive_timeout {HEADER_TIMEOUT_SECS}s;\n  \
             log_format proxied '$proxy_protocol_addr:$proxy_protocol_port to \
             $proxy_protocol_server_addr:$proxy_protocol_server_port via $remote_addr \"$request\" $status';\n  \
             server {{\n    listen 127.0.0.1:{plain};\n    listen 127.0.0.1:{tls} ssl;\n    \
             ssl_protocols TLSv1.2 TLSv1.3;\n    \
             ssl_certificate {cert};\n    ssl_certificate_key {key};\n    root {www};\n  }}\n  \
             server {{\n    listen 127.0.0.1:{proxied} proxy_protocol;\n    \
             access_log {dir}/proxied.log proxied;\n    root {www};\n  }}\n}}\n",
            dir = dir.display(),
            cert = cert("server.pem"),
            key = cert("server.key"),
            www = www.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx_binary())
            .args(["-p", &dir.display().to_string(), "-c", &conf_path.display().to_string()])
            .args(["-e", &dir.join("error.log").display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed (make deps installs nginx-light)");
        let nginx = Nginx {
            child,
            plain: SocketAddr::from(([127, 0, 0, 1], plain)),
            tls: SocketAddr::from(([127, 0, 0, 1], tls)),
            proxied: SocketAddr::from(([127, 0, 0, 1], proxied)),
            proxied_log: dir.join("proxied.log"),
        };
        for addr in [nginx.plain, nginx.tls] {
            let until = Instant::now() + TIMEOUT;
            while TcpStream::connect_timeout(&addr, TIMEOUT).is_err() {
                assert!(Instant::now() < until, "nginx does not listen on {addr}");
                thread::sleep(Duration::from_millis(20));
            }
        }
        nginx
    }

    /// Waits for a line of the proxied port's access log that starts with `start`.
    pub fn wait_proxied_log(&self, start: &str) -> String {
        let until = Instant::now() + TIMEOUT;
        loop {
            let log = std::fs::read_to_string(&self.proxied_log).unwrap_or_default();
            if let Some(line) = log.lines().find(|l| l.starts_with(start)) {
                return line.to_owned();
            }
            assert!(Instant::now() < until, "no access log line starting {start:?}: {log:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or("nginx".into())
}
