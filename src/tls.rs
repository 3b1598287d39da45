//! The one place that builds rustls configurations and reads PEM files.
//!
//! Certificates and keys are read with `rustls::pki_types::pem::PemObject`
//! (rustls-pemfile is unmaintained, RUSTSEC-2025-0134). The crypto provider is
//! rustls's default, aws-lc-rs; TLS 1.3 and 1.2 are both offered.
//!
//! The local verifies the server by default against the Mozilla roots in
//! webpki-roots. Trusting a private CA is a choice ([`Trust::CaFile`]); not
//! verifying at all is a louder one ([`Trust::Insecure`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::Error;

/// The test server certificate chain, used by `blocking-server` when no `--cert` is given.
pub const TEST_CERT_PEM: &[u8] = include_bytes!("../certs/server.pem");
/// The key of [`TEST_CERT_PEM`]. It is public: for tests and demos on loopback only.
pub const TEST_KEY_PEM: &[u8] = include_bytes!("../certs/server.key");

/// How blocking-local decides to trust the server's certificate.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The Mozilla root store shipped in webpki-roots (the default).
    WebPki,
    /// Only the CA certificates in this PEM file.
    CaFile(PathBuf),
    /// Any certificate at all. Encrypts, but anyone on the path can pretend to be the server.
    Insecure,
}

/// Where blocking-server finds its certificate chain and key.
#[derive(Clone, Debug)]
pub enum Identity {
    /// A PEM chain (leaf first, as in fullchain.pem) and a PEM key (PKCS#8, PKCS#1 or SEC1).
    Files { cert: PathBuf, key: PathBuf },
    /// The test certificate for localhost built into the binary.
    TestCertificate,
}

/// Builds the client configuration for the connection to the server.
pub fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>, Error> {
    let builder = ClientConfig::builder();
    let config = match trust {
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
        Trust::Insecure => {
            let provider = Arc::clone(builder.crypto_provider());
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// Builds the server configuration; a key that does not match the certificate is an error here.
pub fn server_config(identity: &Identity) -> Result<Arc<ServerConfig>, Error> {
    let (chain, key, what) = match identity {
        Identity::Files { cert, key: key_path } => {
            let chain = read_certs(cert, "certificate file")?;
            let key =
                PrivateKeyDer::from_pem_file(key_path).map_err(|e| pem_error(key_path, "key file", e))?;
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
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Config(format!("cannot use {what}: {e}")))?;
    Ok(Arc::new(config))
}

/// The name to verify the server as and send in SNI: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| Error::Config(format!("invalid server name: {host}")))
}

/// Reads every certificate of a PEM file; an empty file is an error.
fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, what, e))?
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

/// A verifier that accepts any certificate but still checks the handshake
/// signature, so the connection is at least bound to the key it was shown.
struct AnyCertificate(Arc<CryptoProvider>);

impl fmt::Debug for AnyCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AnyCertificate")
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
