//! The `Store` contract as tests: every case here is written against the trait alone and runs
//! on every backend (`store_conformance!` in each backend's tests), so a guarantee one backend
//! keeps by construction (SQLite's single writer) is one the next must keep too.

pub mod changes;
pub mod claims;
pub mod jobs;
pub mod operator;
pub mod races;
pub mod sessions;

use std::sync::Arc;

use crate::domain::Ordering;
use crate::domain::{EventId, Name};
use crate::store::{AttemptRecord, ClaimRequest, ClaimedDelivery, NewEvent, NextState, Store};

/// A fresh, empty store for one case, and whatever keeps it alive (a temporary directory, a
/// schema to drop).
pub struct Backend {
    store: Arc<dyn Store>,
    second: Arc<dyn Store>,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl Backend {
    /// `second` is another handle on the same data, as another replica holds it; a backend
    /// that allows one process per store (SQLite) passes the same handle twice.
    pub fn new(
        store: Arc<dyn Store>,
        second: Arc<dyn Store>,
        keep: impl std::any::Any + Send + Sync,
    ) -> Self {
        Self {
            store,
            second,
            _keep: Box::new(keep),
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn shared(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    pub fn second_handle(&self) -> Arc<dyn Store> {
        self.second.clone()
    }
}

pub fn name(raw: &str) -> Name {
    Name::parse(raw).unwrap()
}

pub fn event(key: Option<&str>, destinations: &[&str], at: i64) -> NewEvent {
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
            sender: Some("jsmith".into()),
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

pub fn claim_request(
    destination: &str,
    ordering: Ordering,
    limit: usize,
    now: i64,
) -> ClaimRequest {
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

pub fn done_with(claimed: &ClaimedDelivery, next: NextState, at: i64) -> AttemptRecord {
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
                response_headers: Some("content-type: text/plain\n".into()),
            },
        },
        next,
    }
}

/// Runs every case of the contract against one backend. `$open` is an expression (evaluated
/// for each case) whose future gives a fresh, empty [`Backend`], or `None` to skip.
macro_rules! store_conformance {
    ($open:expr) => {
        $crate::store::conformance::cases! { $open;
            claims::duplicates_return_the_original_and_add_no_deliveries,
            claims::claims_lease_and_completion_moves_state,
            claims::expired_leases_are_claimed_again,
            claims::fifo_hands_out_only_the_head,
            claims::replay_makes_a_dead_delivery_due_and_refuses_in_flight_ones,
            claims::a_burst_runs_the_first_and_the_newest_and_supersedes_the_rest,
            operator::pages_never_skip_or_repeat_while_events_arrive,
            operator::bulk_replay_changes_exactly_what_the_dry_run_counted,
            jobs::a_cancelled_job_takes_no_more_steps_and_keeps_what_it_changed,
            sessions::sessions_end_when_idle_expired_or_signed_out,
            operator::cancel_stops_waiting_deliveries_only_and_pauses_are_kept,
            operator::retention_removes_old_finished_events_keeps_dead_longer_and_dedup_still_works,
            operator::a_repeat_is_recognised_after_every_older_event_was_pruned,
            changes::the_feed_announces_due_destinations_pauses_and_jobs_after_they_commit,
            races::two_handles_claiming_one_destination_at_once_never_share_a_delivery,
            races::two_handles_claiming_a_fifo_destination_at_once_get_one_head,
            races::a_replay_racing_a_claim_leaves_one_live_lease,
            races::latest_racing_a_new_arrival_never_runs_two_for_one_key,
            races::repeats_of_one_sender_id_at_once_make_one_event,
            races::listings_show_commits_in_order_while_two_handles_ingest,
        }
    };
}

macro_rules! cases {
    ($open:expr; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                // `None`: the backend is not reachable here, and the reason was printed.
                let Some(backend) = $open.await else {
                    return;
                };
                // A case that hangs fails, saying which, instead of stalling the run.
                let case = $crate::store::conformance::$module::$case(&backend);
                if tokio::time::timeout(std::time::Duration::from_secs(120), case).await.is_err() {
                    panic!("{} did not finish in 120 s", stringify!($case));
                }
            }
        )*
    };
}

pub(crate) use {cases, store_conformance};
