//! Provider tests: shared helpers here, verification tables in `verify.rs` and
//! `generic.rs`, classification of
//! real payloads in `classify.rs`.

mod classify;
mod generic;
mod verify;

use std::time::Duration;

use http::HeaderMap;
use serde_json::Value;

use super::generic::GenericAuth;
use super::*;
use crate::signing::{Algorithm, hmac, standard_v1_signature};

pub(super) const NOW: i64 = 1_700_000_000;

/// A provider with its credentials; reads and writes through to the credentials.
#[derive(Clone)]
pub(super) struct TestSource {
    pub provider: ProviderKind,
    pub credentials: Credentials,
}

impl std::ops::Deref for TestSource {
    type Target = Credentials;
    fn deref(&self) -> &Credentials {
        &self.credentials
    }
}

impl std::ops::DerefMut for TestSource {
    fn deref_mut(&mut self) -> &mut Credentials {
        &mut self.credentials
    }
}

pub(super) fn source(provider: ProviderKind, secrets: &[&str]) -> TestSource {
    let credentials = Credentials {
        secrets: secrets.iter().map(|s| Secret::from_bytes(*s)).collect(),
        signing_secrets: vec![],
        public_keys: vec![],
        require_signature: false,
        require_token: false,
        timestamp_tolerance: Duration::from_secs(300),
        generic_auth: GenericAuth::default(),
    };
    TestSource {
        provider,
        credentials,
    }
}

pub(super) fn headers(pairs: &[(&str, String)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            )
        })
        .collect()
}

pub(super) fn verify(
    source: &TestSource,
    pairs: &[(&str, String)],
    body: &[u8],
    query: Option<&str>,
) -> Result<(), &'static str> {
    let headers = headers(pairs);
    let inbound = Inbound {
        headers: &headers,
        body,
        query,
        now_secs: NOW,
    };
    provider_for(source.provider)
        .verify(&inbound, source)
        .map_err(|r| r.reason())
}

pub(super) fn hex_hmac(key: &str, body: &[u8]) -> String {
    hex::encode(hmac(Algorithm::Sha256, key.as_bytes(), &[body]))
}

pub(super) const OK: Result<(), &str> = Ok(());
pub(super) const BAD: Result<(), &str> = Err("invalid_credentials");
pub(super) const MISSING: Result<(), &str> = Err("missing_credentials");

pub(super) fn standard_headers(
    key: &[u8],
    id: &str,
    ts: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            standard_v1_signature(key, id, ts, body),
        ),
    ]
}

pub(super) fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

pub(super) fn classify(
    kind: ProviderKind,
    pairs: &[(&str, String)],
    body: &[u8],
) -> Classification {
    let headers = headers(pairs);
    let inbound = Inbound {
        headers: &headers,
        body,
        query: None,
        now_secs: NOW,
    };
    // Ingest parses only the providers' paths: every table case checks that this gives
    // what the whole tree gives.
    let whole: Option<Value> =
        form_payload(&headers, body).and_then(|json| serde_json::from_slice(&json).ok());
    let sparse = parse_payload(&headers, body, &Fields::with([]));
    let classified = provider_for(kind).classify(&inbound, sparse.as_ref());
    assert_eq!(
        classified,
        provider_for(kind).classify(&inbound, whole.as_ref()),
        "a provider reads a path missing from PROVIDER_POINTERS"
    );
    classified
}
