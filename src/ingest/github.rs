//! GitHub: `X-Hub-Signature-256: sha256=<hex>` over the raw body (JSON or form-encoded).

use crate::ingest::Credentials;
use serde_json::Value;

use super::verify::verify_hex_header;
use super::{Classification, Inbound, Provider, Rejection, first_text, header_text, text_at};
use crate::signing::Algorithm;

pub struct GitHub;

impl Provider for GitHub {
    fn verify(&self, inbound: &Inbound<'_>, source: &Credentials) -> Result<(), Rejection> {
        if source.secrets.is_empty() {
            return Ok(());
        }
        verify_hex_header(
            inbound.headers,
            "x-hub-signature-256",
            "sha256=",
            Algorithm::Sha256,
            &source.secrets,
            &[inbound.body],
        )
    }

    fn classify(&self, inbound: &Inbound<'_>, payload: Option<&Value>) -> Classification {
        let event = header_text(inbound.headers, "x-github-event").map(str::to_owned);
        let mut facts = Classification {
            dedup_key: header_text(inbound.headers, "x-github-delivery").map(str::to_owned),
            action: text_at(payload, "/action"),
            project: text_at(payload, "/repository/full_name"),
            sender: text_at(payload, "/sender/login"),
            commit_before: text_at(payload, "/before"),
            commit_after: text_at(payload, "/after"),
            ..Classification::default()
        };
        set_refs(&mut facts, event.as_deref(), payload);
        facts.event_type = event;
        facts
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[
            "x-github-event",
            "x-github-delivery",
            "x-github-hook-id",
            "x-github-hook-installation-target-id",
            "x-github-hook-installation-target-type",
            "x-hub-signature-256",
            "user-agent",
        ]
    }
}

/// Branch and tag of a GitHub-shaped payload; Gitea, Forgejo and Gogs send the same shapes.
pub(super) fn set_refs(facts: &mut Classification, event: Option<&str>, payload: Option<&Value>) {
    match event {
        Some("push") => facts.set_ref(text_at(payload, "/ref")),
        Some("pull_request" | "pull_request_review" | "pull_request_review_comment") => {
            facts.branch = text_at(payload, "/pull_request/base/ref");
        }
        Some("create" | "delete") => {
            let name = text_at(payload, "/ref");
            if text_at(payload, "/ref_type").as_deref() == Some("tag") {
                facts.tag = name;
            } else {
                facts.branch = name;
            }
        }
        Some("release") => facts.tag = text_at(payload, "/release/tag_name"),
        Some("workflow_run" | "check_suite") => {
            facts.branch = first_text(
                payload,
                &["/workflow_run/head_branch", "/check_suite/head_branch"],
            );
        }
        _ => {}
    }
}
