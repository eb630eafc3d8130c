//! One attempt: the destination called, the breaker and the metrics told, the retry
//! planner's decision made, and the record (verdict, detail, what follows) stored.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Instant;

use super::Outbound;
use super::plan::{Decision, PlanInput, plan_next};
use super::worker::WorkerContext;
use crate::domain::{Attempt, AttemptDetail, UnixMillis, Verdict, now_millis};
use crate::notify::About;
use crate::store::{AttemptRecord, ClaimedDelivery, NextState, StoredRequest};

/// An attempt's record, and what to tell once it is stored: that the delivery is dead.
pub(super) struct Attempted {
    pub record: AttemptRecord,
    pub dead: Option<About>,
}

/// The failure in a few words for a notification: the summary, and the error when it adds to it.
fn failure_reason(detail: &AttemptDetail) -> String {
    match &detail.error {
        Some(error) if error.contains(detail.summary.as_str()) => error.clone(),
        Some(error) => format!("{}: {error}", detail.summary),
        None => detail.summary.clone(),
    }
}

fn dead_about(
    ctx: &WorkerContext,
    delivery: &ClaimedDelivery,
    request: &StoredRequest,
    record: &AttemptRecord,
) -> Option<About> {
    let NextState::Dead(reason) = &record.next else {
        return None;
    };
    ctx.tell.as_ref()?;
    Some(About::Dead {
        destination: ctx.name.as_str().to_owned(),
        delivery_id: delivery.id.as_str().to_owned(),
        event_id: delivery.event_id.as_str().to_owned(),
        source: request.source.as_str().to_owned(),
        event_type: request.event_type.clone(),
        attempts: delivery.attempts + 1,
        reason: format!(
            "{reason}; last attempt: {}",
            failure_reason(&record.attempt.detail)
        ),
    })
}

/// The record of an attempt that hookrelay's own stop cut off, and what follows by
/// `on_interrupt`: another try (by the retry policy) or dead at once.
fn interrupted(ctx: &WorkerContext, delivery: &ClaimedDelivery) -> AttemptRecord {
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
    AttemptRecord {
        lease: delivery.lease.clone(),
        attempt: Attempt {
            started_at: now,
            duration_ms: 0,
            verdict: Verdict::Interrupted,
            class: "interrupted".into(),
            detail: AttemptDetail::failed(
                "interrupted",
                "interrupted: hookrelay stopped while this delivery was claimed (in flight or about to start)".into(),
            ),
        },
        next,
    }
}

/// Attempts the delivery (or records the interruption a previous process left) and returns
/// the record to store; the destination, the breaker and the metrics have been told.
pub(super) async fn attempt(
    ctx: &WorkerContext,
    delivery: &ClaimedDelivery,
    request: &StoredRequest,
) -> Attempted {
    let record = match delivery.interrupted {
        true => interrupted(ctx, delivery),
        false => attempt_now(ctx, delivery, request).await,
    };
    let dead = dead_about(ctx, delivery, request, &record);
    Attempted { record, dead }
}

async fn attempt_now(
    ctx: &WorkerContext,
    delivery: &ClaimedDelivery,
    request: &StoredRequest,
) -> AttemptRecord {
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
        // Other replicas' breakers for this destination follow (a no-op on one process).
        let (store, name) = (ctx.store.clone(), ctx.name.as_str().to_owned());
        tokio::spawn(async move { store.share_breaker(&name, open).await });
        if open {
            tracing::warn!(destination = %ctx.name, "circuit breaker open: only probing until a delivery succeeds");
        } else {
            tracing::info!(destination = %ctx.name, "circuit breaker closed: delivering again");
        }
        if let Some(tell) = &ctx.tell {
            let destination = ctx.name.as_str().to_owned();
            tell.tell(match open {
                true => About::Failing {
                    destination,
                    reason: failure_reason(&outcome.detail),
                },
                false => About::Recovered { destination },
            });
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
    AttemptRecord {
        lease: delivery.lease.clone(),
        attempt: Attempt {
            started_at,
            duration_ms,
            verdict: outcome.verdict,
            class: outcome.class.to_owned(),
            detail: outcome.detail,
        },
        next,
    }
}

/// Stores an attempt's record. If that fails, the delivery stays leased until the lease
/// expires and is then tried again: at-least-once holds, with the same `webhook-id`.
/// A dead delivery is told only once its record is stored.
pub(super) async fn store(ctx: &WorkerContext, delivery: &ClaimedDelivery, attempted: Attempted) {
    match ctx.store.complete(attempted.record).await {
        Ok(()) => {
            if let (Some(tell), Some(dead)) = (&ctx.tell, attempted.dead) {
                tell.tell(dead);
            }
        }
        Err(err) => {
            tracing::error!(delivery = %delivery.id, error = %err, "could not record the attempt; it is repeated once its lease expires");
        }
    }
}

/// When the record asks for the next try, if it does.
pub(super) fn retry_at(attempted: &Attempted) -> Option<UnixMillis> {
    match attempted.record.next {
        NextState::RetryAt(at) => Some(at),
        NextState::Succeeded | NextState::Dead(_) => None,
    }
}
