//! The provider seam: how each sender is verified and classified. Pure; the HTTP handler calls it.
//!
//! Adding a provider means one file implementing [`Provider`] and one arm in [`provider_for`];
//! the ingest handler never changes.

mod generic;
mod gitlab;

use std::str::FromStr;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Gitlab,
    Generic,
}

impl FromStr for ProviderKind {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "gitlab" => Ok(Self::Gitlab),
            "generic" => Ok(Self::Generic),
            other => Err(format!(
                "unknown provider {other:?}; supported: \"gitlab\", \"generic\""
            )),
        }
    }
}

/// The request as received, before anything is stored.
pub struct Inbound<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// What ingest extracts from a request for routing and dedup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classification {
    pub event_type: Option<String>,
    /// Sender's id for this delivery; a repeat with the same key is a duplicate.
    pub dedup_key: Option<String>,
}

/// Why a request was refused. The text is safe to send back: it never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing credentials: {0}")]
    Missing(&'static str),
    #[error("invalid credentials: {0}")]
    Invalid(&'static str),
}

impl Rejection {
    /// Label for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing(_) => "missing_credentials",
            Self::Invalid(_) => "invalid_credentials",
        }
    }
}

pub trait Provider: Send + Sync {
    /// Checks the request against the source's secrets. No secrets means no check.
    fn verify(&self, inbound: &Inbound<'_>, secrets: &[Secret]) -> Result<(), Rejection>;
    fn classify(&self, inbound: &Inbound<'_>) -> Classification;
    /// Original headers worth forwarding to destinations (never ones carrying secrets).
    fn forwarded_headers(&self) -> &'static [&'static str];
}

pub fn provider_for(kind: ProviderKind) -> &'static dyn Provider {
    match kind {
        ProviderKind::Gitlab => &gitlab::GitLab,
        ProviderKind::Generic => &generic::Generic,
    }
}

/// True when `presented` equals any secret. Both sides are hashed first, so the comparison
/// takes the same time whatever the lengths, and every secret is always compared.
pub fn matches_any_secret(presented: &[u8], secrets: &[Secret]) -> bool {
    let presented = Sha256::digest(presented);
    secrets.iter().fold(false, |found, secret| {
        let candidate = Sha256::digest(secret.expose());
        found | bool::from(presented.as_slice().ct_eq(candidate.as_slice()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_matching_accepts_any_configured_secret_only() {
        let secrets = [Secret::from_bytes("old"), Secret::from_bytes("new")];
        assert!(matches_any_secret(b"old", &secrets));
        assert!(matches_any_secret(b"new", &secrets));
        assert!(!matches_any_secret(b"ne", &secrets));
        assert!(!matches_any_secret(b"", &secrets));
        assert!(!matches_any_secret(b"old", &[]));
    }
}
