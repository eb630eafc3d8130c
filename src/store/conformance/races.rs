//! What must hold when two handles (two replicas) act on the same deliveries at once: a claim,
//! a replay and a `latest` supersede are each atomic, whoever runs them.

use std::sync::Arc;

use super::claims::{claim_latest, keyed};
use super::{Backend, claim_request, done_with, event};
use crate::domain::{DeliveryId, DeliveryState, Ordering};
use crate::store::{Filter, NextState, ReplayOutcome, Store};

/// Claims from `handle` until nothing is left, as one replica's worker would.
async fn claim_until_empty(handle: Arc<dyn Store>, owner: &'static str) -> Vec<DeliveryId> {
    let mut claimed = Vec::new();
    loop {
        let mut request = claim_request("a", Ordering::Parallel, 7, 100);
        request.lease_owner = owner.into();
        let got = handle.claim(request).await.unwrap().deliveries;
        if got.is_empty() {
            return claimed;
        }
        claimed.extend(got.into_iter().map(|delivery| delivery.id));
    }
}

pub async fn two_handles_claiming_one_destination_at_once_never_share_a_delivery(
    backend: &Backend,
) {
    let store = backend.store();
    for at in 0..60 {
        store.insert_event(event(None, &["a"], at)).await.unwrap();
    }
    let one = tokio::spawn(claim_until_empty(backend.shared(), "replica-a"));
    let two = tokio::spawn(claim_until_empty(backend.second_handle(), "replica-b"));
    let (one, two) = (one.await.unwrap(), two.await.unwrap());
    let mut all: Vec<&str> = one.iter().chain(&two).map(DeliveryId::as_str).collect();
    let claims = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), claims, "a delivery was leased to both handles");
    assert_eq!(claims, 60, "every due delivery is claimed once");
}

pub async fn two_handles_claiming_a_fifo_destination_at_once_get_one_head(backend: &Backend) {
    let store = backend.store();
    for at in 0..5 {
        store.insert_event(event(None, &["f"], at)).await.unwrap();
    }
    let (one, two) = (backend.shared(), backend.second_handle());
    let (a, b) = tokio::join!(
        one.claim(claim_request("f", Ordering::Fifo, 8, 10)),
        two.claim(claim_request("f", Ordering::Fifo, 8, 10)),
    );
    let heads = a.unwrap().deliveries.len() + b.unwrap().deliveries.len();
    assert_eq!(
        heads, 1,
        "fifo allows one delivery in flight, whoever claims"
    );
}

pub async fn a_replay_racing_a_claim_leaves_one_live_lease(backend: &Backend) {
    let store = backend.store();
    store.insert_event(event(None, &["a"], 10)).await.unwrap();
    let first = store
        .claim(claim_request("a", Ordering::Parallel, 1, 10))
        .await
        .unwrap();
    let mut running = first.deliveries[0].clone();
    let id = running.id.clone();
    let (one, two) = (backend.shared(), backend.second_handle());
    for round in 0..20 {
        let now = 100 + round * 10;
        store
            .complete(done_with(&running, NextState::Dead("gave up".into()), now))
            .await
            .unwrap();
        let (replayed, claimed) = tokio::join!(
            one.replay(&id, now),
            two.claim(claim_request("a", Ordering::Parallel, 8, now)),
        );
        assert_eq!(replayed.unwrap(), ReplayOutcome::Scheduled);
        running = match claimed.unwrap().deliveries.pop() {
            // The replay came first and the claim took it.
            Some(delivery) => delivery,
            // The claim came first and found it dead; it is due now.
            None => store
                .claim(claim_request("a", Ordering::Parallel, 8, now))
                .await
                .unwrap()
                .deliveries
                .pop()
                .expect("a replayed delivery is due"),
        };
        assert_eq!(running.id, id);
        let again = store
            .claim(claim_request("a", Ordering::Parallel, 8, now))
            .await
            .unwrap();
        assert!(again.deliveries.is_empty(), "leased twice");
        assert_eq!(
            store.replay(&id, now).await.unwrap(),
            ReplayOutcome::InFlight
        );
    }
}

pub async fn latest_racing_a_new_arrival_never_runs_two_for_one_key(backend: &Backend) {
    let store = backend.store();
    store.insert_event(keyed("main", 1)).await.unwrap();
    let first = store.claim(claim_latest(2)).await.unwrap().deliveries;
    assert_eq!(first.len(), 1);
    let (one, two) = (backend.shared(), backend.second_handle());
    for round in 0..10 {
        let at = 10 + round * 10;
        let (inserted, claimed) = tokio::join!(
            one.insert_event(keyed("main", at)),
            two.claim(claim_latest(at))
        );
        inserted.unwrap();
        assert!(
            claimed.unwrap().deliveries.is_empty(),
            "a second delivery for main ran while one was in flight"
        );
    }
    store
        .complete(done_with(&first[0], NextState::Succeeded, 200))
        .await
        .unwrap();
    let next = store.claim(claim_latest(201)).await.unwrap().deliveries;
    assert_eq!(next.len(), 1, "only the newest waiting delivery runs");
    let (newest, _) = store.delivery(&next[0].id).await.unwrap().unwrap();
    assert_eq!(newest.created_at, 100, "the newest push runs");
    let all = store
        .list_deliveries(Filter::default(), None, 100)
        .await
        .unwrap()
        .items;
    let count = |state| all.iter().filter(|d| d.state == state).count();
    assert_eq!(count(DeliveryState::Superseded), 9);
    assert_eq!(count(DeliveryState::InFlight), 1);
}

/// The same sender id many times at once (likely in one group commit), through both
/// handles: one event, and every answer names it.
pub async fn repeats_of_one_sender_id_at_once_make_one_event(backend: &Backend) {
    let handles = [backend.shared(), backend.second_handle()];
    let mut inserts = tokio::task::JoinSet::new();
    for n in 0..20 {
        let store = handles[n % 2].clone();
        inserts.spawn(async move {
            let key = if n % 5 == 4 {
                format!("other-{n}")
            } else {
                "same".into()
            };
            store
                .insert_event(event(Some(&key), &["a"], 10))
                .await
                .unwrap()
        });
    }
    let answers: Vec<_> = inserts.join_all().await;
    let originals: std::collections::HashSet<_> = answers
        .iter()
        .filter(|a| !a.duplicate)
        .map(|a| a.event_id.clone())
        .collect();
    // "same" once, and the four other keys.
    assert_eq!(originals.len(), 5, "{answers:?}");
    let repeats: std::collections::HashSet<_> = answers
        .iter()
        .filter(|a| a.duplicate)
        .map(|a| a.event_id.clone())
        .collect();
    assert_eq!(
        repeats.len(),
        1,
        "repeats named different originals: {answers:?}"
    );
    assert!(originals.is_superset(&repeats));
    let claimed = backend
        .store()
        .claim(claim_request("a", Ordering::Parallel, 100, 20))
        .await
        .unwrap();
    assert_eq!(claimed.deliveries.len(), 5);
}

/// Two handles ingesting for different destinations at once while a reader lists newest
/// first, over and over: nothing may appear below a row the reader already saw at the top.
/// A late commit that did would be skipped by a walker already past it, and "the highest
/// row" would mark no point in time.
pub async fn listings_show_commits_in_order_while_two_handles_ingest(backend: &Backend) {
    const EACH: usize = 300;
    let mut ingest = tokio::task::JoinSet::new();
    for (handle, destination) in [(backend.shared(), "a"), (backend.second_handle(), "b")] {
        // A few requests in flight per handle, as a replica under load batches them.
        for lane in 0..4 {
            let handle = handle.clone();
            ingest.spawn(async move {
                for at in 0..EACH / 4 {
                    let at = (lane * EACH + at) as i64;
                    handle
                        .insert_event(event(None, &[destination], at))
                        .await
                        .unwrap();
                }
            });
        }
    }
    let store = backend.store();
    let mut before: Option<(Vec<String>, Vec<String>)> = None;
    let mut reads = 0;
    loop {
        // One more read once every insert has been answered.
        let finished = ingest.is_empty();
        let events = store
            .list_events(Filter::default(), None, 2 * EACH + 1)
            .await
            .unwrap();
        let deliveries = store
            .list_deliveries(Filter::default(), None, 2 * EACH + 1)
            .await
            .unwrap();
        let now: (Vec<String>, Vec<String>) = (
            events
                .items
                .iter()
                .map(|e| e.id.as_str().to_owned())
                .collect(),
            deliveries
                .items
                .iter()
                .map(|d| d.id.as_str().to_owned())
                .collect(),
        );
        if let Some((events_before, deliveries_before)) = &before {
            appear_only_above(events_before, &now.0, "event");
            appear_only_above(deliveries_before, &now.1, "delivery");
        }
        before = Some(now);
        reads += 1;
        if finished && reads > 2 {
            break;
        }
        while let Some(done) = ingest.try_join_next() {
            done.unwrap();
        }
    }
    let (events, deliveries) = before.unwrap();
    assert_eq!((events.len(), deliveries.len()), (2 * EACH, 2 * EACH));
}

/// Every row of `now` (newest first) below the newest row of `before` was in `before`.
fn appear_only_above(before: &[String], now: &[String], what: &str) {
    let Some(top) = before.first() else {
        return;
    };
    let seen: std::collections::HashSet<&String> = before.iter().collect();
    let mut below = now.iter().skip_while(|id| *id != top);
    if let Some(late) = below.find(|id| !seen.contains(id)) {
        panic!("{what} {late} committed below {top}, which a reader had already seen");
    }
}
