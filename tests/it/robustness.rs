//! Property test of the ingest pipeline (`ingest::accept`: verify, classify, route) over arbitrary headers, bodies and
//! queries: nothing panics; no request is accepted without the credential (only the Basic
//! seed carries a real one); the check made before the body never refuses what the whole
//! check accepts. Runs a bounded number of cases; HOOKRELAY_FUZZ_SECONDS runs it longer.

use std::time::{Duration, Instant};

use hookrelay::domain::{Name, Secret};
use hookrelay::ingest::generic::{Encoding, GenericAuth, HmacScheme};
use hookrelay::ingest::{Credentials, Fields, Inbound, ProviderKind, Routes, accept, provider_for};
use hookrelay::routing::{Condition, Route, glob_set};
use hookrelay::signing::{Algorithm, standard_secret};

const HEADER_NAMES: &[&str] = &[
    "x-gitlab-token",
    "x-gitlab-event",
    "idempotency-key",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-hub-signature-256",
    "x-hub-signature",
    "x-github-event",
    "x-github-delivery",
    "x-gitea-signature",
    "x-forgejo-signature",
    "x-gogs-signature",
    "x-gitea-event",
    "x-event-key",
    "x-request-uuid",
    "authorization",
    "content-type",
    "x-signature",
    "x-timestamp",
    "x-token",
    "x-event-type",
];

const SEEDS: &[&str] = &[
    include_str!("../../samples/gitlab/push.json"),
    include_str!("../../samples/gitlab/merge_request.json"),
    include_str!("../../samples/github/pull_request.json"),
    include_str!("../../samples/bitbucket/repo_push.json"),
    "payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D",
    "v1,AAAA v1a,BBBB",
    "sha256=00ff",
    "Basic cmVsYXk6azE=",
    "application/x-www-form-urlencoded",
];

fn random_text(rng: &mut fastrand::Rng) -> String {
    let seed = SEEDS[rng.usize(..SEEDS.len())];
    let mut bytes: Vec<u8> = match rng.u8(..4) {
        0 => (0..rng.usize(..64)).map(|_| rng.u8(..)).collect(),
        1 => seed.as_bytes()[..rng.usize(..=seed.len())].to_vec(),
        _ => seed.as_bytes().to_vec(),
    };
    for _ in 0..rng.usize(..4) {
        if !bytes.is_empty() {
            let at = rng.usize(..bytes.len());
            bytes[at] = rng.u8(..);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A provider with its credentials.
type Source = (ProviderKind, Credentials);

fn sources() -> Vec<Source> {
    let base = |provider, auth| {
        let credentials = Credentials {
            secrets: vec![Secret::from_bytes("k1"), Secret::from_bytes("k2")],
            signing_secrets: vec![
                standard_secret(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            ],
            public_keys: vec![ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key()],
            require_signature: false,
            require_token: false,
            timestamp_tolerance: Duration::from_secs(300),
            generic_auth: auth,
        };
        (provider, credentials)
    };
    let mut all: Vec<Source> = [
        ProviderKind::Gitlab,
        ProviderKind::Github,
        ProviderKind::Gitea,
        ProviderKind::Bitbucket,
        ProviderKind::Standard,
    ]
    .into_iter()
    .map(|p| base(p, GenericAuth::Bearer))
    .collect();
    for auth in [
        GenericAuth::Bearer,
        GenericAuth::Token {
            header: "x-token".into(),
        },
        GenericAuth::Basic {
            username: "relay".into(),
        },
        GenericAuth::Query {
            param: "token".into(),
        },
        GenericAuth::Hmac(HmacScheme {
            header: "x-signature".into(),
            algorithm: Algorithm::Sha512,
            encoding: Encoding::Base64,
            prefix: "sha512=".into(),
            timestamp_header: Some("x-timestamp".into()),
        }),
    ] {
        all.push(base(ProviderKind::Generic, auth));
    }
    let mut required = base(ProviderKind::Gitlab, GenericAuth::Bearer);
    required.1.require_signature = true;
    all.push(required);
    // Open sources accept anything, so classification and routing see every input.
    for provider in [
        ProviderKind::Gitlab,
        ProviderKind::Github,
        ProviderKind::Generic,
    ] {
        let mut open = base(provider, GenericAuth::Bearer);
        open.1.secrets.clear();
        open.1.signing_secrets.clear();
        open.1.public_keys.clear();
        all.push(open);
    }
    all
}

fn routes() -> Vec<Route> {
    let globs =
        |p: &[&str]| Some(glob_set(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap());
    vec![Route {
        source: Name::parse("fuzz").unwrap(),
        events: None,
        branches: globs(&["main", "release/**"]),
        tags: globs(&["v*"]),
        projects: globs(&["*/*"]),
        when: Some(Condition::Any(vec![
            Condition::Regex {
                pointer: "/ref".into(),
                regex: regex::Regex::new("^refs/").unwrap(),
            },
            Condition::Not(Box::new(Condition::Exists {
                pointer: "/a/0/b".into(),
                exists: true,
            })),
        ])),
        destinations: vec![Name::parse("d").unwrap()],
    }]
}

#[test]
fn arbitrary_requests_never_panic_the_verify_classify_route_path() {
    let budget = std::env::var("HOOKRELAY_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    let seed = std::env::var("HOOKRELAY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = fastrand::Rng::with_seed(seed);
    let sources = sources();
    let routes = routes();
    // The route's destination keeps only the latest per source and ref.
    let coalescing = std::collections::HashMap::from([(
        Name::parse("d").unwrap(),
        vec![
            hookrelay::domain::KeyPart::Source,
            hookrelay::domain::KeyPart::Ref,
        ],
    )]);
    let fields = Fields::with(hookrelay::routing::condition_pointers(&routes));
    let started = Instant::now();
    let mut cases = 0u64;
    let mut accepted_basic = 0u64;
    let mut accepted_open = 0u64;
    loop {
        match budget {
            Some(budget) if started.elapsed() >= budget => break,
            None if cases >= 100_000 => break,
            _ => {}
        }
        let mut headers = http::HeaderMap::new();
        for _ in 0..rng.usize(..8) {
            let name = HEADER_NAMES[rng.usize(..HEADER_NAMES.len())];
            if let Ok(value) = http::HeaderValue::from_bytes(random_text(&mut rng).as_bytes()) {
                headers.append(name, value);
            }
        }
        let body = random_text(&mut rng).into_bytes();
        let query = random_text(&mut rng);
        let inbound = Inbound {
            headers: &headers,
            body: &body,
            query: Some(&query),
            now_secs: rng.i64(..),
        };
        let (kind, credentials) = &sources[rng.usize(..sources.len())];
        let provider = provider_for(*kind);
        let name = Name::parse("fuzz").unwrap();
        // The same pipeline the HTTP handler runs once the body is in.
        let routes = Routes {
            routes: &routes,
            coalescing: &coalescing,
            fields: &fields,
        };
        let admitted = accept(provider, credentials, &name, &routes, &inbound);
        let head_only = Inbound {
            body: &[],
            ..inbound
        };
        if admitted.is_ok() {
            assert!(
                provider.verify_headers(&head_only, credentials).is_ok(),
                "the pre-body check refused what verify accepted ({kind:?}, {headers:?})"
            );
            if credentials.is_open() {
                accepted_open += 1;
            } else {
                // The only real credential among the seeds is `Basic relay:k1`.
                assert!(
                    matches!(credentials.generic_auth, GenericAuth::Basic { .. })
                        && *kind == ProviderKind::Generic,
                    "accepted without a credential: {kind:?} {headers:?}"
                );
                accepted_basic += 1;
            }
            if let Some(id) = provider.signed_id(&inbound, credentials) {
                assert_eq!(
                    Some(id.as_str()),
                    headers.get("webhook-id").and_then(|v| v.to_str().ok())
                );
            }
        }
        cases += 1;
    }
    println!(
        "robustness: {cases} cases in {:.1} s (seed {seed}), {accepted_basic} accepted with the Basic seed, {accepted_open} by open sources, no panic",
        started.elapsed().as_secs_f64()
    );
    // The acceptance checks above are live only if some request did carry the credential.
    assert!(accepted_basic > 0, "no case exercised an accepted request");
    assert!(
        accepted_open > 0,
        "classification and routing were never exercised"
    );
}
