//! The local in front of a seed-format server that is not ours: a small
//! threaded Python server that behaves as the original Python pair's server
//! does, next to blocking-server in the seed format.
//!
//! Python's `ssl` does two things by default that the local must live with:
//! it closes without close_notify (no `unwrap()`), and its server reads the
//! header with `recv` on the wrapped socket and then waits with `select` on
//! the raw socket before each next `recv`, so plaintext already decrypted
//! into OpenSSL's buffer with the header is never seen.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::support::*;

/// The seed's server, as the original threaded Python version has it: one
/// thread per client, the header read field by field with `recv`, then a
/// `select` loop that copies one `recv` at a time, and a close without
/// close_notify when either side ends. Prints its port, then serves.
const SEED_SERVER: &str = r#"
import select, socket, ssl, sys, threading

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)

def exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b

def serve(raw):
    raw.settimeout(30)
    conn = remote = None
    try:
        conn = ctx.wrap_socket(raw, server_side=True)
        atyp, n = exact(conn, 2)
        if atyp == 1:
            host = socket.inet_ntop(socket.AF_INET, exact(conn, 4))
        elif atyp == 4:
            host = socket.inet_ntop(socket.AF_INET6, exact(conn, 16))
        else:
            host = exact(conn, n).decode()
        port = int.from_bytes(exact(conn, 2), "big")
        remote = socket.create_connection((host, port), timeout=30)
        while True:
            ready, _, _ = select.select([conn, remote], [], [], 30)
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                (remote if s is conn else conn).sendall(data)
    except Exception:
        pass
    finally:
        for s in (conn, remote, raw):
            if s is not None:
                s.close()

while True:
    client, _ = listener.accept()
    threading.Thread(target=serve, args=(client,), daemon=True).start()
"#;

/// The Python seed server; killed on drop.
struct SeedServer {
    child: Child,
    addr: SocketAddr,
}

impl SeedServer {
    fn start() -> SeedServer {
        let mut child = Command::new("python3")
            .args(["-c", SEED_SERVER, &cert("server.pem"), &cert("server.key")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("seed server said {line:?}"));
        SeedServer { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }
}

impl Drop for SeedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the target sends: 1,000,000 bytes, then it closes.
const RESPONSE: usize = 1_000_000;

/// A target that reads one line, answers it with RESPONSE bytes of a
/// pattern and closes; returns its address and the bytes' digest.
fn bulk_target() -> (SocketAddr, String) {
    let addr = target("127.0.0.1:0", |mut s| {
        let mut byte = [0u8; 1];
        while s.read(&mut byte).map(|n| n == 1 && byte[0] != b'\n').unwrap_or(false) {}
        send_pattern(&mut s, 7, RESPONSE);
    });
    (addr, send_pattern(&mut std::io::sink(), 7, RESPONSE))
}

/// The seed's server and ours in the seed format, each with a local in
/// front; `check` runs against each local.
fn against_both(check: impl Fn(&str, SocketAddr, &Running)) {
    let seed = SeedServer::start();
    let local_for_seed = local(seed.addr).start();
    check("the seed's server", local_for_seed.addr, &local_for_seed);
    let ours = server_with_certs().start();
    let local_for_ours = local(ours.addr).start();
    check("blocking-server", local_for_ours.addr, &local_for_ours);
}

#[test]
fn a_client_that_reads_late_gets_every_byte_the_server_sent_before_it_closed() {
    let (tgt, digest) = bulk_target();
    against_both(|server, proxy, local| {
        let mut s = socks_connect(proxy, &tgt.to_string());
        s.write_all(b"GET\n").unwrap();
        // The behaviour under test: the client reads only after the server
        // has had time to send everything and close.
        thread::sleep(Duration::from_millis(300));
        let (len, got) = recv_digest(&mut s);
        assert_eq!((len, got.as_str()), (RESPONSE, digest.as_str()), "through {server}");
        drop(s);
        if server == "the seed's server" {
            // How it ended is still said: the seed's server never sends close_notify.
            local.wait_line(|l| l.contains(&format!("target={tgt} ")) && l.contains("without close_notify"));
        }
    });
}

#[test]
fn a_client_that_sends_its_request_before_the_socks_reply_is_served_by_a_server_that_reads_its_header_alone()
{
    let (tgt, digest) = bulk_target();
    against_both(|server, proxy, _| {
        let mut s = connect(proxy);
        let mut all = vec![5, 1, 0, 5, 1, 0];
        all.extend(socks_addr(&tgt.to_string()));
        all.extend_from_slice(b"GET\n");
        s.write_all(&all).unwrap();
        let mut reply = [0u8; 2 + 10];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(reply[..4], [5, 0, 5, 0], "through {server}");
        let (len, got) = recv_digest(&mut s);
        assert_eq!((len, got.as_str()), (RESPONSE, digest.as_str()), "through {server}");
    });
}

/// Reading at once is no protection: the end without close_notify can
/// still arrive while the last bytes are on their way to the client.
#[test]
fn a_client_that_reads_at_once_gets_every_byte_the_seed_server_sent() {
    let (tgt, digest) = bulk_target();
    let seed = SeedServer::start();
    let local = local(seed.addr).start();
    let mut s: TcpStream = socks_connect(local.addr, &tgt.to_string());
    s.write_all(b"GET\n").unwrap();
    let (len, got) = recv_digest(&mut s);
    assert_eq!((len, got), (RESPONSE, digest));
}

/// The local asks each server's TLS for a key update before the header.
/// blocking-server answers at once and asks for one back, so from it no
/// answer within the connect timeout is a server gone silent, and a slow
/// target is just slow. OpenSSL (the seed's server) answers only with its
/// first data: its first connection shows that, and from then on the local
/// waits for it as long as the target takes.
#[test]
fn a_target_slower_than_the_connect_timeout_marks_no_server_down() {
    let echo = echo("127.0.0.1:0");
    let slow = target("127.0.0.1:0", |mut s| {
        let mut request = [0u8; 4];
        if s.read_exact(&mut request).is_ok() {
            thread::sleep(Duration::from_millis(2500));
            let _ = s.write_all(b"late!");
        }
    });
    let seed = SeedServer::start();
    let ours = server_with_certs().start();
    for (name, server) in [("the seed's server", seed.addr), ("blocking-server", ours.addr)] {
        let local = local(server).args(&["--pool", "0", "--connect-timeout", "1"]).start();
        // A first connection, to a quick target, shows how the server answers.
        let mut first = socks_connect(local.addr, &echo.to_string());
        first.write_all(b"ping").unwrap();
        let mut pong = [0u8; 4];
        first.read_exact(&mut pong).unwrap();
        drop(first);
        let mut s = socks_connect(local.addr, &slow.to_string());
        s.write_all(b"GET\n").unwrap();
        let mut answer = [0u8; 5];
        s.read_exact(&mut answer).unwrap_or_else(|e| panic!("through {name}: {e}"));
        assert_eq!(&answer, b"late!", "through {name}");
        let down = format!("server {server} down: ");
        assert!(!local.lines().iter().any(|l| l.contains(&down)), "through {name}: {:#?}", local.lines());
    }
}
