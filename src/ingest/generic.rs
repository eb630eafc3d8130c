//! Any JSON poster: optional bearer token, event type from `X-Event-Type` when the sender sets it.

use super::{
    Classification, Inbound, Provider, Rejection, header_text, matches_any_secret,
    standard_dedup_key,
};
use crate::config::Secret;

pub struct Generic;

impl Provider for Generic {
    fn verify(&self, inbound: &Inbound<'_>, secrets: &[Secret]) -> Result<(), Rejection> {
        if secrets.is_empty() {
            return Ok(());
        }
        let header = inbound
            .headers
            .get("authorization")
            .ok_or(Rejection::Missing("Authorization header is absent"))?;
        let token = header
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or(Rejection::Invalid("Authorization is not a Bearer token"))?;
        if matches_any_secret(token, secrets) {
            Ok(())
        } else {
            Err(Rejection::Invalid("bearer token does not match"))
        }
    }

    fn classify(&self, inbound: &Inbound<'_>) -> Classification {
        Classification {
            event_type: header_text(inbound.headers, "x-event-type").map(str::to_owned),
            dedup_key: standard_dedup_key(inbound.headers),
        }
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &["x-event-type", "idempotency-key", "user-agent"]
    }
}
