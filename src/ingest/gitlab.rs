//! GitLab: `X-Gitlab-Token` checked in constant time, event type from `X-Gitlab-Event`.

use super::{
    Classification, Inbound, Provider, Rejection, header_text, matches_any_secret,
    standard_dedup_key,
};
use crate::config::Secret;

pub struct GitLab;

impl Provider for GitLab {
    fn verify(&self, inbound: &Inbound<'_>, secrets: &[Secret]) -> Result<(), Rejection> {
        if secrets.is_empty() {
            return Ok(());
        }
        let token = inbound
            .headers
            .get("x-gitlab-token")
            .ok_or(Rejection::Missing("X-Gitlab-Token header is absent"))?;
        if matches_any_secret(token.as_bytes(), secrets) {
            Ok(())
        } else {
            Err(Rejection::Invalid("X-Gitlab-Token does not match"))
        }
    }

    fn classify(&self, inbound: &Inbound<'_>) -> Classification {
        Classification {
            event_type: header_text(inbound.headers, "x-gitlab-event").map(str::to_owned),
            // Never X-Gitlab-Webhook-UUID (new on every resend) nor X-Gitlab-Event-UUID
            // (shared by every hook the same event triggers).
            dedup_key: standard_dedup_key(inbound.headers),
        }
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

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    type Pairs = &'static [(&'static str, &'static str)];

    fn headers(pairs: Pairs) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn token_checks_follow_the_table() {
        let secrets = [Secret::from_bytes("s3cret"), Secret::from_bytes("rotated")];
        let table: &[(Pairs, &[Secret], Result<(), &str>)] = &[
            (&[("x-gitlab-token", "s3cret")], &secrets, Ok(())),
            (&[("x-gitlab-token", "rotated")], &secrets, Ok(())),
            (
                &[("x-gitlab-token", "S3CRET")],
                &secrets,
                Err("invalid_credentials"),
            ),
            (
                &[("x-gitlab-token", "")],
                &secrets,
                Err("invalid_credentials"),
            ),
            (&[], &secrets, Err("missing_credentials")),
            (&[], &[], Ok(())),
        ];
        for (pairs, secrets, expected) in table {
            let headers = headers(pairs);
            let inbound = Inbound {
                headers: &headers,
                body: b"{}",
            };
            let got = GitLab.verify(&inbound, secrets).map_err(|r| r.reason());
            assert_eq!(&got, expected, "{pairs:?}");
        }
    }

    #[test]
    fn classification_uses_idempotency_key_then_webhook_id_never_uuids() {
        let table: &[(Pairs, Option<&str>)] = &[
            (
                &[("idempotency-key", "k1"), ("webhook-id", "w1")],
                Some("k1"),
            ),
            (&[("webhook-id", "w1")], Some("w1")),
            (
                &[("x-gitlab-webhook-uuid", "u"), ("x-gitlab-event-uuid", "e")],
                None,
            ),
        ];
        for (pairs, expected) in table {
            let mut headers = headers(pairs);
            headers.insert("x-gitlab-event", "Push Hook".parse().unwrap());
            let got = GitLab.classify(&Inbound {
                headers: &headers,
                body: b"",
            });
            assert_eq!(got.dedup_key.as_deref(), *expected, "{pairs:?}");
            assert_eq!(got.event_type.as_deref(), Some("Push Hook"));
        }
    }
}
