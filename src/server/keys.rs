//! What a reload replaces on the server: its certificate, passwords and named users,
//! and the warnings that the certificate is about to expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;

use crate::current::Current;
use crate::proto::wire::TrojanHash;
use crate::workers::COPY_STACK;

use super::users::User;

/// What a reload replaces: the certificate and the passwords. A connection
/// takes the certificate (its TLS configuration) when it starts; its header
/// is checked against the passwords in force when the header arrives, so a
/// password revoked by a reload opens no connection after it.
pub struct Keys {
    /// Built by [`crate::tls::config::server_config`].
    pub tls: Arc<ServerConfig>,
    /// Known trojan password hashes; empty means the seed format, open to
    /// anyone. The named users' are among them.
    pub passwords: Vec<TrojanHash>,
    /// The named users in force (`--users`), by the hash of their password.
    pub users: Vec<(TrojanHash, Arc<User>)>,
    /// When the certificate expires, if that could be read.
    pub expires: Option<SystemTime>,
}

impl Keys {
    /// The named user whose password hash `seen` starts with, if any
    /// (compared in constant time, as the header's check is).
    pub fn user(&self, seen: &[u8]) -> Option<Arc<User>> {
        let mut found = None;
        for (hash, user) in &self.users {
            if crate::proto::wire::trojan_hash_known(seen, std::slice::from_ref(hash)) {
                found = Some(Arc::clone(user));
            }
        }
        found
    }
}

/// How long before its certificate expires the server starts to warn.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// A warning for a certificate that `expires` within [`EXPIRY_WARNING`] of
/// `now`, or has expired; None while it has longer to go.
pub fn expiry_warning(expires: SystemTime, now: SystemTime) -> Option<String> {
    const DAY: u64 = 86_400;
    match expires.duration_since(now) {
        Ok(left) if left >= EXPIRY_WARNING => None,
        Ok(left) => Some(format!(
            "the certificate expires in {} days ({} hours): renew it; SIGHUP loads the new one",
            left.as_secs() / DAY,
            left.as_secs() / 3600
        )),
        Err(past) => Some(format!(
            "the certificate expired {} days ago: clients refuse it; renew it and send SIGHUP",
            past.duration().as_secs() / DAY
        )),
    }
}

/// Warns at start and then once a day while the certificate in force is
/// within [`EXPIRY_WARNING`] of its end (on a thread of its own).
pub fn watch_expiry(keys: Arc<Current<Keys>>) {
    let check = move || loop {
        if let Some(warning) = keys.get().expires.and_then(|t| expiry_warning(t, SystemTime::now())) {
            log::warn!("{warning}");
        }
        std::thread::sleep(Duration::from_secs(86_400));
    };
    let spawned = std::thread::Builder::new().name("expiry".into()).stack_size(COPY_STACK).spawn(check);
    if let Err(e) = spawned {
        log::warn!("cannot start the certificate expiry check: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_warned_about_in_its_last_fourteen_days_and_after() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        assert_eq!(expiry_warning(now + 15 * day, now), None);
        assert_eq!(expiry_warning(now + 14 * day, now), None);
        let soon = expiry_warning(now + 13 * day, now).unwrap();
        assert!(soon.starts_with("the certificate expires in 13 days"), "{soon}");
        let gone = expiry_warning(now - 3 * day, now).unwrap();
        assert!(gone.starts_with("the certificate expired 3 days ago"), "{gone}");
    }
}
