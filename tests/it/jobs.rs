//! Background work owned by the store: a bulk replay cut off by `kill -9` finishes by itself
//! after the restart, each matching delivery replayed exactly once, and the CLI that was
//! following it returns with the summary.

use std::collections::HashMap;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::harness::*;

const EVENTS: usize = 3000;

fn jobs(relay: &Relay) -> Vec<Value> {
    let output = relay.cli(&["jobs", "list", "--json"]);
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_replay_cut_off_by_kill_9_finishes_after_the_restart_replaying_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    // Slow steps (200 deliveries each), so the kill lands in the middle of the job.
    let text = config(
        dir.path(),
        &sink.url,
        "concurrency = 32\nretry = { initial_delay = \"100ms\" }",
    )
    .replace(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nbulk_step_pause = \"100ms\"",
    );
    let mut relay = Relay::child(dir.path(), &text);
    let client = reqwest::Client::new();
    let mut posts = tokio::task::JoinSet::new();
    for lane in 0..16 {
        let (client, url) = (client.clone(), relay.hook_url("gitlab"));
        posts.spawn(async move {
            for n in (lane..EVENTS).step_by(16) {
                assert_eq!(post_push_to(&client, &url, n).await, 202, "push {n}");
            }
        });
    }
    while let Some(done) = posts.join_next().await {
        done.unwrap();
    }
    sink.wait_for(EVENTS).await;
    eventually("every delivery to be recorded as succeeded", || async {
        let output = relay.cli(&["destinations", "list", "--json"]);
        let sink: Value = serde_json::from_slice(&output.stdout).ok()?;
        (sink["succeeded"].as_u64() == Some(EVENTS as u64)).then_some(())
    })
    .await;

    // The CLI follows the job from its own process, through the server's socket.
    let follower = Command::new(binary())
        .args([
            "replay",
            "--state",
            "succeeded",
            "--destination",
            "sink",
            "--yes",
            "--json",
        ])
        .env("HOOKRELAY_CONFIG", dir.path().join("hookrelay.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let job = eventually("the job to be under way", || async {
        let job = jobs(&relay).into_iter().next()?;
        (job["changed"].as_u64()? > 0).then_some(job)
    })
    .await;
    relay.kill();
    let cut_at = job["changed"].as_u64().unwrap();
    assert!(
        (cut_at as usize) < EVENTS,
        "the job ended before the kill; it should take about 1.5 s: {job}"
    );

    let relay = Relay::child(dir.path(), &text);
    let output = tokio::task::spawn_blocking(move || follower.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the follower failed: {stderr}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["id"], job["id"]);
    assert_eq!(summary["state"], "finished", "{summary}");
    assert_eq!(
        (summary["matched"].as_u64(), summary["changed"].as_u64()),
        (Some(EVENTS as u64), Some(EVENTS as u64)),
        "each matching delivery changed exactly once, across the restart: {summary}"
    );
    let outcomes = summary["succeeded"].as_u64().unwrap() + summary["failed"].as_u64().unwrap();
    assert_eq!(
        outcomes, EVENTS as u64,
        "every replayed delivery has an outcome: {summary}"
    );

    // Attempts the kill cut off are retried (at least once: they may have arrived already).
    eventually("every delivery to succeed again", || async {
        let output = relay.cli(&["destinations", "list", "--json"]);
        let sink: Value = serde_json::from_slice(&output.stdout).ok()?;
        (sink["succeeded"].as_u64() == Some(EVENTS as u64)).then_some(())
    })
    .await;
    let by_delivery = sink.with_received(|received| {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for request in received {
            let id = request.headers["webhook-id"].to_str().unwrap().to_owned();
            *counts.entry(id).or_default() += 1;
        }
        counts
    });
    assert_eq!(by_delivery.len(), EVENTS);
    assert!(
        by_delivery.values().all(|&n| n >= 2),
        "every delivery arrived first and again by the replay"
    );
    let repeated = by_delivery.values().filter(|&&n| n > 2).count();
    // What a kill can repeat: attempts in flight (up to `concurrency`) and attempts answered
    // whose record had not committed yet (up to `concurrency` more).
    assert!(
        repeated <= 2 * 32,
        "{repeated} deliveries arrived more than twice: more than the attempts in flight or awaiting their record at the kill"
    );
    drop(relay);
}
