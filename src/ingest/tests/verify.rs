//! Verification tables per provider: valid, tampered body, wrong and rotated secrets, missing
//! headers, stale and future timestamps, empty signatures, form bodies, hostile headers.
#![allow(clippy::type_complexity)] // Table tests spell out their row types.

use super::super::*;
use super::*;
use crate::signing::{Algorithm, hmac, standard_secret};

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
    let mut token_required = both_source.clone();
    token_required.require_token = true;
    let mut wrong_token = sig(NOW);
    wrong_token.push(("x-gitlab-token", "guess".into()));
    let table: Vec<(
        &str,
        &TestSource,
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
        // GitLab: "if webhook-signature is present, verify it; otherwise fall back to the
        // secret token". A valid signature is the stronger proof.
        ("signed, no token", &both_source, sig(NOW), body, OK),
        ("signed, wrong token", &both_source, wrong_token, body, BAD),
        (
            "signed, no token, token required",
            &token_required,
            sig(NOW),
            body,
            MISSING,
        ),
        ("badly signed, no token", &both_source, sig(NOW), b"{}", BAD),
    ];
    for (case, source, pairs, body, expected) in table {
        assert_eq!(verify(source, &pairs, body, None), expected, "{case}");
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

#[test]
fn hostile_signature_headers_are_refused_cheaply_and_without_panics() {
    let key = standard_secret(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let mut standard = source(ProviderKind::Standard, &[]);
    standard.signing_secrets = vec![key.clone()];
    let body = vec![b'x'; 1 << 20];
    let mut flood = standard_headers(key.expose(), "msg_1", NOW, &body);
    let valid = flood[2].1.clone();
    // Thousands of empty or junk entries, the valid one last: each key's HMAC is computed
    // once, so looking at every entry is cheap, and the valid one is found.
    flood[2].1 = format!("{} {valid}", "v1, v1a, v1,AAAA ".repeat(3000));
    assert_eq!(verify(&standard, &flood, &body, None), OK);
    flood[2].1 = "v1,AAAA ".repeat(9000);
    assert_eq!(verify(&standard, &flood, &body, None), BAD);
    for ts in [i64::MIN, i64::MAX, -1] {
        let mut pairs = standard_headers(key.expose(), "msg_1", ts, &body);
        pairs[1].1 = ts.to_string();
        assert_eq!(verify(&standard, &pairs, &body, None), BAD, "{ts}");
    }
}
