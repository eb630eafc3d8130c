//! Recovery as fast as the retry policy allows: after a short outage the waiting deliveries
//! arrive within seconds of the destination coming back, while a long outage is probed no
//! more often than the breaker's rule says.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::harness::*;

const EVENTS: usize = 20;

fn webhook_ids(received: &[Received]) -> HashSet<String> {
    received
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_2_second_outage_waiting_deliveries_arrive_within_5_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.set_status(503);
    let retry = "retry = { initial_delay = \"100ms\", max_delay = \"1s\" }";
    let relay = Relay::start(dir.path(), &config(dir.path(), &sink.url, retry));
    let client = reqwest::Client::new();
    let outage = Instant::now();
    accept_pushes(&client, &relay, 0..EVENTS).await;
    // Enough failures in a row to open the breaker (5 by default).
    sink.wait_for(5).await;
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(outage.elapsed())).await;
    let healed_at = sink.count();
    sink.set_status(200);
    let healed = Instant::now();
    sink.wait_until(&format!("{EVENTS} deliveries after the outage"), |r| {
        webhook_ids(&r[healed_at..]).len() == EVENTS
    })
    .await;
    let took = healed.elapsed();
    eprintln!("delivered {EVENTS} deliveries {took:?} after the destination came back");
    assert!(
        took < Duration::from_secs(5),
        "delivered {took:?} after the destination came back (rule: within 5 s)"
    );
}

/// When the probes of a breaker opened at 0 go, by the rule: the first after `min`, each
/// failed one doubling the wait up to `max`.
fn probe_times(min: Duration, max: Duration, until: Duration) -> usize {
    let (mut at, mut wait, mut probes) = (Duration::ZERO, min, 0);
    loop {
        at += wait;
        if at > until {
            return probes;
        }
        probes += 1;
        wait = (wait * 2).min(max);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_for_60_seconds_is_probed_no_more_than_the_rule_allows() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.set_status(503);
    let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
    let settings = "concurrency = 1\nretry = { initial_delay = \"100ms\", max_delay = \"1s\" }\n\
                    circuit_breaker = { failures = 3, probe_interval = \"5s\" }";
    let relay = Relay::start(dir.path(), &config(dir.path(), &sink.url, settings));
    let client = reqwest::Client::new();
    accept_pushes(&client, &relay, 0..EVENTS).await;
    sink.wait_for(3).await;
    let opened = Instant::now();
    // The outage is the point: what happens during it is counted at the end.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let attempts = sink.count();
    let elapsed = opened.elapsed();
    // 3 failures opened it; then one probe at each time the rule gives, plus one for the
    // moment it opened being slightly before `opened`.
    let allowed = 3 + probe_times(min, max, elapsed) + 1;
    eprintln!("down for {elapsed:?}: {attempts} attempts at the sink, the rule allows {allowed}");
    assert!(
        attempts <= allowed,
        "{attempts} attempts in {elapsed:?}: the rule allows {allowed}"
    );
    // And it kept probing: without probes a recovery would never be noticed.
    assert!(
        attempts >= 3 + probe_times(min, max, elapsed) - 2,
        "only {attempts} attempts in {elapsed:?}"
    );
    let waiting = relay.cli(&["deliveries", "list", "--state", "pending", "--json"]);
    assert_eq!(
        String::from_utf8_lossy(&waiting.stdout).lines().count(),
        EVENTS,
        "nothing gave up meanwhile"
    );
}
