//! What the broker destination tests share: a config with one broker destination fed by a
//! GitLab source and an unauthenticated generic one, a burst of posts cut by kill -9, and
//! the rule for a broker that is not there (skip locally, fail in CI).

use std::collections::BTreeSet;

use crate::harness::*;

pub const BURST: usize = 2_000;
const KILL_AFTER: usize = 700;

/// `destination` is the body of `[destinations.broker]`; both sources route to it.
pub fn broker_config(dir: &std::path::Path, destination: &str) -> String {
    format!(
        r#"
[server]
store = "sqlite://{db}"
shutdown_grace = "5s"
max_connections = 4096
max_connections_per_client = 4096

[sources.gitlab]
provider = "gitlab"
secret = "{TOKEN}"

[sources.raw]
provider = "generic"

[destinations.broker]
timeout = "3s"
retry = {{ initial_delay = "100ms", max_delay = "500ms" }}
circuit_breaker = {{ probe_interval = "200ms" }}
{destination}

[[routes]]
source = "gitlab"
destinations = ["broker"]

[[routes]]
source = "raw"
destinations = ["broker"]
"#,
        db = dir.join("hookrelay.db").display()
    )
}

/// A broker that cannot be reached: the test fails in CI (it must run there) and is skipped
/// elsewhere. Returns `None` so a test can `let Some(..) = .. else { return };`.
pub fn unreachable<T>(broker: &str, why: impl std::fmt::Display) -> Option<T> {
    let message = format!("{broker} unreachable ({why}); start it (see .ci/run)");
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("skipped: {message}");
    None
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// Posts pushes 0..BURST at once to `relay` (GitLab, each with its own Idempotency-Key) and
/// kills it with SIGKILL once KILL_AFTER are acknowledged; the pushes answered 2xx.
pub async fn burst_cut_by_kill(relay: &mut Relay) -> BTreeSet<usize> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(BURST)
        .build()
        .unwrap();
    let acknowledged = posts_cut_by_kill(&client, relay, 0..BURST, "key", KILL_AFTER).await;
    assert!(acknowledged.len() >= KILL_AFTER);
    assert!(
        acknowledged.len() < BURST,
        "the kill came after every request was answered; the test proved nothing"
    );
    acknowledged
}

/// The `n` of a push body (`push_body(n)`).
pub fn n_of(body: &[u8]) -> usize {
    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
    body["n"].as_u64().unwrap() as usize
}

/// The one delivery's id (`deliveries list --json`, newest first) for `event_id`.
pub fn delivery_of(relay: &Relay, event_id: &str) -> String {
    let output = relay.cli(&["deliveries", "list", "--json"]);
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|d| d["event_id"] == event_id)
        .unwrap_or_else(|| panic!("no delivery of {event_id}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Posts `body` to the unauthenticated `raw` source with `headers`; the event id of the 202.
pub async fn post_raw(relay: &Relay, body: &[u8], headers: &[(&str, &str)]) -> String {
    let mut request = reqwest::Client::new()
        .post(relay.hook_url("raw"))
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 202);
    let answer: serde_json::Value = response.json().await.unwrap();
    answer["event_id"].as_str().unwrap().to_owned()
}

/// `deliveries show --json` once `done` holds for it.
pub async fn shown_when(
    relay: &Relay,
    id: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    wait_for_cli(relay, &["deliveries", "show", id, "--json"], what, done).await
}
