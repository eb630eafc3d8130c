//! One destination's worker loop: claim what is due within its concurrency, attempt each,
//! record the outcome with the planner's decision, and release leases at shutdown.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use super::breaker::{Allowance, Breaker};
use super::plan::{Decision, PlanInput, plan_next};
use super::requests::{Loaded, Requests};
use super::{Destination, Outbound};
use crate::config::DestinationConfig;
use crate::domain::{Attempt, AttemptDetail, Name, Ordering, Verdict, now_millis};
use crate::store::{
    AttemptRecord, ClaimRequest, ClaimedDelivery, Lease, NextState, Store, StoredRequest,
};

/// How often an idle worker looks at the store anyway (changes made by other processes,
/// such as `hookrelay replay`, do not wake it).
const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub struct WorkerContext {
    pub name: Name,
    pub config: DestinationConfig,
    pub destination: Arc<dyn Destination>,
    pub store: Arc<dyn Store>,
    pub waker: Arc<Notify>,
    pub shutdown: CancellationToken,
    pub grace: Duration,
    pub lease_owner: String,
    pub requests: Arc<Requests>,
    pub breaker: Mutex<Breaker>,
    /// Mirrors the breaker's state for `/metrics`.
    pub breaker_open: Arc<AtomicBool>,
    pub control: Arc<super::DestinationControl>,
}

impl WorkerContext {
    fn lease(&self) -> Duration {
        // Longer than the timeout, so a live attempt never loses its lease.
        self.config.timeout * 2 + Duration::from_secs(5)
    }
}

/// Deliveries this worker holds, so a shutdown can give them back.
type Leases = Arc<Mutex<HashSet<Lease>>>;

pub async fn run(ctx: Arc<WorkerContext>) {
    let slots = match ctx.config.ordering {
        Ordering::Parallel | Ordering::Latest => ctx.config.concurrency,
        Ordering::Fifo => 1,
    };
    let permits = Arc::new(Semaphore::new(slots));
    let finished = Arc::new(Notify::new());
    let leases: Leases = Arc::default();
    let mut attempts = JoinSet::new();
    let mut waiting_for_memory = false;
    loop {
        if ctx.shutdown.is_cancelled() {
            break;
        }
        while attempts.try_join_next().is_some() {}
        if ctx.control.is_paused() {
            // Held: nothing is claimed; a resume (or new work) wakes the worker.
            tokio::select! {
                _ = ctx.waker.notified() => {}
                _ = finished.notified() => {}
                _ = ctx.shutdown.cancelled() => break,
            }
            continue;
        }
        let mut free = permits.available_permits();
        let mut wait = POLL_INTERVAL;
        match ctx.breaker.lock().unwrap().allowance(Instant::now()) {
            Allowance::Any => {}
            Allowance::Probe => free = free.min(1),
            Allowance::WaitUntil(at) => {
                free = 0;
                wait = at
                    .saturating_duration_since(Instant::now())
                    .min(POLL_INTERVAL);
            }
        }
        if free > 0 {
            match ctx.store.claim(claim_request(&ctx, free)).await {
                Ok(claimed) => {
                    let got = claimed.deliveries.len();
                    let mut give_back = Vec::new();
                    for delivery in claimed.deliveries {
                        // Once memory ran out, the rest go back without waiting in line.
                        let loaded = match give_back.is_empty() {
                            true => load(&ctx, &delivery).await,
                            false => None,
                        };
                        let Some(loaded) = loaded else {
                            give_back.push(delivery.lease.clone());
                            continue;
                        };
                        let permit = permits.clone().try_acquire_owned().expect("counted free");
                        leases.lock().unwrap().insert(delivery.lease.clone());
                        let (ctx, leases, finished) =
                            (ctx.clone(), leases.clone(), finished.clone());
                        attempts.spawn(async move {
                            attempt(&ctx, &delivery, &loaded.request).await;
                            drop(loaded);
                            leases.lock().unwrap().remove(&delivery.lease);
                            drop(permit);
                            finished.notify_one();
                        });
                    }
                    if !give_back.is_empty() {
                        // Memory is spent: these wait, unattempted, until some is freed.
                        waiting_for_memory = true;
                        if let Err(err) = ctx.store.release(give_back, now_millis()).await {
                            tracing::warn!(destination = %ctx.name, error = %err, "could not give back deliveries; their leases expire");
                        }
                    } else if got == free {
                        // Full: the next chance comes when an attempt finishes.
                        wait = POLL_INTERVAL;
                    } else if let Some(due) = claimed.next_due {
                        // The claim took everything due; nothing else is before `due`
                        // (new events wake us through the waker).
                        let until = (due - now_millis()).max(5) as u64;
                        wait = Duration::from_millis(until).min(POLL_INTERVAL);
                    }
                }
                Err(err) => {
                    tracing::warn!(destination = %ctx.name, error = %err, "claim failed; retrying");
                }
            }
        }
        if waiting_for_memory {
            waiting_for_memory = false;
            tokio::select! {
                _ = ctx.requests.freed() => {}
                _ = finished.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = ctx.shutdown.cancelled() => break,
            }
            continue;
        }
        tokio::select! {
            _ = ctx.waker.notified() => {}
            _ = finished.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.shutdown.cancelled() => break,
        }
    }
    drain(&ctx, attempts, &leases).await;
}

fn claim_request(ctx: &WorkerContext, limit: usize) -> ClaimRequest {
    let now = now_millis();
    ClaimRequest {
        destination: ctx.name.clone(),
        ordering: ctx.config.ordering,
        limit,
        now,
        lease_until: now + ctx.lease().as_millis() as i64,
        lease_owner: ctx.lease_owner.clone(),
    }
}

/// One step of delivery, awaited to the end: claims what is due now (up to the destination's
/// concurrency; pause and breaker are not consulted), attempts it, records the outcomes, and
/// says how many were attempted. The worker loop runs the same claim, load and attempt
/// pipelined; tests drive delivery with this step instead of waiting on the loop.
pub async fn deliver_due(ctx: &WorkerContext) -> usize {
    let limit = match ctx.config.ordering {
        Ordering::Parallel | Ordering::Latest => ctx.config.concurrency,
        Ordering::Fifo => 1,
    };
    let claimed = match ctx.store.claim(claim_request(ctx, limit)).await {
        Ok(claimed) => claimed.deliveries,
        Err(err) => {
            tracing::warn!(destination = %ctx.name, error = %err, "claim failed");
            return 0;
        }
    };
    let mut attempted = 0;
    for delivery in claimed {
        match load(ctx, &delivery).await {
            Some(loaded) => {
                attempt(ctx, &delivery, &loaded.request).await;
                attempted += 1;
            }
            None => {
                let _ = ctx.store.release(vec![delivery.lease], now_millis()).await;
            }
        }
    }
    attempted
}

/// Lets in-flight attempts finish within the grace period, then gives the rest back.
async fn drain(ctx: &WorkerContext, mut attempts: JoinSet<()>, leases: &Leases) {
    let deadline = tokio::time::Instant::now() + ctx.grace;
    while !attempts.is_empty() {
        match tokio::time::timeout_at(deadline, attempts.join_next()).await {
            Ok(_) => {}
            Err(_) => {
                attempts.abort_all();
                while attempts.join_next().await.is_some() {}
            }
        }
    }
    let held: Vec<Lease> = leases.lock().unwrap().drain().collect();
    if held.is_empty() {
        return;
    }
    let count = held.len();
    match ctx.store.release(held, now_millis()).await {
        Ok(()) => tracing::info!(destination = %ctx.name, count, "released unfinished deliveries"),
        Err(err) => tracing::warn!(
            destination = %ctx.name, error = %err,
            "could not release leases; they expire on their own"
        ),
    }
}

/// The delivery's stored request, shared with other destinations; `None` when the memory
/// budget is spent (or the store failed), and the delivery must be given back.
async fn load(ctx: &WorkerContext, delivery: &ClaimedDelivery) -> Option<Arc<Loaded>> {
    match ctx
        .requests
        .get(&delivery.event_id, delivery.body_len)
        .await
    {
        Ok(loaded) => loaded,
        Err(err) => {
            tracing::warn!(delivery = %delivery.id, error = %err, "could not load the event");
            None
        }
    }
}

/// Records an attempt that hookrelay's own stop cut off, and what follows by
/// `on_interrupt`: another try (by the retry policy) or dead at once.
async fn record_interrupted(ctx: &WorkerContext, delivery: &ClaimedDelivery) {
    let now = now_millis();
    let next = match ctx.config.on_interrupt {
        crate::domain::OnInterrupt::Dead => NextState::Dead(
            "interrupted: hookrelay stopped during the attempt (on_interrupt = \"dead\")".into(),
        ),
        crate::domain::OnInterrupt::Retry => {
            let input = PlanInput {
                attempt: delivery.attempts + 1,
                verdict: Verdict::Interrupted,
                retry_after: None,
                now,
                window_start: delivery.window_start,
                jitter: fastrand::f64(),
            };
            match plan_next(&ctx.config.retry, &input) {
                Decision::RetryAt(at) => NextState::RetryAt(at),
                Decision::Succeeded => NextState::RetryAt(now),
                Decision::GiveUp(reason) => NextState::Dead(reason.to_string()),
            }
        }
    };
    tracing::warn!(delivery = %delivery.id, destination = %ctx.name, "an attempt was cut off when hookrelay stopped; recorded as interrupted");
    crate::telemetry::get().attempt(ctx.name.as_str(), Verdict::Interrupted, "interrupted");
    let record = AttemptRecord {
        lease: delivery.lease.clone(),
        attempt: Attempt {
            started_at: now,
            duration_ms: 0,
            verdict: Verdict::Interrupted,
            class: "interrupted".into(),
            detail: AttemptDetail::failed(
                "interrupted",
                "interrupted: hookrelay stopped during this attempt".into(),
            ),
        },
        next,
    };
    if let Err(err) = ctx.store.complete(record).await {
        tracing::error!(delivery = %delivery.id, error = %err, "could not record the interruption");
    }
}

async fn attempt(ctx: &WorkerContext, delivery: &ClaimedDelivery, request: &StoredRequest) {
    if delivery.interrupted {
        return record_interrupted(ctx, delivery).await;
    }
    let number = delivery.attempts + 1;
    let started_at = now_millis();
    let clock = Instant::now();
    let outcome = ctx
        .destination
        .deliver(&Outbound {
            delivery_id: delivery.id.as_str(),
            attempt: number,
            request,
        })
        .await;
    let duration_ms = clock.elapsed().as_millis() as i64;
    let destination_failed = outcome.destination_down;
    let (changed, open) = {
        let mut breaker = ctx.breaker.lock().unwrap();
        let changed = breaker.record(destination_failed, Instant::now());
        let open = breaker.is_open();
        // Stored under the lock, so two attempts finishing together cannot leave it stale.
        ctx.breaker_open.store(open, AtomicOrdering::Relaxed);
        (changed, open)
    };
    if changed {
        if open {
            tracing::warn!(destination = %ctx.name, "circuit breaker open: only probing until a delivery succeeds");
        } else {
            tracing::info!(destination = %ctx.name, "circuit breaker closed: delivering again");
        }
    }
    let telemetry = crate::telemetry::get();
    telemetry.attempt(ctx.name.as_str(), outcome.verdict, outcome.class);
    if outcome.delivered() {
        let waited = (now_millis() - request.received_at).max(0) as f64 / 1000.0;
        telemetry
            .delivered_seconds
            .get_or_create(&crate::telemetry::DestinationLabel {
                destination: ctx.name.as_str().to_owned(),
            })
            .observe(waited);
    }
    let decision = plan_next(
        &ctx.config.retry,
        &PlanInput {
            attempt: number,
            verdict: outcome.verdict,
            retry_after: outcome.retry_after,
            now: now_millis(),
            window_start: delivery.window_start,
            jitter: fastrand::f64(),
        },
    );
    let next = match decision {
        Decision::Succeeded => NextState::Succeeded,
        Decision::RetryAt(at) => NextState::RetryAt(at),
        Decision::GiveUp(reason) => {
            tracing::warn!(delivery = %delivery.id, destination = %ctx.name, %reason, "delivery is dead");
            NextState::Dead(reason.to_string())
        }
    };
    tracing::info!(
        delivery = %delivery.id,
        event = %delivery.event_id,
        destination = %ctx.name,
        attempt = number,
        verdict = %outcome.verdict,
        outcome = outcome.class,
        summary = %outcome.detail.summary,
        error = outcome.detail.error.as_deref(),
        ms = duration_ms,
        "attempt"
    );
    let record = AttemptRecord {
        lease: delivery.lease.clone(),
        attempt: Attempt {
            started_at,
            duration_ms,
            verdict: outcome.verdict,
            class: outcome.class.to_owned(),
            detail: outcome.detail,
        },
        next,
    };
    if let Err(err) = ctx.store.complete(record).await {
        // The lease expires and the delivery is tried again: at-least-once holds.
        tracing::error!(delivery = %delivery.id, error = %err, "could not record attempt");
    }
}
