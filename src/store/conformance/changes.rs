//! The change feed: what a commit changed reaches every subscriber, including one on another
//! handle (another replica), and bookkeeping or a duplicate announces nothing.

use std::time::Duration;

use tokio::sync::broadcast::Receiver;

use super::{Backend, claim_request, done_with, event, name};
use crate::domain::{DeliveryState, Ordering};
use crate::store::{BulkAction, BulkScope, Change, Filter, NextState, ReplayOutcome};

/// The next change that says something new. A backend may announce `AnyDue` at any time
/// (a poll behind its notifications) and a change more than once (seen by its notification
/// and by its poll): subscribers act on changes, so a repeat costs only a wake-up.
async fn next(changes: &mut Receiver<Change>, previous: &mut Option<Change>) -> Change {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let change = match tokio::time::timeout_at(deadline, changes.recv()).await {
            Ok(change) => change.expect("the feed is open and kept up"),
            Err(_) => panic!("nothing new was announced within 10 s (after {previous:?})"),
        };
        if change == Change::AnyDue || previous.as_ref() == Some(&change) {
            continue;
        }
        *previous = Some(change.clone());
        return change;
    }
}

pub async fn the_feed_announces_due_destinations_pauses_and_jobs_after_they_commit(
    backend: &Backend,
) {
    let store = backend.store();
    let mut changes = backend.second_handle().changes();
    let mut seen = None;
    store
        .insert_event(event(Some("k"), &["b", "a"], 1))
        .await
        .unwrap();
    assert_eq!(
        next(&mut changes, &mut seen).await,
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
        next(&mut changes, &mut seen).await,
        Change::Paused("a".into(), true),
        "a duplicate, a claim or a record was announced"
    );
    assert_eq!(
        store.replay(&claimed[0].id, 6).await.unwrap(),
        ReplayOutcome::Scheduled
    );
    assert_eq!(
        next(&mut changes, &mut seen).await,
        Change::Due(vec![name("a")])
    );
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
    assert_eq!(next(&mut changes, &mut seen).await, Change::JobCreated);
}
