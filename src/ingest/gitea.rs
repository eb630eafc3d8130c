//! Gitea, Forgejo and Gogs: bare hex HMAC-SHA256 of the JSON payload text, even for form bodies.

use crate::ingest::Credentials;
use serde_json::Value;

use super::{
    Classification, Inbound, Provider, Rejection, first_text, form_payload, header_text, text_at,
};
use crate::signing::{Algorithm, decode_hex, matches_any_hmac};

pub struct Gitea;

/// Header families, newest first; a request uses one spelling.
const FAMILIES: [&str; 3] = ["x-forgejo", "x-gitea", "x-gogs"];

fn family_header<'a>(headers: &'a http::HeaderMap, suffix: &str) -> Option<&'a str> {
    FAMILIES
        .iter()
        .find_map(|family| header_text(headers, &format!("{family}-{suffix}")))
}

impl Provider for Gitea {
    fn verify(&self, inbound: &Inbound<'_>, source: &Credentials) -> Result<(), Rejection> {
        if source.secrets.is_empty() {
            return Ok(());
        }
        // A sender without a secret sends an empty signature; header_text treats it as absent.
        let signature = family_header(inbound.headers, "signature")
            .ok_or(Rejection::Missing("X-Gitea-Signature"))?;
        let digest =
            decode_hex(signature).ok_or(Rejection::Invalid("signature header is malformed"))?;
        let signed = form_payload(inbound.headers, inbound.body)
            .ok_or(Rejection::Invalid("form body has no payload field"))?;
        if matches_any_hmac(Algorithm::Sha256, &source.secrets, &[&signed], &digest) {
            Ok(())
        } else {
            Err(Rejection::Invalid("signature does not match"))
        }
    }

    fn classify(&self, inbound: &Inbound<'_>, payload: Option<&Value>) -> Classification {
        let event = family_header(inbound.headers, "event").map(str::to_owned);
        let mut facts = Classification {
            dedup_key: family_header(inbound.headers, "delivery").map(str::to_owned),
            action: text_at(payload, "/action"),
            project: text_at(payload, "/repository/full_name"),
            sender: first_text(
                payload,
                &["/sender/login", "/sender/username", "/pusher/login"],
            ),
            commit_before: text_at(payload, "/before"),
            commit_after: text_at(payload, "/after"),
            ..Classification::default()
        };
        super::github::set_refs(&mut facts, event.as_deref(), payload);
        facts.event_type = event;
        facts
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[
            "x-gitea-event",
            "x-gitea-event-type",
            "x-gitea-delivery",
            "x-forgejo-event",
            "x-forgejo-event-type",
            "x-forgejo-delivery",
            "x-gogs-event",
            "x-gogs-delivery",
            "user-agent",
        ]
    }
}
