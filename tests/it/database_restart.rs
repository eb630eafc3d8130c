//! The database stopped and started under load, on a PostgreSQL cluster of the test's own
//! (initdb in a temporary directory, run as the `postgres` user): ingest answers 503 while
//! it is down and never 2xx for what was not committed, `/readyz` says so, and everything
//! resumes by itself; and each 2xx waited for the WAL flush of its commit.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::cluster::Cluster;
use crate::harness::*;

async fn ready(client: &reqwest::Client, relay: &Relay) -> bool {
    match client.get(format!("{}/readyz", relay.url)).send().await {
        Ok(response) => response.status().is_success(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_answers_503_meanwhile_and_loses_nothing_acknowledged() {
    let Some(cluster) = Cluster::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let text = config(
        dir.path(),
        &sink.url,
        "retry = { initial_delay = \"50ms\", max_delay = \"500ms\" }",
    );
    let store_line = text
        .lines()
        .find(|l| l.starts_with("store = "))
        .unwrap()
        .to_owned();
    let text = text.replace(&store_line, &format!("store = \"{}\"", cluster.url()))
        + &format!(
            "\n[api]\nsocket = \"{}\"\n",
            dir.path().join("api.sock").display()
        );
    let relay = Relay::child(dir.path(), &text);
    let client = reqwest::Client::new();

    let acknowledged = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicUsize::new(0));
    for _ in 0..8 {
        let (client, url) = (client.clone(), relay.hook_url("gitlab"));
        let (acknowledged, refused, stop, next) = (
            acknowledged.clone(),
            refused.clone(),
            stop.clone(),
            next.clone(),
        );
        senders.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let n = next.fetch_add(1, Ordering::SeqCst);
                match post_push_to(&client, &url, n).await.as_u16() {
                    202 => {
                        acknowledged.lock().unwrap().insert(n);
                    }
                    503 => {
                        refused.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("push {n} answered {other}"),
                }
            }
        });
    }
    let acked = || acknowledged.lock().unwrap().len();
    eventually("200 events acknowledged", || async {
        (acked() >= 200).then_some(())
    })
    .await;
    assert!(cluster.stop(), "the cluster did not stop");
    eventually("/readyz to say 503", || async {
        (!ready(&client, &relay).await).then_some(())
    })
    .await;
    let before = acked();
    eventually("ingest to answer 503", || async {
        (refused.load(Ordering::SeqCst) >= 20).then_some(())
    })
    .await;
    // Nothing was acknowledged while the database was down (beyond what was committing).
    assert!(
        acked() <= before + 8,
        "acknowledged while the database was down"
    );
    assert!(cluster.start(), "the cluster did not start again");
    eventually("/readyz to say 200", || async {
        ready(&client, &relay).await.then_some(())
    })
    .await;
    let back = acked();
    eventually("200 more acknowledged", || async {
        (acked() >= back + 200).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    while senders.join_next().await.is_some() {}
    let acknowledged = acknowledged.lock().unwrap().clone();
    sink.wait_until("every acknowledged event", |received| {
        let seen: BTreeSet<usize> = received
            .iter()
            .map(|r| {
                let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                body["n"].as_u64().unwrap() as usize
            })
            .collect();
        acknowledged.is_subset(&seen)
    })
    .await;
    eprintln!(
        "{} acknowledged, {} refused while the database was down",
        acknowledged.len(),
        refused.load(Ordering::SeqCst)
    );
}

/// Each 2xx waits for the WAL to be flushed past the event's commit record: read from the
/// WAL itself (`pg_walinspect`) on a cluster of the test's own whose WAL writer flushes on
/// its own only every 10 s. An answer sent at commit would find the flush behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_acknowledged_event_was_flushed_to_the_wal_before_its_answer() {
    let Some(cluster) = Cluster::create_with(|_| "-c wal_writer_delay=10s".into()) else {
        return;
    };
    cluster.query("CREATE EXTENSION pg_walinspect");
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), "http://127.0.0.1:9/never", "paused = true");
    let store_line = text
        .lines()
        .find(|l| l.starts_with("store = "))
        .unwrap()
        .to_owned();
    let text = text.replace(&store_line, &format!("store = \"{}\"", cluster.url()));
    let relay = Relay::child(dir.path(), &text);
    let client = reqwest::Client::new();
    let start = cluster.query("SELECT pg_current_wal_insert_lsn()");
    let mut flushed_at_answer = Vec::new();
    for n in 0..20 {
        let status = post_push_to(&client, &relay.hook_url("gitlab"), n).await;
        assert_eq!(status.as_u16(), 202);
        flushed_at_answer.push(lsn(&cluster.query("SELECT pg_current_wal_flush_lsn()")));
    }
    // A committed write of the test's own, so every record before it is on disk to read.
    cluster.query("CREATE TABLE flushed_here ()");
    let commits = cluster.query(&format!(
        "SELECT convert_from(e.body, 'UTF8')::json->>'n', w.end_lsn
         FROM events e JOIN pg_get_wal_records_info_till_end_of_wal('{}') w
           ON w.xid::text = e.xmin::text
         WHERE w.resource_manager = 'Transaction' AND w.record_type = 'COMMIT'",
        start.trim()
    ));
    let commits: Vec<(usize, u64)> = commits
        .lines()
        .map(|line| {
            let (n, end) = line.split_once('|').unwrap();
            (n.parse().unwrap(), lsn(end))
        })
        .collect();
    assert_eq!(commits.len(), 20, "{commits:?}");
    for (n, commit_end) in commits {
        assert!(
            flushed_at_answer[n] >= commit_end,
            "event {n} was answered with the WAL flushed to {:x}, before its commit at {commit_end:x}",
            flushed_at_answer[n]
        );
    }
}

/// A `pg_lsn` as text (`16/B374D848`) as a number.
fn lsn(text: &str) -> u64 {
    let (high, low) = text.trim().split_once('/').unwrap();
    (u64::from_str_radix(high, 16).unwrap() << 32) | u64::from_str_radix(low, 16).unwrap()
}
