//! Console sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie, kept in
//! memory as its SHA-256 (a restart signs everyone out), with an idle and an absolute
//! expiry, a CSRF token per session for every form, and a limit on failed sign-ins per
//! client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::store::tokens::{RepoScope, Role};

/// The session cookie's name.
pub const COOKIE: &str = "souffleur_session";

/// Who is signed in.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// The token's name (or the directory user's).
    pub user: String,
    /// Their role.
    pub role: Role,
    /// Repositories they may see.
    pub repos: RepoScope,
    /// The hash of the token they signed in with: the session ends when it is revoked
    /// (empty for directory sign-ins).
    pub token_hash: String,
    /// Signed in with the directory (ended when the directory no longer finds them).
    pub directory: bool,
    /// The form token every change must carry.
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

impl Session {
    /// A session that is not opened by signing in (the `--local` server's).
    pub fn local(user: &str, role: Role, repos: RepoScope) -> Self {
        let now = Instant::now();
        Self {
            user: user.to_string(),
            role,
            repos,
            token_hash: String::new(),
            directory: false,
            csrf: random_hex().unwrap_or_default(),
            created: now,
            last_seen: now,
        }
    }
}

/// Sessions and failed sign-ins.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    local: OnceLock<Session>,
}

/// 32 random bytes as hex.
fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

fn key(cookie: &str) -> String {
    hex::encode(Sha256::digest(cookie.as_bytes()))
}

impl Sessions {
    /// Opens a session; gives the cookie's value (shown to nobody else). An empty
    /// `token_hash` is a directory sign-in.
    pub fn open(
        &self,
        user: &str,
        role: Role,
        repos: RepoScope,
        token_hash: &str,
    ) -> Option<String> {
        let id = random_hex()?;
        let now = Instant::now();
        let session = Session {
            user: user.to_string(),
            role,
            repos,
            token_hash: token_hash.to_string(),
            directory: token_hash.is_empty(),
            csrf: random_hex()?,
            created: now,
            last_seen: now,
        };
        self.open.lock().ok()?.insert(key(&id), session);
        Some(id)
    }

    /// The session of `cookie` if it is within both expiries (its idle time starts
    /// again); expired sessions are forgotten.
    pub fn find(&self, cookie: &str, idle: Duration, max: Duration) -> Option<Session> {
        let mut open = self.open.lock().ok()?;
        let now = Instant::now();
        open.retain(|_, s| now - s.last_seen < idle && now - s.created < max);
        let session = open.get_mut(&key(cookie))?;
        session.last_seen = now;
        Some(session.clone())
    }

    /// The one session of a `--local` server, made by `init` on first use.
    pub fn local_or_init(&self, init: impl FnOnce() -> Session) -> Session {
        self.local.get_or_init(init).clone()
    }

    /// Ends every directory session of `user`; gives how many.
    pub fn close_user(&self, user: &str) -> usize {
        let Ok(mut open) = self.open.lock() else {
            return 0;
        };
        let before = open.len();
        open.retain(|_, s| !(s.directory && s.user == user));
        before - open.len()
    }

    /// The users with open directory sessions.
    pub fn directory_users(&self) -> Vec<String> {
        let Ok(open) = self.open.lock() else {
            return Vec::new();
        };
        let mut users: Vec<String> = open
            .values()
            .filter(|s| s.directory)
            .map(|s| s.user.clone())
            .collect();
        users.sort();
        users.dedup();
        users
    }

    /// Ends the session of `cookie`.
    pub fn close(&self, cookie: &str) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&key(cookie));
        }
    }

    /// Whether `client` may try to sign in (fewer than `per_minute` failures in the
    /// current minute).
    pub fn may_try(&self, client: IpAddr, per_minute: u32) -> bool {
        let Ok(mut failures) = self.failures.lock() else {
            return false;
        };
        let now = Instant::now();
        failures.retain(|_, (since, _)| now - *since < Duration::from_secs(60));
        failures.get(&client).is_none_or(|(_, n)| *n < per_minute)
    }

    /// Counts a failed sign-in of `client`.
    pub fn failed(&self, client: IpAddr) {
        if let Ok(mut failures) = self.failures.lock() {
            let entry = failures.entry(client).or_insert((Instant::now(), 0));
            entry.1 += 1;
        }
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_sign_ins_are_limited() {
        let s = Sessions::default();
        let id = s
            .open("root", Role::Admin, RepoScope::All, "h")
            .expect("open");
        let long = Duration::from_secs(60);
        let found = s.find(&id, long, long).expect("found");
        assert_eq!(found.user, "root");
        assert_eq!(found.csrf.len(), 64);
        assert!(s.find("forged", long, long).is_none());
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            s.find(&id, Duration::from_millis(10), long).is_none(),
            "idle"
        );
        let id = s
            .open("root", Role::Admin, RepoScope::All, "h")
            .expect("open");
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            s.find(&id, long, Duration::from_millis(10)).is_none(),
            "absolute"
        );
        let id = s
            .open("root", Role::Admin, RepoScope::All, "h")
            .expect("open");
        s.close(&id);
        assert!(s.find(&id, long, long).is_none(), "signed out");

        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        for _ in 0..3 {
            assert!(s.may_try(ip, 3));
            s.failed(ip);
        }
        assert!(!s.may_try(ip, 3));
        assert!(s.may_try("10.0.0.1".parse().expect("ip"), 3));

        assert_eq!(
            cookie_value("a=1; souffleur_session=xyz; b=2", COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie_value("a=1", COOKIE), None);
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
