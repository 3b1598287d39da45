//! The name a connection is for, read from its first bytes: the
//! server_name of a TLS ClientHello (RFC 6066, section 3) or the `Host`
//! header of an HTTP/1 request (RFC 9112, section 3.2).
//!
//! A transparently redirected connection carries only an address. The
//! caller reads the connection's first bytes, within a deadline and at most
//! [`SNIFF_MAX`] of them, and asks [`sniff`] for the name after each read,
//! so that the ACL's domain rules apply to the connection and the server
//! resolves the name itself. Nothing is consumed: the bytes go on to the
//! target as they came.
//!
//! ```text
//! record:    type 22 (handshake) | version (2) | length (2) | fragment
//! handshake: type 1 (ClientHello) | length (3) | hello, over one record or several
//! hello:     legacy_version (2) | random (32) | session_id <0..32>
//!            | cipher_suites <2..2^16-2> | compression_methods <1..2^8-1>
//!            | extensions <8..2^16-1>
//! extension: type (2) | length (2) | data; server_name is type 0:
//!            server_name_list <1..2^16-1> of name_type (1) | host_name <1..2^16-1>
//! ```
//!
//! Every length is checked against what holds it, exactly; a hello that
//! breaks any rule, or whose name is not a DNS host name, has no name.

use std::net::Ipv4Addr;

/// The most bytes the caller reads to find a name: a ClientHello may span
/// records up to this, and an HTTP head must end within it.
pub const SNIFF_MAX: usize = 16 * 1024;

/// What a connection's first bytes say about its name.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// The host name the client asks for, lowercase.
    Name(String),
    /// No name here (not TLS/HTTP, or a ClientHello/head without SNI/Host).
    None,
    /// The bytes so far are a prefix of something that may still hold a name: read more.
    NeedMore,
}

/// ContentType handshake (RFC 8446, section 5.1).
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
/// HandshakeType client_hello (RFC 8446, section 4).
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// The length of a record header: type, legacy_record_version, length (RFC 8446, section 5.1).
const RECORD_HEADER_LEN: usize = 5;
/// The largest TLSPlaintext fragment: 2^14 bytes (RFC 8446, section 5.1).
const RECORD_FRAGMENT_MAX: usize = 1 << 14;
/// The length of a handshake header: msg_type and a 24-bit length (RFC 8446, section 4).
const HANDSHAKE_HEADER_LEN: usize = 4;
/// The length of a hello's random (RFC 8446, section 4.1.2).
const RANDOM_LEN: usize = 32;
/// The longest legacy_session_id (RFC 8446, section 4.1.2).
const SESSION_ID_MAX: usize = 32;
/// ExtensionType server_name (RFC 6066, section 3).
const EXTENSION_SERVER_NAME: u16 = 0;
/// NameType host_name (RFC 6066, section 3).
const NAME_TYPE_HOST_NAME: u8 = 0;
/// The longest DNS name in text, without a final dot (RFC 1035, section 2.3.4).
const HOST_NAME_MAX: usize = 253;
/// The longest DNS label (RFC 1035, section 2.3.4).
const LABEL_MAX: usize = 63;

/// The name the first bytes of a connection carry: [`Sniffed::NeedMore`]
/// while they are the start of a ClientHello or an HTTP head that is not
/// yet whole and fits in [`SNIFF_MAX`]; bytes after the hello or the head
/// are ignored.
pub fn sniff(bytes: &[u8]) -> Sniffed {
    match bytes.first() {
        None => Sniffed::NeedMore,
        Some(&CONTENT_TYPE_HANDSHAKE) => tls(bytes),
        Some(b) if b.is_ascii_alphabetic() => http(bytes),
        Some(_) => Sniffed::None,
    }
}

/// A ClientHello's server name, from the handshake records `bytes` begin.
fn tls(bytes: &[u8]) -> Sniffed {
    let bytes = &bytes[..bytes.len().min(SNIFF_MAX)];
    let mut message: Vec<u8> = Vec::new();
    let mut rest = bytes;
    loop {
        let Some((header, after)) = rest.split_first_chunk::<RECORD_HEADER_LEN>() else {
            return more(bytes);
        };
        let &[content_type, major, _, len_hi, len_lo] = header;
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        // A handshake record of TLS 1.x, neither empty nor longer than a fragment may be.
        if content_type != CONTENT_TYPE_HANDSHAKE || major != 3 || len == 0 || len > RECORD_FRAGMENT_MAX {
            return Sniffed::None;
        }
        let fragment = &after[..len.min(after.len())];
        message.extend_from_slice(fragment);
        if let Some(found) = client_hello(&message) {
            return found;
        }
        if fragment.len() < len {
            return more(bytes);
        }
        rest = &after[len..];
    }
}

/// What a handshake message's bytes so far say: `Some` once it is known
/// whether a whole ClientHello holds a name, `None` while more is needed.
fn client_hello(message: &[u8]) -> Option<Sniffed> {
    let (&[msg_type, l0, l1, l2], body) = message.split_first_chunk::<HANDSHAKE_HEADER_LEN>()?;
    let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
    if msg_type != HANDSHAKE_CLIENT_HELLO || HANDSHAKE_HEADER_LEN + len > SNIFF_MAX {
        return Some(Sniffed::None);
    }
    let hello = body.get(..len)?;
    Some(match server_name(hello) {
        Some(Some(name)) => Sniffed::Name(name),
        _ => Sniffed::None,
    })
}

/// [`Sniffed::NeedMore`] if more bytes may still come, [`Sniffed::None`] once the caller has read all it reads.
fn more(bytes: &[u8]) -> Sniffed {
    if bytes.len() < SNIFF_MAX {
        Sniffed::NeedMore
    } else {
        Sniffed::None
    }
}

/// Bytes read front to back, each length checked against what is left.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The host name of a whole ClientHello body: `None` if it is malformed,
/// `Some(None)` if it is well formed and names no host.
fn server_name(hello: &[u8]) -> Option<Option<String>> {
    let mut c = Cursor(hello);
    c.take(2 + RANDOM_LEN)?;
    if c.vec8()?.len() > SESSION_ID_MAX {
        return None;
    }
    let suites = c.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return None;
    }
    if c.vec8()?.is_empty() {
        return None;
    }
    if c.0.is_empty() {
        // A hello of TLS 1.2 or before may have no extensions at all.
        return Some(None);
    }
    let mut extensions = Cursor(c.vec16()?);
    if !c.0.is_empty() {
        return None;
    }
    let mut name = None;
    let mut seen_server_name = false;
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if kind == EXTENSION_SERVER_NAME {
            // RFC 8446, section 4.2: no extension twice.
            if seen_server_name {
                return None;
            }
            seen_server_name = true;
            name = server_name_list(data)?;
        }
    }
    Some(name)
}

/// The host_name of a server_name extension's data; `None` if malformed.
fn server_name_list(data: &[u8]) -> Option<Option<String>> {
    if data.is_empty() {
        // A server's answer carries the extension empty; a client's is not.
        return None;
    }
    let mut outer = Cursor(data);
    let mut list = Cursor(outer.vec16()?);
    if !outer.0.is_empty() || list.0.is_empty() {
        return None;
    }
    let mut name = None;
    while !list.0.is_empty() {
        // Only host_name is defined; another type's length is not known.
        if list.u8()? != NAME_TYPE_HOST_NAME || name.is_some() {
            return None;
        }
        name = Some(dns_host_name(list.vec16()?)?);
    }
    Some(name)
}

/// `name` lowercase if it is a DNS host name, as RFC 6066 has a HostName:
/// ASCII labels of letters, digits, `-` and `_`, 1 to 63 bytes each, no
/// final dot, 253 bytes at most, and not an IPv4 address.
fn dns_host_name(name: &[u8]) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= HOST_NAME_MAX
        && name.split(|&b| b == b'.').all(|label| {
            (1..=LABEL_MAX).contains(&label.len())
                && label.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    let text = std::str::from_utf8(name).ok().filter(|_| valid)?;
    if text.parse::<Ipv4Addr>().is_ok() {
        return None;
    }
    Some(text.to_ascii_lowercase())
}

/// An HTTP/1 request's `Host`, port and a final dot left off, from the
/// head `bytes` begin.
fn http(bytes: &[u8]) -> Sniffed {
    let bytes = &bytes[..bytes.len().min(SNIFF_MAX)];
    // The method: a token (RFC 9110, section 5.6.2), then a space.
    let method_len = bytes.iter().take_while(|&&b| is_tchar(b)).count();
    match bytes.get(method_len) {
        None => return more(bytes),
        Some(b' ') => {}
        Some(_) => return Sniffed::None,
    }
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return more(bytes);
    };
    // Each line with its CR; the last LF, before the empty line, ends the split.
    let mut lines = bytes[..end + 1].split(|&b| b == b'\n');
    let Some(request_line) = lines.next() else {
        return Sniffed::None;
    };
    let Some(request_line) = request_line.strip_suffix(b"\r") else {
        return Sniffed::None;
    };
    let version = request_line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    if request_line.contains(&b'\r') || !version.starts_with(b"HTTP/") {
        return Sniffed::None;
    }
    let mut host = None;
    for line in lines {
        let Some(line) = line.strip_suffix(b"\r") else {
            return Sniffed::None;
        };
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Sniffed::None;
        };
        let (field, value) = (&line[..colon], &line[colon + 1..]);
        // No obsolete line folding, no space before the colon (RFC 9112, section 5).
        if field.is_empty() || !field.iter().all(|&b| is_tchar(b)) {
            return Sniffed::None;
        }
        if field.eq_ignore_ascii_case(b"host") {
            // RFC 9112, section 3.2: more than one Host is a bad request.
            if host.is_some() {
                return Sniffed::None;
            }
            host = Some(value.trim_ascii());
        }
    }
    match host.and_then(host_without_port) {
        Some(name) => Sniffed::Name(name),
        None => Sniffed::None,
    }
}

/// The name of a `Host` value (`uri-host [ ":" port ]`, RFC 9110, section
/// 7.2), or `None` for an IP literal or anything that is not a host name.
fn host_without_port(value: &[u8]) -> Option<String> {
    if value.first() == Some(&b'[') {
        // An IPv6 literal: the address is known already.
        return None;
    }
    let host = match value.iter().rposition(|&b| b == b':') {
        Some(i) if value[i + 1..].iter().all(u8::is_ascii_digit) => &value[..i],
        Some(_) => return None,
        None => value,
    };
    dns_host_name(host.strip_suffix(b".").unwrap_or(host))
}

/// A byte of an HTTP token (RFC 9110, section 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A ClientHello's body: TLS 1.2 legacy version, a random, a session
    /// id, two suites, null compression, then `extensions` as they are.
    fn body(extensions: &[u8]) -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend_from_slice(&[0x5a; 32]);
        b.push(32);
        b.extend_from_slice(&[0xa5; 32]);
        b.extend_from_slice(&[0, 4, 0x13, 0x01, 0xc0, 0x2f, 1, 0]);
        b.extend_from_slice(extensions);
        b
    }

    fn ext(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut e = kind.to_be_bytes().to_vec();
        e.extend_from_slice(&(data.len() as u16).to_be_bytes());
        e.extend_from_slice(data);
        e
    }

    fn sni(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![NAME_TYPE_HOST_NAME];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name);
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&entry);
        ext(EXTENSION_SERVER_NAME, &list)
    }

    /// An extensions block of these extensions, with its length.
    fn block(exts: &[Vec<u8>]) -> Vec<u8> {
        let all = exts.concat();
        let mut b = (all.len() as u16).to_be_bytes().to_vec();
        b.extend_from_slice(&all);
        b
    }

    /// A handshake message of a hello body.
    fn message(body: &[u8]) -> Vec<u8> {
        let mut m = vec![HANDSHAKE_CLIENT_HELLO];
        m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        m.extend_from_slice(body);
        m
    }

    /// A handshake message in records of at most `size` bytes of it each.
    fn records(message: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in message.chunks(size) {
            out.extend_from_slice(&[CONTENT_TYPE_HANDSHAKE, 3, 1]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    fn hello_with(exts: &[Vec<u8>]) -> Vec<u8> {
        records(&message(&body(&block(exts))), RECORD_FRAGMENT_MAX)
    }

    /// What rustls, the TLS library the pair uses, sends first for `name`.
    fn rustls_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    fn name(s: &str) -> Sniffed {
        Sniffed::Name(s.into())
    }

    /// Every proper prefix needs more, the whole has `want`, and bytes after it change nothing.
    fn whole_and_prefixes(bytes: &[u8], want: &Sniffed) {
        assert_eq!(&sniff(bytes), want, "{:?}", String::from_utf8_lossy(bytes));
        for n in 0..bytes.len() {
            assert_eq!(sniff(&bytes[..n]), Sniffed::NeedMore, "{n} of {} bytes", bytes.len());
        }
        let mut coalesced = bytes.to_vec();
        coalesced.extend_from_slice(&[23, 3, 3, 0, 5, 1, 2, 3, 4, 5]);
        assert_eq!(&sniff(&coalesced), want);
        coalesced.extend_from_slice(&[0xff; SNIFF_MAX]);
        assert_eq!(&sniff(&coalesced), want);
    }

    #[test]
    fn a_real_client_hello_names_its_server_one_byte_at_a_time_and_with_bytes_after_it() {
        let hello = rustls_hello("Example.COM");
        assert_eq!(hello[0], CONTENT_TYPE_HANDSHAKE);
        whole_and_prefixes(&hello, &name("example.com"));
    }

    #[test]
    fn a_hello_split_across_records_is_put_back_together() {
        let hello = rustls_hello("www.example.org");
        let msg = &hello[RECORD_HEADER_LEN..];
        for size in [1, 2, 3, 4, 5, 40, msg.len() / 2, msg.len() - 1] {
            whole_and_prefixes(&records(msg, size), &name("www.example.org"));
        }
        let built = message(&body(&block(&[ext(0x000a, &[0, 2, 0, 0x1d]), sni(b"a.b-c_d.test")])));
        whole_and_prefixes(&records(&built, built.len() / 2 + 1), &name("a.b-c_d.test"));
    }

    #[test]
    fn a_hello_without_a_name_or_with_a_bad_one_has_none() {
        whole_and_prefixes(&hello_with(&[ext(0x000a, &[0, 2, 0, 0x1d])]), &Sniffed::None);
        whole_and_prefixes(&records(&message(&body(&[])), 100), &Sniffed::None);
        for bad in [
            &b"127.0.0.1"[..],
            b"example.com.",
            b"a..b",
            b"",
            b"sp ace.test",
            b"\xc3\xa9.test",
            b"ctl\x01.test",
            &[b'a'; 64],
            &[b'a'; 254],
        ] {
            let hello = hello_with(&[sni(bad)]);
            assert_eq!(sniff(&hello), Sniffed::None, "{bad:?}");
        }
        let longest = [["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".")];
        assert_eq!(sniff(&hello_with(&[sni(longest[0].as_bytes())])), name(&longest[0]));
    }

    #[test]
    fn a_malformed_hello_has_no_name() {
        let good = hello_with(&[sni(b"example.com")]);
        assert_eq!(sniff(&good), name("example.com"));
        // Every length one too long or too short, in the records or the hello.
        let mut spoiled = Vec::new();
        let ext_at = good.len() - sni(b"example.com").len();
        for at in [
            6,
            7,
            8,
            9 + 34,
            9 + 35 + 32,
            9 + 35 + 32 + 1,
            ext_at - 2,
            ext_at - 1,
            ext_at + 3,
            ext_at + 5,
            ext_at + 8,
        ] {
            for delta in [1u8, 0xff] {
                let mut v = good.clone();
                v[at] = v[at].wrapping_add(delta);
                spoiled.push((at, v));
            }
        }
        for (at, v) in spoiled {
            assert_ne!(sniff(&v), name("example.com"), "byte {at}");
        }
        // A truncated extension: the hello ends inside the server_name.
        let mut cut = body(&block(&[sni(b"example.com")]));
        cut.truncate(cut.len() - 3);
        assert_eq!(sniff(&records(&message(&cut), 1000)), Sniffed::None);
        // The extension twice, a name type of its own, an empty extension, bytes after the extensions.
        assert_eq!(sniff(&hello_with(&[sni(b"a.test"), sni(b"b.test")])), Sniffed::None);
        let mut other = sni(b"a.test");
        other[6] = 1;
        assert_eq!(sniff(&hello_with(&[other])), Sniffed::None);
        assert_eq!(sniff(&hello_with(&[ext(EXTENSION_SERVER_NAME, &[])])), Sniffed::None);
        let mut trailing = body(&block(&[sni(b"example.com")]));
        trailing.push(0);
        assert_eq!(sniff(&records(&message(&trailing), 1000)), Sniffed::None);
        // Not a ClientHello, not a handshake record, an empty record.
        let mut server_hello = good.clone();
        server_hello[5] = 2;
        assert_eq!(sniff(&server_hello), Sniffed::None);
        assert_eq!(sniff(&[22, 3, 1, 0, 0]), Sniffed::None);
        let mut alert_between = records(&message(&body(&block(&[sni(b"example.com")]))), 10);
        alert_between.splice(15..15, [21, 3, 3, 0, 2, 2, 40]);
        assert_eq!(sniff(&alert_between), Sniffed::None);
    }

    #[test]
    fn a_hello_longer_than_the_bound_has_none() {
        let padding = ext(0x0015, &vec![0; SNIFF_MAX]);
        let big = message(&body(&block(&[padding, sni(b"example.com")])));
        assert_eq!(sniff(&records(&big, RECORD_FRAGMENT_MAX)[..20]), Sniffed::None);
        // Within the bound by its length, past it by its record headers.
        let fits = ext(0x0015, &vec![0; SNIFF_MAX - 250]);
        let msg = message(&body(&block(&[fits, sni(b"example.com")])));
        assert!(msg.len() <= SNIFF_MAX);
        let bytes = records(&msg, 16);
        assert_eq!(sniff(&bytes[..SNIFF_MAX - 1]), Sniffed::NeedMore);
        assert_eq!(sniff(&bytes), Sniffed::None);
        assert_eq!(sniff(&records(&msg, RECORD_FRAGMENT_MAX)), name("example.com"));
    }

    #[test]
    fn an_http_request_names_its_host() {
        let cases: &[(&[u8], Sniffed)] = &[
            (b"GET / HTTP/1.1\r\nHost: Example.com\r\nAccept: */*\r\n\r\n", name("example.com")),
            (b"POST /x HTTP/1.1\r\nUser-Agent: t\r\nhost:example.com\r\n\r\n", name("example.com")),
            (b"GET / HTTP/1.1\r\nHOST: \t www.example.com:8080 \r\n\r\n", name("www.example.com")),
            (b"GET / HTTP/1.1\r\nHost: example.com.:80\r\n\r\n", name("example.com")),
            (b"GET / HTTP/1.1\r\nHost: example.com:\r\n\r\n", name("example.com")),
            (b"GET / HTTP/1.0\r\n\r\n", Sniffed::None),
            (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", Sniffed::None),
            (b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", Sniffed::None),
            (b"GET / HTTP/1.1\r\nHost: [2001:db8::1]\r\n\r\n", Sniffed::None),
            (b"GET / HTTP/1.1\r\nHost: 2001:db8::1\r\n\r\n", Sniffed::None),
            (b"GET / HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n", Sniffed::None),
            (b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", Sniffed::None),
            (b"GET / HTTP/1.1\r\nHost: a.test:http\r\n\r\n", Sniffed::None),
            (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", Sniffed::None),
            (b"GET / HTTP/1.1\r\nHost : a.test\r\n\r\n", Sniffed::None),
            (b"GET / HTTP/1.1\r\nX: y\r\n z\r\nHost: a.test\r\n\r\n", Sniffed::None),
            (b"GET / HTTP/1.1\r\nHost: a.test\nX: y\r\n\r\n", Sniffed::None),
            (b"GET / SIP/2.0\r\nHost: a.test\r\n\r\n", Sniffed::None),
        ];
        for (head, want) in cases {
            whole_and_prefixes(head, want);
        }
    }

    #[test]
    fn anything_else_has_no_name_at_once() {
        assert_eq!(sniff(b""), Sniffed::NeedMore);
        for first in [
            &b"\x00"[..],
            b"\x17\x03\x03",
            b"SSH-2.0-OpenSSH\r\n",
            b"G\x00T",
            b"GET\r\n",
            b" GET",
            b"\x05\x01\x00",
            b"{\"a\":1}",
        ] {
            assert_eq!(sniff(first), Sniffed::None, "{first:?}");
        }
        assert_eq!(sniff(b"GET"), Sniffed::NeedMore);
        assert_eq!(sniff(b"GET /"), Sniffed::NeedMore);
    }

    #[test]
    fn a_head_over_the_bound_has_none() {
        let mut head = b"GET / HTTP/1.1\r\nHost: example.com\r\nX: ".to_vec();
        head.resize(SNIFF_MAX - 1, b'a');
        assert_eq!(sniff(&head), Sniffed::NeedMore);
        head.push(b'a');
        assert_eq!(sniff(&head), Sniffed::None);
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(sniff(&head), Sniffed::None, "the end lies past the bound");
        let method = vec![b'A'; SNIFF_MAX];
        assert_eq!(sniff(&method), Sniffed::None);
    }
}
