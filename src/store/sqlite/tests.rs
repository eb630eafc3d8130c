//! Store behaviour against a real SQLite file: dedup, claims, leases, FIFO heads, replay.

use super::*;
use crate::domain::{DeliveryId, DeliveryState, EventId, Name, Ordering};
use crate::store::{
    AttemptRecord, ClaimRequest, ClaimedDelivery, Filter, NewEvent, NextState, ReplayOutcome, Store,
};

fn name(raw: &str) -> Name {
    Name::parse(raw).unwrap()
}

pub(super) fn event(key: Option<&str>, destinations: &[&str], at: i64) -> NewEvent {
    NewEvent {
        id: EventId::generate(),
        source: name("gitlab"),
        received_at: at,
        remote_addr: Some("127.0.0.1:1".into()),
        classification: crate::domain::Classification {
            event_type: Some("Push Hook".into()),
            git_ref: Some("refs/heads/main".into()),
            branch: Some("main".into()),
            project: Some("group/app".into()),
            dedup_key: key.map(str::to_owned),
            ..Default::default()
        },
        content_type: Some("application/json".into()),
        headers: vec![("x-gitlab-event".into(), b"Push Hook".to_vec())],
        body: bytes::Bytes::from_static(b"{\"not\": json"),
        destinations: destinations
            .iter()
            .map(|d| crate::domain::Routed {
                destination: name(d),
                coalesce_key: None,
            })
            .collect(),
    }
}

fn claim_request(destination: &str, ordering: Ordering, limit: usize, now: i64) -> ClaimRequest {
    ClaimRequest {
        destination: name(destination),
        ordering,
        limit,
        now,
        lease_until: now + 1_000,
        lease_owner: "test".into(),
        durable: false,
    }
}

pub(super) fn done_with(claimed: &ClaimedDelivery, next: NextState, at: i64) -> AttemptRecord {
    let (verdict, status) = match next {
        NextState::Succeeded => (crate::domain::Verdict::Delivered, 200),
        _ => (crate::domain::Verdict::Retryable, 500),
    };
    AttemptRecord {
        lease: claimed.lease.clone(),
        attempt: crate::domain::Attempt {
            started_at: at,
            duration_ms: 3,
            verdict,
            class: format!("{}xx", status / 100),
            detail: crate::domain::AttemptDetail {
                summary: format!("HTTP {status}"),
                status: Some(status),
                error: (status != 200).then(|| format!("HTTP {status}")),
                response_excerpt: Some("oops".into()),
            },
        },
        next,
    }
}

/// A locked, migrated database file and a writer's connection to it, without the threads
/// around it (for tests that drive the writer's pieces themselves).
pub(super) fn writer_connection() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Connection,
    dedup::DedupIndex,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hr.db");
    // Creates the file (the lock itself is not kept).
    identity::lock_database(&path).unwrap();
    let mut conn = open_connection(&path).unwrap();
    schema::migrate(&mut conn).unwrap();
    let dedup = dedup::DedupIndex::load(&conn, 0).unwrap();
    (dir, path, conn, dedup)
}

pub(super) fn open_temp() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("hr.db"), OpenMode::Server).unwrap();
    (dir, store)
}

#[tokio::test]
async fn duplicates_return_the_original_and_add_no_deliveries() {
    let (_dir, store) = open_temp();
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

#[tokio::test]
async fn claims_lease_and_completion_moves_state() {
    let (_dir, store) = open_temp();
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
    // A stale completion (old lease token) is recorded but does not change the state.
    store
        .complete(done_with(first, NextState::Succeeded, 700))
        .await
        .unwrap();
    let (summary, attempts) = store.delivery(&first.id).await.unwrap().unwrap();
    assert_eq!((summary.state, attempts.len()), (DeliveryState::Dead, 3));
}

#[tokio::test]
async fn expired_leases_are_claimed_again() {
    let (_dir, store) = open_temp();
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

#[tokio::test]
async fn fifo_hands_out_only_the_head() {
    let (_dir, store) = open_temp();
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

#[tokio::test]
async fn replay_makes_a_dead_delivery_due_and_refuses_in_flight_ones() {
    let (_dir, store) = open_temp();
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

#[tokio::test]
async fn a_second_server_cannot_open_the_same_file_and_restarts_release_leases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hr.db");
    let store = SqliteStore::open(&path, OpenMode::Server).unwrap();
    let err = SqliteStore::open(&path, OpenMode::Server).unwrap_err();
    assert!(err.to_string().contains("another hookrelay"), "{err}");
    store.insert_event(event(None, &["a"], 10)).await.unwrap();
    let claimed = store
        .claim(claim_request("a", Ordering::Parallel, 1, 10))
        .await
        .unwrap();
    assert_eq!(claimed.deliveries.len(), 1);
    drop(store);
    let reopened = SqliteStore::open(&path, OpenMode::Server).unwrap();
    let now = now_millis();
    let again = reopened
        .claim(claim_request("a", Ordering::Parallel, 1, now))
        .await
        .unwrap();
    assert_eq!(
        again.deliveries.len(),
        1,
        "lease of the dead process was not released"
    );
}

#[tokio::test]
async fn dedup_survives_a_restart_and_never_merges_different_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hr.db");
    let now = now_millis();
    let store = SqliteStore::open(&path, OpenMode::Server).unwrap();
    let first = store
        .insert_event(event(Some("k1"), &["a"], now))
        .await
        .unwrap();
    // Same key twice in one batch: the second sees the first.
    let (x, y) = tokio::join!(
        store.insert_event(event(Some("k2"), &["a"], now)),
        store.insert_event(event(Some("k2"), &["a"], now))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert!(
        x.duplicate != y.duplicate,
        "exactly one of the pair is new: {x:?} {y:?}"
    );
    drop(store);
    let store = SqliteStore::open(&path, OpenMode::Server).unwrap();
    let again = store
        .insert_event(event(Some("k1"), &["a"], now))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.event_id, first.event_id);
    let other = store
        .insert_event(event(Some("k3"), &["a"], now))
        .await
        .unwrap();
    assert!(!other.duplicate);
    // The same key from another source is another event.
    let mut elsewhere = event(Some("k1"), &["a"], now);
    elsewhere.source = Name::parse("github").unwrap();
    assert!(!store.insert_event(elsewhere).await.unwrap().duplicate);
}
