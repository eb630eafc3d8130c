//! The provider seam: how each sender is verified and classified. Pure; the HTTP handler calls it.
//!
//! Adding a provider means one file implementing [`Provider`] and one arm in [`provider_for`];
//! the ingest handler never changes.

mod accept;
mod bitbucket;
pub mod generic;
mod gitea;
mod github;
mod gitlab;
pub mod ip;
mod payload;
mod standard;
pub mod verify;

use std::str::FromStr;

use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Gitlab,
    Github,
    /// Gitea, Forgejo and Gogs: one family, three header spellings.
    Gitea,
    Bitbucket,
    Standard,
    Generic,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Gitlab => "gitlab",
            Self::Github => "github",
            Self::Gitea => "gitea",
            Self::Bitbucket => "bitbucket",
            Self::Standard => "standard",
            Self::Generic => "generic",
        }
    }

    pub const NAMES: &'static str = "\"gitlab\", \"github\", \"gitea\", \"forgejo\", \"gogs\", \"bitbucket\", \"standard\", \"generic\"";
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "gitlab" => Ok(Self::Gitlab),
            "github" => Ok(Self::Github),
            "gitea" | "forgejo" | "gogs" => Ok(Self::Gitea),
            "bitbucket" => Ok(Self::Bitbucket),
            "standard" | "standard-webhooks" => Ok(Self::Standard),
            "generic" => Ok(Self::Generic),
            other => Err(format!(
                "unknown provider {other:?}; supported: {}",
                Self::NAMES
            )),
        }
    }
}

/// What a source verifies requests with: its own type, so ingest never reads the config.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Every secret accepted at once, so a rotation never rejects real events.
    pub secrets: Vec<Secret>,
    /// Standard Webhooks symmetric keys, already base64-decoded from `whsec_...`.
    pub signing_secrets: Vec<Secret>,
    /// Standard Webhooks v1a public keys.
    pub public_keys: Vec<ed25519_dalek::VerifyingKey>,
    /// Refuse requests without a valid `webhook-signature` (GitLab sources).
    pub require_signature: bool,
    /// GitLab: a token is needed even when a valid signature came with the request.
    pub require_token: bool,
    /// How far `webhook-timestamp` may be from our clock, either way.
    pub timestamp_tolerance: std::time::Duration,
    pub generic_auth: generic::GenericAuth,
}

impl Credentials {
    /// No secret of any kind: anyone may post.
    pub fn is_open(&self) -> bool {
        self.secrets.is_empty() && self.signing_secrets.is_empty() && self.public_keys.is_empty()
    }
}

/// The request as received, before anything is stored.
pub struct Inbound<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The raw query string, for generic sources that carry a token there.
    pub query: Option<&'a str>,
    /// Seconds since the Unix epoch, for timestamp tolerance checks.
    pub now_secs: i64,
}

pub use crate::domain::Classification;
pub use accept::{Admitted, Routes, accept};
pub use payload::{Fields, PROVIDER_POINTERS};

/// Why a request was refused. The text is safe to send back: it never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing credentials: {0}")]
    Missing(&'static str),
    #[error("invalid credentials: {0}")]
    Invalid(&'static str),
    #[error("address not allowed")]
    AddressNotAllowed,
}

impl Rejection {
    /// Label for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing(_) => "missing_credentials",
            Self::Invalid(_) => "invalid_credentials",
            Self::AddressNotAllowed => "address_not_allowed",
        }
    }
}

pub trait Provider: Send + Sync {
    /// Checks the request against the source's credentials. No credentials means no check.
    fn verify(&self, inbound: &Inbound<'_>, source: &Credentials) -> Result<(), Rejection>;
    /// Checks what can be checked before the body is read (`inbound.body` is empty): tokens
    /// in headers or the query string. A stranger is refused before a byte of body is read
    /// or any memory is reserved for it. `Ok(true)` when a secret credential in the head
    /// matched; `Ok(false)` when only the body can tell (a signature). `verify` still runs on
    /// the whole request.
    fn verify_headers(
        &self,
        _inbound: &Inbound<'_>,
        _source: &Credentials,
    ) -> Result<bool, Rejection> {
        Ok(false)
    }
    /// The delivery id a verified signature covers (Standard Webhooks' `webhook-id`), called
    /// only after `verify` passed: dedup must key on it, not on an unsigned header a replayer
    /// can change.
    fn signed_id(&self, _inbound: &Inbound<'_>, _source: &Credentials) -> Option<String> {
        None
    }
    /// Reads event type, dedup key and git facts; `payload` is the parsed JSON when there is one.
    fn classify(&self, inbound: &Inbound<'_>, payload: Option<&Value>) -> Classification;
    /// Original headers worth forwarding to destinations (never ones carrying secrets).
    fn forwarded_headers(&self) -> &'static [&'static str];
}

/// Headers that carry a sender's credential (or a browser's session): stored by name with the
/// value `[redacted]`, never forwarded, never shown. The one list of them.
pub const CREDENTIAL_HEADERS: [&str; 4] = [
    "x-gitlab-token",
    "authorization",
    "proxy-authorization",
    "cookie",
];

/// Whether `name` (lower case, as hyper gives it) carries a credential for this source.
pub fn is_credential_header(name: &str, source: &Credentials) -> bool {
    CREDENTIAL_HEADERS.contains(&name)
        || matches!(&source.generic_auth, generic::GenericAuth::Token { header } if header == name)
}

/// `<scheme> <credentials>` with the scheme compared case-insensitively (RFC 9110 11.1).
pub(crate) fn auth_credentials<'a>(value: &'a [u8], scheme: &str) -> Option<&'a [u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (name, rest) = value.split_at(space);
    if !name.eq_ignore_ascii_case(scheme.as_bytes()) {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    Some(&rest[start..])
}

pub fn provider_for(kind: ProviderKind) -> &'static dyn Provider {
    match kind {
        ProviderKind::Gitlab => &gitlab::GitLab,
        ProviderKind::Github => &github::GitHub,
        ProviderKind::Gitea => &gitea::Gitea,
        ProviderKind::Bitbucket => &bitbucket::Bitbucket,
        ProviderKind::Standard => &standard::Standard,
        ProviderKind::Generic => &generic::Generic,
    }
}

/// True when `presented` equals any secret. Digests are compared (each secret's is computed
/// once, at config time), so the comparison takes the same time whatever the lengths, and
/// every secret is always compared.
pub fn matches_any_secret(presented: &[u8], secrets: &[Secret]) -> bool {
    let presented = Sha256::digest(presented);
    secrets.iter().fold(false, |found, secret| {
        found | bool::from(presented.as_slice().ct_eq(secret.digest()))
    })
}

pub(crate) fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// `Idempotency-Key`, else `webhook-id`: the ids senders keep across their own retries.
pub(crate) fn standard_dedup_key(headers: &HeaderMap) -> Option<String> {
    header_text(headers, "idempotency-key")
        .or_else(|| header_text(headers, "webhook-id"))
        .map(str::to_owned)
}

/// The JSON payload: the body itself, or the `payload` field of a form-encoded body
/// (GitHub and Gitea can send either). `None` when it is not JSON; such bodies still flow.
pub fn parse_payload(headers: &HeaderMap, body: &[u8], fields: &Fields) -> Option<Value> {
    payload::parse_fields(&form_payload(headers, body)?, fields)
}

/// The JSON text a sender signed or sent: the `payload` form field for form bodies (`None`
/// when a form body is not exactly that one field).
pub(crate) fn form_payload<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
) -> Option<std::borrow::Cow<'a, [u8]>> {
    let is_form = header_text(headers, "content-type")
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Some(std::borrow::Cow::Borrowed(body));
    }
    // Exactly one field, `payload`: anything else could smuggle a second, unsigned payload
    // past a signature that covers only the first (receivers differ on which one they read).
    let mut fields = form_urlencoded::parse(body);
    match (fields.next(), fields.next()) {
        (Some((key, value)), None) if key == "payload" => {
            Some(std::borrow::Cow::Owned(value.into_owned().into_bytes()))
        }
        _ => None,
    }
}

/// A string (or number/bool rendered as text) at a JSON pointer.
pub(crate) fn text_at(payload: Option<&Value>, pointer: &str) -> Option<String> {
    match payload?.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The first pointer that holds text.
pub(crate) fn first_text(payload: Option<&Value>, pointers: &[&str]) -> Option<String> {
    pointers.iter().find_map(|p| text_at(payload, p))
}

#[cfg(test)]
mod tests;
