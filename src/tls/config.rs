//! The one place that builds rustls configurations and reads PEM files.
//!
//! Certificates and keys are read with `rustls::pki_types::pem::PemObject`
//! (rustls-pemfile is unmaintained, RUSTSEC-2025-0134). The crypto provider is
//! rustls's default, aws-lc-rs; TLS 1.3 and 1.2 are both offered.
//!
//! The server's handshake shows what a web server's (nginx on OpenSSL)
//! shows where rustls lets it: the client's order of suites decides, a TLS
//! 1.3 client may use P-521 ([`super::kx`]), and session tickets last 5
//! minutes. What rustls does not let it change is listed in PROTOCOL.md
//! ("Known differences from nginx").
//!
//! The local verifies the server by default against the Mozilla roots in
//! webpki-roots. Trusting a private CA ([`Trust::CaFile`]) or exactly one
//! certificate ([`Trust::Pin`], for a self-signed server) is a choice; not
//! verifying at all is a louder one ([`Trust::Insecure`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ProducesTickets;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::error::Error;
use crate::file;
use crate::proto::x509;
use crate::text::hex;

use super::kx;

/// The test server certificate chain, used by `blocking-server` when no `--cert` is given.
pub const TEST_CERT_PEM: &[u8] = include_bytes!("../../certs/server.pem");
/// The key of [`TEST_CERT_PEM`]. It is public: for tests and demos on loopback only.
pub const TEST_KEY_PEM: &[u8] = include_bytes!("../../certs/server.key");

/// How blocking-local decides to trust the server's certificate.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The Mozilla root store shipped in webpki-roots (the default).
    WebPki,
    /// Only the CA certificates in this PEM file.
    CaFile(PathBuf),
    /// Exactly the certificates with these SHA-256 fingerprints, whoever signed them.
    Pin(Vec<Fingerprint>),
    /// Any certificate at all. Encrypts, but anyone on the path can pretend to be the server.
    Insecure,
}

/// Where blocking-server finds its certificate chain and key.
#[derive(Clone, Debug)]
pub enum Identity {
    /// A PEM chain (leaf first, as in fullchain.pem) and a PEM key (PKCS#8, PKCS#1 or SEC1).
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// The test certificate for localhost built into the binary.
    TestCertificate,
}

/// rustls's default provider (aws-lc-rs) with AES-128-GCM first: the same
/// suites and key exchanges (X25519MLKEM768 first), but bulk encryption and
/// the key schedule (SHA-256 rather than SHA-384) cost less per byte and per
/// handshake. The local offers the suites in this order, and the server,
/// which follows the client's order, picks AES-128-GCM for it.
fn provider() -> CryptoProvider {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 1,
        _ => 2,
    });
    p
}

/// The server's provider: the local's, and P-521 last for TLS 1.3 clients
/// that offer nothing else, as OpenSSL serves them ([`kx`]).
fn server_provider() -> Arc<CryptoProvider> {
    let mut p = provider();
    p.kx_groups.push(kx::SECP521R1);
    Arc::new(p)
}

/// How long a session ticket says it may be used, and is taken: nginx's
/// `ssl_session_timeout` by default, 5 minutes, so the server's tickets
/// say what a web server's say. A local that comes back within that time
/// resumes; later, it makes a full handshake.
pub const TICKET_LIFETIME_SECS: u32 = 300;

/// rustls's ticketer (its keys rotate every 6 hours), with tickets that say
/// and keep [`TICKET_LIFETIME_SECS`]: each ticket carries, inside its
/// encryption, when it was made, and one older than its lifetime is not
/// taken (nginx does not resume an expired session either; rustls would
/// take any ticket its keys open).
#[derive(Debug)]
struct Tickets {
    keys: Arc<dyn ProducesTickets>,
    /// Seconds since the Unix epoch: the system clock, or a test's.
    now: fn() -> u64,
}

/// The system clock in seconds since the Unix epoch (0 if it is set before it).
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        self.keys.enabled()
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }

    fn encrypt(&self, state: &[u8]) -> Option<Vec<u8>> {
        let mut plain = (self.now)().to_be_bytes().to_vec();
        plain.extend_from_slice(state);
        self.keys.encrypt(&plain)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let plain = self.keys.decrypt(ticket)?;
        let (made, state) = plain.split_first_chunk::<8>()?;
        // A clock set back makes a ticket younger, never refused.
        let age = (self.now)().saturating_sub(u64::from_be_bytes(*made));
        (age <= u64::from(TICKET_LIFETIME_SECS)).then(|| state.to_vec())
    }
}

/// The ALPN protocols both sides use unless told otherwise: what a web
/// server over HTTPS selects, so the pair's handshake looks like one.
pub const DEFAULT_ALPN: &str = "http/1.1";

/// Parses a comma-separated ALPN list (`h2,http/1.1`): each name 1 to 255
/// bytes, at least one.
pub fn parse_alpn(list: &str) -> Option<Vec<Vec<u8>>> {
    let names: Vec<Vec<u8>> = list.split(',').map(|n| n.trim().as_bytes().to_vec()).collect();
    names.iter().all(|n| (1..=255).contains(&n.len())).then_some(names)
}

/// Builds the client configuration for the connection to the server,
/// offering the ALPN protocols `alpn` (in order of preference).
pub fn client_config(trust: &Trust, alpn: &[Vec<u8>]) -> Result<Arc<ClientConfig>, Error> {
    let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("tls: {e}")))?;
    let mut config = match trust {
        Trust::WebPki => {
            let roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, "CA file")? {
                roots
                    .add(cert)
                    .map_err(|e| Error::Config(format!("bad CA certificate in {}: {e}", path.display())))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Pin(pins) => {
            let provider = Arc::clone(builder.crypto_provider());
            let verifier = KeyOnly { provider, pins: Some(pins.clone()) };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
        }
        Trust::Insecure => {
            let provider = Arc::clone(builder.crypto_provider());
            let verifier = KeyOnly { provider, pins: None };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
        }
    };
    config.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(config))
}

/// The SHA-256 of a certificate's DER encoding.
pub type Fingerprint = [u8; 32];

/// The fingerprint of `cert`.
pub fn fingerprint(cert: &CertificateDer<'_>) -> Fingerprint {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lowercase hex, as `--pin` takes it and the server logs it.
pub fn fingerprint_hex(f: &Fingerprint) -> String {
    hex(f)
}

/// Parses 64 hex digits, bare or with a colon between every two bytes (as
/// openssl prints them), alone or as the whole line `openssl x509
/// -fingerprint -sha256` prints (`sha256 Fingerprint=AB:CD:…`).
pub fn parse_fingerprint(s: &str) -> Option<Fingerprint> {
    let s = s.trim();
    let s = match s.split_once('=') {
        Some((label, hex)) if label.trim().eq_ignore_ascii_case("sha256 fingerprint") => hex.trim(),
        _ => s,
    };
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    let colons = !s.contains(':')
        || (s.len() == 95 && s.bytes().enumerate().all(|(i, b)| (b == b':') == (i % 3 == 2)));
    if hex.len() != 64 || !colons || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// A server configuration, with what the server logs about its certificate.
pub struct Served {
    /// The configuration for new connections.
    pub config: Arc<ServerConfig>,
    /// The leaf certificate's SHA-256 fingerprint (what `--pin` takes).
    pub fingerprint: Fingerprint,
    /// When the leaf certificate expires, if its DER could be read.
    pub expires: Option<SystemTime>,
}

/// Builds the server configuration; a key that does not match the certificate
/// is an error here. The server selects the first protocol of `alpn` that the
/// client offers, and refuses a client that offers ALPN but none of them (as
/// RFC 7301 and web servers do); a client that offers none gets none. It
/// follows the client's order of suites, and its session tickets last
/// [`TICKET_LIFETIME_SECS`], as nginx's do. With a `previous` configuration
/// (a reload), its session-ticket keys are kept, so the locals' next
/// connections still resume.
pub fn server_config(
    identity: &Identity,
    alpn: &[Vec<u8>],
    previous: Option<&ServerConfig>,
) -> Result<Served, Error> {
    let (chain, key, what) = match identity {
        Identity::Files { cert, key: key_path } => {
            let chain = read_certs(cert, "certificate file")?;
            let pem = file::read(key_path, "key file")?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| pem_error(key_path, "key file", e))?;
            let what = format!("key {} with certificate {}", key_path.display(), cert.display());
            (chain, key, what)
        }
        Identity::TestCertificate => {
            let chain = CertificateDer::pem_slice_iter(TEST_CERT_PEM)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Config(format!("built-in test certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(TEST_KEY_PEM)
                .map_err(|e| Error::Config(format!("built-in test key: {e}")))?;
            (chain, key, "the built-in test certificate".to_owned())
        }
    };
    let leaf = fingerprint(&chain[0]);
    let expires = x509::not_after(&chain[0]);
    let mut config = ServerConfig::builder_with_provider(server_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => Error::Config(format!(
                "cannot use {what}: the key does not belong to the certificate (give the key made with it: privkey.pem beside fullchain.pem)"
            )),
            e => Error::Config(format!("cannot use {what}: {e}")),
        })?;
    // The client's order of suites wins, as on nginx (`ssl_prefer_server_ciphers off`).
    config.ignore_client_order = false;
    config.alpn_protocols = alpn.to_vec();
    // Stateless session tickets, good for 5 minutes as nginx's are, so a
    // local's next connection soon after resumes instead of repeating the
    // full handshake.
    config.ticketer = match previous {
        Some(p) => Arc::clone(&p.ticketer),
        None => {
            let keys = rustls::crypto::aws_lc_rs::Ticketer::new()
                .map_err(|e| Error::Config(format!("cannot set up session tickets: {e}")))?;
            Arc::new(Tickets { keys, now: unix_now })
        }
    };
    Ok(Served { config: Arc::new(config), fingerprint: leaf, expires })
}

/// The name to verify the server as and send in SNI: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| Error::Config(format!("invalid server name: {host}")))
}

/// Reads every certificate of a PEM file (by [`file::read`]); an empty file is an error.
fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = file::read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, what, e))?;
    if certs.is_empty() {
        return Err(Error::Config(format!("no certificate in {what} {}", path.display())));
    }
    Ok(certs)
}

fn pem_error(path: &Path, what: &str, e: rustls::pki_types::pem::Error) -> Error {
    use rustls::pki_types::pem::Error as Pem;
    let path = path.display();
    Error::Config(match e {
        Pem::Io(e) => format!("cannot read {what} {path}: {e}"),
        Pem::NoItemsFound => format!("nothing usable in {what} {path}"),
        e => format!("bad PEM in {what} {path}: {e}"),
    })
}

/// A verifier that ignores chains and names: with `pins` it accepts exactly
/// the pinned certificates, without them any certificate (`--insecure`).
/// Either way the handshake signature is checked, so the connection is bound
/// to the key of the certificate it was shown.
struct KeyOnly {
    provider: Arc<CryptoProvider>,
    pins: Option<Vec<Fingerprint>>,
}

impl fmt::Debug for KeyOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.pins.is_some() { "Pinned" } else { "AnyCertificate" })
    }
}

impl ServerCertVerifier for KeyOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pins {
            Some(pins) if !pins.contains(&fingerprint(end_entity)) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_may_be_the_whole_line_openssl_prints() {
        let colons = ["ab"; 32].join(":");
        let want = parse_fingerprint(&"ab".repeat(32));
        assert!(want.is_some());
        assert_eq!(parse_fingerprint(&format!("sha256 Fingerprint={colons}")), want);
        assert_eq!(parse_fingerprint(&format!("SHA256 Fingerprint={}", colons.to_uppercase())), want);
        assert_eq!(parse_fingerprint(&format!("sha1 Fingerprint={colons}")), None, "another hash");
    }

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let f = [0xab; 32];
        let hex = fingerprint_hex(&f);
        assert_eq!(parse_fingerprint(&hex), Some(f));
        let colons =
            hex.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":");
        assert_eq!(parse_fingerprint(&colons.to_uppercase()), Some(f));
        assert_eq!(parse_fingerprint("abcd"), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
        assert_eq!(parse_fingerprint(&"+a".repeat(32)), None, "no sign");
        for bad in
            [format!(":{hex}"), format!("{colons}:"), format!("a:{}", &hex[1..]), colons.replacen(':', "", 1)]
        {
            assert_eq!(parse_fingerprint(&bad), None, "{bad}");
        }
    }

    static NOW: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    fn test_clock() -> u64 {
        NOW.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn session_tickets_say_five_minutes_and_are_not_taken_after() {
        use std::sync::atomic::Ordering::SeqCst;
        let keys = rustls::crypto::aws_lc_rs::Ticketer::new().unwrap();
        let tickets = Tickets { keys, now: test_clock };
        assert_eq!(tickets.lifetime(), 300);
        NOW.store(1_700_000_000, SeqCst);
        let ticket = tickets.encrypt(b"session state").unwrap();
        for (at, taken) in
            [(1_700_000_000, true), (1_700_000_300, true), (1_700_000_301, false), (1_699_999_000, true)]
        {
            NOW.store(at, SeqCst);
            let state = tickets.decrypt(&ticket);
            assert_eq!(state.as_deref(), taken.then_some(&b"session state"[..]), "at {at}");
        }
        let mut forged = ticket.clone();
        forged[20] ^= 1;
        NOW.store(1_700_000_000, SeqCst);
        assert_eq!(tickets.decrypt(&forged), None);
    }

    #[test]
    fn alpn_lists_are_comma_separated_names() {
        assert_eq!(parse_alpn(DEFAULT_ALPN), Some(vec![b"http/1.1".to_vec()]));
        assert_eq!(parse_alpn("h2, http/1.1"), Some(vec![b"h2".to_vec(), b"http/1.1".to_vec()]));
        assert_eq!(parse_alpn(""), None);
        assert_eq!(parse_alpn("h2,,http/1.1"), None);
        assert_eq!(parse_alpn(&"x".repeat(256)), None);
    }
}
