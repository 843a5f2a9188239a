//! Logged-in sessions: a random token in the `nexus_ui_session` cookie, its CSRF token, and the
//! idle time after which it ends. Kept in memory only; a restart logs everyone out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::header::COOKIE;
use hyper::HeaderMap;
use nexus_contract::paths::CONTROL_UI_PREFIX;
use tokio::sync::watch;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "nexus_ui_session";
/// The form field (or header `X-CSRF-Token`) every POST of a session must carry.
pub const CSRF_FIELD: &str = "csrf";
/// The header that may carry the CSRF token instead of the form field.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Random bytes in a session or CSRF token (256 bits).
const TOKEN_BYTES: usize = 32;
/// Sessions kept at most; the oldest goes first.
const MAX_SESSIONS: usize = 64;

/// A random token from the OS, base64url.
pub fn random_token() -> std::io::Result<String> {
    let mut raw = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// Equal without an early exit, so the time taken tells nothing about where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `Set-Cookie` value that starts a session.
pub fn set_cookie(token: &str) -> String {
    format!("{COOKIE_NAME}={token}; HttpOnly; Secure; SameSite=Strict; Path={CONTROL_UI_PREFIX}")
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; HttpOnly; Secure; SameSite=Strict; Path={CONTROL_UI_PREFIX}; Max-Age=0")
}

/// The session token a request's cookies carry, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
}

#[derive(Debug)]
struct Session {
    csrf: String,
    last_seen: Instant,
    /// Dropped with the session, which tells its [`SessionEnd`]s.
    ended: watch::Sender<()>,
}

/// What a long answer (the progress stream) holds to end with its session.
#[derive(Debug)]
pub struct SessionEnd {
    ended: watch::Receiver<()>,
}

impl SessionEnd {
    /// Returns once the session is gone: logged out, evicted, or removed as idle.
    pub async fn removed(&mut self) {
        while self.ended.changed().await.is_ok() {}
    }
}

/// The live sessions.
#[derive(Debug)]
pub struct Sessions {
    idle: Duration,
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(idle: Duration) -> Self {
        Self {
            idle,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session: its cookie token and its CSRF token.
    pub fn create(&self) -> std::io::Result<(String, String)> {
        let (token, csrf) = (random_token()?, random_token()?);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, s| now.duration_since(s.last_seen) < self.idle);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.insert(
            token.clone(),
            Session {
                csrf: csrf.clone(),
                last_seen: now,
                ended: watch::Sender::new(()),
            },
        );
        Ok((token, csrf))
    }

    /// The CSRF token of a live session, which counts as activity; `None` for an unknown or
    /// idle-expired token (the expired one is removed).
    pub fn touch(&self, token: &str) -> Option<String> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let session = map.get_mut(token)?;
        if now.duration_since(session.last_seen) >= self.idle {
            map.remove(token);
            return None;
        }
        session.last_seen = now;
        Some(session.csrf.clone())
    }

    /// A live session's end, to wait on; `None` for an unknown or idle-expired token.
    pub fn watch(&self, token: &str) -> Option<SessionEnd> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let session = map.get(token)?;
        (Instant::now().duration_since(session.last_seen) < self.idle).then(|| SessionEnd {
            ended: session.ended.subscribe(),
        })
    }

    /// When a live session goes idle unless it is used before; `None` (and the session
    /// removed) when it is unknown or already idle. Not activity itself.
    pub fn expiry(&self, token: &str) -> Option<Instant> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let at = map.get(token)?.last_seen + self.idle;
        if Instant::now() >= at {
            map.remove(token);
            return None;
        }
        Some(at)
    }

    /// Ends a session.
    pub fn remove(&self, token: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(token);
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    #[test]
    fn cookies_are_found_among_others_and_flagged() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("a=1; nexus_ui_session=abc; b=2"));
        assert_eq!(cookie_token(&h).as_deref(), Some("abc"));
        let c = set_cookie("abc");
        for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/control/"] {
            assert!(c.contains(flag), "{c}");
        }
    }

    #[test]
    fn idle_sessions_end() {
        let s = Sessions::new(Duration::from_millis(50));
        let (token, csrf) = s.create().unwrap();
        assert!(token.len() >= 43 && csrf.len() >= 43 && token != csrf);
        assert_eq!(s.touch(&token), Some(csrf));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(s.touch(&token), None);
        assert_eq!(s.touch("made-up"), None);
    }

    #[tokio::test]
    async fn a_sessions_end_is_told_at_logout_and_when_it_goes_idle() {
        let s = Sessions::new(Duration::from_millis(200));
        let (token, _) = s.create().unwrap();
        let mut end = s.watch(&token).unwrap();
        s.remove(&token);
        tokio::time::timeout(Duration::from_secs(5), end.removed())
            .await
            .expect("logout did not end the session's watchers");
        assert!(s.watch(&token).is_none());

        let (token, _) = s.create().unwrap();
        let mut end = s.watch(&token).unwrap();
        let at = s.expiry(&token).unwrap();
        std::thread::sleep(at - Instant::now());
        assert_eq!(s.expiry(&token), None);
        tokio::time::timeout(Duration::from_secs(5), end.removed())
            .await
            .expect("an idle session's watchers were not told");
    }
}
