//! The store contract (`store::conformance`) on a real SQLite file, and what only this
//! backend does: one server per file, leases released at start, dedup loaded back.

use std::sync::Arc;

use super::*;
use crate::domain::{Name, Ordering};
use crate::store::Store;
use crate::store::conformance::{Backend, store_conformance};
pub(super) use crate::store::conformance::{claim_request, done_with, event};

async fn empty_backend() -> Option<Backend> {
    let (dir, store) = open_temp();
    let store: Arc<dyn Store> = Arc::new(store);
    // One server per file: another replica's handle is this one.
    Some(Backend::new(store.clone(), store, dir))
}

mod conformance {
    use super::*;
    store_conformance!(empty_backend());
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

#[test]
fn claims_are_not_prepared_again_each_time() {
    let (_dir, _path, conn, mut dedup) = writer_connection();
    for at in 0..10 {
        ops::insert_event(&conn, &event(None, &["a"], at), &mut dedup).unwrap();
    }
    for now in 0..5 {
        ops::claim(&conn, &claim_request("a", Ordering::Parallel, 1, 100 + now)).unwrap();
    }
    let statement = conn.prepare_cached(ops::PARALLEL_DUE).unwrap();
    assert_eq!(
        statement.get_status(rusqlite::StatementStatus::RePrepare),
        0,
        "the claim's statement was prepared again"
    );
}

#[tokio::test]
async fn both_ways_of_matching_deliveries_list_the_same_events_page_by_page() {
    use crate::domain::DeliveryState;
    use crate::store::{Filter, NextState};
    let (dir, store) = open_temp();
    for at in 0..40 {
        let destinations: &[&str] = if at % 3 == 0 { &["a", "b"] } else { &["b"] };
        store
            .insert_event(event(None, destinations, at))
            .await
            .unwrap();
    }
    let claimed = store
        .claim(claim_request("a", Ordering::Parallel, 100, 50))
        .await
        .unwrap();
    for delivery in claimed.deliveries.iter().step_by(2) {
        let dead = NextState::Dead("permanent".into());
        store.complete(done_with(delivery, dead, 60)).await.unwrap();
    }
    let conn = Connection::open(dir.path().join("hr.db")).unwrap();
    for filter in [
        Filter {
            state: Some(DeliveryState::Dead),
            ..Filter::default()
        },
        Filter {
            state: Some(DeliveryState::Pending),
            ..Filter::default()
        },
        Filter {
            destination: Some("a".into()),
            ..Filter::default()
        },
        Filter {
            destination: Some("b".into()),
            state: Some(DeliveryState::Pending),
            since: Some(10),
            ..Filter::default()
        },
    ] {
        let mut seen = [Vec::new(), Vec::new()];
        for (way, few) in [false, true].into_iter().enumerate() {
            let mut after = None;
            loop {
                let budget = crate::store::look::BUDGET;
                let page =
                    browse::list_events_as(&conn, &filter, after.as_ref(), 4, few, budget).unwrap();
                seen[way].extend(page.items.iter().map(|e| e.id.clone()));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        assert!(!seen[0].is_empty(), "{filter:?}");
        assert_eq!(seen[0], seen[1], "{filter:?}");
    }
}

#[tokio::test]
async fn a_listing_out_of_time_says_how_far_it_looked_and_going_on_finds_the_rest() {
    use crate::store::Filter;
    let (dir, store) = open_temp();
    let mut first = event(None, &["a"], 1);
    first.body = bytes::Bytes::from_static(b"{\"needle\": 1}");
    store.insert_event(first).await.unwrap();
    for at in 2..6_000 {
        store.insert_event(event(None, &["a"], at)).await.unwrap();
    }
    let conn = Connection::open(dir.path().join("hr.db")).unwrap();
    let needle = Filter {
        body_contains: Some("needle".into()),
        ..Filter::default()
    };
    let no_time = std::time::Duration::ZERO;
    let page = browse::list_events_as(&conn, &needle, None, 10, false, no_time).unwrap();
    assert!(page.items.is_empty(), "the newest range holds no match");
    let looked = page.looked_back_to.expect("it says it ran out of time");
    assert!(looked > 1 && looked < 6_000, "{looked}");
    let mut after = page.next.expect("and where to go on");
    let mut found = Vec::new();
    loop {
        let page =
            browse::list_events_as(&conn, &needle, Some(&after), 10, false, no_time).unwrap();
        found.extend(page.items.into_iter().map(|e| e.received_at));
        match page.next {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(
        found,
        [1],
        "going on from each cursor finds the one match, once"
    );
    let unhurried = browse::list_events(&conn, &needle, None, 10).unwrap();
    assert_eq!((unhurried.items.len(), unhurried.looked_back_to), (1, None));
}
