//! Console sign-in: an API token posted once becomes a server-side session (revocable, with
//! idle and absolute expiry) named by an HttpOnly cookie; every state change also needs a
//! same-origin request and the session's form token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::api::{ApiToken, Scope};

/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(8 * 3600);
/// A session ends this long after sign-in, used or not.
pub const ABSOLUTE: Duration = Duration::from_secs(24 * 3600);
const MAX_SESSIONS: usize = 10_000;

/// Who a signed-in browser is, as one request sees it.
#[derive(Clone, Debug)]
pub struct Signed {
    pub scope: Scope,
    pub token_name: String,
    /// Every form that changes something carries it back.
    pub form_token: String,
    /// The cookie's value, to revoke it on sign-out.
    id: String,
}

impl Signed {
    pub fn admin(&self) -> bool {
        self.scope >= Scope::Admin
    }
}

struct Session {
    scope: Scope,
    token_name: String,
    /// The API token it came from: a session whose token left the config ends.
    token_digest: [u8; 32],
    form_token: String,
    created: Instant,
    last_seen: Instant,
}

/// Sessions by the SHA-256 of their id: the id itself is only ever in the browser's cookie.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    hex::encode(bytes)
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl Sessions {
    /// Signs in with `presented` when it is one of `tokens` (compared in constant time);
    /// the new session's cookie value.
    pub fn sign_in(&self, tokens: &[ApiToken], presented: &str) -> Option<String> {
        let presented = Sha256::digest(presented.trim().as_bytes());
        let token = tokens.iter().fold(None, |found, token| {
            let equal = bool::from(presented.as_slice().ct_eq(token.secret.digest()));
            if equal { Some(token) } else { found }
        })?;
        let id = random_id();
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, s| {
            now.duration_since(s.last_seen) < IDLE && now.duration_since(s.created) < ABSOLUTE
        });
        if live.len() >= MAX_SESSIONS {
            // The oldest sign-in goes first rather than refusing a new one.
            if let Some(oldest) = live.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k) {
                live.remove(&oldest);
            }
        }
        let token_digest = *token.secret.digest();
        live.insert(
            digest(&id),
            Session {
                scope: token.scope,
                token_name: token.name.clone(),
                token_digest,
                form_token: random_id(),
                created: now,
                last_seen: now,
            },
        );
        Some(id)
    }

    /// The session the request's cookie names, if it is live and its token still configured.
    pub fn find(&self, headers: &HeaderMap, tokens: &[ApiToken], secure: bool) -> Option<Signed> {
        let id = cookie(headers, cookie_name(secure))?;
        let key = digest(id);
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let session = live.get_mut(&key)?;
        let expired = now.duration_since(session.last_seen) >= IDLE
            || now.duration_since(session.created) >= ABSOLUTE;
        let token_kept = tokens
            .iter()
            .any(|t| bool::from(t.secret.digest().as_slice().ct_eq(&session.token_digest)));
        if expired || !token_kept {
            live.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(Signed {
            scope: session.scope,
            token_name: session.token_name.clone(),
            form_token: session.form_token.clone(),
            id: id.to_owned(),
        })
    }

    pub fn sign_out(&self, signed: &Signed) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(&digest(&signed.id));
    }
}

/// `__Host-` binds the cookie to this host and path `/`, but browsers accept it only over
/// HTTPS; a plain-HTTP listener (the API's own, on a private address) uses a plain name.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-hookrelay_session"
    } else {
        "hookrelay_session"
    }
}

pub fn set_cookie(id: &str, secure: bool) -> String {
    let name = cookie_name(secure);
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={id}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

pub fn clear_cookie(secure: bool) -> String {
    let name = cookie_name(secure);
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}")
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether a state-changing request comes from the console's own pages: the browser's
/// `Sec-Fetch-Site` when it sends one, else `Origin` against `Host`. A request with
/// neither is refused: every browser that can run the console sends one of them.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() == b"same-origin";
    }
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
    else {
        return false;
    };
    let origin = origin.to_str().unwrap_or_default();
    let host = host.to_str().unwrap_or_default();
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| rest == host)
}

/// The form token posted back matches the session's (compared in constant time).
pub fn form_token_matches(signed: &Signed, posted: &str) -> bool {
    signed.form_token.len() == posted.len()
        && bool::from(signed.form_token.as_bytes().ct_eq(posted.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_same_origin_requests_may_change_things() {
        let table: &[(&[(&str, &str)], bool)] = &[
            (&[("sec-fetch-site", "same-origin")], true),
            (&[("sec-fetch-site", "cross-site")], false),
            (&[("sec-fetch-site", "same-site")], false),
            (&[("sec-fetch-site", "none")], false),
            (
                &[("origin", "http://relay:8081"), ("host", "relay:8081")],
                true,
            ),
            (
                &[("origin", "https://relay:8081"), ("host", "relay:8081")],
                true,
            ),
            (
                &[("origin", "http://evil:8081"), ("host", "relay:8081")],
                false,
            ),
            (&[("origin", "null"), ("host", "relay:8081")], false),
            (&[("host", "relay:8081")], false),
            (
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "http://relay:8081"),
                    ("host", "relay:8081"),
                ],
                false,
            ),
        ];
        for (pairs, expected) in table {
            assert_eq!(same_origin(&headers(pairs)), *expected, "{pairs:?}");
        }
    }

    #[test]
    fn a_cookie_is_found_among_others_by_its_exact_name() {
        let map = headers(&[(
            "cookie",
            "a=1; hookrelay_session_x=2; hookrelay_session=abc",
        )]);
        assert_eq!(cookie(&map, "hookrelay_session"), Some("abc"));
        assert_eq!(cookie(&map, "__Host-hookrelay_session"), None);
        assert!(
            set_cookie("x", true).starts_with(
                "__Host-hookrelay_session=x; Path=/; HttpOnly; SameSite=Strict; Secure"
            )
        );
        assert!(!set_cookie("x", false).contains("Secure"));
    }
}
