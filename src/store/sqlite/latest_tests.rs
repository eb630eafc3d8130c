//! `latest` claims: one in flight per key, the newest waiting one goes, the rest superseded.

use super::tests::{done_with, event, open_temp};
use crate::domain::{DeliveryState, Name, Ordering, Routed};
use crate::store::{ClaimRequest, Filter, NextState, Store};

fn keyed(key: &str, at: i64) -> crate::store::NewEvent {
    let mut new = event(None, &[], at);
    new.destinations = vec![Routed {
        destination: Name::parse("deploy").unwrap(),
        coalesce_key: Some(key.to_owned()),
    }];
    new
}

fn claim(now: i64) -> ClaimRequest {
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

#[tokio::test]
async fn a_burst_runs_the_first_and_the_newest_and_supersedes_the_rest() {
    let (_dir, store) = open_temp();
    store.insert_event(keyed("main", 1)).await.unwrap();
    let first = store.claim(claim(2)).await.unwrap().deliveries;
    assert_eq!(first.len(), 1);
    // Nine more pushes to main and one to staging while the first runs.
    for at in 3..12 {
        store.insert_event(keyed("main", at)).await.unwrap();
    }
    store.insert_event(keyed("staging", 12)).await.unwrap();
    let meanwhile = store.claim(claim(13)).await.unwrap().deliveries;
    assert_eq!(meanwhile.len(), 1, "staging does not wait for main");
    store
        .complete(done_with(&first[0], NextState::Succeeded, 20))
        .await
        .unwrap();
    let next = store.claim(claim(21)).await.unwrap().deliveries;
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
