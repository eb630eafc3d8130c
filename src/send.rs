//! `hookrelay send`: posts a realistic sample event, signed exactly as the real sender signs,
//! so users (and tests) can try a source end to end.

use anyhow::{Context, bail};

use crate::ingest::ProviderKind;
use crate::signing::{Algorithm, hmac, standard_secret, standard_v1_signature};

/// A request ready to send: body and headers, signing included.
#[derive(Debug, Clone)]
pub struct SignedSample {
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

const GITLAB: &[(&str, &str, &str)] = &[
    (
        "push",
        "Push Hook",
        include_str!("../samples/gitlab/push.json"),
    ),
    (
        "tag_push",
        "Tag Push Hook",
        include_str!("../samples/gitlab/tag_push.json"),
    ),
    (
        "merge_request",
        "Merge Request Hook",
        include_str!("../samples/gitlab/merge_request.json"),
    ),
    (
        "note",
        "Note Hook",
        include_str!("../samples/gitlab/note.json"),
    ),
    (
        "pipeline",
        "Pipeline Hook",
        include_str!("../samples/gitlab/pipeline.json"),
    ),
    (
        "job",
        "Job Hook",
        include_str!("../samples/gitlab/job.json"),
    ),
    (
        "release",
        "Release Hook",
        include_str!("../samples/gitlab/release.json"),
    ),
    (
        "member",
        "Member Hook",
        include_str!("../samples/gitlab/member.json"),
    ),
];
const GITHUB: &[(&str, &str)] = &[
    ("ping", include_str!("../samples/github/ping.json")),
    ("push", include_str!("../samples/github/push.json")),
    (
        "pull_request",
        include_str!("../samples/github/pull_request.json"),
    ),
];
const GITEA_PUSH: &str = include_str!("../samples/gitea/push.json");
const BITBUCKET_PUSH: &str = include_str!("../samples/bitbucket/repo_push.json");

fn new_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// The sample body for a provider and event; `None` when there is no built-in sample.
fn sample_body(provider: ProviderKind, event: &str) -> Option<String> {
    match provider {
        ProviderKind::Gitlab => GITLAB
            .iter()
            .find(|(short, header, _)| event == *short || event.eq_ignore_ascii_case(header))
            .map(|(_, _, body)| body.to_string()),
        ProviderKind::Github => GITHUB
            .iter()
            .find(|(e, _)| *e == event)
            .map(|(_, b)| b.to_string()),
        ProviderKind::Gitea => (event == "push").then(|| GITEA_PUSH.to_owned()),
        ProviderKind::Bitbucket => (event == "repo:push").then(|| BITBUCKET_PUSH.to_owned()),
        ProviderKind::Standard | ProviderKind::Generic => Some(format!(
            r#"{{"type":"{event}","timestamp":"2026-01-01T00:00:00Z","data":{{"message":"hello from hookrelay send"}}}}"#
        )),
    }
}

/// Builds the request a real sender would make. `body` overrides the built-in sample.
pub fn build(
    provider: ProviderKind,
    event: &str,
    secret: Option<&str>,
    body: Option<Vec<u8>>,
) -> anyhow::Result<SignedSample> {
    let body = match body {
        Some(body) => body,
        None => sample_body(provider, event)
            .with_context(|| format!("no built-in sample for event {event:?}; pass --body FILE"))?
            .into_bytes(),
    };
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let mut add = |name: &str, value: String| headers.push((name.to_owned(), value));
    match provider {
        ProviderKind::Gitlab => {
            let header = GITLAB
                .iter()
                .find(|(short, _, _)| *short == event)
                .map_or(event, |(_, header, _)| header);
            add("x-gitlab-event", header.to_owned());
            add("x-gitlab-instance", "https://gitlab.example.com".into());
            add("x-gitlab-webhook-uuid", new_id());
            add("x-gitlab-event-uuid", new_id());
            add("user-agent", "GitLab/18.6.0".into());
            let id = new_id();
            add("idempotency-key", id.clone());
            match secret {
                // A signing token (GitLab 19.0+): Standard Webhooks headers, no X-Gitlab-Token.
                Some(secret) if secret.starts_with("whsec_") => {
                    for (name, value) in standard_headers(secret, &id, &body)? {
                        add(&name, value);
                    }
                }
                Some(token) => add("x-gitlab-token", token.to_owned()),
                None => {}
            }
        }
        ProviderKind::Github => {
            add("x-github-event", event.to_owned());
            add("x-github-delivery", new_id());
            add("x-github-hook-id", "1".into());
            add("user-agent", "GitHub-Hookshot/hookrelay".into());
            if let Some(secret) = secret {
                let sha256 = hex::encode(hmac(Algorithm::Sha256, secret.as_bytes(), &[&body]));
                let sha1 = hex::encode(hmac(Algorithm::Sha1, secret.as_bytes(), &[&body]));
                add("x-hub-signature-256", format!("sha256={sha256}"));
                add("x-hub-signature", format!("sha1={sha1}"));
            }
        }
        ProviderKind::Gitea => {
            let delivery = new_id();
            let signature = secret
                .map(|s| hex::encode(hmac(Algorithm::Sha256, s.as_bytes(), &[&body])))
                .unwrap_or_default();
            for family in ["x-gitea", "x-gogs"] {
                add(&format!("{family}-event"), event.to_owned());
                add(&format!("{family}-delivery"), delivery.clone());
                add(&format!("{family}-signature"), signature.clone());
            }
        }
        ProviderKind::Bitbucket => {
            add("x-event-key", event.to_owned());
            add("x-request-uuid", new_id());
            add("x-hook-uuid", new_id());
            add("user-agent", "Bitbucket-Webhooks/2.0".into());
            if let Some(secret) = secret {
                let digest = hex::encode(hmac(Algorithm::Sha256, secret.as_bytes(), &[&body]));
                add("x-hub-signature", format!("sha256={digest}"));
            }
        }
        ProviderKind::Standard => {
            let secret = secret.context("standard webhooks need --secret whsec_...")?;
            let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
            for (name, value) in standard_headers(secret, &id, &body)? {
                add(&name, value);
            }
        }
        ProviderKind::Generic => {
            add("x-event-type", event.to_owned());
            add("idempotency-key", new_id());
            if let Some(secret) = secret {
                add("authorization", format!("Bearer {secret}"));
            }
        }
    }
    Ok(SignedSample { body, headers })
}

fn standard_headers(secret: &str, id: &str, body: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
    let key =
        standard_secret(secret.as_bytes()).map_err(|err| anyhow::anyhow!("--secret: {err}"))?;
    let timestamp = crate::domain::now_millis() / 1000;
    Ok(vec![
        ("webhook-id".into(), id.to_owned()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        (
            "webhook-signature".into(),
            standard_v1_signature(key.expose(), id, timestamp, body),
        ),
    ])
}

/// Posts the sample and reports the answer; fails on anything but 2xx.
pub async fn send(url: &str, sample: SignedSample) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let mut request = client.post(url).body(sample.body);
    for (name, value) in &sample.headers {
        request = request.header(name, value);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("{status} {}", text.trim());
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    Ok(())
}
