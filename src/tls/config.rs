//! The one place that builds rustls configurations and reads PEM files.
//!
//! Certificates and keys are read with `rustls::pki_types::pem::PemObject`
//! (rustls-pemfile is unmaintained, RUSTSEC-2025-0134). The crypto provider is
//! rustls's default, aws-lc-rs; TLS 1.3 and 1.2 are both offered.
//!
//! The local verifies the server by default against the Mozilla roots in
//! webpki-roots. Trusting a private CA ([`Trust::CaFile`]) or exactly one
//! certificate ([`Trust::Pin`], for a self-signed server) is a choice; not
//! verifying at all is a louder one ([`Trust::Insecure`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::error::Error;
use crate::file;
use crate::proto::x509;
use crate::text::hex;

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
/// handshake.
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 1,
        _ => 2,
    });
    Arc::new(p)
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
    let builder = ClientConfig::builder_with_provider(provider())
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

/// Parses 64 hex digits, bare or with a colon between every two bytes (as openssl prints them).
pub fn parse_fingerprint(s: &str) -> Option<Fingerprint> {
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
/// RFC 7301 and web servers do); a client that offers none gets none. With a
/// `previous` configuration (a reload), its session-ticket keys are kept, so
/// the locals' next connections still resume.
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
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Config(format!("cannot use {what}: {e}")))?;
    // The server's order of suites wins, so other clients get AES-128-GCM too.
    config.ignore_client_order = true;
    config.alpn_protocols = alpn.to_vec();
    // Stateless session tickets (keys rotate every few hours), so a local's
    // next connection resumes instead of repeating the full handshake.
    config.ticketer = match previous {
        Some(p) => Arc::clone(&p.ticketer),
        None => rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| Error::Config(format!("cannot set up session tickets: {e}")))?,
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

    #[test]
    fn alpn_lists_are_comma_separated_names() {
        assert_eq!(parse_alpn(DEFAULT_ALPN), Some(vec![b"http/1.1".to_vec()]));
        assert_eq!(parse_alpn("h2, http/1.1"), Some(vec![b"h2".to_vec(), b"http/1.1".to_vec()]));
        assert_eq!(parse_alpn(""), None);
        assert_eq!(parse_alpn("h2,,http/1.1"), None);
        assert_eq!(parse_alpn(&"x".repeat(256)), None);
    }
}
