//! Leased background work: bulk jobs and retention sweeps are rows in the store with a lease,
//! taken and continued by whichever process runs them, never a task that lives only in the
//! request that started it. A runner takes unfinished jobs at start and whenever one is
//! created, and continues each from the position its last step recorded.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::domain::{Retention, UnixMillis, now_millis};
use crate::store::{Change, JobClaim, JobProgress, Store};

/// Deliveries one step changes: one short write transaction each, queued with ingest's.
pub const STEP: usize = 200;
/// How long a runner holds a job (or the sweep) without recording progress before another
/// may take it over; every step renews it.
const LEASE: Duration = Duration::from_secs(30);
/// How often an idle runner looks for jobs nobody holds (created elsewhere, or whose holder
/// died) besides being woken.
const POLL: Duration = Duration::from_secs(5);
/// How long a failed step (the store unavailable) waits before it is tried again.
const STEP_RETRY: Duration = Duration::from_secs(1);

/// What a runner needs besides the store.
pub struct Runner {
    pub store: Arc<dyn Store>,
    /// This process's owner id on leases.
    pub owner: String,
    /// A pause between two steps of a job (`server.bulk_step_pause`): leaves the disk to
    /// ingest during a large replay.
    pub pause: Duration,
    pub stop: CancellationToken,
}

fn lease_from(now: UnixMillis) -> UnixMillis {
    now + LEASE.as_millis() as i64
}

impl Runner {
    /// Runs jobs until `stop`: those left unfinished, and each new one the store's change
    /// feed announces (created through any process on the store).
    pub fn spawn(self) {
        tokio::spawn(async move { self.run().await });
    }

    async fn run(self) {
        let mut changes = self.store.changes();
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let now = now_millis();
            match self
                .store
                .claim_job(&self.owner, now, lease_from(now))
                .await
            {
                Ok(Some(job)) => {
                    tracing::info!(job = %job.id, "bulk job taken");
                    self.follow(&job).await;
                    continue;
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "could not look for bulk jobs"),
            }
            let poll = tokio::time::sleep(POLL);
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    change = changes.recv() => match change {
                        Ok(Change::JobCreated) | Err(RecvError::Lagged(_)) => break,
                        Ok(_) => continue,
                        Err(RecvError::Closed) => return,
                    },
                    _ = &mut poll => break,
                    _ = self.stop.cancelled() => return,
                }
            }
        }
    }

    /// Steps one job to its end, or until this process stops (the job's position is in the
    /// store: whoever takes it next continues from there).
    async fn follow(&self, job: &JobClaim) {
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let now = now_millis();
            match self.store.job_step(job, STEP, now, lease_from(now)).await {
                // The store announces the deliveries a step made due.
                Ok(JobProgress::Continues { .. }) => {}
                Ok(JobProgress::Finished { .. }) => {
                    tracing::info!(job = %job.id, "bulk job finished");
                    return;
                }
                Ok(JobProgress::Failed(_)) => return,
                Ok(JobProgress::Lost) => {
                    tracing::warn!(job = %job.id, "bulk job taken over by another runner");
                    return;
                }
                Err(err) => {
                    tracing::warn!(job = %job.id, error = %err, "bulk job step failed; trying again");
                    self.pause_for(STEP_RETRY).await;
                    continue;
                }
            }
            match self.pause.is_zero() {
                true => tokio::task::yield_now().await,
                false => self.pause_for(self.pause).await,
            }
        }
    }

    async fn pause_for(&self, pause: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = self.stop.cancelled() => {}
        }
    }
}

/// Retention: every `interval`, whoever holds the `retention` lease steps through the store
/// until nothing more is due, each step a short write of its own. The lease is taken at the
/// start of a sweep and renewed only once a third of it has passed, so a long sweep does not
/// add a write per step.
pub async fn sweep(
    store: Arc<dyn Store>,
    owner: String,
    policy: Retention,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(policy.interval) => {}
            _ = stop.cancelled() => return,
        }
        let mut after = None;
        let mut renew_at = None;
        while !stop.is_cancelled() {
            let now = now_millis();
            let held = match renew_at {
                Some(at) if now < at => Ok(true),
                _ => {
                    store
                        .take_lease("retention", &owner, now, lease_from(now))
                        .await
                }
            };
            match held {
                Ok(true) => {
                    if renew_at.is_none_or(|at| now >= at) {
                        renew_at = Some(now + LEASE.as_millis() as i64 / 3);
                    }
                }
                Ok(false) => {
                    tracing::debug!("another process sweeps retention");
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not take the retention lease; next sweep retries");
                    break;
                }
            }
            match store.prune_step(policy, after, now).await {
                Ok(step) => {
                    crate::telemetry::get()
                        .retention_pruned
                        .inc_by(step.events_pruned);
                    match step.next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "retention step failed; next sweep retries");
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
    }
}
