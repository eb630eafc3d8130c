//! Console sign-in: an API token posted once becomes a server-side session (revocable, with
//! idle and absolute expiry) named by an HttpOnly cookie; every state change also needs a
//! same-origin request and the session's form token.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::api::{ApiToken, Scope};
use crate::domain::now_millis;
use crate::store::{ConsoleSession, Store, StoreError};

/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(8 * 3600);
/// A session ends this long after sign-in, used or not.
pub const ABSOLUTE: Duration = Duration::from_secs(24 * 3600);
/// Use moves a session's idle end on at most this often (each move is a store write).
const TOUCH_EVERY: i64 = 60_000;

/// Who a signed-in browser is, as one request sees it.
#[derive(Clone, Debug)]
pub struct Signed {
    pub scope: Scope,
    pub token_name: String,
    /// Every form that changes something carries it back.
    pub form_token: String,
    /// The store's key for the session (the SHA-256 of the cookie's value).
    key: String,
}

impl Signed {
    pub fn admin(&self) -> bool {
        self.scope >= Scope::Admin
    }
}

/// Sessions live in the store, so every process on it knows them and a restart keeps
/// them; the cookie's value is only ever in the browser.
#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn Store>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    hex::encode(bytes)
}

fn key_of(cookie_value: &str) -> String {
    hex::encode(Sha256::digest(cookie_value.as_bytes()))
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Admin => "admin",
        Scope::Read => "read",
    }
}

fn millis(duration: Duration) -> i64 {
    duration.as_millis() as i64
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Signs in with `presented` when it is one of `tokens` (compared in constant time);
    /// the new session's cookie value.
    pub async fn sign_in(
        &self,
        tokens: &[ApiToken],
        presented: &str,
    ) -> Result<Option<String>, StoreError> {
        let presented = Sha256::digest(presented.trim().as_bytes());
        let found = tokens.iter().fold(None, |found, token| {
            let equal = bool::from(presented.as_slice().ct_eq(token.secret.digest()));
            if equal { Some(token) } else { found }
        });
        let Some(token) = found else {
            return Ok(None);
        };
        let value = random_hex();
        let now = now_millis();
        let session = ConsoleSession {
            key: key_of(&value),
            token_name: token.name.clone(),
            token_digest: hex::encode(token.secret.digest()),
            scope: scope_name(token.scope).to_owned(),
            form_token: random_hex(),
            created_at: now,
            idle_until: now + millis(IDLE),
            expires_at: now + millis(ABSOLUTE),
        };
        self.store.create_session(session, now).await?;
        Ok(Some(value))
    }

    /// The session the request's cookie names, if it is live and its token still configured.
    pub async fn find(
        &self,
        headers: &HeaderMap,
        tokens: &[ApiToken],
        secure: bool,
    ) -> Result<Option<Signed>, StoreError> {
        let Some(value) = cookie(headers, cookie_name(secure)) else {
            return Ok(None);
        };
        let key = key_of(value);
        let now = now_millis();
        let Some(session) = self.store.session(&key, now).await? else {
            return Ok(None);
        };
        let token = tokens.iter().find(|t| {
            let digest = hex::encode(t.secret.digest());
            bool::from(digest.as_bytes().ct_eq(session.token_digest.as_bytes()))
        });
        let Some(token) = token else {
            self.store.end_session(&key).await?;
            return Ok(None);
        };
        if session.idle_until - now < millis(IDLE) - TOUCH_EVERY {
            self.store.touch_session(&key, now + millis(IDLE)).await?;
        }
        Ok(Some(Signed {
            // The token's scope now, should the config have changed it.
            scope: token.scope,
            token_name: session.token_name,
            form_token: session.form_token,
            key,
        }))
    }

    pub async fn sign_out(&self, signed: &Signed) -> Result<(), StoreError> {
        self.store.end_session(&signed.key).await
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

/// The cookie called `name`, when the request carries exactly one: a second one can only
/// have been set by another site on this host (cookies do not keep to a port), to swap in a
/// session of its own, so then there is none.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| value);
    let first = found.next()?;
    found.next().is_none().then_some(first)
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

/// Whether a read may be answered: any request of the console's own pages, and a person's
/// navigation from anywhere (a shared link), but not another site's script, image or stream
/// (which would let a page on another port of this host time searches or hold streams open).
pub fn may_read(headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    let mode = headers.get("sec-fetch-mode").map(|v| v.as_bytes());
    match site {
        None | Some(b"same-origin") | Some(b"none") => true,
        Some(_) => mode == Some(b"navigate"),
    }
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
    fn other_sites_may_link_here_but_not_fetch_from_here() {
        let table: &[(&[(&str, &str)], bool)] = &[
            (&[], true),
            (
                &[
                    ("sec-fetch-site", "same-origin"),
                    ("sec-fetch-mode", "cors"),
                ],
                true,
            ),
            (
                &[("sec-fetch-site", "none"), ("sec-fetch-mode", "navigate")],
                true,
            ),
            (
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("sec-fetch-mode", "navigate"),
                ],
                true,
            ),
            (
                &[("sec-fetch-site", "same-site"), ("sec-fetch-mode", "cors")],
                false,
            ),
            (
                &[
                    ("sec-fetch-site", "same-site"),
                    ("sec-fetch-mode", "no-cors"),
                ],
                false,
            ),
            (&[("sec-fetch-site", "cross-site")], false),
        ];
        for (pairs, expected) in table {
            assert_eq!(may_read(&headers(pairs)), *expected, "{pairs:?}");
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
        let planted = headers(&[("cookie", "hookrelay_session=theirs; hookrelay_session=ours")]);
        assert_eq!(
            cookie(&planted, "hookrelay_session"),
            None,
            "two of them: neither"
        );
        assert!(
            set_cookie("x", true).starts_with(
                "__Host-hookrelay_session=x; Path=/; HttpOnly; SameSite=Strict; Secure"
            )
        );
        assert!(!set_cookie("x", false).contains("Secure"));
    }
}
