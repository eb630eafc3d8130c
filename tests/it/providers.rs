//! Every provider through the real server: `hookrelay send` signs as the sender does, wrong
//! secrets are refused, IP allow-lists and route filters apply, and independent reference
//! implementations (GitHub's octokit, the Standard Webhooks library) agree with us.

use std::path::Path;
use std::process::Command;

use crate::harness::*;

const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn providers_config(dir: &Path, sink_url: &str) -> String {
    format!(
        r#"
[server]
store = "sqlite://{db}"

[sources.gitlab]
provider = "gitlab"
secret = "gl-token"

[sources.gitlab-signed]
provider = "gitlab"
signing_secrets = ["{STANDARD_SECRET}"]
require_signature = true

[sources.github]
provider = "github"
secret = "gh-secret"

[sources.gitea]
provider = "gitea"
secret = "gt-secret"

[sources.bitbucket]
provider = "bitbucket"
secret = "bb-secret"

[sources.standard]
provider = "standard"
secrets = ["{STANDARD_SECRET}"]

[sources.generic]
provider = "generic"
secret = "gen-secret"

[sources.office]
provider = "generic"
allow_ips = ["192.0.2.0/24", "2001:db8::/32"]

[sources.proxied]
provider = "generic"
allow_ips = ["192.0.2.0/24"]
trusted_proxies = ["127.0.0.1"]

[destinations.sink]
url = "{sink_url}"
allow_private_network = true

[destinations.deploy]
url = "{sink_url}"
allow_private_network = true

[[routes]]
source = "gitlab"
branches = ["main", "release/*"]
tags = ["v*"]
destinations = ["deploy"]

[[routes]]
source = "github"
events = ["push"]
when = {{ any = [ {{ pointer = "/ref", equals = "refs/heads/main" }}, {{ pointer = "/forced", equals = true }} ] }}
destinations = ["sink"]
"#,
        db = dir.join("hookrelay.db").display()
    )
}

fn send(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .arg("send")
        .args(args)
        .arg(url)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_signs_every_provider_as_the_sender_does_and_wrong_secrets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = Relay::start(dir.path(), &providers_config(dir.path(), &sink.url));
    let cases: &[(&str, &str, &str, &str)] = &[
        ("gitlab", "gitlab", "push", "gl-token"),
        ("gitlab-signed", "gitlab", "merge_request", STANDARD_SECRET),
        ("github", "github", "ping", "gh-secret"),
        ("github", "github", "pull_request", "gh-secret"),
        ("gitea", "gitea", "push", "gt-secret"),
        ("bitbucket", "bitbucket", "repo:push", "bb-secret"),
        ("standard", "standard", "invoice.paid", STANDARD_SECRET),
        ("generic", "generic", "thing.happened", "gen-secret"),
    ];
    for (source, provider, event, secret) in cases {
        let url = relay.hook_url(source);
        let ok = send(
            &url,
            &["--provider", provider, "--event", event, "--secret", secret],
        );
        assert!(
            ok.status.success(),
            "{source}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert!(
            String::from_utf8_lossy(&ok.stdout).starts_with("202"),
            "{source}"
        );
        let wrong_secret = if secret.starts_with("whsec_") {
            "whsec_d3Jvbmcgc2VjcmV0"
        } else {
            "wrong"
        };
        let refused = send(
            &url,
            &[
                "--provider",
                provider,
                "--event",
                event,
                "--secret",
                wrong_secret,
            ],
        );
        assert!(
            !refused.status.success(),
            "{source} accepted a wrong secret"
        );
        assert!(
            String::from_utf8_lossy(&refused.stdout).starts_with("401"),
            "{source}"
        );
    }
    // Unsigned requests to signed sources: refused.
    for (source, provider) in [
        ("gitlab-signed", "gitlab"),
        ("github", "github"),
        ("gitea", "gitea"),
        ("standard", "generic"),
    ] {
        let unsigned = send(
            &relay.hook_url(source),
            &["--provider", provider, "--event", "push"],
        );
        assert!(
            String::from_utf8_lossy(&unsigned.stdout).starts_with("401"),
            "{source} accepted an unsigned request"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_refuse_other_addresses_and_believe_only_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = Relay::start(dir.path(), &providers_config(dir.path(), &sink.url));
    let client = reqwest::Client::new();
    let post = |source: &str, forwarded: Option<&str>| {
        let mut request = client.post(relay.hook_url(source)).body("{}");
        if let Some(forwarded) = forwarded {
            request = request.header("x-forwarded-for", forwarded);
        }
        request.send()
    };
    let table = [
        // 127.0.0.1 is not on the office list, and its own X-Forwarded-For is not believed.
        ("office", None, 403),
        ("office", Some("192.0.2.7"), 403),
        // Through a trusted proxy (127.0.0.1 here) the forwarded address counts.
        ("proxied", Some("192.0.2.7"), 202),
        ("proxied", Some("198.51.100.1"), 403),
        ("proxied", Some("198.51.100.1, 192.0.2.7"), 202),
        ("proxied", Some("192.0.2.7, 198.51.100.1"), 403),
    ];
    for (source, forwarded, expected) in table {
        let status = post(source, forwarded).await.unwrap().status();
        assert_eq!(status, expected, "{source} {forwarded:?}");
    }
    for source in ["office", "proxied"] {
        let requests = source_requests(&relay, source);
        assert_eq!(requests["address_not_allowed"], 2, "{source}: {requests}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_filters_pick_events_by_branch_tag_and_payload() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = Relay::start(dir.path(), &providers_config(dir.path(), &sink.url));
    let sample = |path: &str| {
        std::fs::read_to_string(format!("{}/samples/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    // Sends `body` signed as `provider` would and checks whether a route took it.
    let check =
        |case: &str, source: &str, provider: &str, secret: &str, body: String, routed: bool| {
            let file = dir
                .path()
                .join(format!("{}.json", case.replace(['/', ' '], "_")));
            std::fs::write(&file, body).unwrap();
            let file = file.display().to_string();
            let args = [
                "--provider",
                provider,
                "--event",
                "push",
                "--secret",
                secret,
                "--body",
                &file,
            ];
            let output = send(&relay.hook_url(source), &args);
            let stdout = String::from_utf8_lossy(&output.stdout);
            let expected = if routed {
                "\"deliveries\":1"
            } else {
                "\"deliveries\":0"
            };
            assert!(stdout.contains(expected), "{case}: {stdout}");
        };
    // GitLab route: branches main and release/*, tags v*.
    let gitlab_push = sample("gitlab/push.json");
    for (git_ref, routed) in [
        ("refs/heads/main", true),
        ("refs/heads/release/2.0", true),
        ("refs/tags/v2.0.0", true),
        ("refs/heads/feature/x", false),
        ("refs/tags/nightly", false),
    ] {
        let body = gitlab_push.replace("refs/heads/master", git_ref);
        check(git_ref, "gitlab", "gitlab", "gl-token", body, routed);
    }
    // GitHub route: push on main, or any forced push.
    let github_push = sample("github/push.json");
    for (git_ref, forced, routed) in [
        ("refs/heads/main", false, true),
        ("refs/heads/dev", true, true),
        ("refs/heads/dev", false, false),
    ] {
        let body = github_push
            .replace("refs/heads/main", git_ref)
            .replace("\"forced\": false", &format!("\"forced\": {forced}"));
        let case = format!("github {git_ref} forced={forced}");
        check(
            &case.replace('/', "_"),
            "github",
            "github",
            "gh-secret",
            body,
            routed,
        );
    }
    sink.wait_for(5).await;
}

/// The reference implementations live in tests/crosscheck (npm packages installed by .ci/run).
fn reference_tools() -> Option<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crosscheck");
    let installed = dir.join("node_modules/@octokit/webhooks-methods").exists()
        && dir.join("node_modules/standardwebhooks").exists();
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed && node {
        return Some(dir);
    }
    let why = "node or the npm packages in tests/crosscheck are missing (run: npm ci --prefix tests/crosscheck)";
    if std::env::var_os("CI").is_some() {
        panic!("cross-check cannot run in CI: {why}");
    }
    println!("skipping the cross-check: {why}");
    None
}

fn node(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("node")
        .arg(dir.join("check.mjs"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "node {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_reference_implementations_agree_with_us_both_ways() {
    let Some(tools) = reference_tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = Relay::start(dir.path(), &providers_config(dir.path(), &sink.url));
    let client = reqwest::Client::new();
    let payload = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/samples/github/push.json"
    ))
    .unwrap();
    let payload_file = dir.path().join("payload.json");
    std::fs::write(&payload_file, &payload).unwrap();
    let payload_path = payload_file.display().to_string();

    // Their signatures, our verification.
    let signature = node(&tools, &["github-sign", "gh-secret", &payload_path]);
    let response = client
        .post(relay.hook_url("github"))
        .header("x-github-event", "push")
        .header("x-hub-signature-256", &signature)
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "octokit's signature was refused");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let signature = node(
        &tools,
        &[
            "standard-sign",
            STANDARD_SECRET,
            "msg_crosscheck",
            &now,
            &payload_path,
        ],
    );
    let response = client
        .post(relay.hook_url("standard"))
        .header("webhook-id", "msg_crosscheck")
        .header("webhook-timestamp", &now)
        .header("webhook-signature", &signature)
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        202,
        "the standardwebhooks library's signature was refused"
    );

    // Our `send` signatures, their verification: capture what `send` posts at the sink.
    let capture = Sink::start().await;
    for (provider, secret) in [("github", "gh-secret"), ("standard", STANDARD_SECRET)] {
        let output = send(
            &capture.url,
            &[
                "--provider",
                provider,
                "--event",
                "push",
                "--secret",
                secret,
                "--body",
                &payload_path,
            ],
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    capture.wait_for(2).await;
    let (github, standard) = capture.with_received(|r| {
        let header = |i: usize, name: &str| r[i].headers[name].to_str().unwrap().to_owned();
        assert_eq!(r[0].body.as_ref(), payload.as_bytes());
        (
            header(0, "x-hub-signature-256"),
            (
                header(1, "webhook-id"),
                header(1, "webhook-timestamp"),
                header(1, "webhook-signature"),
            ),
        )
    });
    assert_eq!(
        node(
            &tools,
            &["github-verify", "gh-secret", &payload_path, &github]
        ),
        "true"
    );
    let (id, ts, sig) = standard;
    assert_eq!(
        node(
            &tools,
            &[
                "standard-verify",
                STANDARD_SECRET,
                &payload_path,
                &id,
                &ts,
                &sig
            ]
        ),
        "true"
    );
    // And they must say no to a wrong secret, or this test proves nothing.
    assert_eq!(
        node(&tools, &["github-verify", "other", &payload_path, &github]),
        "false"
    );
}
