//! GitLab: `X-Gitlab-Token` in constant time, and (GitLab 19.0+) Standard Webhooks signatures.

use serde_json::Value;

use super::signature::{StandardKeys, verify_standard};
use super::{
    Classification, Inbound, Provider, Rejection, first_text, header_text, matches_any_secret,
    standard_dedup_key, text_at,
};
use crate::config::SourceConfig;

pub struct GitLab;

impl Provider for GitLab {
    fn verify(&self, inbound: &Inbound<'_>, source: &SourceConfig) -> Result<(), Rejection> {
        let signed = inbound.headers.contains_key("webhook-signature");
        if signed && !source.signing_secrets.is_empty() {
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
        } else if source.require_signature {
            return Err(Rejection::Missing("webhook-signature header is absent"));
        }
        if source.secrets.is_empty() {
            return Ok(());
        }
        let token = inbound
            .headers
            .get("x-gitlab-token")
            .ok_or(Rejection::Missing("X-Gitlab-Token header is absent"))?;
        if matches_any_secret(token.as_bytes(), &source.secrets) {
            Ok(())
        } else {
            Err(Rejection::Invalid("X-Gitlab-Token does not match"))
        }
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
