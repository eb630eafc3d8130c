//! Delivery: the only code that calls destinations. One worker loop per destination claims due
//! deliveries from the store, calls the destination, and records the attempt with its plan.

pub mod address;
mod attempt;
pub mod breaker;
mod changes;
pub mod destinations;
pub mod plan;
mod requests;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use destinations::{DestinationConfig, ForwardDefaults, Target};

use crate::domain::{AttemptDetail, Name, Verdict};
use crate::store::{Store, StoredRequest};

/// What a destination is handed for one attempt.
pub struct Outbound<'a> {
    /// Stable across retries: receivers deduplicate on it (`webhook-id`).
    pub delivery_id: &'a str,
    /// 1-based number of this attempt within the current retry window.
    pub attempt: u32,
    pub request: &'a StoredRequest,
}

/// What one attempt produced, as the destination judged it: the verdict and detail are
/// recorded as they are (see [`crate::domain::Attempt`]); only the destination knows what its
/// own signals (status codes, exit codes, acknowledgements) mean.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptOutcome {
    pub verdict: Verdict,
    /// The destination asked for at least this long before another try (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// The metric class (`outcome` label) the destination chose for this attempt.
    pub class: &'static str,
    pub detail: AttemptDetail,
    /// Whether the destination itself is down (no answer, 5xx, timeout), as opposed to
    /// refusing this one delivery: only the former trips the circuit breaker.
    pub destination_down: bool,
}

impl AttemptOutcome {
    pub fn delivered(&self) -> bool {
        self.verdict == Verdict::Delivered
    }
}

#[async_trait::async_trait]
pub trait Destination: Send + Sync {
    async fn deliver(&self, outbound: &Outbound<'_>) -> AttemptOutcome;
}

/// What delivery runs, taken from the config by the app (delivery never reads the config).
#[derive(Clone)]
pub struct Settings {
    pub destinations: std::collections::BTreeMap<Name, DestinationConfig>,
    /// Per source, the original headers its deliveries carry on by default.
    pub forward_defaults: ForwardDefaults,
    /// Bytes of stored requests held in memory for delivery at once.
    pub memory: u64,
    /// How long attempts in flight may finish at shutdown.
    pub grace: Duration,
    /// Whether this process delivers (`server.roles`).
    pub deliver: bool,
}

/// Running delivery workers; the store's change feed wakes them when deliveries are due. The set of
/// workers follows the config: [`Engine::apply`] starts, restarts and stops them on reload.
pub struct Engine {
    store: Arc<dyn Store>,
    requests: Arc<requests::Requests>,
    lease_owner: String,
    grace: Duration,
    shutdown: CancellationToken,
    running: HashMap<Name, (CancellationToken, Arc<worker::WorkerContext>)>,
    workers: JoinSet<()>,
    wakers: Wakers,
    controls: Controls,
    breakers: Breakers,
    /// Whether this process delivers (`server.roles`); without it no worker runs, and
    /// destinations are still built so a bad one is refused as anywhere.
    deliver: bool,
    /// The forwarding defaults the running workers were built with.
    forward_defaults: ForwardDefaults,
    tell: Option<crate::notify::Tell>,
}

/// A running destination's switches and state, shared by its worker and the API.
pub struct DestinationControl {
    paused: std::sync::atomic::AtomicBool,
    breaker_open: Arc<std::sync::atomic::AtomicBool>,
    breaker: Arc<std::sync::Mutex<breaker::Breaker>>,
    waker: Arc<Notify>,
}

impl DestinationControl {
    pub fn is_paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn is_failing(&self) -> bool {
        self.breaker_open.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Another replica's breaker for this destination opened (true) or closed (false).
    pub fn breaker_elsewhere(&self, open: bool) {
        let mut breaker = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        match open {
            true => breaker.opened_elsewhere(std::time::Instant::now()),
            false => breaker.closed_elsewhere(),
        }
        self.breaker_open
            .store(breaker.is_open(), std::sync::atomic::Ordering::Relaxed);
        drop(breaker);
        if !open {
            self.waker.notify_one();
        }
    }

    /// Holds (true) or lets go (false) the destination's deliveries; attempts already in
    /// flight finish either way.
    pub fn set_paused(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::Release);
        self.waker.notify_one();
    }
}

type Shared<T> = Arc<std::sync::RwLock<HashMap<Name, T>>>;

fn read<T: Clone>(map: &Shared<T>, name: &str) -> Option<T> {
    map.read()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .cloned()
}

/// Every running destination's control, by name.
#[derive(Clone, Default)]
pub struct Controls(Shared<Arc<DestinationControl>>);

impl Controls {
    pub fn get(&self, name: &str) -> Option<Arc<DestinationControl>> {
        read(&self.0, name)
    }
}

/// Each running destination's circuit breaker (open or not), for `/metrics`.
#[derive(Clone, Default)]
pub struct Breakers(Shared<Arc<std::sync::atomic::AtomicBool>>);

impl Breakers {
    pub fn snapshot(&self) -> Vec<(Name, bool)> {
        let mut all: Vec<_> = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, open)| {
                (
                    name.clone(),
                    open.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect();
        all.sort();
        all
    }
}

/// What `/metrics` shows of delivery: breakers and the memory held by stored requests
/// being delivered.
#[derive(Clone)]
pub struct DeliveryStatus {
    pub breakers: Breakers,
    requests: Arc<requests::Requests>,
}

impl DeliveryStatus {
    pub fn memory_in_use(&self) -> u64 {
        self.requests.in_use()
    }
}

impl Engine {
    /// Starts one worker per configured destination. `paused` holds the pauses operators
    /// set at runtime (they win over the config's initial `paused`).
    pub fn start(
        settings: &Settings,
        store: Arc<dyn Store>,
        paused: &HashMap<String, bool>,
        lease_owner: String,
        shutdown: CancellationToken,
        tell: Option<crate::notify::Tell>,
    ) -> anyhow::Result<Self> {
        let mut engine = Self {
            requests: Arc::new(requests::Requests::new(store.clone(), settings.memory)),
            store,
            lease_owner,
            grace: settings.grace,
            shutdown,
            running: HashMap::new(),
            workers: JoinSet::new(),
            wakers: Wakers::default(),
            controls: Controls::default(),
            breakers: Breakers::default(),
            deliver: settings.deliver,
            forward_defaults: Default::default(),
            tell,
        };
        engine.apply(settings, paused)?;
        tokio::spawn(changes::follow(
            engine.store.changes(),
            engine.store.clone(),
            engine.wakers.clone(),
            engine.controls.clone(),
            engine.shutdown.clone(),
        ));
        Ok(engine)
    }

    /// Makes the running workers match `settings`: a destination whose settings changed gets
    /// a new worker (and a new connection), removed ones stop, unchanged ones keep running
    /// untouched. A stopping worker lets its attempts in flight finish within the grace
    /// period and gives the rest back, so nothing is dropped; a pause set at runtime carries
    /// over. Fails without changing anything if a destination cannot be built.
    pub fn apply(
        &mut self,
        settings: &Settings,
        paused: &HashMap<String, bool>,
    ) -> anyhow::Result<()> {
        let defaults_changed = settings.forward_defaults != self.forward_defaults;
        let keep: Vec<Name> = settings
            .destinations
            .iter()
            .filter(|(name, destination)| {
                !defaults_changed
                    && self
                        .running
                        .get(*name)
                        .is_some_and(|(_, ctx)| ctx.config == **destination)
            })
            .map(|(name, _)| name.clone())
            .collect();
        let mut built = Vec::new();
        for (name, destination) in &settings.destinations {
            if keep.contains(name) {
                continue;
            }
            let target = destinations::build(destination, &settings.forward_defaults)
                .map_err(|err| anyhow::anyhow!("destination {name}: {err}"))?;
            built.push((name.clone(), destination.clone(), target));
        }
        self.forward_defaults = settings.forward_defaults.clone();
        self.running.retain(|name, (stop, _)| {
            let kept = keep.contains(name);
            if !kept {
                stop.cancel();
            }
            kept
        });
        if !self.deliver {
            built.clear();
        }
        let mut wakers = HashMap::new();
        let mut controls = HashMap::new();
        let mut breakers = HashMap::new();
        for name in &keep {
            let (_, ctx) = &self.running[name];
            wakers.insert(name.clone(), ctx.waker.clone());
            controls.insert(name.clone(), ctx.control.clone());
            breakers.insert(name.clone(), ctx.breaker_open.clone());
        }
        for (name, destination, target) in built {
            let is_paused = match self.controls.get(name.as_str()) {
                Some(old) => old.is_paused(),
                None => paused
                    .get(name.as_str())
                    .copied()
                    .unwrap_or(destination.paused),
            };
            if is_paused {
                tracing::info!(destination = %name, "paused: deliveries are held until resumed");
            }
            let waker = Arc::new(Notify::new());
            let breaker_open = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let breaker = Arc::new(std::sync::Mutex::new(breaker::Breaker::new(
                destination.breaker,
            )));
            let control = Arc::new(DestinationControl {
                paused: is_paused.into(),
                breaker_open: breaker_open.clone(),
                breaker: breaker.clone(),
                waker: waker.clone(),
            });
            let stop = self.shutdown.child_token();
            let ctx = worker::WorkerContext {
                name: name.clone(),
                breaker,
                config: destination,
                destination: target,
                store: self.store.clone(),
                waker: waker.clone(),
                shutdown: stop.clone(),
                grace: self.grace,
                lease_owner: self.lease_owner.clone(),
                requests: self.requests.clone(),
                breaker_open: breaker_open.clone(),
                control: control.clone(),
                tell: self.tell.clone(),
            };
            let ctx = Arc::new(ctx);
            self.workers.spawn(worker::run(ctx.clone()));
            self.running.insert(name.clone(), (stop, ctx));
            wakers.insert(name.clone(), waker);
            controls.insert(name.clone(), control);
            breakers.insert(name, breaker_open);
        }
        *self.wakers.0.write().unwrap_or_else(|p| p.into_inner()) = wakers;
        *self.controls.0.write().unwrap_or_else(|p| p.into_inner()) = controls;
        *self.breakers.0.write().unwrap_or_else(|p| p.into_inner()) = breakers;
        // Workers that stopped are reaped here, so the set does not grow with reloads.
        while let Some(result) = self.workers.try_join_next() {
            if let Err(err) = result {
                tracing::error!(error = %err, "delivery worker panicked");
            }
        }
        Ok(())
    }

    /// One delivery step for `destination`, awaited to the end (see `worker::deliver_due`);
    /// `None` when no such destination runs.
    pub async fn deliver_due(&self, destination: &str) -> Option<usize> {
        let (_, ctx) = self.running.get(destination)?;
        Some(worker::deliver_due(ctx).await)
    }

    pub fn controls(&self) -> Controls {
        self.controls.clone()
    }

    pub fn status(&self) -> DeliveryStatus {
        DeliveryStatus {
            breakers: self.breakers.clone(),
            requests: self.requests.clone(),
        }
    }

    /// Waits until every worker has stopped (after the shutdown token fired).
    pub async fn join(&mut self) {
        while let Some(result) = self.workers.join_next().await {
            if let Err(err) = result {
                tracing::error!(error = %err, "delivery worker panicked");
            }
        }
    }
}

/// Each running destination's wake-up, which the change feed's follower pulls.
#[derive(Clone, Default)]
pub struct Wakers(Shared<Arc<Notify>>);

impl Wakers {
    pub fn wake_all(&self) {
        for waker in self.0.read().unwrap_or_else(|p| p.into_inner()).values() {
            waker.notify_one();
        }
    }

    pub fn wake(&self, destinations: &[Name]) {
        let wakers = self.0.read().unwrap_or_else(|p| p.into_inner());
        for name in destinations {
            if let Some(waker) = wakers.get(name) {
                waker.notify_one();
            }
        }
    }
}
