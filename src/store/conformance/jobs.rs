//! Bulk jobs an operator stops: no step runs after the cancel commits, what was changed stays
//! changed, and a finished or unknown job says so.

use super::{Backend, event};
use crate::domain::DeliveryState;
use crate::store::{BulkAction, BulkScope, Filter, JobCancel, JobProgress, JobState};

pub async fn a_cancelled_job_takes_no_more_steps_and_keeps_what_it_changed(backend: &Backend) {
    let store = backend.store();
    for at in 0..20 {
        store.insert_event(event(None, &["a"], at)).await.unwrap();
    }
    let scope = BulkScope {
        action: BulkAction::Cancel,
        filter: Filter {
            state: Some(DeliveryState::Pending),
            ..Filter::default()
        },
        as_of: 30,
        snapshot: None,
    };
    let (count, _, snapshot) = store.bulk_count(scope.clone(), 0).await.unwrap();
    let scope = BulkScope {
        snapshot: Some(snapshot),
        ..scope
    };
    store
        .create_job("job_c".into(), scope, count, 40)
        .await
        .unwrap();
    let job = store.claim_job("runner", 40, 1_000).await.unwrap().unwrap();
    assert_eq!(
        store.job_step(&job, 5, 41, 1_000).await.unwrap(),
        JobProgress::Continues { changed: 5 }
    );
    assert_eq!(
        store.cancel_job("job_c", 42).await.unwrap(),
        JobCancel::Cancelled
    );
    assert_eq!(
        store.job_step(&job, 5, 43, 1_000).await.unwrap(),
        JobProgress::Lost,
        "the runner's next step finds the job stopped"
    );
    assert!(
        store
            .claim_job("other", 2_000, 3_000)
            .await
            .unwrap()
            .is_none()
    );
    let view = store.job("job_c").await.unwrap().unwrap();
    assert_eq!(
        (view.state, view.changed, view.finished_at),
        (JobState::Cancelled, 5, Some(42))
    );
    let cancelled = Filter {
        state: Some(DeliveryState::Cancelled),
        ..Filter::default()
    };
    let page = store.list_deliveries(cancelled, None, 100).await.unwrap();
    assert_eq!(page.items.len(), 5, "what the job changed stays changed");
    assert_eq!(
        store.cancel_job("job_c", 44).await.unwrap(),
        JobCancel::Finished
    );
    assert_eq!(
        store.cancel_job("job_none", 44).await.unwrap(),
        JobCancel::NotFound
    );
}
