//! `/metrics` after known traffic: every figure equals what was sent.

use crate::harness::*;

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    })
}

#[tokio::test]
async fn scraped_figures_equal_the_traffic_sent() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.fail_next(1);
    let extra = r#"retry = { initial_delay = "50ms", max_delay = "100ms" }"#;
    let relay = Relay::child(dir.path(), &config(dir.path(), &sink.url, extra));
    let client = reqwest::Client::new();
    for key in ["a", "b", "c", "a"] {
        post_push(&client, &relay, push_body(1), Some(key)).await;
    }
    let hook = relay.hook_url("gitlab");
    let wrong = client
        .post(&hook)
        .header("x-gitlab-token", "wrong")
        .body("{}");
    assert_eq!(wrong.send().await.unwrap().status(), 401);
    assert_eq!(
        client.post(&hook).body("{}").send().await.unwrap().status(),
        401
    );
    let huge = client
        .post(&hook)
        .header("x-gitlab-token", TOKEN)
        .body(vec![b' '; 2 * 1024 * 1024]);
    // Refused from its declared length; the connection may close before the body is sent.
    if let Ok(response) = huge.send().await {
        assert_eq!(response.status(), 413);
    }
    let nowhere = client.post(relay.hook_url("nowhere")).body("{}");
    assert_eq!(nowhere.send().await.unwrap().status(), 404);
    // Three events, the first attempt of one fails (500) and is retried.
    sink.wait_for(4).await;
    relay
        .wait_for_metric(
            "hookrelay_delivery_attempts_total{destination=\"sink\",verdict=\"delivered\",outcome=\"2xx\"} 3",
        )
        .await;

    let metrics = relay.metrics().await;
    let requests = |outcome: &str| {
        value(
            &metrics,
            &format!("hookrelay_requests_total{{source=\"gitlab\",outcome=\"{outcome}\"}}"),
        )
    };
    for (outcome, expected) in [
        ("accepted", 3.0),
        ("duplicate", 1.0),
        ("invalid_credentials", 1.0),
        ("missing_credentials", 1.0),
        ("too_large", 1.0),
    ] {
        assert_eq!(requests(outcome), Some(expected), "{outcome}\n{metrics}");
    }
    let unknown = "hookrelay_requests_total{source=\"(unknown)\",outcome=\"unknown_source\"}";
    assert_eq!(value(&metrics, unknown), Some(1.0));
    let failed = "hookrelay_delivery_attempts_total{destination=\"sink\",verdict=\"retryable\",outcome=\"5xx\"}";
    assert_eq!(value(&metrics, failed), Some(1.0));
    let ingest = "hookrelay_ingest_duration_seconds_count{source=\"gitlab\"}";
    assert_eq!(value(&metrics, ingest), Some(4.0));
    let latency = "hookrelay_delivery_latency_seconds_count{destination=\"sink\"}";
    assert_eq!(value(&metrics, latency), Some(3.0));
    assert!(value(&metrics, "hookrelay_store_commit_batch_size_count").unwrap() >= 1.0);
    assert!(value(&metrics, "hookrelay_store_commit_duration_seconds_count").unwrap() >= 1.0);
    assert!(metrics.trim_end().ends_with("# EOF"), "not OpenMetrics");
}

#[tokio::test]
async fn backlog_gauges_show_what_waits_and_for_how_long() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = Relay::child(dir.path(), &config(dir.path(), &sink.url, "paused = true"));
    let client = reqwest::Client::new();
    for n in 0..3 {
        post_push(&client, &relay, push_body(n), None).await;
    }
    relay
        .wait_for_metric("hookrelay_deliveries{destination=\"sink\",state=\"pending\"} 3")
        .await;
    let metrics = relay.metrics().await;
    let age = "hookrelay_oldest_pending_age_seconds{destination=\"sink\"}";
    assert!(value(&metrics, age).is_some(), "{metrics}");
    // A state with nothing in it is 0, not absent (an alert on it must not go quiet).
    for state in ["in_flight", "dead"] {
        let empty = format!("hookrelay_deliveries{{destination=\"sink\",state=\"{state}\"}}");
        assert_eq!(value(&metrics, &empty), Some(0.0), "{empty}\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_successes_keeps_dead_ones_and_dedup_still_holds() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.set_status(500);
    let extra = "retry = { max_attempts = 1 }\ncircuit_breaker = { failures = 1000000 }";
    let text = config(dir.path(), &sink.url, extra)
        + "\n[retention]\nsucceeded = \"1s\"\ndead = \"1h\"\ninterval = \"200ms\"\n";
    let relay = Relay::child(dir.path(), &text);
    let client = reqwest::Client::new();
    post_push(&client, &relay, push_body(1), Some("dies")).await;
    // Dead for sure before the sink starts answering 200.
    wait_for_cli(
        &relay,
        &["deliveries", "list", "--state", "dead", "--json"],
        "the first delivery to die",
        |out: &str| out.lines().count() == 1,
    )
    .await;
    sink.set_status(200);
    post_push(&client, &relay, push_body(2), Some("delivered")).await;
    sink.wait_for(2).await;
    let events = wait_for_cli(
        &relay,
        &["events", "list", "--json"],
        "the delivered event to be pruned",
        |out: &str| out.lines().count() == 1,
    )
    .await;
    assert!(events.contains("\"dead\""), "the dead event went: {events}");
    relay
        .wait_for_metric("hookrelay_retention_pruned_events_total 1")
        .await;
    // Its sender id is still remembered: a late repeat is a duplicate, not a new event.
    let again = post_push(&client, &relay, push_body(2), Some("delivered")).await;
    assert_eq!(again.status(), 200);
    assert_eq!(sink.count(), 2);
}

#[tokio::test]
async fn json_logs_have_one_line_per_ingest_and_per_attempt_with_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let text = config(dir.path(), &sink.url, "");
    let env = [("HOOKRELAY_LOG_FORMAT", "json"), ("HOOKRELAY_LOG", "info")];
    let relay = Relay::child_with(dir.path(), &text, "127.0.0.1:0", &env);
    let client = reqwest::Client::new();
    let answer: serde_json::Value = post_push(&client, &relay, push_body(1), None)
        .await
        .json()
        .await
        .unwrap();
    sink.wait_for(1).await;
    let event = answer["event_id"].as_str().unwrap();
    let lines: Vec<serde_json::Value> = eventually("an attempt in the JSON log", || async {
        let lines: Vec<serde_json::Value> = relay
            .log()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
            .collect();
        lines
            .iter()
            .any(|l| l["message"] == "attempt")
            .then_some(lines)
    })
    .await;
    let ingest = lines
        .iter()
        .find(|l| l["message"] == "webhook accepted")
        .unwrap();
    assert_eq!(ingest["event"], event);
    let attempt = lines.iter().find(|l| l["message"] == "attempt").unwrap();
    assert_eq!(
        (attempt["event"].as_str(), attempt["outcome"].as_str()),
        (Some(event), Some("2xx"))
    );
    assert!(attempt["delivery"].as_str().unwrap().starts_with("dlv_"));
    assert!(!relay.log().contains(TOKEN));
}
