//! Console sessions: an API key is exchanged once for a random session id held in an
//! HttpOnly cookie; the server keeps the principal's *name* and looks the principal up
//! again on every request, so a revoked key or a changed role takes effect at once.
//! Each session carries its own CSRF token, compared in constant time.

use rand::RngCore;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The cookie that carries the session id.
pub const COOKIE: &str = "arbiter_console";
/// Sessions kept at most; the oldest is dropped beyond this (a flood of sign-ins with
/// a valid key must not grow memory without bound).
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Session {
    /// The principal's name (looked up again on every request).
    pub principal: String,
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
    /// The outcome of the last change, shown once on the next page.
    flash: Option<Flash>,
}

/// A one-time message after a change (post, redirect, get).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

/// Idle and absolute lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub idle: Duration,
    pub max_age: Duration,
}

pub struct Sessions {
    lifetimes: Lifetimes,
    by_id: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes as hex: session ids and CSRF tokens.
fn token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Sessions {
    pub fn new(lifetimes: Lifetimes) -> Self {
        Self {
            lifetimes,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `principal`; returns its id (always fresh: no fixation).
    pub fn create(&self, principal: &str) -> String {
        let now = Instant::now();
        let id = token();
        let mut map = self.map();
        let lifetimes = self.lifetimes;
        map.retain(|_, s| s.alive(now, lifetimes));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                principal: principal.to_owned(),
                csrf: token(),
                created: now,
                last_seen: now,
                flash: None,
            },
        );
        id
    }

    /// The live session with this id, touched (its idle clock restarts). An expired
    /// one is removed and reads as absent.
    pub fn touch(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.map();
        let alive = map.get(id)?.alive(now, self.lifetimes);
        if !alive {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        s.last_seen = now;
        Some(s.clone())
    }

    /// Whether the session is still live, without touching it (for event streams,
    /// which must not keep a session alive on their own).
    pub fn is_live(&self, id: &str) -> bool {
        let now = Instant::now();
        self.map()
            .get(id)
            .is_some_and(|s| s.alive(now, self.lifetimes))
    }

    /// Leaves a message for the session's next page.
    pub fn flash(&self, id: &str, ok: bool, text: String) {
        if let Some(s) = self.map().get_mut(id) {
            s.flash = Some(Flash { ok, text });
        }
    }

    /// The waiting message, once.
    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.map().get_mut(id).and_then(|s| s.flash.take())
    }

    pub fn remove(&self, id: &str) {
        self.map().remove(id);
    }
}

impl Session {
    fn alive(&self, now: Instant, l: Lifetimes) -> bool {
        now.duration_since(self.last_seen) < l.idle && now.duration_since(self.created) < l.max_age
    }

    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        presented.len() == self.csrf.len()
            && bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

/// The session id from a `Cookie` header, if there is one.
pub fn cookie_value(header: Option<&str>) -> Option<String> {
    header?.split(';').find_map(|part| {
        let (name, value) = part.trim().split_once('=')?;
        (name == COOKIE && !value.is_empty() && value.len() <= 128).then(|| value.to_owned())
    })
}

/// The `Set-Cookie` value for a session id: HttpOnly, SameSite=Strict, path-wide,
/// `Secure` when the console is reached over TLS. No Max-Age: the server expires it.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Failed sign-ins per client address: at most `LIMIT` in a sliding `WINDOW`; further
/// attempts are refused without checking the key, so a key cannot be guessed fast.
pub struct SignInLimiter {
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

const LIMIT: usize = 5;
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most (then the stalest are forgotten).
const MAX_ADDRESSES: usize = 10_000;

impl Default for SignInLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl SignInLimiter {
    pub fn new() -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Vec<Instant>>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `ip` may try now.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut map = self.map();
        let Some(times) = map.get_mut(&ip) else {
            return true;
        };
        times.retain(|t| now.duration_since(*t) < WINDOW);
        times.len() < LIMIT
    }

    /// Counts a failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut map = self.map();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, times| times.iter().any(|t| now.duration_since(*t) < WINDOW));
        }
        map.entry(ip).or_default().push(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(idle_ms: u64, max_ms: u64) -> Sessions {
        Sessions::new(Lifetimes {
            idle: Duration::from_millis(idle_ms),
            max_age: Duration::from_millis(max_ms),
        })
    }

    #[test]
    fn a_session_is_found_by_its_id_and_ends_when_removed() {
        let s = sessions(60_000, 60_000);
        let id = s.create("ops");
        assert_eq!(s.touch(&id).unwrap().principal, "ops");
        assert!(s.touch("nope").is_none());
        s.remove(&id);
        assert!(s.touch(&id).is_none());
    }

    #[test]
    fn idle_and_absolute_expiry_end_a_session() {
        let idle = sessions(50, 60_000);
        let id = idle.create("ops");
        std::thread::sleep(Duration::from_millis(80));
        assert!(idle.touch(&id).is_none(), "idle expiry");

        let absolute = sessions(60_000, 120);
        let id = absolute.create("ops");
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(40));
            let _ = absolute.touch(&id);
        }
        assert!(absolute.touch(&id).is_none(), "absolute expiry despite use");
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let s = sessions(60_000, 60_000);
        let a = s.touch(&s.create("a")).unwrap();
        let b = s.touch(&s.create("b")).unwrap();
        assert_ne!(a.csrf, b.csrf);
        assert!(a.csrf_matches(&a.csrf.clone()));
        assert!(!a.csrf_matches(&b.csrf));
        assert!(!a.csrf_matches(""));
        assert!(!a.csrf_matches(&a.csrf[..10]));
    }

    #[test]
    fn the_cookie_is_read_among_others_and_is_strict() {
        assert_eq!(
            cookie_value(Some("x=1; arbiter_console=abc; y=2")).as_deref(),
            Some("abc")
        );
        assert_eq!(cookie_value(Some("arbiter_console=")), None);
        assert_eq!(cookie_value(None), None);
        let c = set_cookie("abc", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie("abc", false).contains("Secure"));
    }

    #[test]
    fn sign_in_failures_are_limited_per_address() {
        let l = SignInLimiter::new();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..LIMIT {
            assert!(l.allowed(a));
            l.failed(a);
        }
        assert!(!l.allowed(a));
        assert!(l.allowed(b));
    }
}
