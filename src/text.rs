//! Bytes made into text: what a peer controls (target names, SOCKS5
//! usernames, SNI), made safe to put in a log line, and lowercase hex (trojan
//! password hashes, certificate fingerprints), and counts with their nouns
//! (`1 connection`, `2 connections`).
//!
//! [`Escaped`] writes a string as it is when it holds only letters (of any
//! script), digits, `.`, `-` and `_`. Anything else is written in double
//! quotes: `"` and `\` get a backslash, the space and the other printable
//! ASCII characters stay, and every other character that is not a letter or
//! digit (controls, line and paragraph separators, tabs, bidi controls,
//! zero-width characters, …) becomes `\u{hex}`. So a value ends at the first
//! space outside quotes, and a peer can neither add a field nor start a line.

use std::fmt::{self, Write};

/// A string written for a log line: as it is, or quoted and escaped.
pub struct Escaped<'a>(pub &'a str);

/// Characters that stay as they are without quotes.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') || (!c.is_ascii() && c.is_alphanumeric())
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.is_empty() && self.0.chars().all(plain) {
            return f.write_str(self.0);
        }
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' | '\\' => write!(f, "\\{c}")?,
                c if c == ' ' || c.is_ascii_graphic() || plain(c) => f.write_char(c)?,
                c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
        }
        f.write_char('"')
    }
}

/// Lowercase hex, two digits per byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A count and its noun, singular for one: `1 connection`, `0 connections`.
/// The noun takes an `s` for the plural.
pub struct Count<'a>(pub usize, pub &'a str);

impl fmt::Display for Count<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Count(n, noun) = *self;
        write!(f, "{n} {noun}{}", if n == 1 { "" } else { "s" })
    }
}

#[cfg(test)]
mod tests {
    use super::{hex, Count, Escaped};

    #[test]
    fn a_count_of_one_is_singular() {
        assert_eq!(Count(1, "connection").to_string(), "1 connection");
        assert_eq!(Count(0, "connection").to_string(), "0 connections");
        assert_eq!(Count(2, "connection").to_string(), "2 connections");
    }

    fn esc(s: &str) -> String {
        Escaped(s).to_string()
    }

    #[test]
    fn host_names_and_letters_of_any_script_stay_as_they_are() {
        assert_eq!(esc("example.com"), "example.com");
        assert_eq!(esc("_dmarc.my-host.example"), "_dmarc.my-host.example");
        assert_eq!(esc("bücher.example"), "bücher.example");
        assert_eq!(esc("例え.テスト"), "例え.テスト");
    }

    #[test]
    fn anything_else_is_quoted_so_it_cannot_add_a_field() {
        assert_eq!(esc(""), r#""""#);
        assert_eq!(esc("x.invalid up=0"), r#""x.invalid up=0""#);
        assert_eq!(esc("a=b"), r#""a=b""#);
        assert_eq!(esc(r#"say "hi" \o/"#), r#""say \"hi\" \\o/""#);
    }

    #[test]
    fn separators_controls_and_bidi_controls_are_escaped() {
        for (c, hex) in [
            ('\n', "a"),
            ('\r', "d"),
            ('\t', "9"),
            ('\u{1b}', "1b"),
            ('\u{7f}', "7f"),
            ('\u{85}', "85"),
            ('\u{a0}', "a0"),
            ('\u{2028}', "2028"),
            ('\u{2029}', "2029"),
            ('\u{200e}', "200e"),
            ('\u{200f}', "200f"),
            ('\u{200b}', "200b"),
            ('\u{202a}', "202a"),
            ('\u{202e}', "202e"),
            ('\u{2066}', "2066"),
            ('\u{2069}', "2069"),
            ('\u{3000}', "3000"),
            ('\u{feff}', "feff"),
        ] {
            let got = esc(&format!("a{c}b"));
            assert_eq!(got, format!("\"a\\u{{{hex}}}b\""), "U+{:04X}", u32::from(c));
            assert!(!got.chars().any(|g| g.is_control() || (g.is_whitespace() && g != ' ')));
        }
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(hex(&[]), "");
    }
}
