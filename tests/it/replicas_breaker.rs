//! Circuit breakers across replicas: one replica's breaker opening opens the others', a
//! replica started while it is open learns it from the store, and a probe that gets through
//! closes them all.

use std::sync::atomic::Ordering;

use crate::harness::*;
use crate::replicas::{Database, Replicas, replica_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_that_opens_on_one_replica_opens_on_the_others_and_closes_with_them() {
    let Some(database) = Database::fresh().await else {
        return;
    };
    let sink = Sink::start().await;
    sink.set_status(503);
    // Only the first replica's breaker can open by itself; the others' would need 1,000
    // failures in a row, so they open only if the first one's word reaches them. The third
    // starts after the breaker opened: it can only have read it from the store.
    let started = std::sync::atomic::AtomicUsize::new(0);
    let mut replicas = Replicas::start_with(3, |dir| {
        let failures = match started.fetch_add(1, Ordering::SeqCst) {
            0 => 3,
            _ => 1000,
        };
        let extra = format!(
            "concurrency = 2\nretry = {{ initial_delay = \"100ms\", max_delay = \"200ms\" }}\ncircuit_breaker = {{ failures = {failures}, probe_interval = \"300ms\" }}"
        );
        replica_config(dir, &database, &sink.url, &extra)
    });
    replicas.kill(2);
    let client = reqwest::Client::new();
    for n in 0..10 {
        let url = replicas.url(n % 2).unwrap();
        assert!(post_push_to(&client, &url, n).await.is_success());
    }
    let open = "hookrelay_destination_circuit_open{destination=\"sink\"} 1";
    replicas.relay(0).wait_for_metric(open).await;
    replicas.relay(1).wait_for_metric(open).await;
    replicas.restart(2);
    replicas.relay(2).wait_for_metric(open).await;
    sink.set_status(200);
    let closed = "hookrelay_destination_circuit_open{destination=\"sink\"} 0";
    for index in 0..3 {
        replicas.relay(index).wait_for_metric(closed).await;
    }
    eventually("every delivery succeeded", || async {
        let open = database
            .count("SELECT count(*) FROM {s}.deliveries WHERE state <> 'succeeded'")
            .await;
        (open == 0).then_some(())
    })
    .await;
    drop(replicas);
}
