//! Reading the files an operator names: certificates, keys, CA bundles,
//! password and user files, rule lists (ACL files).
//!
//! They are read at start and again on every SIGHUP, when a deploy may have
//! left anything at the path: a FIFO nobody writes, a device, a file of
//! zeros hundreds of megabytes long. So each is opened without blocking
//! (`O_NONBLOCK`: a FIFO opens at once and is then refused), must be a
//! regular file, and is read whole only up to [`FILE_MAX`] ([`LIST_MAX`]
//! for a list of rules); a credential
//! file is also checked line by line ([`lines`]). Anything else fails with
//! one line that names the file and never shows what it holds.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::Error;

/// The most bytes a file that is read may hold: a CA bundle of every public
/// root is about 220 KB; a user file of 1 MiB holds thousands of users.
pub const FILE_MAX: u64 = 1 << 20;

/// The longest line of a password or user file, without its line ending.
pub const LINE_MAX: usize = 1024;

/// The bytes of the regular file at `path`, a `what` (`"certificate
/// file"`, `"password file"`) in error messages, at most [`FILE_MAX`].
pub fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    read_up_to(path, what, FILE_MAX, "a credential file")
}

/// The most bytes a list of rules (an ACL file) may hold: the largest
/// ready-made lists are a few hundred KB.
pub const LIST_MAX: u64 = 32 << 20;

/// The text of the rule list (an ACL file) at `path`, at most
/// [`LIST_MAX`] bytes of UTF-8.
pub fn read_list(path: &Path, what: &str) -> Result<String, Error> {
    let bytes = read_up_to(path, what, LIST_MAX, "a list")?;
    String::from_utf8(bytes).map_err(|e| {
        Error::Config(format!(
            "cannot read {what} {}: not UTF-8 at byte {}",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// [`read`] with a bound of `max` bytes, which `kind` names in the error.
fn read_up_to(path: &Path, what: &str, max: u64, kind: &str) -> Result<Vec<u8>, Error> {
    let cannot = |e: std::io::Error| Error::Config(format!("cannot read {what} {}: {e}", path.display()));
    let file: File =
        OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(Error::Config(format!("cannot read {what} {}: not a regular file", path.display())));
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(cannot)?;
    // The length read, not the one stat gave: the file may grow meanwhile.
    if bytes.len() as u64 > max || meta.len() > max {
        return Err(Error::Config(format!(
            "cannot read {what} {}: {} bytes, more than the {max} {kind} may hold",
            path.display(),
            meta.len().max(bytes.len() as u64)
        )));
    }
    Ok(bytes)
}

/// The non-empty lines of the password or user file at `path` (read by
/// [`read`]), without their line endings (`\n` or `\r\n`). Each must be
/// UTF-8, at most [`LINE_MAX`] bytes, and free of control characters (a
/// NUL, a tab, an escape); a line that is not, or a file without a line, is
/// an error that names the line by its number only.
pub fn lines(path: &Path, what: &str) -> Result<Vec<String>, Error> {
    let bytes = read(path, what)?;
    let bad = |n: usize, why: &str| Error::Config(format!("{what} {} line {n} {why}", path.display()));
    let mut lines = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line.len() > LINE_MAX {
            return Err(bad(i + 1, &format!("is longer than {LINE_MAX} bytes")));
        }
        let text = std::str::from_utf8(line).map_err(|_| bad(i + 1, "is not UTF-8"))?;
        if text.chars().any(char::is_control) {
            return Err(bad(i + 1, "holds a control character"));
        }
        lines.push(text.to_owned());
    }
    if lines.is_empty() {
        return Err(Error::Config(format!("no {} in {}", what.trim_end_matches(" file"), path.display())));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("blocking-proxy-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn error(r: Result<Vec<String>, Error>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(lines) => panic!("read {} lines", lines.len()),
        }
    }

    #[test]
    fn lines_come_without_their_endings_and_empty_ones_are_skipped() {
        let dir = scratch("lines");
        let f = dir.join("users");
        std::fs::write(&f, "alice:wonder\r\n\nbob:büilder:x\n\r\n").unwrap();
        assert_eq!(lines(&f, "user file").unwrap(), ["alice:wonder", "bob:büilder:x"]);
        std::fs::write(&f, format!("{}\n", "p".repeat(LINE_MAX))).unwrap();
        assert_eq!(lines(&f, "password file").unwrap()[0].len(), LINE_MAX);
        std::fs::write(&f, "\r\n\n").unwrap();
        assert_eq!(error(lines(&f, "password file")), format!("no password in {}", f.display()));
    }

    #[test]
    fn a_line_with_a_control_character_too_long_or_not_utf8_is_named_by_its_number_only() {
        let dir = scratch("bad");
        let f = dir.join("pw");
        let long = format!("ok\n{}\n", "s".repeat(LINE_MAX + 1));
        for (text, says) in [
            (&b"se\0cret\n"[..], "line 1 holds a control character"),
            (b"ok\nse\tcret\n", "line 2 holds a control character"),
            (b"ok\n\nsecret\x7f\n", "line 3 holds a control character"),
            ("secr\u{85}t\n".as_bytes(), "line 1 holds a control character"),
            (b"\xffsecret\n", "line 1 is not UTF-8"),
            (long.as_bytes(), "line 2 is longer than 1024 bytes"),
        ] {
            std::fs::write(&f, text).unwrap();
            let msg = error(lines(&f, "password file"));
            assert_eq!(msg, format!("password file {} {says}", f.display()));
            assert!(!msg.contains("secret") && !msg.contains("cret"), "{msg}");
        }
    }

    #[test]
    fn only_a_regular_file_within_the_bound_is_read() {
        let dir = scratch("kinds");
        let fifo = dir.join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        // Nobody writes the FIFO: a blocking open would never return.
        let msg = read(&fifo, "password file").unwrap_err().to_string();
        assert!(msg.ends_with("not a regular file"), "{msg}");
        let msg = read(&dir, "password file").unwrap_err().to_string();
        assert!(msg.ends_with("not a regular file"), "{msg}");
        let msg = read(Path::new("/dev/zero"), "password file").unwrap_err().to_string();
        assert!(msg.ends_with("not a regular file"), "{msg}");
        let msg = read(&dir.join("missing"), "user file").unwrap_err().to_string();
        assert!(msg.starts_with("cannot read user file ") && msg.contains("No such file"), "{msg}");

        let big = dir.join("big");
        std::fs::write(&big, vec![b'a'; FILE_MAX as usize]).unwrap();
        assert_eq!(read(&big, "CA file").unwrap().len(), FILE_MAX as usize);
        std::fs::write(&big, vec![0u8; FILE_MAX as usize + 1]).unwrap();
        let msg = read(&big, "CA file").unwrap_err().to_string();
        assert!(msg.ends_with("1048577 bytes, more than the 1048576 a credential file may hold"), "{msg}");
    }
}
