//! What the key exchange costs in a TLS 1.3 handshake, full and resumed:
//! handshakes between a rustls client and server in memory, both in one
//! thread, so the thread's CPU time is the CPU of both sides.
//!
//! The server is the project's own (`blocking_proxy::tls::config::server_config`
//! with the built-in test certificate). The clients are built as
//! `blocking_proxy::tls::config::client_config` builds them (aws-lc-rs, AES-128-GCM
//! first, the test CA, ALPN http/1.1), offering: the project's own groups
//! (that function itself), X25519MLKEM768 only, and X25519 only. A full
//! handshake has resumption off on the client; a resumed one uses a ticket
//! from the one before (in TLS 1.3 with a fresh key exchange, psk_dhe_ke).
//! Either way the count includes the server's new session tickets and the
//! client reading them, as on a real connection.

use std::sync::Arc;
use std::time::Duration;

use blocking_proxy::tls::config::{self as tls, Identity, Trust};
use nix::sys::resource::{getrusage, UsageWho};
use rustls::client::Resumption;
use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, ConnectionCommon, HandshakeKind, RootCertStore, ServerConfig,
    ServerConnection, SideData,
};

/// Handshakes before each timed batch (they also fill the ticket cache).
const WARM_UP: usize = 20;

/// One client configuration under test.
pub struct Kind {
    pub label: &'static str,
    client: Arc<ClientConfig>,
}

/// A batch's result: CPU per handshake, and what was negotiated.
pub struct Measured {
    pub us: f64,
    pub group: String,
}

/// The clients to compare, and the project's server.
pub fn setup(root: &std::path::Path) -> Result<(Vec<Kind>, Arc<ServerConfig>), String> {
    let alpn = vec![tls::DEFAULT_ALPN.as_bytes().to_vec()];
    let ca = root.join("certs/ca.pem");
    let server = tls::server_config(&Identity::TestCertificate, &alpn, None)
        .map_err(|e| format!("server config: {e}"))?
        .config;
    let project =
        tls::client_config(&Trust::CaFile(ca.clone()), &alpn).map_err(|e| format!("client config: {e}"))?;
    let kinds = vec![
        Kind { label: "as blocking-local offers them", client: project },
        Kind { label: "X25519MLKEM768 only", client: client_with(&ca, &alpn, kx_group::X25519MLKEM768)? },
        Kind { label: "X25519 only", client: client_with(&ca, &alpn, kx_group::X25519)? },
    ];
    Ok((kinds, server))
}

/// A client configuration as the project builds one with `--ca`, offering only `group`.
fn client_with(
    ca: &std::path::Path,
    alpn: &[Vec<u8>],
    group: &'static dyn SupportedKxGroup,
) -> Result<Arc<ClientConfig>, String> {
    let mut p: CryptoProvider = aws_lc_rs::default_provider();
    // As blocking_proxy::tls::config::provider: AES-128-GCM first.
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 1,
        _ => 2,
    });
    p.kx_groups = vec![group];
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(p))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(config))
}

/// Moves what `from` has to send into `to`; whether anything moved.
fn pass<A: SideData, B: SideData>(
    from: &mut ConnectionCommon<A>,
    to: &mut ConnectionCommon<B>,
    buf: &mut Vec<u8>,
) -> Result<bool, String> {
    let mut moved = false;
    while from.wants_write() {
        buf.clear();
        from.write_tls(buf).map_err(|e| format!("write_tls: {e}"))?;
        moved |= !buf.is_empty();
        let mut rd = &buf[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).map_err(|e| format!("read_tls: {e}"))?;
            to.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
        }
    }
    Ok(moved)
}

/// One handshake to the end, the server's tickets read by the client.
fn handshake(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
    buf: &mut Vec<u8>,
) -> Result<ClientConnection, String> {
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut c = ClientConnection::new(Arc::clone(client), name).map_err(|e| format!("client: {e}"))?;
    let mut s = ServerConnection::new(Arc::clone(server)).map_err(|e| format!("server: {e}"))?;
    for _ in 0..16 {
        let there = pass(&mut c, &mut s, buf)?;
        let back = pass(&mut s, &mut c, buf)?;
        if !there && !back && !c.is_handshaking() && !s.is_handshaking() {
            return Ok(c);
        }
    }
    Err("the handshake did not finish".into())
}

/// CPU time of the calling thread (user + system).
fn thread_cpu() -> Result<Duration, String> {
    let u = getrusage(UsageWho::RUSAGE_THREAD).map_err(|e| format!("getrusage: {e}"))?;
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e6 + t.tv_usec() as f64;
    Ok(Duration::from_secs_f64((us(u.user_time()) + us(u.system_time())) / 1e6))
}

/// `n` handshakes of `kind` with `server`, full or `resumed`, after a
/// warm-up: the calling thread's CPU per handshake, in µs.
pub fn measure(kind: &Kind, server: &Arc<ServerConfig>, resumed: bool, n: usize) -> Result<Measured, String> {
    let client = if resumed {
        Arc::clone(&kind.client)
    } else {
        let mut c = (*kind.client).clone();
        c.resumption = Resumption::disabled();
        Arc::new(c)
    };
    let want = if resumed { HandshakeKind::Resumed } else { HandshakeKind::Full };
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut group = String::from("?");
    for _ in 0..WARM_UP {
        let c = handshake(&client, server, &mut buf)?;
        group = c.negotiated_key_exchange_group().map_or("none".into(), |g| format!("{:?}", g.name()));
    }
    let cpu0 = thread_cpu()?;
    for _ in 0..n {
        let c = handshake(&client, server, &mut buf)?;
        if c.handshake_kind() != Some(want) {
            return Err(format!("{}: a {want:?} handshake came out {:?}", kind.label, c.handshake_kind()));
        }
    }
    let cpu = thread_cpu()?.saturating_sub(cpu0);
    Ok(Measured { us: cpu.as_secs_f64() * 1e6 / n.max(1) as f64, group })
}
