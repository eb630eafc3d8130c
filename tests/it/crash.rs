//! Crash safety: kill -9 under load; every request answered 2xx must still be delivered.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::harness::*;

const REQUESTS: usize = 2_000;
const KILL_AFTER: usize = 700;
const CONCURRENCY: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_webhook_is_delivered_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let extra = format!(
        "concurrency = {CONCURRENCY}\nretry = {{ initial_delay = \"100ms\", max_delay = \"500ms\" }}"
    );
    // Two thousand senders at once, all from 127.0.0.1: lift the per-client cap.
    let text = config(dir.path(), &sink.url, &extra).replace(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nmax_connections = 4096\nmax_connections_per_client = 4096",
    );
    let mut relay = Relay::child(dir.path(), &text);

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(REQUESTS)
        .build()
        .unwrap();
    let acknowledged = posts_cut_by_kill(&client, &mut relay, 0..REQUESTS, "key", KILL_AFTER).await;
    assert!(acknowledged.len() >= KILL_AFTER);
    assert!(
        acknowledged.len() < REQUESTS,
        "the kill came after every request was answered; the test proved nothing"
    );

    let _relay = Relay::child(dir.path(), &text);
    sink.wait_until("every acknowledged event", |received| {
        let seen: BTreeSet<usize> = received.iter().map(n_of).collect();
        acknowledged.is_subset(&seen)
    })
    .await;

    let (duplicates, unexpected) = sink.with_received(|received| {
        let mut per_event: HashMap<usize, usize> = HashMap::new();
        for r in received {
            *per_event.entry(n_of(r)).or_default() += 1;
        }
        let duplicates = per_event.values().filter(|&&c| c > 1).count();
        let unexpected = per_event
            .keys()
            .filter(|n| !acknowledged.contains(n))
            .count();
        (duplicates, unexpected)
    });
    println!(
        "crash test: {} acknowledged of {REQUESTS}, {} delivered, {duplicates} duplicated, \
         {unexpected} delivered though never acknowledged (committed, answer lost in the kill)",
        acknowledged.len(),
        sink.count()
    );
    // Only deliveries in flight at the kill (at most `concurrency` of them) or answered and
    // awaiting their record (at most `concurrency` more) may come twice.
    assert!(duplicates <= 2 * CONCURRENCY, "{duplicates} duplicates");
}

fn n_of(received: &Received) -> usize {
    let body: Value = serde_json::from_slice(&received.body).unwrap();
    body["n"].as_u64().unwrap() as usize
}

/// Kill -9 again and again under load for `HOOKRELAY_SOAK_SECONDS` (CI sets it; without it
/// this test runs two cycles). Every acknowledged event must be delivered in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_loop_loses_nothing_acknowledged() {
    let soak = std::env::var("HOOKRELAY_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(std::time::Duration::from_secs);
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let text = config(dir.path(), &sink.url, "concurrency = 8").replace(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nmax_connections_per_client = 1024",
    );
    // A request to a relay that is killed fails at once; the timeout is only a backstop.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let mut acknowledged = BTreeSet::new();
    let mut next = 0usize;
    let mut cycles = 0;
    loop {
        let done = match soak {
            Some(soak) => started.elapsed() >= soak,
            None => cycles >= 2,
        };
        if done {
            break;
        }
        let mut relay = Relay::child(dir.path(), &text);
        // Killed once a random number of the 300 requests has been acknowledged, so every
        // cycle kills with requests and deliveries in progress.
        let kill_after = fastrand::usize(1..250);
        let range = next..next + 300;
        acknowledged
            .extend(posts_cut_by_kill(&client, &mut relay, range, "soak", kill_after).await);
        next += 300;
        cycles += 1;
    }
    let relay = Relay::child(dir.path(), &text);
    let missing = || {
        sink.with_received(|received| {
            let seen: BTreeSet<usize> = received.iter().map(n_of).collect();
            acknowledged.difference(&seen).copied().collect::<Vec<_>>()
        })
    };
    // The backlog can be large after a long soak: give up only when delivery stalls.
    let mut progress = (sink.count(), tokio::time::Instant::now());
    while !missing().is_empty() && progress.1.elapsed() < PATIENCE {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if sink.count() != progress.0 {
            progress = (sink.count(), tokio::time::Instant::now());
        }
    }
    let missing = missing();
    if !missing.is_empty() {
        let conn = rusqlite::Connection::open(dir.path().join("hookrelay.db")).unwrap();
        let detail: Vec<String> = missing
            .iter()
            .take(5)
            .map(|n| {
                conn.query_row(
                    "SELECT e.id || ' ' || COALESCE(d.state, 'no delivery') || ' due ' || COALESCE(d.due_at, 0) || ' attempts ' || COALESCE(d.attempts, 0)
                     FROM events e LEFT JOIN deliveries d ON d.event_seq = e.seq WHERE e.dedup_key = ?1",
                    [format!("soak-{n}")],
                    |row| row.get::<_, String>(0),
                )
                .unwrap_or_else(|err| format!("soak-{n}: not stored ({err})"))
            })
            .collect();
        panic!(
            "{} acknowledged events were not delivered: {detail:#?}\n{}",
            missing.len(),
            relay
                .log()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        acknowledged.len() >= cycles,
        "cycles ended before acknowledging anything"
    );
    println!(
        "kill loop: {cycles} kill -9 cycles, {} acknowledged, all delivered ({} deliveries incl. repeats)",
        acknowledged.len(),
        sink.count()
    );
}
