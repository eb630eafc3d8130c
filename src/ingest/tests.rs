//! Verification tables per provider (valid, tampered, wrong/rotated secret, missing header,
//! stale/future timestamps, empty signature, form bodies) and classification of real payloads.
#![allow(clippy::type_complexity)] // Table tests spell out their row types.

use std::time::Duration;

use http::HeaderMap;
use serde_json::Value;

use super::generic::{Encoding, GenericAuth, HmacScheme};
use super::signature::{Algorithm, hmac, standard_secret, standard_v1_signature};
use super::*;
use crate::config::SourceConfig;
use crate::domain::Name;

const NOW: i64 = 1_700_000_000;

pub(crate) fn source(provider: ProviderKind, secrets: &[&str]) -> SourceConfig {
    SourceConfig {
        name: Name::parse("s").unwrap(),
        provider,
        secrets: secrets.iter().map(|s| Secret::from_bytes(*s)).collect(),
        signing_secrets: vec![],
        public_keys: vec![],
        require_signature: false,
        timestamp_tolerance: Duration::from_secs(300),
        max_body_bytes: 1 << 20,
        allow_ips: None,
        trusted_proxies: vec![],
        generic_auth: GenericAuth::default(),
    }
}

fn headers(pairs: &[(&str, String)]) -> HeaderMap {
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

fn verify(
    source: &SourceConfig,
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

fn hex_hmac(key: &str, body: &[u8]) -> String {
    hex::encode(hmac(Algorithm::Sha256, key.as_bytes(), &[body]))
}

const OK: Result<(), &str> = Ok(());
const BAD: Result<(), &str> = Err("invalid_credentials");
const MISSING: Result<(), &str> = Err("missing_credentials");

#[test]
fn github_matches_the_documented_example() {
    // From GitHub's "Validating webhook deliveries".
    let source = source(ProviderKind::Github, &["It's a Secret to Everybody"]);
    let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let got = verify(
        &source,
        &[("x-hub-signature-256", signature.into())],
        b"Hello, World!",
        None,
    );
    assert_eq!(got, OK);
}

#[test]
fn github_signatures_follow_the_table() {
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let form = format!(
        "payload={}",
        form_urlencoded::byte_serialize(body).collect::<String>()
    );
    let github = source(ProviderKind::Github, &["old", "new"]);
    let sig = |key: &str, body: &[u8]| format!("sha256={}", hex_hmac(key, body));
    let form_ct = (
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    );
    let table: Vec<(&str, Vec<(&str, String)>, &[u8], Result<(), &str>)> = vec![
        (
            "valid",
            vec![("x-hub-signature-256", sig("new", body))],
            body,
            OK,
        ),
        (
            "rotated secret",
            vec![("x-hub-signature-256", sig("old", body))],
            body,
            OK,
        ),
        (
            "tampered body",
            vec![("x-hub-signature-256", sig("new", body))],
            b"{\"zen\":1}",
            BAD,
        ),
        (
            "wrong secret",
            vec![("x-hub-signature-256", sig("other", body))],
            body,
            BAD,
        ),
        ("missing header", vec![], body, MISSING),
        (
            "empty signature",
            vec![("x-hub-signature-256", String::new())],
            body,
            MISSING,
        ),
        (
            "sha1 header only",
            vec![(
                "x-hub-signature",
                format!(
                    "sha1={}",
                    hex::encode(hmac(Algorithm::Sha1, b"new", &[body]))
                ),
            )],
            body,
            MISSING,
        ),
        (
            "no prefix",
            vec![("x-hub-signature-256", hex_hmac("new", body))],
            body,
            BAD,
        ),
        (
            "upper-case header name",
            vec![("X-Hub-Signature-256", sig("new", body))],
            body,
            OK,
        ),
        (
            "form body, signed raw",
            vec![
                ("x-hub-signature-256", sig("new", form.as_bytes())),
                form_ct.clone(),
            ],
            form.as_bytes(),
            OK,
        ),
        (
            "form body, signed payload only",
            vec![("x-hub-signature-256", sig("new", body)), form_ct],
            form.as_bytes(),
            BAD,
        ),
    ];
    for (case, pairs, body, expected) in table {
        assert_eq!(verify(&github, &pairs, body, None), expected, "{case}");
    }
}

#[test]
fn gitea_family_signs_the_json_text_even_in_forms() {
    let body = br#"{"ref":"refs/heads/main"}"#;
    let form = format!(
        "payload={}",
        form_urlencoded::byte_serialize(body).collect::<String>()
    );
    let smuggled = format!("{form}&payload=%7B%22ref%22%3A%22evil%22%7D");
    let extra = format!("{form}&x=1");
    let gitea = source(ProviderKind::Gitea, &["s3", "s4"]);
    let form_ct = (
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    );
    let table: Vec<(&str, Vec<(&str, String)>, &[u8], Result<(), &str>)> = vec![
        (
            "gitea",
            vec![("x-gitea-signature", hex_hmac("s3", body))],
            body,
            OK,
        ),
        (
            "forgejo",
            vec![("x-forgejo-signature", hex_hmac("s4", body))],
            body,
            OK,
        ),
        (
            "gogs",
            vec![("x-gogs-signature", hex_hmac("s3", body))],
            body,
            OK,
        ),
        (
            "form",
            vec![("x-gitea-signature", hex_hmac("s3", body)), form_ct.clone()],
            form.as_bytes(),
            OK,
        ),
        (
            "form signed raw",
            vec![
                ("x-gitea-signature", hex_hmac("s3", form.as_bytes())),
                form_ct.clone(),
            ],
            form.as_bytes(),
            BAD,
        ),
        (
            "form with a smuggled second payload",
            vec![("x-gitea-signature", hex_hmac("s3", body)), form_ct.clone()],
            smuggled.as_bytes(),
            BAD,
        ),
        (
            "form with an extra field",
            vec![("x-gitea-signature", hex_hmac("s3", body)), form_ct],
            extra.as_bytes(),
            BAD,
        ),
        (
            "tampered",
            vec![("x-gitea-signature", hex_hmac("s3", body))],
            b"{\"ref\":\"x\"}",
            BAD,
        ),
        (
            "wrong secret",
            vec![("x-gitea-signature", hex_hmac("nope", body))],
            body,
            BAD,
        ),
        // A sender with no secret configured sends an empty signature.
        (
            "empty signature",
            vec![("x-gitea-signature", String::new())],
            body,
            MISSING,
        ),
        ("missing", vec![], body, MISSING),
        (
            "sha256= prefix",
            vec![(
                "x-gitea-signature",
                format!("sha256={}", hex_hmac("s3", body)),
            )],
            body,
            BAD,
        ),
    ];
    for (case, pairs, body, expected) in table {
        assert_eq!(verify(&gitea, &pairs, body, None), expected, "{case}");
    }
}

#[test]
fn bitbucket_signatures_follow_the_table() {
    let body = br#"{"push":{"changes":[]}}"#;
    let bitbucket = source(ProviderKind::Bitbucket, &["bb1", "bb2"]);
    let sig = |key: &str| format!("sha256={}", hex_hmac(key, body));
    let table: Vec<(&str, Vec<(&str, String)>, &[u8], Result<(), &str>)> = vec![
        ("valid", vec![("x-hub-signature", sig("bb2"))], body, OK),
        ("rotated", vec![("x-hub-signature", sig("bb1"))], body, OK),
        (
            "tampered",
            vec![("x-hub-signature", sig("bb1"))],
            b"{}",
            BAD,
        ),
        ("wrong", vec![("x-hub-signature", sig("zz"))], body, BAD),
        ("missing", vec![], body, MISSING),
        (
            "empty",
            vec![("x-hub-signature", String::new())],
            body,
            MISSING,
        ),
    ];
    for (case, pairs, body, expected) in table {
        assert_eq!(verify(&bitbucket, &pairs, body, None), expected, "{case}");
    }
}

fn standard_headers(key: &[u8], id: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            standard_v1_signature(key, id, ts, body),
        ),
    ]
}

#[test]
fn standard_webhooks_v1_and_v1a_follow_the_table() {
    use ed25519_dalek::Signer;
    let body = br#"{"type":"invoice.paid","data":{}}"#;
    let secret_text = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let key = standard_secret(secret_text.as_bytes()).unwrap();
    let other = standard_secret(b"whsec_c2VjcmV0LW51bWJlci10d28=").unwrap();
    let signing_key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let mut standard = source(ProviderKind::Standard, &[]);
    standard.signing_secrets = vec![other.clone(), key.clone()];
    standard.public_keys = vec![signing_key.verifying_key()];
    let v1a = |ts: i64| {
        let message = format!("msg_1.{ts}.{}", std::str::from_utf8(body).unwrap());
        let signature = signing_key.sign(message.as_bytes());
        vec![
            ("webhook-id", "msg_1".to_owned()),
            ("webhook-timestamp", ts.to_string()),
            (
                "webhook-signature",
                format!(
                    "v1a,{}",
                    base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        signature.to_bytes()
                    )
                ),
            ),
        ]
    };
    let mut several = standard_headers(key.expose(), "msg_1", NOW, body);
    several[2].1 = format!("v1,bm9wZQ== {}", several[2].1);
    let mut no_timestamp = standard_headers(key.expose(), "msg_1", NOW, body);
    no_timestamp.remove(1);
    let mut empty = standard_headers(key.expose(), "msg_1", NOW, body);
    empty[2].1 = String::new();
    let table: Vec<(&str, Vec<(&str, String)>, &[u8], Result<(), &str>)> = vec![
        (
            "valid v1",
            standard_headers(key.expose(), "msg_1", NOW, body),
            body,
            OK,
        ),
        (
            "rotated v1",
            standard_headers(other.expose(), "msg_1", NOW, body),
            body,
            OK,
        ),
        ("valid v1a", v1a(NOW), body, OK),
        ("one of several signatures valid", several, body, OK),
        (
            "tampered",
            standard_headers(key.expose(), "msg_1", NOW, body),
            b"{}",
            BAD,
        ),
        (
            "wrong key",
            standard_headers(b"wrong", "msg_1", NOW, body),
            body,
            BAD,
        ),
        (
            "stale",
            standard_headers(key.expose(), "msg_1", NOW - 301, body),
            body,
            BAD,
        ),
        (
            "future",
            standard_headers(key.expose(), "msg_1", NOW + 301, body),
            body,
            BAD,
        ),
        (
            "just inside tolerance",
            standard_headers(key.expose(), "msg_1", NOW - 299, body),
            body,
            OK,
        ),
        ("stale v1a", v1a(NOW - 3600), body, BAD),
        ("missing timestamp", no_timestamp, body, MISSING),
        ("empty signature", empty, body, MISSING),
        ("missing all", vec![], body, MISSING),
    ];
    for (case, pairs, body, expected) in table {
        assert_eq!(verify(&standard, &pairs, body, None), expected, "{case}");
    }
}

#[test]
fn gitlab_tokens_and_signing_tokens_follow_the_table() {
    let body = br#"{"object_kind":"push"}"#;
    let key = standard_secret(b"whsec_c2lnbmluZy1rZXktZm9yLWdpdGxhYg==").unwrap();
    let mut token_only = source(ProviderKind::Gitlab, &["s3cret", "rotated"]);
    let mut signed = source(ProviderKind::Gitlab, &[]);
    signed.signing_secrets = vec![key.clone()];
    let mut required = signed.clone();
    required.require_signature = true;
    token_only.signing_secrets = vec![];
    let token = |t: &str| vec![("x-gitlab-token", t.to_owned())];
    let sig = |ts| standard_headers(key.expose(), "wh_1", ts, body);
    let mut both = sig(NOW);
    both.push(("x-gitlab-token", "s3cret".into()));
    let mut both_source = signed.clone();
    both_source.secrets = vec![Secret::from_bytes("s3cret")];
    let table: Vec<(
        &str,
        &SourceConfig,
        Vec<(&str, String)>,
        &[u8],
        Result<(), &str>,
    )> = vec![
        ("token", &token_only, token("s3cret"), body, OK),
        ("rotated token", &token_only, token("rotated"), body, OK),
        ("wrong case", &token_only, token("S3CRET"), body, BAD),
        ("empty token", &token_only, token(""), body, BAD),
        ("no token", &token_only, vec![], body, MISSING),
        ("signed", &signed, sig(NOW), body, OK),
        ("signed, tampered", &signed, sig(NOW), b"{}", BAD),
        ("signed, stale", &signed, sig(NOW - 600), body, BAD),
        ("signed, future", &signed, sig(NOW + 600), body, BAD),
        (
            "unsigned accepted when not required",
            &signed,
            vec![],
            body,
            OK,
        ),
        (
            "unsigned refused when required",
            &required,
            vec![],
            body,
            MISSING,
        ),
        ("signed and token", &both_source, both, body, OK),
        (
            "signed but token missing",
            &both_source,
            sig(NOW),
            body,
            MISSING,
        ),
    ];
    for (case, source, pairs, body, expected) in table {
        assert_eq!(verify(source, &pairs, body, None), expected, "{case}");
    }
}

#[test]
fn generic_schemes_follow_the_table() {
    let body = br#"{"hello":"world"}"#;
    let with = |auth: GenericAuth| {
        let mut s = source(ProviderKind::Generic, &["k1", "k2"]);
        s.generic_auth = auth;
        s
    };
    let hmac_scheme = |algorithm, encoding, prefix: &str, ts: Option<&str>| {
        with(GenericAuth::Hmac(HmacScheme {
            header: "x-signature".into(),
            algorithm,
            encoding,
            prefix: prefix.into(),
            timestamp_header: ts.map(str::to_owned),
        }))
    };
    let sha512_b64 = hmac_scheme(Algorithm::Sha512, Encoding::Base64, "", None);
    let sha1_hex = hmac_scheme(Algorithm::Sha1, Encoding::Hex, "sha1=", None);
    let stamped = hmac_scheme(Algorithm::Sha256, Encoding::Hex, "", Some("x-timestamp"));
    let b64 =
        |bytes: Vec<u8>| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
    let basic = with(GenericAuth::Basic {
        username: "relay".into(),
    });
    let token = with(GenericAuth::Token {
        header: "x-token".into(),
    });
    let query = with(GenericAuth::Query {
        param: "token".into(),
    });
    let bearer = with(GenericAuth::Bearer);
    let stamp = NOW.to_string();
    let stamped_sig = hex::encode(hmac(
        Algorithm::Sha256,
        b"k2",
        &[stamp.as_bytes(), b".", body],
    ));
    type Row<'a> = (
        &'a str,
        &'a SourceConfig,
        Vec<(&'a str, String)>,
        Option<&'a str>,
        Result<(), &'a str>,
    );
    let table: Vec<Row> = vec![
        (
            "sha512 base64",
            &sha512_b64,
            vec![("x-signature", b64(hmac(Algorithm::Sha512, b"k1", &[body])))],
            None,
            OK,
        ),
        (
            "sha512 wrong key",
            &sha512_b64,
            vec![("x-signature", b64(hmac(Algorithm::Sha512, b"zz", &[body])))],
            None,
            BAD,
        ),
        (
            "sha1 hex prefixed",
            &sha1_hex,
            vec![(
                "x-signature",
                format!(
                    "sha1={}",
                    hex::encode(hmac(Algorithm::Sha1, b"k2", &[body]))
                ),
            )],
            None,
            OK,
        ),
        (
            "sha1 missing prefix",
            &sha1_hex,
            vec![(
                "x-signature",
                hex::encode(hmac(Algorithm::Sha1, b"k2", &[body])),
            )],
            None,
            BAD,
        ),
        (
            "timestamped",
            &stamped,
            vec![
                ("x-signature", stamped_sig.clone()),
                ("x-timestamp", stamp.clone()),
            ],
            None,
            OK,
        ),
        (
            "timestamp missing",
            &stamped,
            vec![("x-signature", stamped_sig.clone())],
            None,
            MISSING,
        ),
        (
            "timestamp replaced",
            &stamped,
            vec![
                ("x-signature", stamped_sig),
                ("x-timestamp", (NOW - 1).to_string()),
            ],
            None,
            BAD,
        ),
        (
            "basic",
            &basic,
            vec![(
                "authorization",
                format!("Basic {}", b64(b"relay:k1".to_vec())),
            )],
            None,
            OK,
        ),
        (
            "basic wrong user",
            &basic,
            vec![(
                "authorization",
                format!("Basic {}", b64(b"admin:k1".to_vec())),
            )],
            None,
            BAD,
        ),
        (
            "basic wrong password",
            &basic,
            vec![(
                "authorization",
                format!("Basic {}", b64(b"relay:k3".to_vec())),
            )],
            None,
            BAD,
        ),
        ("basic missing", &basic, vec![], None, MISSING),
        ("token", &token, vec![("x-token", "k2".into())], None, OK),
        (
            "token wrong",
            &token,
            vec![("x-token", "k3".into())],
            None,
            BAD,
        ),
        ("query", &query, vec![], Some("a=1&token=k1"), OK),
        ("query wrong", &query, vec![], Some("token=k9"), BAD),
        ("query missing", &query, vec![], Some("a=1"), MISSING),
        (
            "bearer",
            &bearer,
            vec![("authorization", "Bearer k1".into())],
            None,
            OK,
        ),
        (
            "bearer wrong",
            &bearer,
            vec![("authorization", "Bearer k0".into())],
            None,
            BAD,
        ),
    ];
    for (case, source, pairs, query, expected) in table {
        assert_eq!(verify(source, &pairs, body, query), expected, "{case}");
    }
}

#[test]
fn secret_matching_accepts_any_configured_secret_only() {
    let secrets = [Secret::from_bytes("old"), Secret::from_bytes("new")];
    assert!(matches_any_secret(b"old", &secrets));
    assert!(matches_any_secret(b"new", &secrets));
    assert!(!matches_any_secret(b"ne", &secrets));
    assert!(!matches_any_secret(b"", &secrets));
    assert!(!matches_any_secret(b"old", &[]));
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn classify(kind: ProviderKind, pairs: &[(&str, String)], body: &[u8]) -> Classification {
    let headers = headers(pairs);
    let payload: Option<Value> = parse_payload(&headers, body);
    let inbound = Inbound {
        headers: &headers,
        body,
        query: None,
        now_secs: NOW,
    };
    provider_for(kind).classify(&inbound, payload.as_ref())
}

#[test]
fn real_payload_shapes_classify() {
    let s = |v: &str| Some(v.to_owned());
    // (provider, event header, fixture, event, action, branch, tag, project, sender)
    type Row = (
        ProviderKind,
        (&'static str, &'static str),
        &'static str,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let table: Vec<Row> = vec![
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Push Hook"),
            "gitlab/push.json",
            s("Push Hook"),
            None,
            s("master"),
            None,
            s("mike/diaspora"),
            s("jsmith"),
        ),
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Tag Push Hook"),
            "gitlab/tag_push.json",
            s("Tag Push Hook"),
            None,
            None,
            s("v1.0.0"),
            s("jsmith/example"),
            s("jsmith"),
        ),
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Merge Request Hook"),
            "gitlab/merge_request.json",
            s("Merge Request Hook"),
            s("open"),
            s("master"),
            None,
            s("gitlabhq/gitlab-test"),
            s("root"),
        ),
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Note Hook"),
            "gitlab/note.json",
            s("Note Hook"),
            s("create"),
            None,
            None,
            s("gitlab-org/gitlab-test"),
            s("root"),
        ),
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Pipeline Hook"),
            "gitlab/pipeline.json",
            s("Pipeline Hook"),
            None,
            s("main"),
            None,
            s("gitlab-org/gitlab-test"),
            s("root"),
        ),
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Job Hook"),
            "gitlab/job.json",
            s("Job Hook"),
            None,
            s("gitlab-script-trigger"),
            None,
            None,
            None,
        ),
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Release Hook"),
            "gitlab/release.json",
            s("Release Hook"),
            s("create"),
            None,
            s("v1.1"),
            s("gitlab-org/release-webhook-example"),
            None,
        ),
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Member Hook"),
            "gitlab/member.json",
            s("Member Hook"),
            None,
            None,
            None,
            None,
            s("test_user"),
        ),
        (
            ProviderKind::Github,
            ("x-github-event", "ping"),
            "github/ping.json",
            s("ping"),
            None,
            None,
            None,
            s("octocat/Hello-World"),
            s("octocat"),
        ),
        (
            ProviderKind::Github,
            ("x-github-event", "push"),
            "github/push.json",
            s("push"),
            None,
            s("main"),
            None,
            s("octocat/Hello-World"),
            s("octocat"),
        ),
        (
            ProviderKind::Github,
            ("x-github-event", "pull_request"),
            "github/pull_request.json",
            s("pull_request"),
            s("opened"),
            s("master"),
            None,
            s("Codertocat/Hello-World"),
            s("Codertocat"),
        ),
        (
            ProviderKind::Gitea,
            ("x-gitea-event", "push"),
            "gitea/push.json",
            s("push"),
            None,
            s("develop"),
            None,
            s("gitea/webhooks"),
            s("gitea"),
        ),
    ];
    for (kind, (header, value), file, event, action, branch, tag, project, sender) in table {
        let got = classify(kind, &[(header, value.to_owned())], &fixture(file));
        assert_eq!(
            (
                got.event_type,
                got.action,
                got.branch,
                got.tag,
                got.project,
                got.sender
            ),
            (event, action, branch, tag, project, sender),
            "{file}"
        );
    }
    let push = classify(
        ProviderKind::Gitlab,
        &[("x-gitlab-event", "Push Hook".into())],
        &fixture("gitlab/push.json"),
    );
    assert_eq!(
        push.commit_before.as_deref(),
        Some("95790bf891e76fee5e1747ab589903a6a1f80f22")
    );
    assert_eq!(
        push.commit_after.as_deref(),
        Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
    );
    assert_eq!(push.git_ref.as_deref(), Some("refs/heads/master"));
}

#[test]
fn dedup_keys_come_from_each_senders_delivery_id() {
    let table: Vec<(ProviderKind, Vec<(&str, String)>, Option<&str>)> = vec![
        (
            ProviderKind::Gitlab,
            vec![
                ("idempotency-key", "k1".into()),
                ("webhook-id", "w1".into()),
            ],
            Some("k1"),
        ),
        (
            ProviderKind::Gitlab,
            vec![("webhook-id", "w1".into())],
            Some("w1"),
        ),
        (
            ProviderKind::Gitlab,
            vec![
                ("x-gitlab-webhook-uuid", "u".into()),
                ("x-gitlab-event-uuid", "e".into()),
            ],
            None,
        ),
        (
            ProviderKind::Github,
            vec![("x-github-delivery", "72d3162e".into())],
            Some("72d3162e"),
        ),
        (
            ProviderKind::Gitea,
            vec![("x-gitea-delivery", "g-1".into())],
            Some("g-1"),
        ),
        (
            ProviderKind::Gitea,
            vec![("x-forgejo-delivery", "f-1".into())],
            Some("f-1"),
        ),
        (
            ProviderKind::Bitbucket,
            vec![("x-request-uuid", "b-1".into())],
            Some("b-1"),
        ),
        (
            ProviderKind::Standard,
            vec![("webhook-id", "msg_1".into())],
            Some("msg_1"),
        ),
        (
            ProviderKind::Generic,
            vec![("idempotency-key", "x".into())],
            Some("x"),
        ),
    ];
    for (kind, pairs, expected) in table {
        let got = classify(kind, &pairs, b"{}");
        assert_eq!(got.dedup_key.as_deref(), expected, "{kind:?} {pairs:?}");
    }
    let bitbucket = classify(
        ProviderKind::Bitbucket,
        &[("x-event-key", "repo:push".into())],
        br#"{"push":{"changes":[{"new":{"type":"tag","name":"v2","target":{"hash":"bbb"}},"old":{"target":{"hash":"aaa"}}}]},"repository":{"full_name":"team/repo"},"actor":{"nickname":"dev"}}"#,
    );
    assert_eq!(bitbucket.tag.as_deref(), Some("v2"));
    assert_eq!(bitbucket.action.as_deref(), Some("push"));
    assert_eq!(bitbucket.commit_before.as_deref(), Some("aaa"));
    let standard = classify(ProviderKind::Standard, &[], br#"{"type":"invoice.paid"}"#);
    assert_eq!(standard.event_type.as_deref(), Some("invoice.paid"));
}

#[test]
fn hostile_signature_headers_are_refused_cheaply_and_without_panics() {
    let key = standard_secret(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let mut standard = source(ProviderKind::Standard, &[]);
    standard.signing_secrets = vec![key.clone()];
    let body = vec![b'x'; 1 << 20];
    let mut flood = standard_headers(key.expose(), "msg_1", NOW, &body);
    let valid = flood[2].1.clone();
    // Thousands of empty or junk entries, the valid one last: only the first few are looked at.
    flood[2].1 = format!("{} {valid}", "v1, v1a, v1,AAAA ".repeat(3000));
    assert_eq!(verify(&standard, &flood, &body, None), BAD);
    for ts in [i64::MIN, i64::MAX, -1] {
        let mut pairs = standard_headers(key.expose(), "msg_1", ts, &body);
        pairs[1].1 = ts.to_string();
        assert_eq!(verify(&standard, &pairs, &body, None), BAD, "{ts}");
    }
}

#[test]
fn form_encoded_github_deliveries_classify_like_json_ones() {
    let json = fixture("github/push.json");
    let form = format!(
        "payload={}",
        form_urlencoded::byte_serialize(&json).collect::<String>()
    );
    let pairs = [
        ("x-github-event", "push".to_owned()),
        (
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        ),
    ];
    let from_form = classify(ProviderKind::Github, &pairs, form.as_bytes());
    let from_json = classify(ProviderKind::Github, &pairs[..1], &json);
    assert_eq!(from_form, from_json);
    assert_eq!(from_form.branch.as_deref(), Some("main"));
}
