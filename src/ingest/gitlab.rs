//! GitLab: `X-Gitlab-Token` in constant time, and (GitLab 19.0+) Standard Webhooks signatures.

use crate::ingest::Credentials;
use serde_json::Value;

use super::verify::{StandardKeys, verify_standard};
use super::{
    Classification, Inbound, Provider, Rejection, first_text, header_text, matches_any_secret,
    standard_dedup_key, text_at,
};

pub struct GitLab;

/// A present `webhook-signature` is verified when the source has signing secrets.
fn signature_checked(inbound: &Inbound<'_>, source: &Credentials) -> bool {
    inbound.headers.contains_key("webhook-signature") && !source.signing_secrets.is_empty()
}

/// GitLab's documented rule: "if `webhook-signature` is present, verify it; otherwise fall
/// back to the secret token". A verified signature is the stronger proof, so a signed request
/// without a token passes unless `require_token`; a token that is present must still match.
fn check_token(inbound: &Inbound<'_>, source: &Credentials, signed: bool) -> Result<(), Rejection> {
    if !signed && source.require_signature {
        return Err(Rejection::Missing("webhook-signature header is absent"));
    }
    if source.secrets.is_empty() {
        return Ok(());
    }
    match inbound.headers.get("x-gitlab-token") {
        Some(token) if matches_any_secret(token.as_bytes(), &source.secrets) => Ok(()),
        Some(_) => Err(Rejection::Invalid("X-Gitlab-Token does not match")),
        None if signed && !source.require_token => Ok(()),
        None => Err(Rejection::Missing("X-Gitlab-Token header is absent")),
    }
}

impl Provider for GitLab {
    fn verify(&self, inbound: &Inbound<'_>, source: &Credentials) -> Result<(), Rejection> {
        let signed = signature_checked(inbound, source);
        if signed {
            verify_standard(
                inbound.headers,
                inbound.body,
                &StandardKeys {
                    secrets: &source.signing_secrets,
                    public_keys: &[],
                    tolerance_secs: source.timestamp_tolerance.as_secs() as i64,
                    now_secs: inbound.now_secs,
                },
            )?;
        }
        check_token(inbound, source, signed)
    }

    fn verify_headers(
        &self,
        inbound: &Inbound<'_>,
        source: &Credentials,
    ) -> Result<bool, Rejection> {
        // The signature is checked with the body; here only whether the token may wait for it.
        check_token(inbound, source, signature_checked(inbound, source))?;
        // A matching token proves the sender; a signature alone is only proven by the body.
        Ok(!source.secrets.is_empty() && inbound.headers.contains_key("x-gitlab-token"))
    }

    fn signed_id(&self, inbound: &Inbound<'_>, source: &Credentials) -> Option<String> {
        signature_checked(inbound, source)
            .then(|| header_text(inbound.headers, "webhook-id").map(str::to_owned))
            .flatten()
    }

    fn classify(&self, inbound: &Inbound<'_>, payload: Option<&Value>) -> Classification {
        let mut facts = Classification {
            event_type: header_text(inbound.headers, "x-gitlab-event").map(str::to_owned),
            // Never X-Gitlab-Webhook-UUID (new on every resend) nor X-Gitlab-Event-UUID
            // (shared by every hook the same event triggers).
            dedup_key: standard_dedup_key(inbound.headers),
            action: first_text(payload, &["/object_attributes/action", "/action"]),
            project: first_text(
                payload,
                &["/project/path_with_namespace", "/group/full_path"],
            ),
            sender: first_text(payload, &["/user_username", "/user/username"]),
            commit_before: text_at(payload, "/before"),
            commit_after: text_at(payload, "/after"),
            ..Classification::default()
        };
        let kind = text_at(payload, "/object_kind");
        match kind.as_deref() {
            Some("push" | "tag_push") => facts.set_ref(text_at(payload, "/ref")),
            Some("merge_request") => {
                facts.branch = text_at(payload, "/object_attributes/target_branch");
            }
            Some("pipeline") => {
                let name = text_at(payload, "/object_attributes/ref");
                if text_at(payload, "/object_attributes/tag").as_deref() == Some("true") {
                    facts.tag = name;
                } else {
                    facts.branch = name;
                }
            }
            Some("build") => {
                let name = text_at(payload, "/ref");
                if text_at(payload, "/tag").as_deref() == Some("true") {
                    facts.tag = name;
                } else {
                    facts.branch = name;
                }
            }
            Some("release") => facts.tag = text_at(payload, "/tag"),
            _ => {}
        }
        facts
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[
            "x-gitlab-event",
            "x-gitlab-event-uuid",
            "x-gitlab-webhook-uuid",
            "x-gitlab-instance",
            "idempotency-key",
            "user-agent",
        ]
    }
}
