//! A key exchange that OpenSSL, and so a web server, offers and rustls's
//! provider lacks: ECDHE on P-521 (secp521r1), for TLS 1.3 only.
//!
//! A TLS 1.3 client that offers only P-521 gets a handshake from nginx; the
//! server gives it one too instead of a handshake_failure that would set it
//! apart. Over TLS 1.2 OpenSSL refuses such a client (its certificate's
//! curve must be among the client's groups, and the test certificate's, like
//! most, is P-256), so the group is not offered there. It comes last in the
//! server's list and the local never offers it: it changes nothing for a
//! client that offers any other group.
//!
//! The arithmetic is aws-lc-rs's ECDH, which checks that the peer's point is
//! on the curve; this module only frames it for rustls, as rustls frames
//! P-256 and P-384.

use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::{NamedGroup, ProtocolVersion};

use aws_lc_rs::agreement::{self, EphemeralPrivateKey, PublicKey, UnparsedPublicKey, ECDH_P521};
use aws_lc_rs::rand::SystemRandom;

/// Ephemeral ECDH on secp521r1, for TLS 1.3.
pub static SECP521R1: &dyn SupportedKxGroup = &P521;

#[derive(Debug)]
struct P521;

impl SupportedKxGroup for P521 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let key = EphemeralPrivateKey::generate(&ECDH_P521, &SystemRandom::new())
            .map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        let public = key.compute_public_key().map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
        Ok(Box::new(Exchange { key, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::secp521r1
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        version == ProtocolVersion::TLSv1_3
    }
}

/// Our half of one exchange: the private key and the public point sent.
struct Exchange {
    key: EphemeralPrivateKey,
    public: PublicKey,
}

impl ActiveKeyExchange for Exchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        // TLS 1.3 allows only the uncompressed form (RFC 8446, 4.2.8.2);
        // aws-lc-rs would take others.
        if peer.first() != Some(&0x04) {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        let peer = UnparsedPublicKey::new(&ECDH_P521, peer);
        agreement::agree_ephemeral(self.key, peer, (), |secret| Ok(SharedSecret::from(secret)))
            .map_err(|()| rustls::PeerMisbehaved::InvalidKeyShare.into())
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_ref()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::secp521r1
    }
}

#[cfg(test)]
mod tests {
    use super::SECP521R1;
    use rustls::ProtocolVersion;

    #[test]
    fn both_sides_of_a_p521_exchange_agree_and_a_bad_point_is_refused() {
        let (a, b) = (SECP521R1.start().unwrap(), SECP521R1.start().unwrap());
        let (a_pub, b_pub) = (a.pub_key().to_vec(), b.pub_key().to_vec());
        assert_eq!(a_pub.len(), 133, "an uncompressed P-521 point");
        let (sa, sb) = (a.complete(&b_pub).unwrap(), b.complete(&a_pub).unwrap());
        assert_eq!(sa.secret_bytes(), sb.secret_bytes());
        assert_eq!(sa.secret_bytes().len(), 66, "the x coordinate");
        let mut off_curve = b_pub.clone();
        off_curve[132] ^= 1;
        assert!(SECP521R1.start().unwrap().complete(&off_curve).is_err());
        assert!(SECP521R1.start().unwrap().complete(&b_pub[..67]).is_err(), "cut short");
        let mut compressed = b_pub[..67].to_vec();
        compressed[0] = 0x02;
        assert!(SECP521R1.start().unwrap().complete(&compressed).is_err(), "compressed");
        assert!(SECP521R1.usable_for_version(ProtocolVersion::TLSv1_3));
        assert!(!SECP521R1.usable_for_version(ProtocolVersion::TLSv1_2));
    }
}
