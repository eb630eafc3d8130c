//! Inspection and control: paging while events arrive, what a bulk dry run counts equals what
//! the real run changes, cancel, pause, retention.

use super::{Backend, done_with, event};
use crate::domain::{DeliveryState, Ordering};
use crate::store::{
    BulkAction, BulkScope, CancelOutcome, ClaimRequest, Filter, JobProgress, NextState,
};

fn claim_all(destination: &str, now: i64) -> ClaimRequest {
    ClaimRequest {
        destination: crate::domain::Name::parse(destination).unwrap(),
        ordering: Ordering::Parallel,
        limit: 1000,
        now,
        lease_until: now + 1_000,
        lease_owner: "test".into(),
        durable: false,
    }
}

pub async fn pages_never_skip_or_repeat_while_events_arrive(backend: &Backend) {
    let store = backend.store();
    for at in 0..25 {
        store.insert_event(event(None, &["a"], at)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_events(Filter::default(), after.clone(), 10)
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|e| e.id.clone()));
        // Newer events arriving between pages must not shift what comes next.
        store.insert_event(event(None, &["a"], 100)).await.unwrap();
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 25);
    let first = &store
        .list_events(Filter::default(), None, 1)
        .await
        .unwrap()
        .items[0];
    assert_eq!(first.classification.branch.as_deref(), Some("main"));
    assert_eq!(first.deliveries.len(), 1);
    let by_ref = Filter {
        git_ref: Some("refs/heads/main".into()),
        project: Some("group/app".into()),
        sender: Some("jsmith".into()),
        ..Filter::default()
    };
    assert_eq!(
        store
            .list_events(by_ref, None, 100)
            .await
            .unwrap()
            .items
            .len(),
        28
    );
    let other = Filter {
        git_ref: Some("dev".into()),
        ..Filter::default()
    };
    let someone_else = Filter {
        sender: Some("root".into()),
        ..Filter::default()
    };
    let by_someone_else = store.list_events(someone_else, None, 100).await.unwrap();
    assert!(by_someone_else.items.is_empty());
    let by_body = |text: &str| Filter {
        body_contains: Some(text.into()),
        ..Filter::default()
    };
    let holding = store
        .list_events(by_body("\"not\""), None, 100)
        .await
        .unwrap();
    assert_eq!((holding.items.len(), holding.looked_back_to), (28, None));
    let absent = store
        .list_events(by_body("absent"), None, 100)
        .await
        .unwrap();
    assert!(
        absent.items.is_empty() && absent.next.is_none(),
        "{:?} {:?} {}",
        absent.next,
        absent.looked_back_to,
        absent.items.len()
    );
    assert!(
        store
            .list_events(other, None, 100)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub async fn bulk_replay_changes_exactly_what_the_dry_run_counted(backend: &Backend) {
    let store = backend.store();
    for at in 0..30 {
        store
            .insert_event(event(None, &["a", "b"], at))
            .await
            .unwrap();
    }
    for destination in ["a", "b"] {
        let claimed = store.claim(claim_all(destination, 50)).await.unwrap();
        for delivery in &claimed.deliveries {
            let next = NextState::Dead("retry limit reached (max_attempts)".into());
            store.complete(done_with(delivery, next, 60)).await.unwrap();
        }
    }
    let scope = BulkScope {
        action: BulkAction::Replay,
        filter: Filter {
            state: Some(DeliveryState::Dead),
            destination: Some("a".into()),
            ..Filter::default()
        },
        as_of: 70,
        snapshot: None,
    };
    let (count, examples, snapshot) = store.bulk_count(scope.clone(), 3).await.unwrap();
    assert_eq!((count, examples.len()), (30, 3));
    let scope = BulkScope {
        snapshot: Some(snapshot),
        ..scope
    };
    assert_eq!(
        examples[0].dead_reason.as_deref(),
        Some("retry limit reached (max_attempts)")
    );
    // Arriving after the dry run: outside its snapshot, so not replayed.
    store.insert_event(event(None, &["a"], 80)).await.unwrap();
    store
        .create_job("job_1".into(), scope.clone(), count, 90)
        .await
        .unwrap();
    let job = store.claim_job("one", 90, 1_000).await.unwrap().unwrap();
    assert!(
        store.claim_job("two", 91, 1_000).await.unwrap().is_none(),
        "a held job is not handed out twice"
    );
    let mut changed = 0;
    // A runner that stops after two steps: its position is on record.
    for _ in 0..2 {
        match store.job_step(&job, 7, 90, 1_000).await.unwrap() {
            JobProgress::Continues { changed: n } => changed += n,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(changed, 14);
    // Its lease runs out; another runner takes the job over and the first is fenced off.
    let taken = store.claim_job("two", 1_001, 2_000).await.unwrap().unwrap();
    assert_eq!(taken.id, "job_1");
    assert_eq!(
        store.job_step(&job, 7, 1_001, 2_000).await.unwrap(),
        JobProgress::Lost
    );
    loop {
        match store.job_step(&taken, 7, 1_002, 2_000).await.unwrap() {
            JobProgress::Continues { changed: n } => changed += n,
            JobProgress::Finished { changed: n } => {
                changed += n;
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(changed, 30, "each matching delivery changed once");
    let job = store.job("job_1").await.unwrap().unwrap();
    assert_eq!((job.matched, job.changed, job.waiting), (30, 30, 30));
    assert_eq!(job.finished_at, Some(1_002));
    assert_eq!(job.state, crate::store::JobState::Finished);
    assert!(
        store
            .claim_job("three", 3_000, 4_000)
            .await
            .unwrap()
            .is_none()
    );
    let dead_b = Filter {
        state: Some(DeliveryState::Dead),
        destination: Some("b".into()),
        ..Filter::default()
    };
    assert_eq!(
        store
            .list_deliveries(dead_b, None, 100)
            .await
            .unwrap()
            .items
            .len(),
        30
    );
    let stats = store.destination_stats().await.unwrap();
    let a = stats.iter().find(|s| s.name == "a").unwrap();
    assert_eq!((a.pending, a.dead), (31, 0));
    assert!(a.last_failure.is_some());
}

pub async fn cancel_stops_waiting_deliveries_only_and_pauses_are_kept(backend: &Backend) {
    let store = backend.store();
    store
        .insert_event(event(None, &["a", "b"], 1))
        .await
        .unwrap();
    let page = store
        .list_deliveries(Filter::default(), None, 10)
        .await
        .unwrap();
    let (first, second) = (&page.items[0], &page.items[1]);
    assert_eq!(
        store.cancel(&first.id, 2).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        store.cancel(&first.id, 3).await.unwrap(),
        CancelOutcome::Finished(DeliveryState::Cancelled)
    );
    store
        .claim(claim_all(&second.destination, 4))
        .await
        .unwrap();
    assert_eq!(
        store.cancel(&second.id, 5).await.unwrap(),
        CancelOutcome::InFlight
    );
    store.set_paused("a", true, 6).await.unwrap();
    store.set_paused("a", false, 7).await.unwrap();
    store.set_paused("c", true, 8).await.unwrap();
    let stats = store.destination_stats().await.unwrap();
    let paused: Vec<_> = stats.iter().map(|s| (s.name.as_str(), s.paused)).collect();
    assert_eq!(paused, [("a", Some(false)), ("b", None), ("c", Some(true))]);
}

pub async fn retention_removes_old_finished_events_keeps_dead_longer_and_dedup_still_works(
    backend: &Backend,
) {
    use crate::domain::Retention;
    use std::time::Duration;
    let store = backend.store();
    let hour = 3_600_000;
    // An old success, an old dead one, an old one still waiting, and a recent success.
    store
        .insert_event(event(Some("ok-key"), &["a"], 0))
        .await
        .unwrap();
    store.insert_event(event(None, &["b"], 1)).await.unwrap();
    store.insert_event(event(None, &["c"], 2)).await.unwrap();
    store
        .insert_event(event(None, &["a"], 10 * hour))
        .await
        .unwrap();
    for (destination, next) in [
        ("a", NextState::Succeeded),
        (
            "b",
            NextState::Dead("retry limit reached (max_attempts)".into()),
        ),
    ] {
        let claimed = store
            .claim(claim_all(destination, 10 * hour))
            .await
            .unwrap();
        for delivery in &claimed.deliveries {
            let at = if delivery.attempts == 0 { 5 } else { 10 * hour };
            store
                .complete(done_with(delivery, next.clone(), at))
                .await
                .unwrap();
        }
    }
    let policy = Retention {
        succeeded: Duration::from_secs(3600),
        dead: Duration::from_secs(24 * 3600),
        interval: Duration::from_secs(60),
    };
    let now = 11 * hour;
    let mut after = None;
    let mut pruned = 0;
    loop {
        let step = store.prune_step(policy, after, now).await.unwrap();
        pruned += step.events_pruned;
        match step.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let left = store
        .list_events(Filter::default(), None, 100)
        .await
        .unwrap()
        .items;
    let kept: Vec<_> = left
        .iter()
        .map(|e| e.deliveries[0].destination.clone())
        .collect();
    // The two successes finished at 5 ms and 10 h: only the first is an hour old.
    assert_eq!(
        (pruned, kept),
        (1, vec!["a".to_owned(), "c".to_owned(), "b".to_owned()])
    );
    // The pruned event's sender id is still recognised inside the dedup window.
    let again = store
        .insert_event(event(Some("ok-key"), &["a"], now))
        .await
        .unwrap();
    assert!(
        again.duplicate,
        "a repeat of a pruned event was accepted as new"
    );
}

/// Once every event has been pruned (a quiet week), a new event and its repeat are still one
/// event: numbering that starts again must not confuse the dedup window.
pub async fn a_repeat_is_recognised_after_every_older_event_was_pruned(backend: &Backend) {
    use crate::domain::{DEDUP_WINDOW_MS, Retention};
    use std::time::Duration;
    let store = backend.store();
    for key in ["old-1", "old-2", "old-3"] {
        store
            .insert_event(event(Some(key), &["a"], 0))
            .await
            .unwrap();
    }
    let claimed = store.claim(claim_all("a", 1)).await.unwrap();
    for delivery in &claimed.deliveries {
        store
            .complete(done_with(delivery, NextState::Succeeded, 1))
            .await
            .unwrap();
    }
    let later = DEDUP_WINDOW_MS + 24 * 3_600_000;
    let policy = Retention {
        succeeded: Duration::from_secs(3600),
        dead: Duration::from_secs(3600),
        interval: Duration::from_secs(60),
    };
    let mut after = None;
    while let Some(next) = store.prune_step(policy, after, later).await.unwrap().next {
        after = Some(next);
    }
    let left = store
        .list_events(Filter::default(), None, 10)
        .await
        .unwrap();
    assert!(left.items.is_empty(), "every old event was pruned");
    let first = store
        .insert_event(event(Some("new"), &["a"], later))
        .await
        .unwrap();
    assert!(!first.duplicate);
    // A later commit moves the window past the old events' arrival.
    store
        .insert_event(event(Some("other"), &["a"], later + 1000))
        .await
        .unwrap();
    let repeat = store
        .insert_event(event(Some("new"), &["a"], later + 2000))
        .await
        .unwrap();
    assert!(repeat.duplicate, "the repeat is recognised: {repeat:?}");
    assert_eq!(repeat.event_id, first.event_id);
}
