//! The one field of a TLS ClientHello the server reads itself: the version
//! the client asks for (`legacy_version`), so that it can refuse a client
//! that speaks TLS 1.1 at most with protocol_version in a record of that
//! client's version, as OpenSSL, and so a web server, refuses it.
//!
//! rustls parses the ClientHello, but refuses such a client before it looks
//! at the version, and does not say what the version was. The field sits at
//! a fixed place in the first record a client sends:
//!
//! ```text
//! record:    type 22 (handshake) | version (2) | length (2)
//! handshake: type 1 (ClientHello) | length (3)
//! hello:     legacy_version (2) | random (32) | …
//! ```
//!
//! Only those eleven bytes are read, and only when the first record is
//! long enough to hold them; anything else is `None`.

/// How many bytes from the start of a connection hold the version: the
/// record header (5), the handshake header (4) and the version (2).
pub const START: usize = 11;

/// TLS 1.2's version number: a client that asks for less speaks TLS 1.1 at most.
pub const TLS12: u16 = 0x0303;

/// The record type of a handshake message.
const HANDSHAKE: u8 = 22;
/// The handshake type of a ClientHello.
const CLIENT_HELLO: u8 = 1;

/// The `legacy_version` of the ClientHello that a connection's first bytes
/// (`start`, at least [`START`] of them; more are ignored) begin, or `None`
/// when they are not a handshake record starting a ClientHello whose version
/// lies in that record.
pub fn legacy_version(start: &[u8]) -> Option<u16> {
    match *start {
        [HANDSHAKE, _, _, len_hi, len_lo, CLIENT_HELLO, _, _, _, hi, lo, ..]
            if u16::from_be_bytes([len_hi, len_lo]) >= 6 =>
        {
            Some(u16::from_be_bytes([hi, lo]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{legacy_version, START};

    /// The start of a TLS 1.1 ClientHello of 0x63 bytes, then more of it.
    const TLS11: &[u8] = &[22, 3, 1, 0, 0x67, 1, 0, 0, 0x63, 3, 2, 0xaa, 0xbb, 0xcc];

    #[test]
    fn the_version_is_read_from_the_first_record_and_nothing_after_it_matters() {
        assert_eq!(legacy_version(TLS11), Some(0x0302));
        assert_eq!(legacy_version(&TLS11[..START]), Some(0x0302));
        let mut coalesced = TLS11.to_vec();
        coalesced.extend_from_slice(&[0xff; 300]);
        assert_eq!(legacy_version(&coalesced), Some(0x0302));
        let tls12 = [22, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3, 3];
        assert_eq!(legacy_version(&tls12), Some(0x0303));
    }

    #[test]
    fn anything_short_of_the_version_or_not_a_client_hello_is_none() {
        // Every prefix short of the version: the bytes that arrive one by one.
        for n in 0..START {
            assert_eq!(legacy_version(&TLS11[..n]), None, "{n} bytes");
        }
        let with = |i: usize, b: u8| {
            let mut v = TLS11.to_vec();
            v[i] = b;
            v
        };
        assert_eq!(legacy_version(&with(0, 23)), None, "application data");
        assert_eq!(legacy_version(&with(0, 21)), None, "an alert");
        assert_eq!(legacy_version(&with(5, 2)), None, "a ServerHello");
        // A first record too short to hold the version: it is in the next one.
        assert_eq!(legacy_version(&with(4, 5)), None, "five bytes of handshake");
        assert_eq!(legacy_version(&with(4, 6)), Some(0x0302), "six bytes of handshake");
        assert_eq!(legacy_version(b"GET / HTTP/1.1\r\n"), None);
    }
}
