//! Bitbucket Cloud: `X-Hub-Signature: sha256=<hex>`, event `X-Event-Key`, dedup `X-Request-UUID`.

use crate::ingest::Credentials;
use serde_json::Value;

use super::verify::verify_hex_header;
use super::{Classification, Inbound, Provider, Rejection, first_text, header_text, text_at};
use crate::signing::Algorithm;

pub struct Bitbucket;

impl Provider for Bitbucket {
    fn verify(&self, inbound: &Inbound<'_>, source: &Credentials) -> Result<(), Rejection> {
        if source.secrets.is_empty() {
            return Ok(());
        }
        verify_hex_header(
            inbound.headers,
            "x-hub-signature",
            "sha256=",
            Algorithm::Sha256,
            &source.secrets,
            &[inbound.body],
        )
    }

    fn classify(&self, inbound: &Inbound<'_>, payload: Option<&Value>) -> Classification {
        let event = header_text(inbound.headers, "x-event-key").map(str::to_owned);
        let mut facts = Classification {
            dedup_key: header_text(inbound.headers, "x-request-uuid").map(str::to_owned),
            action: event
                .as_deref()
                .and_then(|e| e.split_once(':'))
                .map(|(_, action)| action.to_owned()),
            project: text_at(payload, "/repository/full_name"),
            sender: first_text(
                payload,
                &["/actor/nickname", "/actor/username", "/actor/display_name"],
            ),
            ..Classification::default()
        };
        match event.as_deref() {
            Some("repo:push") => {
                let kind = text_at(payload, "/push/changes/0/new/type");
                let name = text_at(payload, "/push/changes/0/new/name");
                match kind.as_deref() {
                    Some("tag") | Some("annotated_tag") => facts.tag = name,
                    _ => facts.branch = name,
                }
                facts.commit_before = text_at(payload, "/push/changes/0/old/target/hash");
                facts.commit_after = text_at(payload, "/push/changes/0/new/target/hash");
            }
            Some(e) if e.starts_with("pullrequest:") => {
                facts.branch = text_at(payload, "/pullrequest/destination/branch/name");
            }
            _ => {}
        }
        facts.event_type = event;
        facts
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &[
            "x-event-key",
            "x-request-uuid",
            "x-hook-uuid",
            "x-attempt-number",
            "user-agent",
        ]
    }
}
