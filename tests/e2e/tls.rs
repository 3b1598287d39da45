//! blocking-server against hand-driven rustls clients and hand-written
//! ClientHellos: the original local's TLS 1.2 + seed header, KeyUpdates in
//! the middle of bulk both ways, and the alerts of refused handshakes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use blocking_proxy::proto::addr::Target;
use blocking_proxy::proto::wire::encode_seed;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::support::hello::{self, ext, Outcome};
use crate::support::*;

fn client_config(versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let ca = std::fs::read(CA).unwrap();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_protocol_versions(versions)
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

fn tls_connect(
    server: SocketAddr,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> StreamOwned<ClientConnection, TcpStream> {
    let sock = connect(server);
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(client_config(versions), name).unwrap();
    StreamOwned::new(conn, sock)
}

/// Sends close_notify, expects the echo target's EOF back with nothing
/// before it, and the server to log a clean end.
fn close_and_expect_eof(
    mut tls: StreamOwned<ClientConnection, TcpStream>,
    server: &Running,
    tgt: SocketAddr,
) {
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    server.wait_line(|l| l.contains(&format!("target={tgt} ")) && l.ends_with("end=eof"));
}

fn seed(target: SocketAddr) -> Vec<u8> {
    let mut h = Vec::new();
    encode_seed(&Target::Ip(target), &mut h);
    h
}

#[test]
fn a_tls12_client_speaking_the_seed_header_gets_through() {
    let server = server().start();
    let tgt = echo("127.0.0.1:0");
    let mut tls = tls_connect(server.addr, &[&rustls::version::TLS12]);
    let mut first = seed(tgt);
    first.extend_from_slice(b"hello over tls 1.2");
    tls.write_all(&first).unwrap();
    let mut back = [0u8; 18];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello over tls 1.2");
    assert_eq!(tls.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    close_and_expect_eof(tls, &server, tgt);
}

#[test]
fn the_header_may_arrive_one_byte_per_record() {
    let server = server().start();
    let tgt = echo("127.0.0.1:0");
    let mut tls = tls_connect(server.addr, &[&rustls::version::TLS13]);
    for b in seed(tgt) {
        tls.write_all(&[b]).unwrap();
    }
    tls.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
}

/// A TLS record cut in two by a pause longer than the relay's quiet time:
/// the server frees its buffers with half a record inside rustls, and the
/// record must still decrypt whole when its second half arrives. The same
/// for close_notify after a pause.
#[test]
fn a_record_split_by_a_quiet_pause_still_arrives() {
    let pause = blocking_proxy::conn::relay::QUIET * 3;
    let server = server().start();
    let tgt = echo("127.0.0.1:0");
    let tls = tls_connect(server.addr, &[&rustls::version::TLS13]);
    let (mut conn, mut sock) = (tls.conn, tls.sock);
    conn.complete_io(&mut &sock).unwrap();
    // The header goes first, whole: the relay starts once it has been read.
    let mut first = seed(tgt);
    first.extend_from_slice(b"first");
    conn.writer().write_all(&first).unwrap();
    conn.complete_io(&mut &sock).unwrap();
    let mut back = [0u8; 5];
    while conn.reader().read_exact(&mut back).is_err() {
        conn.complete_io(&mut &sock).unwrap();
    }
    assert_eq!(&back, b"first");
    thread::sleep(pause); // the traffic pattern under test, not a wait for an event
    conn.writer().write_all(b"split in two").unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    let half = wire.len() - 5;
    sock.write_all(&wire[..half]).unwrap();
    thread::sleep(pause);
    sock.write_all(&wire[half..]).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    let mut back = [0u8; 12];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"split in two");
    thread::sleep(pause);
    close_and_expect_eof(tls, &server, tgt);
}

/// Bulk both ways through blocking-server while the client asks for a
/// KeyUpdate every 256 KiB: the server's reader must answer with its own
/// KeyUpdate while its writer is busy, without reordering records.
#[test]
fn key_updates_during_bulk_both_ways() {
    const LEN: usize = 8 << 20;
    let server = server().start();
    let tgt = echo("127.0.0.1:0");
    let tls = tls_connect(server.addr, &[&rustls::version::TLS13]);
    let (mut conn, sock) = (tls.conn, tls.sock);
    conn.complete_io(&mut &sock).unwrap();
    // Short socket timeouts make each write and read a bounded wait, so one
    // thread can both send and receive without deadlocking on full buffers.
    sock.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    sock.set_write_timeout(Some(Duration::from_millis(5))).unwrap();

    let mut out = Pattern::new(42);
    let mut sent_digest = Digest::new();
    let mut got_digest = Digest::new();
    let (mut sent, mut got, mut closed) = (0usize, 0usize, false);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut plain = vec![0u8; 64 * 1024];
    let header = seed(tgt);
    conn.writer().write_all(&header).unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT * 3;
    let mut updates = 0;
    loop {
        assert!(std::time::Instant::now() < deadline, "stalled at sent={sent} got={got}");
        if sent < LEN && !conn.wants_write() {
            let n = chunk.len().min(LEN - sent);
            out.fill(&mut chunk[..n]);
            conn.writer().write_all(&chunk[..n]).unwrap();
            sent_digest.update(&chunk[..n]);
            sent += n;
            if sent % (256 * 1024) == 0 {
                conn.refresh_traffic_keys().unwrap();
                updates += 1;
            }
        } else if sent == LEN && !closed {
            conn.send_close_notify();
            closed = true;
        }
        while conn.wants_write() {
            match conn.write_tls(&mut &sock) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        match conn.read_tls(&mut &sock) {
            Ok(0) => panic!("server closed early at got={got}"),
            Ok(_) => {
                conn.process_new_packets().unwrap();
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
        loop {
            match conn.reader().read(&mut plain) {
                Ok(0) => {
                    assert_eq!(got, LEN);
                    assert_eq!(got_digest.hex(), sent_digest.hex());
                    assert!(updates >= 30);
                    let _ = sock.shutdown(Shutdown::Both);
                    return;
                }
                Ok(n) => {
                    got_digest.update(&plain[..n]);
                    got += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("plaintext: {e}"),
            }
        }
    }
}

#[test]
fn many_connections_with_key_updates_at_once() {
    let server = server().start();
    let tgt = echo("127.0.0.1:0");
    let workers: Vec<_> = (0..16)
        .map(|i| {
            let addr = server.addr;
            thread::spawn(move || {
                let mut tls = tls_connect(addr, &[&rustls::version::TLS13]);
                tls.write_all(&seed(tgt)).unwrap();
                let mut p = Pattern::new(i);
                let mut buf = vec![0u8; 8 * 1024];
                let mut back = vec![0u8; 8 * 1024];
                for _ in 0..32 {
                    p.fill(&mut buf);
                    tls.write_all(&buf).unwrap();
                    tls.conn.refresh_traffic_keys().unwrap();
                    tls.read_exact(&mut back).unwrap();
                    assert_eq!(back, buf);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

/// The seed header exactly as the original Python local writes it
/// (`struct.pack('!BB', 3, len(host)) + host + struct.pack('!H', port)`),
/// without this crate's encoder, over TLS 1.2 as that local speaks.
#[test]
fn the_original_python_locals_bytes_get_through() {
    let server = server().start();
    let tgt = echo("127.0.0.1:0");
    let mut tls = tls_connect(server.addr, &[&rustls::version::TLS12]);
    let mut header = vec![0x03, 0x09];
    header.extend_from_slice(b"localhost");
    header.extend_from_slice(&tgt.port().to_be_bytes());
    header.extend_from_slice(b"payload in the same write");
    tls.write_all(&header).unwrap();
    let mut back = [0u8; 25];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"payload in the same write");
    // And the IPv4 form, LEN 0 as the original writes it.
    let mut tls = tls_connect(server.addr, &[&rustls::version::TLS12]);
    let mut header = vec![0x01, 0x00, 127, 0, 0, 1];
    header.extend_from_slice(&tgt.port().to_be_bytes());
    header.extend_from_slice(b"v4");
    tls.write_all(&header).unwrap();
    let mut back = [0u8; 2];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"v4");
}

/// The error a rustls client offering `alpn` over `version` meets in its handshake with `server`.
fn handshake_error(
    server: SocketAddr,
    version: &'static rustls::SupportedProtocolVersion,
    alpn: &[&str],
) -> Option<rustls::Error> {
    let mut config = (*client_config(&[version])).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = connect(server);
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            let tls = e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()).cloned();
            return Some(tls.unwrap_or_else(|| rustls::Error::General(format!("not a TLS error: {e}"))));
        }
    }
    None
}

/// RFC 7301 (and PROTOCOL.md): a server that speaks none of the protocols a
/// client offers answers no_application_protocol. nginx (OpenSSL) sends it
/// in the clear instead of a ServerHello; so does blocking-server, in both
/// TLS versions, and a TLS client reads it as that alert.
#[test]
fn a_client_offering_only_protocols_the_server_lacks_gets_no_application_protocol() {
    let server = server().start();
    let mut seen = Vec::new();
    for offered in [&["h2"][..], &["x-unknown/1"]] {
        for (name, hello) in [("TLS 1.3", hello::curl()), ("TLS 1.2", hello::curl().tls12_only())] {
            let answer =
                hello::exchange(server.addr, &hello.with(ext::ALPN, Some(hello::alpn(offered))).bytes());
            println!(
                "a hello offering {offered:?} over {name}: {}, records {}",
                answer.outcome(),
                answer.split()
            );
            seen.push((format!("{offered:?} over {name}"), answer.outcome(), answer.split()));
        }
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let error = handshake_error(server.addr, version, offered);
            println!("a rustls client offering {offered:?} over {:?}: {error:?}", version.version);
            let alert = rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol);
            assert_eq!(error, Some(alert), "{offered:?} over {:?}", version.version);
        }
    }
    for (what, outcome, split) in seen {
        assert_eq!(outcome, Outcome::Alert { description: 120, record: hello::TLS12 }, "{what}");
        assert_eq!(split, "alert", "{what}: the alert alone, then the close");
    }
    // A client that offers one of ours, or none, is served.
    assert_eq!(handshake_error(server.addr, &rustls::version::TLS13, &["h2", "http/1.1"]), None);
    assert_eq!(handshake_error(server.addr, &rustls::version::TLS13, &[]), None);
}

/// A client that speaks TLS 1.0 or 1.1 at most is refused with
/// protocol_version in a record of its own version, as nginx (OpenSSL)
/// refuses it, with or without signature_algorithms in its hello.
#[test]
fn a_tls10_or_tls11_client_is_refused_with_protocol_version_in_its_own_version() {
    let server = server().start();
    for version in [hello::TLS10, hello::TLS11] {
        let plain = hello::legacy(version);
        let signing = plain.clone().with(ext::SIGNATURE_ALGORITHMS, Some(hello::list(&[0x0403, 0x0201])));
        for hello in [plain, signing] {
            let answer = hello::exchange(server.addr, &hello.bytes());
            println!("{}: {}, records {}", hello::version_name(version), answer.outcome(), answer.split());
            assert_eq!(answer.outcome(), Outcome::Alert { description: 70, record: version });
            assert_eq!(answer.split(), "alert");
        }
    }
}

#[test]
fn a_request_refused_after_a_valid_password_ends_with_close_notify() {
    let server = server().args(&["--password", "pw"]).start();
    let hash = blocking_proxy::proto::wire::trojan_hash("pw");
    // A valid password, then a header the server will not serve: an
    // unknown command, and a name with a control character.
    let mut unknown = Vec::new();
    blocking_proxy::proto::wire::encode_trojan_request(
        &hash,
        blocking_proxy::proto::wire::Command::Connect,
        &Target::Ip("127.0.0.1:9".parse().unwrap()),
        &mut unknown,
    );
    unknown[58] = 9;
    let mut bad_name = Vec::new();
    blocking_proxy::proto::wire::encode_trojan_request(
        &hash,
        blocking_proxy::proto::wire::Command::Connect,
        &Target::Domain("bad\u{1}name".into(), 80),
        &mut bad_name,
    );
    for header in [unknown, bad_name] {
        let mut tls = tls_connect(server.addr, &[&rustls::version::TLS13]);
        tls.write_all(&header).unwrap();
        tls.flush().unwrap();
        let mut rest = Vec::new();
        // read_to_end fails with UnexpectedEof on a TCP end without close_notify.
        let end = tls.read_to_end(&mut rest);
        assert!(end.is_ok() && rest.is_empty(), "{end:?}: the server said it ended on purpose");
    }
    server.wait_lines(2, |l| l.contains("end=header: protocol: "));
}
