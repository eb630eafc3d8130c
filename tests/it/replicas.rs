//! Several replicas (child processes) on one PostgreSQL, each test in a schema of its own:
//! any replica killed at any moment loses nothing acknowledged, `fifo` holds across them,
//! and what an operator does through one is seen by all.
//!
//! The database is `HOOKRELAY_TEST_POSTGRES` (default: the local service). Without it the
//! tests skip with a printed reason, unless `CI` is set: then they fail and say why.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema for one test, dropped at the end.
pub struct Database {
    admin: tokio_postgres::Client,
    schema: String,
    /// The store URL replicas use: the test database with the schema as search path.
    url: String,
}

impl Database {
    pub async fn fresh() -> Option<Database> {
        let base = std::env::var("HOOKRELAY_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.into());
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(&base, tokio_postgres::NoTls),
        )
        .await;
        let (admin, connection) = match connected {
            Ok(Ok(pair)) => pair,
            failed => {
                let message = format!(
                    "PostgreSQL at {base} unreachable ({}); set HOOKRELAY_TEST_POSTGRES or start it",
                    match failed {
                        Ok(Err(err)) => err.to_string(),
                        _ => "no answer in 5 s".into(),
                    }
                );
                assert!(std::env::var_os("CI").is_none(), "{message}");
                eprintln!("skipped: {message}");
                return None;
            }
        };
        tokio::spawn(connection);
        let schema = format!("hr_it_{}", uuid::Uuid::now_v7().simple());
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url =
            format!("{base}{separator}options=-c%20search_path%3D{schema}&poll_interval_ms=250");
        Some(Database { admin, schema, url })
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let sql = sql.replace("{s}", &self.schema);
        self.admin.query_one(&sql, &[]).await.unwrap().get(0)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let statement = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let drop = self.admin.batch_execute(&statement);
        // Best effort: a schema left behind only costs space in the test database.
        let _ = futures_lite_block(drop);
    }
}

/// Drives a future to its end from a synchronous drop (the runtime is still there).
fn futures_lite_block<F: std::future::Future>(future: F) -> Option<F::Output> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    Some(tokio::task::block_in_place(|| handle.block_on(future)))
}

/// A replica's config: the shared store, its own API socket, the sink as destination.
pub fn replica_config(dir: &Path, database: &Database, sink_url: &str, extra: &str) -> String {
    on_database(&config(dir, sink_url, extra), dir, database)
}

/// A config moved onto the shared store, with an API socket of the replica's own.
pub fn on_database(text: &str, dir: &Path, database: &Database) -> String {
    let sqlite_line = text
        .lines()
        .find(|line| line.starts_with("store = "))
        .unwrap()
        .to_owned();
    text.replace(
        &sqlite_line,
        &format!(
            "store = \"{}\"\nmax_connections = 4096\nmax_connections_per_client = 4096",
            database.url
        ),
    ) + &format!("\n[api]\nsocket = \"{}\"\n", dir.join("api.sock").display())
}

pub struct Replicas {
    dirs: Vec<tempfile::TempDir>,
    relays: Vec<Option<Relay>>,
    config: Vec<String>,
}

impl Replicas {
    fn start(count: usize, database: &Database, sink_url: &str, extra: &str) -> Replicas {
        Self::start_with(count, |dir| replica_config(dir, database, sink_url, extra))
    }

    /// `count` replicas, each with the config `make` writes for its directory.
    pub fn start_with(count: usize, make: impl Fn(&Path) -> String) -> Replicas {
        let dirs: Vec<tempfile::TempDir> =
            (0..count).map(|_| tempfile::tempdir().unwrap()).collect();
        let config: Vec<String> = dirs.iter().map(|dir| make(dir.path())).collect();
        let relays = dirs
            .iter()
            .zip(&config)
            .map(|(dir, text)| Some(Relay::child(dir.path(), text)))
            .collect();
        Replicas {
            dirs,
            relays,
            config,
        }
    }

    pub fn url(&self, index: usize) -> Option<String> {
        self.relays[index]
            .as_ref()
            .map(|relay| relay.hook_url("gitlab"))
    }

    pub fn kill(&mut self, index: usize) {
        if let Some(mut relay) = self.relays[index].take() {
            relay.kill();
        }
    }

    pub fn restart(&mut self, index: usize) {
        self.relays[index] = Some(Relay::child(self.dirs[index].path(), &self.config[index]));
    }

    pub fn relay(&self, index: usize) -> &Relay {
        self.relays[index].as_ref().expect("replica running")
    }
}

/// The sink's successful receipts by push number (every 10th arrival was answered 503).
fn delivered_counts(received: &[Received], fail_every: usize) -> HashMap<usize, usize> {
    let mut counts = HashMap::new();
    for (index, request) in received.iter().enumerate() {
        if fail_every > 0 && (index + 1) % fail_every == 0 {
            continue;
        }
        *counts.entry(n_of(request)).or_default() += 1;
    }
    counts
}

fn n_of(request: &Received) -> usize {
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    body["n"].as_u64().unwrap() as usize
}

const CONCURRENCY: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_lose_nothing_acknowledged_when_two_are_killed_in_turn() {
    let Some(database) = Database::fresh().await else {
        return;
    };
    let sink = Sink::start().await;
    sink.fail_every(10);
    let extra = format!(
        "concurrency = {CONCURRENCY}\nretry = {{ initial_delay = \"50ms\", max_delay = \"200ms\" }}"
    );
    let mut replicas = Replicas::start(3, &database, &sink.url, &extra);
    const REQUESTS: usize = 3_000;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let acknowledged = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut killed = Vec::new();
    // Senders post in waves; between waves a replica is killed, and later brought back.
    for (wave, action) in [(0, None), (1, Some(1)), (2, None), (3, Some(2)), (4, None)] {
        if let Some(victim) = action {
            // While it delivers: the sink has seen some of this replica's work.
            replicas.kill(victim);
            killed.push(victim);
        }
        if wave == 2 {
            replicas.restart(1);
        }
        if wave == 4 {
            replicas.restart(2);
        }
        let urls: Vec<String> = (0..3).filter_map(|i| replicas.url(i)).collect();
        let mut senders = tokio::task::JoinSet::new();
        for sender in 0..32 {
            let (client, urls, acknowledged, next) = (
                client.clone(),
                urls.clone(),
                acknowledged.clone(),
                next.clone(),
            );
            senders.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= REQUESTS * (wave + 1) / 5 {
                        return;
                    }
                    let url = &urls[(n + sender) % urls.len()];
                    let response = send_push(&client, url, n, Some(&format!("key-{n}"))).await;
                    if let Ok(response) = response
                        && response.status().is_success()
                    {
                        acknowledged.lock().unwrap().insert(n);
                    }
                }
            });
        }
        while senders.join_next().await.is_some() {}
        next.store(REQUESTS * (wave + 1) / 5, Ordering::SeqCst);
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert_eq!(killed, [1, 2]);
    assert!(
        acknowledged.len() >= REQUESTS * 9 / 10,
        "only {} of {REQUESTS} acknowledged",
        acknowledged.len()
    );
    sink.wait_until("every acknowledged event", |received| {
        let counts = delivered_counts(received, 10);
        acknowledged.iter().all(|n| counts.contains_key(n))
    })
    .await;
    // Each delivery succeeded exactly once in the store, whoever made the attempt.
    eventually("every delivery succeeded", || async {
        let open = database
            .count("SELECT count(*) FROM {s}.deliveries WHERE state <> 'succeeded'")
            .await;
        (open == 0).then_some(())
    })
    .await;
    let twice = database
        .count(
            "SELECT count(*) FROM (SELECT delivery_seq FROM {s}.attempts WHERE verdict = 'delivered'
             GROUP BY delivery_seq HAVING count(*) <> 1) x",
        )
        .await;
    assert_eq!(twice, 0, "deliveries recorded as succeeded more than once");
    let stored = database.count("SELECT count(*) FROM {s}.events").await;
    assert!(stored as usize >= acknowledged.len());
    // Duplicates at the sink come only from attempts the killed replicas had in flight.
    let duplicates: usize = sink.with_received(|received| {
        delivered_counts(received, 10)
            .values()
            .map(|count| count - 1)
            .sum()
    });
    eprintln!(
        "{} acknowledged, {stored} stored, {} requests at the sink, {duplicates} duplicates",
        acknowledged.len(),
        sink.count()
    );
    assert!(
        duplicates <= 2 * CONCURRENCY,
        "{duplicates} duplicates; the two killed replicas had at most {} in flight",
        2 * CONCURRENCY
    );
    drop(replicas);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_destination_on_three_replicas_gets_every_event_in_order_through_a_kill() {
    let Some(database) = Database::fresh().await else {
        return;
    };
    let sink = Sink::start().await;
    sink.fail_every(10);
    let extra = "ordering = \"fifo\"\nretry = { initial_delay = \"20ms\", max_delay = \"100ms\" }";
    let mut replicas = Replicas::start(3, &database, &sink.url, extra);
    let client = reqwest::Client::new();
    const EVENTS: usize = 1_000;
    let mut n = 0;
    let mut turn = 0;
    while n < EVENTS {
        if n == EVENTS / 3 && replicas.relays[1].is_some() {
            replicas.kill(1);
        }
        let Some(url) = replicas.url(turn % 3) else {
            turn += 1;
            continue;
        };
        turn += 1;
        // One at a time, each acknowledged before the next: that is the order owed.
        if post_push_to(&client, &url, n).await.is_success() {
            n += 1;
        }
    }
    sink.wait_until("every event", |received| {
        delivered_counts(received, 10).len() == EVENTS
    })
    .await;
    sink.with_received(|received| {
        let mut last = 0;
        for (index, request) in received.iter().enumerate() {
            let n = n_of(request);
            // The head again (a 503, or its replica died mid-attempt) is allowed; going back
            // to an older event is not.
            assert!(n >= last, "arrival {index}: event {n} after {last}");
            last = n;
        }
    });
    drop(replicas);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_through_one_replica_holds_for_all_and_a_job_outlives_its_replica() {
    let Some(database) = Database::fresh().await else {
        return;
    };
    let sink = Sink::start().await;
    let mut replicas = Replicas::start(3, &database, &sink.url, "");
    let client = reqwest::Client::new();
    // Events ingested on B are listed by A's API at once.
    let url_b = replicas.url(1).unwrap();
    assert!(post_push_to(&client, &url_b, 1).await.is_success());
    let listed = replicas.relay(0).cli(&["events", "list", "--json"]);
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(listed.lines().count(), 1, "A lists what B took: {listed}");
    sink.wait_for(1).await;

    // A pause through A holds deliveries on B and C.
    let paused = replicas.relay(0).cli(&["destinations", "pause", "sink"]);
    assert!(paused.status.success(), "{paused:?}");
    eventually("B and C to see the pause", || async {
        let b = destination(replicas.relay(1), "sink");
        let c = destination(replicas.relay(2), "sink");
        (b["paused"] == true && c["paused"] == true).then_some(())
    })
    .await;
    for n in 2..12 {
        let url = replicas.url(n % 3).unwrap();
        assert!(post_push_to(&client, &url, n).await.is_success());
    }
    // Nothing goes while paused: wait past the feed's poll, then look.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(sink.count(), 1, "a paused destination was delivered to");
    let resumed = replicas.relay(2).cli(&["destinations", "resume", "sink"]);
    assert!(resumed.status.success(), "{resumed:?}");
    sink.wait_for(11).await;

    // A bulk replay started on A finishes after A is killed.
    let started = replicas.relay(0).cli(&[
        "replay",
        "--destination",
        "sink",
        "--state",
        "succeeded",
        "--no-wait",
        "--yes",
    ]);
    assert!(started.status.success(), "{started:?}");
    replicas.kill(0);
    sink.wait_for(22).await;
    let finished = database
        .count("SELECT count(*) FROM {s}.jobs WHERE finished_at IS NOT NULL AND error IS NULL")
        .await;
    assert_eq!(finished, 1);
    drop(replicas);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sender_id_posted_to_two_replicas_at_once_makes_one_event() {
    let Some(database) = Database::fresh().await else {
        return;
    };
    let sink = Sink::start().await;
    sink.set_status(200);
    let replicas = Replicas::start(2, &database, &sink.url, "paused = true");
    let client = reqwest::Client::new();
    for round in 0..100 {
        let key = format!("race-{round}");
        let post = |index: usize| {
            let (client, url, key) = (client.clone(), replicas.url(index).unwrap(), key.clone());
            async move {
                let response = send_push(&client, &url, round, Some(&key)).await.unwrap();
                assert!(response.status().is_success());
                response.json::<Value>().await.unwrap()
            }
        };
        let (a, b) = tokio::join!(post(0), post(1));
        assert_eq!(a["event_id"], b["event_id"], "round {round}");
        assert_ne!(a["duplicate"], b["duplicate"], "round {round}: {a} {b}");
    }
    assert_eq!(database.count("SELECT count(*) FROM {s}.events").await, 100);
    drop(replicas);
}
