//! Standard Webhooks: `webhook-id`/`webhook-timestamp`/`webhook-signature` (v1 HMAC, v1a Ed25519).

use crate::ingest::Credentials;
use serde_json::Value;

use super::verify::{StandardKeys, verify_standard};
use super::{Classification, Inbound, Provider, Rejection, header_text, text_at};

pub struct Standard;

impl Provider for Standard {
    fn verify(&self, inbound: &Inbound<'_>, source: &Credentials) -> Result<(), Rejection> {
        if source.signing_secrets.is_empty() && source.public_keys.is_empty() {
            return Ok(());
        }
        verify_standard(
            inbound.headers,
            inbound.body,
            &StandardKeys {
                secrets: &source.signing_secrets,
                public_keys: &source.public_keys,
                tolerance_secs: source.timestamp_tolerance.as_secs() as i64,
                now_secs: inbound.now_secs,
            },
        )
    }

    fn signed_id(&self, inbound: &Inbound<'_>, source: &Credentials) -> Option<String> {
        let keyed = !source.signing_secrets.is_empty() || !source.public_keys.is_empty();
        keyed
            .then(|| header_text(inbound.headers, "webhook-id").map(str::to_owned))
            .flatten()
    }

    fn classify(&self, inbound: &Inbound<'_>, payload: Option<&Value>) -> Classification {
        Classification {
            event_type: text_at(payload, "/type"),
            dedup_key: header_text(inbound.headers, "webhook-id").map(str::to_owned),
            ..Classification::default()
        }
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &["user-agent"]
    }
}
