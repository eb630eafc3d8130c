//! Delivery seen from outside: retries through outages, dead letters, replay, FIFO, shutdown.

use serde_json::Value;

use crate::harness::*;

const FAST_RETRIES: &str = r#"retry = { initial_delay = "100ms", max_delay = "400ms" }
circuit_breaker = { probe_interval = "200ms" }"#;

fn attempts_of(relay: &Relay, delivery_id: &str) -> Value {
    let output = relay.cli(&["deliveries", "show", delivery_id, "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn only_delivery_id(relay: &Relay) -> String {
    let output = relay.cli(&["deliveries", "list", "--json"]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let first: Value = serde_json::from_str(stdout.lines().next().expect("one delivery")).unwrap();
    first["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_event_survives_a_down_then_failing_sink_and_every_attempt_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let address = free_port();
    let sink_url = format!("http://{address}/deliver");
    let relay = Relay::start(dir.path(), &config(dir.path(), &sink_url, FAST_RETRIES));
    let client = reqwest::Client::new();
    assert_eq!(
        post_push(&client, &relay, push_body(7), None)
            .await
            .status(),
        202
    );
    let id = only_delivery_id(&relay);

    // Nobody listens yet: wait until two connection failures are on record.
    wait_for_cli(
        &relay,
        &["deliveries", "show", &id, "--json"],
        "two failed attempts",
        |out| {
            serde_json::from_str::<Value>(out)
                .map(|v| v["attempts"].as_array().map_or(0, Vec::len) >= 2)
                .unwrap_or(false)
        },
    )
    .await;

    // Then the sink comes up but answers 500 twice before it recovers.
    let sink = Sink::start_on(address).await;
    sink.fail_next(2);
    sink.wait_until("a 200 after two 500s", |r| r.len() >= 3)
        .await;
    let done = wait_for_cli(
        &relay,
        &["deliveries", "show", &id, "--json"],
        "success",
        |out| out.contains("\"succeeded\""),
    )
    .await;
    let shown: Value = serde_json::from_str(&done).unwrap();
    let attempts = shown["attempts"].as_array().unwrap();
    let errors: Vec<&str> = attempts
        .iter()
        .filter_map(|a| a["error"].as_str())
        .collect();
    assert!(errors.iter().any(|e| e.contains("connect")), "{errors:?}");
    assert_eq!(
        errors.iter().filter(|e| e.contains("500")).count(),
        2,
        "{errors:?}"
    );
    assert_eq!(attempts.last().unwrap()["status"], 200);
    sink.with_received(|received| {
        assert!(
            received
                .iter()
                .all(|r| r.body.as_ref() == push_body(7).as_bytes())
        );
        let ids: Vec<_> = received
            .iter()
            .map(|r| r.headers["webhook-id"].clone())
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] == w[1]),
            "webhook-id must be stable across retries"
        );
    });
}

#[tokio::test]
async fn a_dead_delivery_is_listed_and_replayed_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.set_status(500);
    let extra = r#"retry = { initial_delay = "50ms", max_attempts = 2 }"#;
    let relay = Relay::start(dir.path(), &config(dir.path(), &sink.url, extra));
    let client = reqwest::Client::new();
    post_push(&client, &relay, push_body(1), None).await;
    let dead = wait_for_cli(
        &relay,
        &["deliveries", "list", "--state", "dead"],
        "a dead delivery",
        |out| out.contains("dlv_"),
    )
    .await;
    assert_eq!(sink.count(), 2, "max_attempts = 2");
    let id = only_delivery_id(&relay);
    assert!(dead.contains(&id), "{dead}");
    assert_eq!(attempts_of(&relay, &id)["delivery"]["state"], "dead");

    sink.set_status(200);
    let output = relay.cli(&["replay", &id]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    sink.wait_for(3).await;
    wait_for_cli(
        &relay,
        &["deliveries", "list", "--state", "succeeded"],
        "success",
        |out| out.contains(&id),
    )
    .await;

    let missing = relay.cli(&["replay", "dlv_0000000000000000000000000000000f"]);
    assert!(!missing.status.success());
    let garbage = relay.cli(&["replay", "not-an-id"]);
    assert!(String::from_utf8_lossy(&garbage.stderr).contains("not a valid"));
}

#[tokio::test]
async fn fifo_destinations_deliver_in_arrival_order_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.fail_next(1);
    let extra = format!("ordering = \"fifo\"\n{FAST_RETRIES}");
    let relay = Relay::start(dir.path(), &config(dir.path(), &sink.url, &extra));
    let client = reqwest::Client::new();
    for n in 0..5 {
        post_push(&client, &relay, push_body(n), None).await;
    }
    sink.wait_for(6).await;
    sink.with_received(|received| {
        let order: Vec<String> = received
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["n"].to_string())
            .collect();
        // The failed head is retried before anything behind it goes.
        assert_eq!(order, ["0", "0", "1", "2", "3", "4"]);
    });
}

#[tokio::test]
async fn sigterm_gives_back_an_attempt_in_flight_and_a_restart_delivers_it() {
    let dir = tempfile::tempdir().unwrap();
    let hanging = Hanging::start().await;
    let text = config(dir.path(), &hanging.url, FAST_RETRIES)
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"500ms\"");
    let mut relay = Relay::child(dir.path(), &text);
    let client = reqwest::Client::new();
    assert_eq!(
        post_push(&client, &relay, push_body(1), None)
            .await
            .status(),
        202
    );
    // The attempt is in flight (the destination has the request and never answers)...
    hanging.wait_for(1).await;
    // ...when SIGTERM comes: past the grace the attempt is abandoned and its lease given
    // back by the drain itself (checked before any restart could release it).
    let status = relay.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", relay.log());
    assert_eq!(
        stored_deliveries(dir.path()),
        [("pending".to_owned(), 0)],
        "not given back, or the abandoned attempt counted"
    );

    let sink = Sink::start().await;
    let _relay = Relay::child(dir.path(), &config(dir.path(), &sink.url, FAST_RETRIES));
    sink.wait_for(1).await;
}

// Multi-threaded: `terminate` blocks this thread while the sink must still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_attempt_finish_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.delay(std::time::Duration::from_millis(300));
    let mut relay = Relay::child(dir.path(), &config(dir.path(), &sink.url, ""));
    let client = reqwest::Client::new();
    assert_eq!(
        post_push(&client, &relay, push_body(1), None)
            .await
            .status(),
        202
    );
    sink.wait_for(1).await;
    // The sink holds its answer 300 ms; SIGTERM arrives meanwhile, the grace is 5 s.
    assert!(relay.terminate().success());
    assert_eq!(stored_deliveries(dir.path()), [("succeeded".to_owned(), 1)]);
}

// Multi-threaded: the sink holds its answers while the test keeps posting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_runs_the_first_and_the_newest_of_a_burst_and_supersedes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.delay(std::time::Duration::from_millis(500));
    let relay = Relay::start(
        dir.path(),
        &config(dir.path(), &sink.url, "ordering = \"latest\""),
    );
    let client = reqwest::Client::new();
    post_push(&client, &relay, push_body(0), None).await;
    sink.wait_for(1).await;
    // Nine more pushes to main while the first delivery is still being answered.
    for n in 1..10 {
        post_push(&client, &relay, push_body(n), None).await;
    }
    sink.wait_for(2).await;
    wait_for_cli(
        &relay,
        &["deliveries", "list", "--state", "superseded", "--json"],
        "eight superseded deliveries",
        |out: &str| out.lines().count() == 8,
    )
    .await;
    let delivered = wait_for_cli(
        &relay,
        &["deliveries", "list", "--state", "succeeded", "--json"],
        "two deliveries",
        |out: &str| out.lines().count() == 2,
    )
    .await;
    assert_eq!(delivered.lines().count(), 2);
    sink.with_received(|received| {
        let order: Vec<String> = received
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["n"].to_string())
            .collect();
        assert_eq!(order, ["0", "9"], "not the first and the newest");
    });
    wait_for_state(&relay, "superseded", 8).await;
}
