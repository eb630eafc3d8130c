//! The CLI against a running server's API (its local socket): tables, JSON, confirmation
//! before a bulk change, and a bulk replay followed to its outcome.

use serde_json::Value;

use crate::harness::*;

/// Replay every dead delivery of the sink.
const REPLAY_DEAD: &[&str] = &["replay", "--state", "dead", "--destination", "sink"];

fn run_ok(relay: &Relay, args: &[&str]) -> String {
    let output = relay.cli(args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

// Multi-threaded: the CLI runs as a blocking child process while the sink must answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_and_replays_dead_deliveries_after_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.set_status(500);
    let extra = "retry = { max_attempts = 1 }\ncircuit_breaker = { failures = 1000000 }";
    let relay = Relay::start(dir.path(), &config(dir.path(), &sink.url, extra));
    let client = reqwest::Client::new();
    for n in 0..5 {
        post_push(&client, &relay, push_body(n), None).await;
    }
    sink.wait_for(5).await;
    wait_for_cli(
        &relay,
        &["deliveries", "list", "--state", "dead", "--json"],
        "five dead deliveries",
        |out: &str| out.lines().count() == 5,
    )
    .await;

    let table = run_ok(
        &relay,
        &["deliveries", "list", "--state", "dead", "--since", "1h"],
    );
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("DELIVERY") && header.contains("STATE"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 6, "{table}");
    // Columns are aligned: every row puts its state where the header says STATE.
    let column = header.find("STATE").unwrap();
    for row in table.lines().skip(1) {
        assert_eq!(&row[column..column + 4], "dead", "{table}");
    }
    let id = table
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let shown = run_ok(&relay, &["deliveries", "show", &id]);
    assert!(
        shown.contains("retry limit reached") && shown.contains("500"),
        "{shown}"
    );
    let events = run_ok(&relay, &["events", "list", "--ref", "main"]);
    assert!(
        events.contains("sink:dead") && events.contains("group/app"),
        "{events}"
    );

    sink.set_status(200);
    // Not a terminal, no --yes: nothing is changed.
    let refused = relay.cli(REPLAY_DEAD);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("5 deliveries to replay") && stderr.contains("--yes"),
        "{stderr}"
    );
    assert_eq!(sink.count(), 5);

    let done = run_ok(&relay, &[REPLAY_DEAD, &["--yes", "--json"]].concat());
    let job: Value = serde_json::from_str(done.trim()).unwrap();
    assert_eq!(
        (job["changed"].as_u64(), job["succeeded"].as_u64()),
        (Some(5), Some(5)),
        "{job}"
    );
    assert_eq!(sink.count(), 10);
    let summary = run_ok(&relay, &[REPLAY_DEAD, &["--yes"]].concat());
    assert!(summary.is_empty(), "nothing left to replay: {summary}");

    let destinations = run_ok(&relay, &["destinations", "list", "--json"]);
    let sink_row: Value = serde_json::from_str(destinations.lines().next().unwrap()).unwrap();
    assert_eq!(
        (sink_row["state"].as_str(), sink_row["succeeded"].as_u64()),
        (Some("healthy"), Some(5))
    );
    let one = relay.cli(&["replay", "not-an-id"]);
    assert!(String::from_utf8_lossy(&one.stderr).contains("not a valid"));
}
