//! The users a local's clients log in as, and the one check of a login:
//! SOCKS5's username/password (RFC 1929) and HTTP's `Proxy-Authorization:
//! Basic` both end here.

use std::fmt;

use aws_lc_rs::constant_time::verify_slices_are_equal;

/// The longest username or password: what RFC 1929 can carry (one length byte).
pub const FIELD_MAX: usize = 255;

/// A username and password a client may log in with.
#[derive(Clone)]
pub struct User {
    /// The username.
    pub name: String,
    /// The password; never logged.
    pub password: String,
}

impl User {
    /// Parses `NAME:PASSWORD` (the first colon splits; each part 1 to
    /// [`FIELD_MAX`] bytes), as `--user` and the lines of `--user-file` give it.
    pub fn parse(line: &str) -> Option<User> {
        let (name, password) = line.split_once(':')?;
        let fits = |s: &str| !s.is_empty() && s.len() <= FIELD_MAX;
        (fits(name) && fits(password)).then(|| User { name: name.into(), password: password.into() })
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "User({:?}, ***)", self.name)
    }
}

/// Whether `name` and `password` are those of one of `users`. Every entry
/// is compared, each in constant time: how long a wrong guess takes says
/// nothing about how much of it was right, nor which user it came close to.
pub fn is_user(users: &[User], name: &[u8], password: &[u8]) -> bool {
    let same = |a: &str, b: &[u8]| verify_slices_are_equal(a.as_bytes(), b).is_ok();
    let mut ok = false;
    for u in users {
        ok |= same(&u.name, name) & same(&u.password, password);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_line_is_split_at_its_first_colon_and_both_parts_are_bounded() {
        let u = User::parse("alice:wonder:land").unwrap();
        assert_eq!((u.name.as_str(), u.password.as_str()), ("alice", "wonder:land"));
        for bad in ["alice", ":x", "alice:", &format!("{}:x", "a".repeat(256))] {
            assert!(User::parse(bad).is_none(), "{bad}");
        }
        assert!(User::parse(&format!("{}:{}", "a".repeat(255), "p".repeat(255))).is_some());
        assert_eq!(format!("{u:?}"), "User(\"alice\", ***)", "the password is never shown");
    }

    #[test]
    fn a_login_must_match_one_user_whole() {
        let users = [User::parse("alice:wonder").unwrap(), User::parse("bob:builder").unwrap()];
        assert!(is_user(&users, b"bob", b"builder"));
        assert!(!is_user(&users, b"bob", b"wonder"), "another user's password");
        assert!(!is_user(&users, b"alice", b"wonde"));
        assert!(!is_user(&users, b"", b""));
        assert!(!is_user(&[], b"alice", b"wonder"));
    }
}
