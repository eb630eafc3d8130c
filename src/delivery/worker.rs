//! One destination's worker loop: claims due deliveries ahead of need (for `parallel`, up
//! to three rounds of `concurrency` wait loaded while the slots are busy), loads a whole
//! claim's bodies in one read, attempts each in a slot, and hands the record to the store.
//! A `parallel` slot is free again as soon as the destination answered: its record commits
//! meanwhile, and the delivery stays leased until it has, so nobody else takes it. `fifo` and
//! `latest` wait for the record, because it decides what may be claimed next.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Destination;
use super::DestinationConfig;
use super::attempt;
use super::breaker::{Allowance, Breaker};
use super::requests::{Loaded, Requests};
use crate::domain::{Name, Ordering, UnixMillis, now_millis};
use crate::store::{ClaimRequest, ClaimedDelivery, Lease, Store, StoreError};

/// How often an idle worker looks at the store anyway: the backstop for a wake-up the change
/// feed could not carry (a follower that fell behind, a write no feed announced).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Time left on a lease, beyond the timeout, for an attempt to start under it.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

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
    pub breaker: Arc<Mutex<Breaker>>,
    /// Mirrors the breaker's state for `/metrics`.
    pub breaker_open: Arc<AtomicBool>,
    pub control: Arc<super::DestinationControl>,
    /// Where dead deliveries and breaker changes are told (notifications), if anywhere.
    pub tell: Option<crate::notify::Tell>,
}

impl WorkerContext {
    fn lease(&self) -> Duration {
        // Longer than the timeout, so a live attempt never loses its lease.
        self.config.timeout * 2 + Duration::from_secs(5)
    }
}

/// Deliveries this worker holds (claimed, waiting, in flight, or recording), so a shutdown
/// can give them back.
type Leases = Arc<Mutex<HashSet<Lease>>>;

/// A claimed delivery with its request loaded, waiting for a slot.
struct Ready {
    delivery: ClaimedDelivery,
    loaded: Arc<Loaded>,
    /// When the claim's lease runs out.
    lease_until: UnixMillis,
}

/// How many claimed deliveries may wait for a slot, per slot, beyond the free ones: enough
/// that the slots keep working while the next claim waits for a commit (shared with ingest's
/// fsyncs under load).
const AHEAD_PER_SLOT: usize = 3;

/// What one claim brought.
struct Fetched {
    ready: Vec<Ready>,
    asked: usize,
    claimed: usize,
    /// Some did not fit in the delivery memory and went back.
    gave_back: bool,
    next_due: Option<UnixMillis>,
}

fn slots(ctx: &WorkerContext) -> usize {
    match ctx.config.ordering {
        Ordering::Parallel | Ordering::Latest => ctx.config.concurrency,
        Ordering::Fifo => 1,
    }
}

pub async fn run(ctx: Arc<WorkerContext>) {
    let slots = slots(&ctx);
    // Only `parallel` claims ahead: for `fifo` and `latest` what is claimable next depends on
    // the outcome of what is in flight.
    // Nor does a destination whose interrupted attempts go dead: after a crash, a delivery
    // claimed ahead but never started would look interrupted, and go dead unattempted.
    let claim_ahead = ctx.config.ordering == Ordering::Parallel
        && ctx.config.on_interrupt == crate::domain::OnInterrupt::Retry;
    let permits = Arc::new(Semaphore::new(slots));
    let finished = Arc::new(Notify::new());
    let leases: Leases = Arc::default();
    let slots_state = Arc::new(Shared {
        recorders: Semaphore::new(slots),
        finished: finished.clone(),
        leases: leases.clone(),
        claim_ahead,
    });
    let mut attempts: JoinSet<Option<UnixMillis>> = JoinSet::new();
    let mut ready: VecDeque<Ready> = VecDeque::new();
    let mut claiming: Option<(JoinHandle<Result<Fetched, StoreError>>, bool)> = None;
    let mut claim_after = Instant::now();
    // Set by a wake-up that came while a claim was in flight: that claim may have read the
    // store before what woke us committed, so its answer must not put the next claim off
    // (it did, by up to a poll interval: seen as 1 s outliers under a steady load).
    let mut woken_while_claiming = false;
    let mut waiting_for_memory = false;
    // Probes the breaker granted whose delivery is not started yet.
    let mut probes = 0usize;
    loop {
        if ctx.shutdown.is_cancelled() {
            break;
        }
        while let Some(done) = attempts.try_join_next() {
            if let Ok(Some(at)) = done {
                claim_after = claim_after.min(instant_at(at));
            }
        }
        let paused = ctx.control.is_paused();
        let open = ctx.breaker.lock().unwrap().is_open();
        if !open {
            probes = 0;
        }
        if paused || (open && probes == 0) {
            // Held (paused) or only probing: what waits goes back, unattempted.
            give_back(&ctx, &mut ready, &leases).await;
        }
        if !paused && !ready.is_empty() {
            give_back_stale(&ctx, &mut ready, &leases).await;
        }
        while !paused && !ready.is_empty() && (!open || probes > 0) {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            probes = probes.saturating_sub(1);
            let next = ready.pop_front().expect("not empty");
            attempts.spawn(run_attempt(next, permit, slots_state.clone(), ctx.clone()));
        }
        let now = Instant::now();
        let mut wake_at = now + POLL_INTERVAL;
        if !paused && claiming.is_none() && now >= claim_after {
            let free = permits.available_permits();
            if !open {
                let want = match claim_ahead {
                    true => free + slots * AHEAD_PER_SLOT,
                    false => free,
                }
                .saturating_sub(ready.len());
                if want > 0 {
                    claiming = Some((
                        tokio::spawn(fetch(ctx.clone(), want, leases.clone())),
                        false,
                    ));
                }
            } else if free > 0 && ready.is_empty() {
                match ctx
                    .breaker
                    .lock()
                    .unwrap()
                    .allowance(std::time::Instant::now())
                {
                    Allowance::Probe => {
                        claiming =
                            Some((tokio::spawn(fetch(ctx.clone(), 1, leases.clone())), true));
                    }
                    Allowance::WaitUntil(at) => wake_at = wake_at.min(Instant::from_std(at)),
                    Allowance::Any => continue,
                }
            }
        }
        if claim_after > now {
            wake_at = wake_at.min(claim_after);
        }
        tokio::select! {
            fetched = async { (&mut claiming.as_mut().expect("guarded").0).await }, if claiming.is_some() => {
                let (_, probe) = claiming.take().expect("guarded");
                match fetched {
                    Ok(Ok(fetched)) => {
                        if probe {
                            probes = fetched.ready.len().min(1);
                        }
                        claim_after = match std::mem::take(&mut woken_while_claiming) {
                            true if !fetched.gave_back => Instant::now(),
                            _ => next_claim(&fetched),
                        };
                        waiting_for_memory = fetched.gave_back;
                        ready.extend(fetched.ready);
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(destination = %ctx.name, error = %err, "claim failed; retrying");
                        claim_after = Instant::now() + POLL_INTERVAL;
                    }
                    Err(err) => {
                        tracing::error!(destination = %ctx.name, error = %err, "claim task failed");
                        claim_after = Instant::now() + POLL_INTERVAL;
                    }
                }
            }
            _ = ctx.waker.notified() => {
                woken_while_claiming |= claiming.is_some();
                claim_after = Instant::now();
            }
            _ = finished.notified() => {
                if !claim_ahead {
                    claim_after = Instant::now();
                }
            }
            _ = ctx.requests.freed(), if waiting_for_memory => {
                waiting_for_memory = false;
                claim_after = Instant::now();
            }
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = ctx.shutdown.cancelled() => break,
        }
    }
    if let Some((claim, _)) = claiming {
        // Its leases are in `leases` already; what it loaded is dropped here.
        let _ = tokio::time::timeout(ctx.grace, claim).await;
    }
    drop(ready);
    drain(&ctx, attempts, &leases).await;
}

/// What the attempts of one worker share with its loop.
struct Shared {
    /// At most `slots` answered attempts wait for their record: what a crash can make
    /// repeat stays bounded (in flight plus these).
    recorders: Semaphore,
    finished: Arc<Notify>,
    leases: Leases,
    claim_ahead: bool,
}

/// One attempt in its slot, then its record. With claim-ahead the slot is given back as soon
/// as the destination answered; otherwise once the record is stored. Returns when the
/// delivery is next due, if it is.
async fn run_attempt(
    ready: Ready,
    slot: tokio::sync::OwnedSemaphorePermit,
    shared: Arc<Shared>,
    ctx: Arc<WorkerContext>,
) -> Option<UnixMillis> {
    let Ready {
        delivery, loaded, ..
    } = ready;
    let record = attempt::attempt(&ctx, &delivery, &loaded.request).await;
    drop(loaded);
    let retry_at = attempt::retry_at(&record);
    if shared.claim_ahead {
        let recording = shared.recorders.acquire().await;
        drop(slot);
        shared.finished.notify_one();
        attempt::store(&ctx, &delivery, record).await;
        drop(recording);
    } else {
        attempt::store(&ctx, &delivery, record).await;
        drop(slot);
        shared.finished.notify_one();
    }
    shared.leases.lock().unwrap().remove(&delivery.lease);
    retry_at
}

/// Gives back, in one write, the waiting claims whose lease could no longer cover an
/// attempt (they waited behind slow attempts): they are claimed afresh.
async fn give_back_stale(ctx: &WorkerContext, ready: &mut VecDeque<Ready>, leases: &Leases) {
    let starts_by = now_millis() + (ctx.config.timeout + LEASE_MARGIN).as_millis() as i64;
    if ready.iter().all(|r| r.lease_until >= starts_by) {
        return;
    }
    let (stale, fresh): (VecDeque<Ready>, VecDeque<Ready>) =
        ready.drain(..).partition(|r| r.lease_until < starts_by);
    *ready = fresh;
    release(
        ctx,
        stale.into_iter().map(|r| r.delivery.lease).collect(),
        leases,
    )
    .await;
}

/// When to claim again after a claim: at once if it got all it asked for (more may be
/// due), else when the next delivery is due (new events wake the worker sooner).
fn next_claim(fetched: &Fetched) -> Instant {
    if fetched.gave_back {
        // Memory is spent: the next claim waits until some is freed.
        return Instant::now() + POLL_INTERVAL;
    }
    match (fetched.claimed < fetched.asked, fetched.next_due) {
        (false, _) => Instant::now(),
        (true, Some(due)) => instant_at(due.max(now_millis() + 5)),
        (true, None) => Instant::now() + POLL_INTERVAL,
    }
}

/// The monotonic instant of a wall-clock time, at most a poll interval away.
fn instant_at(at: UnixMillis) -> Instant {
    let until = (at - now_millis()).clamp(0, POLL_INTERVAL.as_millis() as i64);
    Instant::now() + Duration::from_millis(until as u64)
}

/// Claims up to `limit`, then loads their requests in one read. What does not fit in the
/// delivery memory goes back at once, unattempted.
async fn fetch(
    ctx: Arc<WorkerContext>,
    limit: usize,
    leases: Leases,
) -> Result<Fetched, StoreError> {
    let request = claim_request(&ctx, limit);
    let claimed = ctx.store.claim(request.clone()).await?;
    let count = claimed.deliveries.len();
    leases
        .lock()
        .unwrap()
        .extend(claimed.deliveries.iter().map(|d| d.lease.clone()));
    let loaded = load(&ctx, &claimed.deliveries).await;
    let mut ready = Vec::with_capacity(count);
    let mut back = Vec::new();
    for (delivery, loaded) in claimed.deliveries.into_iter().zip(loaded) {
        match loaded {
            Some(loaded) => ready.push(Ready {
                delivery,
                loaded,
                lease_until: request.lease_until,
            }),
            None => back.push(delivery.lease),
        }
    }
    let gave_back = !back.is_empty();
    release(&ctx, back, &leases).await;
    Ok(Fetched {
        ready,
        asked: limit,
        claimed: count,
        gave_back,
        next_due: claimed.next_due,
    })
}

/// Gives deliveries back to the store, unattempted (their attempt count is unchanged).
async fn release(ctx: &WorkerContext, back: Vec<Lease>, leases: &Leases) {
    if back.is_empty() {
        return;
    }
    {
        let mut held = leases.lock().unwrap();
        for lease in &back {
            held.remove(lease);
        }
    }
    if let Err(err) = ctx.store.release(back, now_millis()).await {
        tracing::warn!(destination = %ctx.name, error = %err, "could not give back deliveries; their leases expire");
    }
}

async fn give_back(ctx: &WorkerContext, ready: &mut VecDeque<Ready>, leases: &Leases) {
    let back: Vec<Lease> = ready.drain(..).map(|r| r.delivery.lease).collect();
    release(ctx, back, leases).await;
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
        durable: ctx.config.on_interrupt == crate::domain::OnInterrupt::Dead,
    }
}

/// One step of delivery, awaited to the end: claims what is due now (up to the destination's
/// concurrency; pause and breaker are not consulted), attempts it, records the outcomes, and
/// says how many were attempted. The worker loop runs the same claim, load and attempt
/// pipelined; tests drive delivery with this step instead of waiting on the loop.
pub async fn deliver_due(ctx: &WorkerContext) -> usize {
    let claimed = match ctx.store.claim(claim_request(ctx, slots(ctx))).await {
        Ok(claimed) => claimed.deliveries,
        Err(err) => {
            tracing::warn!(destination = %ctx.name, error = %err, "claim failed");
            return 0;
        }
    };
    let loaded = load(ctx, &claimed).await;
    let mut attempted = 0;
    for (delivery, loaded) in claimed.into_iter().zip(loaded) {
        match loaded {
            Some(loaded) => {
                let record = attempt::attempt(ctx, &delivery, &loaded.request).await;
                attempt::store(ctx, &delivery, record).await;
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
async fn drain(ctx: &WorkerContext, mut attempts: JoinSet<Option<UnixMillis>>, leases: &Leases) {
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

/// The claimed deliveries' stored requests (shared with other destinations), in order;
/// `None` where the memory budget is spent (or the store failed): those go back.
async fn load(ctx: &WorkerContext, deliveries: &[ClaimedDelivery]) -> Vec<Option<Arc<Loaded>>> {
    let wanted: Vec<_> = deliveries
        .iter()
        .map(|d| (d.event_id.clone(), d.body_len))
        .collect();
    match ctx.requests.get_many(&wanted).await {
        Ok(loaded) => loaded,
        Err(err) => {
            tracing::warn!(destination = %ctx.name, error = %err, "could not load the claimed events");
            vec![None; deliveries.len()]
        }
    }
}
