//! The one field of a certificate the proxy reads itself: when it expires.
//!
//! rustls verifies certificates but does not say when the server's own one
//! runs out, and a server that runs for months should warn before it does.
//! A certificate is DER (X.690): nested tag, length, value. The path to the
//! end of its validity is short:
//!
//! ```text
//! Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
//!     [0] version OPTIONAL, serialNumber INTEGER, signature SEQUENCE,
//!     issuer SEQUENCE, validity SEQUENCE { notBefore Time, notAfter Time }, … }, … }
//! Time ::= UTCTime "YYMMDDHHMMSSZ" | GeneralizedTime "YYYYMMDDHHMMSSZ"
//! ```
//!
//! Only what that path needs is parsed, with every length checked against
//! what is left; anything else is `None`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// DER tags on the path to `notAfter`.
const TAG_SEQUENCE: u8 = 0x30;
const TAG_INTEGER: u8 = 0x02;
const TAG_VERSION: u8 = 0xA0;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;

/// One DER element at the start of `input`: its tag, its content and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // a multi-byte tag: none on this path
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            if rest.len() < n {
                return None;
            }
            let len = rest[..n].iter().fold(0usize, |acc, &b| acc << 8 | usize::from(b));
            (len, &rest[n..])
        }
        _ => return None, // indefinite (BER only) or absurdly long
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The element at the start of `input`, if it has tag `want`; its content and the rest.
fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, content, rest) = element(input)?;
    (tag == want).then_some((content, rest))
}

/// When the certificate `der` stops being valid (its `notAfter`).
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    let (cert, _) = expect(der, TAG_SEQUENCE)?;
    let (tbs, _) = expect(cert, TAG_SEQUENCE)?;
    let mut rest = tbs;
    if let Some((_, after)) = expect(rest, TAG_VERSION) {
        rest = after;
    }
    let (_, rest) = expect(rest, TAG_INTEGER)?;
    let (_, rest) = expect(rest, TAG_SEQUENCE)?; // signature algorithm
    let (_, rest) = expect(rest, TAG_SEQUENCE)?; // issuer
    let (validity, _) = expect(rest, TAG_SEQUENCE)?;
    let (_, _, after_not_before) = element(validity)?;
    let (tag, time, _) = element(after_not_before)?;
    time_of(tag, time)
}

/// A UTCTime or GeneralizedTime in the form DER requires (UTC, `Z`, seconds).
fn time_of(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let digits = |s: &[u8]| -> Option<u32> {
        s.iter().try_fold(0u32, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0')))
    };
    let (year, rest) = match (tag, text.len()) {
        // RFC 5280: a two-digit year YY is 19YY when YY >= 50, else 20YY.
        (TAG_UTC_TIME, 13) => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (TAG_GENERALIZED_TIME, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|i| digits(&rest[i..i + 2]));
    let (month, day, hour, minute, second) = (month?, day?, hour?, minute?, second?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    let since = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(since)
    } else {
        UNIX_EPOCH.checked_sub(since)
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::{days_from_civil, not_after, time_of, TAG_GENERALIZED_TIME, TAG_UTC_TIME};
    use std::time::{Duration, UNIX_EPOCH};

    fn secs(t: std::time::SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 12, 2), 20_789);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn both_time_forms_are_read_and_anything_else_is_not() {
        let utc = time_of(TAG_UTC_TIME, b"491231235959Z").unwrap();
        assert_eq!(secs(utc), 2_524_607_999);
        let early = time_of(TAG_UTC_TIME, b"500101000000Z");
        assert_eq!(early, UNIX_EPOCH.checked_sub(Duration::from_secs(631_152_000)));
        let gen = time_of(TAG_GENERALIZED_TIME, b"20461127100000Z").unwrap();
        assert_eq!(secs(gen), 2_426_925_600);
        for bad in
            [&b"491231235959+"[..], b"49123123595Z", b"4912312359590Z", b"491331235959Z", b"49123124a959Z"]
        {
            assert_eq!(time_of(TAG_UTC_TIME, bad), None, "{bad:?}");
        }
        assert_eq!(time_of(0x04, b"491231235959Z"), None);
    }

    #[test]
    fn the_test_certificate_expires_when_openssl_says() {
        use rustls::pki_types::pem::PemObject;
        let der =
            rustls::pki_types::CertificateDer::pem_slice_iter(&include_bytes!("../../certs/server.pem")[..])
                .next()
                .unwrap()
                .unwrap();
        let end = not_after(&der).unwrap();
        // `openssl x509 -enddate -noout -in certs/server.pem`, as a Unix time.
        let openssl = std::process::Command::new("openssl")
            .args(["x509", "-enddate", "-noout", "-dateopt", "iso_8601", "-in"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/certs/server.pem"))
            .output()
            .unwrap();
        let said = String::from_utf8(openssl.stdout).unwrap();
        // notAfter=2046-11-20 06:50:40Z
        let t = said.trim().trim_start_matches("notAfter=").replace(['-', ' ', ':'], "");
        assert_eq!(Some(end), time_of(TAG_GENERALIZED_TIME, t.as_bytes()), "{said}");
    }

    #[test]
    fn anything_but_a_certificate_has_no_end() {
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&[0x30, 0x80, 0, 0]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x30, 0x01]), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
