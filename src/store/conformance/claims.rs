//! Claims, leases, completion, FIFO heads, `latest` coalescing, replay and dedup.

use super::{Backend, claim_request, done_with, event};
use crate::domain::{DeliveryId, DeliveryState, Name, Ordering, Routed};
use crate::store::{ClaimRequest, Filter, NextState, ReplayOutcome};

pub(super) fn keyed(key: &str, at: i64) -> crate::store::NewEvent {
    let mut new = event(None, &[], at);
    new.destinations = vec![Routed {
        destination: Name::parse("deploy").unwrap(),
        coalesce_key: Some(key.to_owned()),
    }];
    new
}

pub(super) fn claim_latest(now: i64) -> ClaimRequest {
    ClaimRequest {
        destination: Name::parse("deploy").unwrap(),
        ordering: Ordering::Latest,
        limit: 8,
        now,
        lease_until: now + 1_000,
        lease_owner: "test".into(),
        durable: false,
    }
}

pub async fn duplicates_return_the_original_and_add_no_deliveries(backend: &Backend) {
    let store = backend.store();
    let first = store
        .insert_event(event(Some("k"), &["a", "b"], 1))
        .await
        .unwrap();
    assert_eq!((first.deliveries, first.duplicate), (2, false));
    let again = store
        .insert_event(event(Some("k"), &["a", "b"], 2))
        .await
        .unwrap();
    assert_eq!(again.event_id, first.event_id);
    assert_eq!((again.deliveries, again.duplicate), (0, true));
    let unkeyed = store.insert_event(event(None, &["a"], 3)).await.unwrap();
    assert!(!unkeyed.duplicate);
    let all = store
        .list_deliveries(Filter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(all.items.len(), 3);
}

pub async fn claims_lease_and_completion_moves_state(backend: &Backend) {
    let store = backend.store();
    store.insert_event(event(None, &["a"], 10)).await.unwrap();
    let claimed = store
        .claim(claim_request("a", Ordering::Parallel, 8, 10))
        .await
        .unwrap();
    assert_eq!(claimed.deliveries.len(), 1);
    let claimed_one = &claimed.deliveries[0];
    assert_eq!(claimed_one.body_len, 12);
    let request = store.load_request(&claimed_one.event_id).await.unwrap();
    assert_eq!(request.body.as_ref(), b"{\"not\": json");
    // Leased: nobody else gets it before the lease ends, and the next due time is the lease end.
    let again = store
        .claim(claim_request("a", Ordering::Parallel, 8, 20))
        .await
        .unwrap();
    assert!(again.deliveries.is_empty());
    assert_eq!(again.next_due, Some(1_010));
    let first = &claimed.deliveries[0];
    store
        .complete(done_with(first, NextState::RetryAt(500), 30))
        .await
        .unwrap();
    assert!(
        store
            .claim(claim_request("a", Ordering::Parallel, 8, 499))
            .await
            .unwrap()
            .deliveries
            .is_empty()
    );
    let retried = store
        .claim(claim_request("a", Ordering::Parallel, 8, 500))
        .await
        .unwrap();
    assert_eq!(retried.deliveries[0].attempts, 1);
    store
        .complete(done_with(
            &retried.deliveries[0],
            NextState::Dead("retry limit reached".into()),
            600,
        ))
        .await
        .unwrap();
    let (summary, attempts) = store.delivery(&first.id).await.unwrap().unwrap();
    assert_eq!(summary.state, DeliveryState::Dead);
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1].number, 2);
    let detail = &attempts[1].attempt.detail;
    assert_eq!(detail.response_excerpt.as_deref(), Some("oops"));
    assert_eq!(
        detail.response_headers.as_deref(),
        Some("content-type: text/plain\n")
    );
    // A stale completion (old lease token) is recorded but does not change the state.
    store
        .complete(done_with(first, NextState::Succeeded, 700))
        .await
        .unwrap();
    let (summary, attempts) = store.delivery(&first.id).await.unwrap().unwrap();
    assert_eq!((summary.state, attempts.len()), (DeliveryState::Dead, 3));
}

pub async fn expired_leases_are_claimed_again(backend: &Backend) {
    let store = backend.store();
    store.insert_event(event(None, &["a"], 10)).await.unwrap();
    let first = store
        .claim(claim_request("a", Ordering::Parallel, 8, 10))
        .await
        .unwrap();
    let later = store
        .claim(claim_request("a", Ordering::Parallel, 8, 1_011))
        .await
        .unwrap();
    assert_eq!(later.deliveries.len(), 1);
    assert_ne!(
        later.deliveries[0].lease.token,
        first.deliveries[0].lease.token
    );
}

pub async fn fifo_hands_out_only_the_head(backend: &Backend) {
    let store = backend.store();
    for at in [1, 2, 3] {
        store.insert_event(event(None, &["f"], at)).await.unwrap();
    }
    let head = store
        .claim(claim_request("f", Ordering::Fifo, 8, 10))
        .await
        .unwrap();
    assert_eq!(head.deliveries.len(), 1);
    assert!(
        store
            .claim(claim_request("f", Ordering::Fifo, 8, 10))
            .await
            .unwrap()
            .deliveries
            .is_empty()
    );
    // A failing head blocks the rest until it is retried.
    store
        .complete(done_with(&head.deliveries[0], NextState::RetryAt(100), 11))
        .await
        .unwrap();
    assert!(
        store
            .claim(claim_request("f", Ordering::Fifo, 8, 50))
            .await
            .unwrap()
            .deliveries
            .is_empty()
    );
    let retried = store
        .claim(claim_request("f", Ordering::Fifo, 8, 100))
        .await
        .unwrap();
    assert_eq!(retried.deliveries[0].id, head.deliveries[0].id);
    store
        .complete(done_with(&retried.deliveries[0], NextState::Succeeded, 101))
        .await
        .unwrap();
    let second = store
        .claim(claim_request("f", Ordering::Fifo, 8, 102))
        .await
        .unwrap();
    assert_ne!(second.deliveries[0].id, head.deliveries[0].id);
}

pub async fn replay_makes_a_dead_delivery_due_and_refuses_in_flight_ones(backend: &Backend) {
    let store = backend.store();
    store.insert_event(event(None, &["a"], 10)).await.unwrap();
    let claimed = store
        .claim(claim_request("a", Ordering::Parallel, 1, 10))
        .await
        .unwrap();
    let id = claimed.deliveries[0].id.clone();
    assert_eq!(
        store.replay(&id, 11).await.unwrap(),
        ReplayOutcome::InFlight
    );
    store
        .complete(done_with(
            &claimed.deliveries[0],
            NextState::Dead("retry limit reached".into()),
            12,
        ))
        .await
        .unwrap();
    assert_eq!(
        store.replay(&id, 13).await.unwrap(),
        ReplayOutcome::Scheduled
    );
    let again = store
        .claim(claim_request("a", Ordering::Parallel, 1, 13))
        .await
        .unwrap();
    assert_eq!(again.deliveries[0].attempts, 0);
    assert_eq!(
        store.replay(&DeliveryId::generate(), 14).await.unwrap(),
        ReplayOutcome::NotFound
    );
}

pub async fn a_burst_runs_the_first_and_the_newest_and_supersedes_the_rest(backend: &Backend) {
    let store = backend.store();
    store.insert_event(keyed("main", 1)).await.unwrap();
    let first = store.claim(claim_latest(2)).await.unwrap().deliveries;
    assert_eq!(first.len(), 1);
    // Nine more pushes to main and one to staging while the first runs.
    for at in 3..12 {
        store.insert_event(keyed("main", at)).await.unwrap();
    }
    store.insert_event(keyed("staging", 12)).await.unwrap();
    let meanwhile = store.claim(claim_latest(13)).await.unwrap().deliveries;
    assert_eq!(meanwhile.len(), 1, "staging does not wait for main");
    store
        .complete(done_with(&first[0], NextState::Succeeded, 20))
        .await
        .unwrap();
    let next = store.claim(claim_latest(21)).await.unwrap().deliveries;
    assert_eq!(next.len(), 1, "only the newest main runs");
    let all = store
        .list_deliveries(Filter::default(), None, 100)
        .await
        .unwrap()
        .items;
    let superseded = all
        .iter()
        .filter(|d| d.state == DeliveryState::Superseded)
        .count();
    assert_eq!(superseded, 8);
    // Running now: the newest push to main (11) and the staging one (12).
    let mut running: Vec<i64> = all
        .iter()
        .filter(|d| d.state == DeliveryState::InFlight)
        .map(|d| d.created_at)
        .collect();
    running.sort();
    assert_eq!(running, [11, 12]);
}
