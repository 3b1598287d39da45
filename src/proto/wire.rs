//! The header blocking-local sends blocking-server inside TLS, before the payload.
//!
//! Two formats. Seed format (the default), byte-compatible with the original
//! Python local and server:
//!
//! ```text
//! +------+-----+----------------------+----------+-----------
//! | ATYP | LEN | ADDR                 | PORT     | payload…
//! |  1   |  1  | 4 / LEN / 16 bytes   | 2, BE    |
//! +------+-----+----------------------+----------+-----------
//! ```
//!
//! LEN is present for every type. For IPv4 and IPv6 the writer puts 0 and the
//! reader ignores it, as the original does.
//!
//! Trojan format (with a password), interoperable with trojan clients and servers:
//!
//! ```text
//! hex(SHA224(password))  CRLF  CMD  ATYP  DST.ADDR  DST.PORT  CRLF  payload…
//! 56 ASCII hex bytes     2     1    1     SOCKS5    2, BE     2
//! ```
//!
//! The address is written and read by [`super::addr`]. Pure functions over
//! `Read` and `Vec<u8>`; every read is exact, so bytes after the header stay
//! unread.

use std::io::Read;

use aws_lc_rs::constant_time::verify_slices_are_equal;

use super::addr::{self, Layout, Target};
use crate::error::Error;
use crate::text::hex;

/// Length of a trojan password hash: SHA-224 in lowercase hex.
pub const TROJAN_HASH_LEN: usize = 56;
/// A trojan password hash as it appears on the wire.
pub type TrojanHash = [u8; TROJAN_HASH_LEN];
/// Trojan command: CONNECT.
pub const TROJAN_CMD_CONNECT: u8 = 0x01;
/// Trojan command: UDP ASSOCIATE (not served).
pub const TROJAN_CMD_UDP_ASSOCIATE: u8 = 0x03;
const CRLF: &[u8; 2] = b"\r\n";
/// The longest header either format writes: a trojan hash line, a command,
/// and a 255-byte name with its type, length and port, then CRLF.
pub const HEADER_MAX: usize = TROJAN_HASH_LEN + 2 + 1 + 1 + 1 + 255 + 2 + 2;

/// Appends the header of a tunnel to `target`: trojan's CONNECT with a
/// password's hash, the seed format without one.
pub fn encode_connect(password: Option<&TrojanHash>, target: &Target, out: &mut Vec<u8>) {
    match password {
        Some(hash) => encode_trojan(hash, target, out),
        None => encode_seed(target, out),
    }
}

/// Appends the seed header for `target` to `out`.
pub fn encode_seed(target: &Target, out: &mut Vec<u8>) {
    addr::write(target, Layout::Seed, out);
}

/// The trojan hash of a password: lowercase hex of its SHA-224.
pub fn trojan_hash(password: &str) -> TrojanHash {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA224, password.as_bytes());
    let mut out = [0u8; TROJAN_HASH_LEN];
    out.copy_from_slice(hex(digest.as_ref()).as_bytes());
    out
}

/// Whether `b` can be part of a trojan hash: a lowercase hex digit.
fn is_hash_digit(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// What a trojan client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// A TCP connection to the target.
    Connect,
    /// UDP datagrams, framed in the stream (see [`encode_udp`]).
    UdpAssociate,
}

/// Appends a trojan CONNECT header for `target`.
pub fn encode_trojan(hash: &TrojanHash, target: &Target, out: &mut Vec<u8>) {
    encode_trojan_request(hash, Command::Connect, target, out);
}

/// Appends a trojan header for `command` and `target`.
pub fn encode_trojan_request(hash: &TrojanHash, command: Command, target: &Target, out: &mut Vec<u8>) {
    out.extend_from_slice(hash);
    out.extend_from_slice(CRLF);
    out.push(match command {
        Command::Connect => TROJAN_CMD_CONNECT,
        Command::UdpAssociate => TROJAN_CMD_UDP_ASSOCIATE,
    });
    addr::write(target, Layout::Socks, out);
    out.extend_from_slice(CRLF);
}

/// Reads one trojan header and checks its hash against `known`.
///
/// Stops at the first byte that cannot belong to a hash (a TLS prober's
/// `GET /`, a seed header), so such clients are handed over at once. Once 56
/// hex bytes are in, they are compared with every known hash in constant
/// time: how long a wrong password takes does not depend on how much of it
/// matched.
pub fn read_trojan<R: Read>(r: &mut R, known: &[TrojanHash]) -> Result<Target, Error> {
    read_trojan_request(r, known, false).map(|(_, target)| target)
}

/// Like [`read_trojan`], and with `udp`, UDP ASSOCIATE is read too.
pub fn read_trojan_request<R: Read>(
    r: &mut R,
    known: &[TrojanHash],
    udp: bool,
) -> Result<(Command, Target), Error> {
    let mut hash = [0u8; TROJAN_HASH_LEN];
    for i in 0..TROJAN_HASH_LEN {
        r.read_exact(&mut hash[i..=i])?;
        if !is_hash_digit(hash[i]) {
            return Err(Error::Protocol("not a trojan header"));
        }
    }
    if !trojan_hash_known(&hash, known) {
        return Err(Error::Protocol("wrong password"));
    }
    let mut head = [0u8; 4];
    r.read_exact(&mut head)?;
    if &head[..2] != CRLF {
        return Err(Error::Protocol("malformed trojan header"));
    }
    let command = match head[2] {
        TROJAN_CMD_CONNECT => Command::Connect,
        TROJAN_CMD_UDP_ASSOCIATE if udp => Command::UdpAssociate,
        _ if udp => return Err(Error::Protocol("only CONNECT and UDP ASSOCIATE are served")),
        _ => return Err(Error::Protocol("only CONNECT is served")),
    };
    let target =
        addr::read(r, head[3], Layout::Socks)?.ok_or(Error::Protocol("unknown address type in header"))?;
    let mut end = [0u8; 2];
    r.read_exact(&mut end)?;
    if &end != CRLF {
        return Err(Error::Protocol("malformed trojan header"));
    }
    Ok((command, target))
}

/// Whether `seen` starts with one of the `known` hashes (compared in constant time).
pub fn trojan_hash_known(seen: &[u8], known: &[TrojanHash]) -> bool {
    let Some(hash) = seen.get(..TROJAN_HASH_LEN) else { return false };
    let mut matched = false;
    for k in known {
        matched |= verify_slices_are_equal(k, hash).is_ok();
    }
    matched
}

/// The largest payload a frame can carry (its length is two bytes).
pub const UDP_PAYLOAD_MAX: usize = u16::MAX as usize;

/// Appends one datagram as trojan frames it inside the stream:
/// `ATYP DST.ADDR DST.PORT LENGTH(2, BE) CRLF PAYLOAD`. The address is the
/// datagram's destination (client to server) or its source (back).
/// `payload` is at most [`UDP_PAYLOAD_MAX`] bytes.
pub fn encode_udp(target: &Target, payload: &[u8], out: &mut Vec<u8>) {
    addr::write(target, Layout::Socks, out);
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(CRLF);
    out.extend_from_slice(&payload[..usize::from(len)]);
}

/// Reads one frame, exactly its bytes: its address, with its payload put in
/// `payload`. `Ok(None)` is a clean end of the stream before a frame.
pub fn read_udp<R: Read>(r: &mut R, payload: &mut Vec<u8>) -> Result<Option<Target>, Error> {
    let mut atyp = [0u8; 1];
    loop {
        match r.read(&mut atyp) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let target =
        addr::read(r, atyp[0], Layout::Socks)?.ok_or(Error::Protocol("unknown address type in frame"))?;
    let mut head = [0u8; 4];
    r.read_exact(&mut head)?;
    if &head[2..] != CRLF {
        return Err(Error::Protocol("malformed udp frame"));
    }
    payload.resize(usize::from(u16::from_be_bytes([head[0], head[1]])), 0);
    r.read_exact(payload)?;
    Ok(Some(target))
}

/// Reads one seed header, exactly its bytes and no more.
pub fn read_seed<R: Read>(r: &mut R) -> Result<Target, Error> {
    let mut atyp = [0u8; 1];
    r.read_exact(&mut atyp)?;
    addr::read(r, atyp[0], Layout::Seed)?.ok_or(Error::Protocol("unknown address type in header"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::testing::OneByte;

    fn roundtrip(t: Target) {
        let mut buf = Vec::new();
        encode_seed(&t, &mut buf);
        buf.extend_from_slice(b"payload");
        let mut r = OneByte(&buf[..]);
        assert_eq!(read_seed(&mut r).unwrap(), t);
        let mut rest = Vec::new();
        r.0.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"payload", "bytes after the header stay unread");
    }

    #[test]
    fn every_address_type_roundtrips_one_byte_at_a_time() {
        roundtrip(Target::Ip("10.1.2.3:80".parse().unwrap()));
        roundtrip(Target::Ip("[2001:db8::1]:443".parse().unwrap()));
        roundtrip(Target::Domain("example.com".into(), 8080));
        roundtrip(Target::Domain("a".repeat(255), 1));
    }

    #[test]
    fn seed_bytes_match_the_original() {
        let mut buf = Vec::new();
        encode_seed(&Target::Domain("example.com".into(), 443), &mut buf);
        assert_eq!(buf, b"\x03\x0bexample.com\x01\xbb");
        buf.clear();
        encode_seed(&Target::Ip("1.2.3.4:80".parse().unwrap()), &mut buf);
        assert_eq!(buf, [1, 0, 1, 2, 3, 4, 0, 80]);
    }

    #[test]
    fn any_len_is_accepted_for_ip_addresses() {
        let t = read_seed(&mut &[1, 9, 127, 0, 0, 1, 0, 80][..]).unwrap();
        assert_eq!(t, Target::Ip("127.0.0.1:80".parse().unwrap()));
    }

    #[test]
    fn trojan_hash_is_hex_sha224() {
        // SHA-224("password"), as trojan computes it.
        assert_eq!(&trojan_hash("password"), b"d63dc919e201d7bc4c825630d2cf25fdc93d4b2f0d46706d29038d01");
    }

    #[test]
    fn trojan_header_roundtrips_one_byte_at_a_time() {
        let known = [trojan_hash("other"), trojan_hash("secret")];
        for t in [
            Target::Domain("example.com".into(), 443),
            Target::Ip("10.0.0.1:22".parse().unwrap()),
            Target::Ip("[::1]:8080".parse().unwrap()),
        ] {
            let mut buf = Vec::new();
            encode_trojan(&trojan_hash("secret"), &t, &mut buf);
            buf.extend_from_slice(b"GET /");
            let mut r = OneByte(&buf[..]);
            assert_eq!(read_trojan(&mut r, &known).unwrap(), t);
            let mut rest = Vec::new();
            r.0.read_to_end(&mut rest).unwrap();
            assert_eq!(rest, b"GET /");
        }
    }

    #[test]
    fn the_longest_header_of_either_format_fits_header_max() {
        let name = Target::Domain("a".repeat(255), 65535);
        let (mut trojan, mut seed) = (Vec::new(), Vec::new());
        encode_connect(Some(&trojan_hash("x")), &name, &mut trojan);
        encode_connect(None, &name, &mut seed);
        assert_eq!(trojan.len(), HEADER_MAX);
        assert!(seed.len() < HEADER_MAX);
        assert_eq!(seed, [&[3u8, 255][..], &[b'a'; 255], &[255, 255]].concat());
    }

    #[test]
    fn trojan_bytes_match_the_format() {
        let mut buf = Vec::new();
        encode_trojan(&trojan_hash("password"), &Target::Domain("a.io".into(), 80), &mut buf);
        let mut want = b"d63dc919e201d7bc4c825630d2cf25fdc93d4b2f0d46706d29038d01\r\n".to_vec();
        want.extend_from_slice(b"\x01\x03\x04a.io\x00\x50\r\n");
        assert_eq!(buf, want);
    }

    #[test]
    fn trojan_rejects_what_is_not_a_valid_header() {
        let known = [trojan_hash("secret")];
        let err = |input: &[u8]| match read_trojan(&mut &input[..], &known) {
            Err(Error::Protocol(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), "not a trojan header");
        assert_eq!(err(&[3, 9, b'l']), "not a trojan header");
        let mut wrong = Vec::new();
        encode_trojan(&trojan_hash("guess"), &Target::Domain("a.io".into(), 80), &mut wrong);
        assert_eq!(err(&wrong), "wrong password");
        let mut udp = Vec::new();
        encode_trojan(&trojan_hash("secret"), &Target::Domain("a.io".into(), 80), &mut udp);
        udp[58] = TROJAN_CMD_UDP_ASSOCIATE;
        assert_eq!(err(&udp), "only CONNECT is served");
        let mut bad_end = Vec::new();
        encode_trojan(&trojan_hash("secret"), &Target::Domain("a.io".into(), 80), &mut bad_end);
        let n = bad_end.len();
        bad_end[n - 1] = b'x';
        assert_eq!(err(&bad_end), "malformed trojan header");
        // Cut short: an I/O error (the caller's deadline), not a verdict.
        assert!(matches!(read_trojan(&mut &wrong[..30], &known), Err(Error::Io(_))));
    }

    #[test]
    fn udp_frames_roundtrip_one_byte_at_a_time_and_end_cleanly() {
        let frames = [
            (Target::Ip("127.0.0.1:53".parse().unwrap()), vec![7u8; 1]),
            (Target::Domain("example.com".into(), 443), vec![]),
            (Target::Ip("[::1]:9".parse().unwrap()), vec![1u8; UDP_PAYLOAD_MAX]),
        ];
        let mut stream = Vec::new();
        for (t, p) in &frames {
            encode_udp(t, p, &mut stream);
        }
        let mut r = OneByte(&stream[..]);
        let mut payload = Vec::new();
        for (t, p) in &frames {
            assert_eq!(read_udp(&mut r, &mut payload).unwrap().as_ref(), Some(t));
            assert_eq!(&payload, p);
        }
        assert_eq!(read_udp(&mut r, &mut payload).unwrap(), None, "a clean end between frames");
        let mut one = Vec::new();
        encode_udp(&frames[0].0, b"abc", &mut one);
        for cut in 1..one.len() {
            assert!(matches!(read_udp(&mut &one[..cut], &mut payload), Err(Error::Io(_))), "cut at {cut}");
        }
        let mut bad = one.clone();
        bad[9] = b'x';
        assert!(matches!(read_udp(&mut &bad[..], &mut payload), Err(Error::Protocol(_))));
    }

    #[test]
    fn a_udp_associate_request_is_read_only_when_asked_for() {
        let known = [trojan_hash("secret")];
        let t = Target::Ip("0.0.0.0:0".parse().unwrap());
        let mut h = Vec::new();
        encode_trojan_request(&known[0], Command::UdpAssociate, &t, &mut h);
        h.extend_from_slice(b"frames");
        let mut r = OneByte(&h[..]);
        assert_eq!(read_trojan_request(&mut r, &known, true).unwrap(), (Command::UdpAssociate, t));
        let mut rest = Vec::new();
        r.0.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"frames");
        assert!(matches!(read_trojan(&mut &h[..], &known), Err(Error::Protocol("only CONNECT is served"))));
    }

    #[test]
    fn a_hash_is_known_only_when_it_matches_whole() {
        let known = [trojan_hash("secret")];
        assert!(trojan_hash_known(&known[0], &known));
        let mut other = known[0];
        other[55] ^= 1;
        assert!(!trojan_hash_known(&other, &known));
        assert!(!trojan_hash_known(&known[0][..55], &known));
    }

    #[test]
    fn bad_headers_are_errors() {
        assert!(matches!(read_seed(&mut &[2, 0, 0, 0][..]), Err(Error::Protocol(_))));
        assert!(matches!(read_seed(&mut &[3, 0, 0, 80][..]), Err(Error::Protocol(_))));
        assert!(matches!(read_seed(&mut &[3, 2, 0xff, 0xfe, 0, 80][..]), Err(Error::Protocol(_))));
        assert!(
            matches!(read_seed(&mut &b"\x03\x03a\nb\x00\x50"[..]), Err(Error::Protocol(_))),
            "no newline"
        );
        assert!(matches!(read_seed(&mut &[1, 0, 127, 0][..]), Err(Error::Io(_))));
        assert!(matches!(read_seed(&mut &[][..]), Err(Error::Io(_))));
    }
}
