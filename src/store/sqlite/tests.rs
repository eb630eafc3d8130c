//! The store contract (`store::conformance`) on a real SQLite file, and what only this
//! backend does: one server per file, leases released at start, dedup loaded back.

use std::sync::Arc;

use super::*;
use crate::domain::{Name, Ordering};
use crate::store::Store;
use crate::store::conformance::{Backend, store_conformance};
pub(super) use crate::store::conformance::{claim_request, event};

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
