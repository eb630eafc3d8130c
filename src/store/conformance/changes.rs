//! The change feed: what a commit changed reaches every subscriber, including one on another
//! handle (another replica), and bookkeeping or a duplicate announces nothing.

use std::time::Duration;

use tokio::sync::broadcast::Receiver;

use super::{Backend, claim_request, done_with, event, name};
use crate::domain::{DeliveryState, Ordering};
use crate::store::{BulkAction, BulkScope, Change, Filter, NextState, ReplayOutcome};

async fn next(changes: &mut Receiver<Change>) -> Change {
    match tokio::time::timeout(Duration::from_secs(10), changes.recv()).await {
        Ok(change) => change.expect("the feed is open and kept up"),
        Err(_) => panic!("nothing was announced within 10 s"),
    }
}

pub async fn the_feed_announces_due_destinations_pauses_and_jobs_after_they_commit(
    backend: &Backend,
) {
    let store = backend.store();
    let mut changes = backend.second_handle().changes();
    store
        .insert_event(event(Some("k"), &["b", "a"], 1))
        .await
        .unwrap();
    assert_eq!(
        next(&mut changes).await,
        Change::Due(vec![name("a"), name("b")])
    );
    // A duplicate makes nothing due; bookkeeping is not announced.
    let again = store
        .insert_event(event(Some("k"), &["a"], 2))
        .await
        .unwrap();
    assert!(again.duplicate);
    let claimed = store
        .claim(claim_request("a", Ordering::Parallel, 1, 3))
        .await
        .unwrap()
        .deliveries;
    store
        .complete(done_with(&claimed[0], NextState::Dead("gave up".into()), 4))
        .await
        .unwrap();
    store.set_paused("a", true, 5).await.unwrap();
    assert_eq!(
        next(&mut changes).await,
        Change::Paused("a".into(), true),
        "a duplicate, a claim or a record was announced"
    );
    assert_eq!(
        store.replay(&claimed[0].id, 6).await.unwrap(),
        ReplayOutcome::Scheduled
    );
    assert_eq!(next(&mut changes).await, Change::Due(vec![name("a")]));
    let scope = BulkScope {
        action: BulkAction::Replay,
        filter: Filter {
            state: Some(DeliveryState::Dead),
            ..Filter::default()
        },
        as_of: 7,
        snapshot: None,
    };
    store
        .create_job("job_feed".into(), scope, 0, 7)
        .await
        .unwrap();
    assert_eq!(next(&mut changes).await, Change::JobCreated);
}
