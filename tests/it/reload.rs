//! Config reload while running: a new route takes effect, a broken config is refused and the
//! old one keeps serving, and nothing accepted is lost across reloads under load.

use std::collections::HashSet;

use serde_json::Value;

use crate::harness::*;

fn hangup(relay: &Relay) {
    let pid = relay.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// The config with a second destination, `other`, that every event also goes to.
fn with_other(text: &str, other: &str) -> String {
    text.replace(
        "[[routes]]",
        &format!(
            "[destinations.other]\nurl = \"{other}\"\nallow_private_network = true\n\n[[routes]]"
        ),
    )
    .replace(
        "destinations = [\"sink\"]",
        "destinations = [\"sink\", \"other\"]",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_route_applies_on_sighup_and_a_broken_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, other) = (Sink::start().await, Sink::start().await);
    let text = config(dir.path(), &sink.url, "");
    let relay = Relay::child(dir.path(), &text);
    let client = reqwest::Client::new();
    post_push(&client, &relay, push_body(1), None).await;
    sink.wait_for(1).await;

    std::fs::write(
        dir.path().join("hookrelay.toml"),
        with_other(&text, &other.url),
    )
    .unwrap();
    hangup(&relay);
    wait_for_cli(
        &relay,
        &["destinations", "list", "--json"],
        "the new destination",
        |out: &str| out.contains("\"other\""),
    )
    .await;
    post_push(&client, &relay, push_body(2), None).await;
    other.wait_for(1).await;
    sink.wait_for(2).await;

    let broken = text.replace("provider = \"gitlab\"", "provider = \"gitlob\"");
    std::fs::write(dir.path().join("hookrelay.toml"), broken).unwrap();
    let refused = relay.cli(&["reload"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("config refused") && stderr.contains("gitlob"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    hangup(&relay);
    // Still the old config: both destinations get the next event.
    assert_eq!(
        post_push(&client, &relay, push_body(3), None)
            .await
            .status(),
        202
    );
    other.wait_for(2).await;
    sink.wait_for(3).await;
    assert!(
        relay.log().contains("config reload refused"),
        "{}",
        relay.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_accepted_is_lost_across_twenty_reloads_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let text = config(dir.path(), &sink.url, "concurrency = 4");
    let relay = Relay::child(dir.path(), &text);
    let url = relay.hook_url("gitlab");
    let load = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut accepted = Vec::new();
        for n in 0..400 {
            if post_push_to(&client, &url, n).await == 202 {
                accepted.push(n);
            }
        }
        accepted
    });
    for round in 0..20 {
        // Each reload changes the destination, so its worker is replaced each time.
        let changed = text.replace(
            "concurrency = 4",
            &format!("concurrency = {}", 1 + round % 4),
        );
        std::fs::write(dir.path().join("hookrelay.toml"), changed).unwrap();
        let reloaded = relay.cli(&["reload"]);
        assert!(
            reloaded.status.success(),
            "{}",
            String::from_utf8_lossy(&reloaded.stderr)
        );
    }
    let accepted = load.await.unwrap();
    assert_eq!(accepted.len(), 400, "a reload made ingest refuse events");
    sink.wait_until("every accepted event", |received| {
        let seen: HashSet<u64> = received
            .iter()
            .map(|r| {
                serde_json::from_slice::<Value>(&r.body).unwrap()["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        accepted.iter().all(|n| seen.contains(&(*n as u64)))
    })
    .await;
    let reloads = relay.log().matches("config reloaded").count();
    assert_eq!(reloads, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_leaves_an_unchanged_destination_and_its_attempt_in_flight_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, other) = (Sink::start().await, Sink::start().await);
    // A short grace: a worker replaced by the reload would give its attempt up at once.
    let text = config(dir.path(), &sink.url, "")
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"100ms\"");
    let relay = Relay::child(dir.path(), &text);
    sink.delay(std::time::Duration::from_secs(2));
    let client = reqwest::Client::new();
    accept_pushes(&client, &relay, 0..1).await;
    sink.wait_for(1).await;
    // Another destination arrives; `sink`'s settings are the same.
    std::fs::write(
        dir.path().join("hookrelay.toml"),
        with_other(&text, &other.url),
    )
    .unwrap();
    let reloaded = relay.cli(&["reload"]);
    assert!(
        reloaded.status.success(),
        "{}",
        String::from_utf8_lossy(&reloaded.stderr)
    );
    let delivered = eventually("the attempt in flight to finish", || async {
        let listed = relay.cli(&["deliveries", "list", "--destination", "sink", "--json"]);
        let line = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .next()?
            .to_owned();
        let delivery: Value = serde_json::from_str(&line).ok()?;
        (delivery["state"] == "succeeded").then_some(delivery)
    })
    .await;
    assert_eq!(delivered["attempts"], 1, "{delivered}");
    assert_eq!(
        sink.count(),
        1,
        "the attempt in flight was cut off and made again"
    );
}
