//! Delivery: the only code that calls destinations. One worker loop per destination claims due
//! deliveries from the store, calls the destination, and records the attempt with its plan.

pub mod address;
pub mod breaker;
pub mod http;
pub mod plan;
mod requests;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::domain::Name;
use crate::ingest::provider_for;
use crate::store::{Store, StoredRequest};

/// What a destination is handed for one attempt.
pub struct Outbound<'a> {
    /// Stable across retries: receivers deduplicate on it (`webhook-id`).
    pub delivery_id: &'a str,
    /// 1-based number of this attempt within the current retry window.
    pub attempt: u32,
    pub request: &'a StoredRequest,
    /// Original headers to copy onto the forwarded request.
    pub forward_headers: &'a [String],
}

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptOutcome {
    pub delivered: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub retry_after: Option<Duration>,
    pub response_excerpt: Option<String>,
}

#[async_trait::async_trait]
pub trait Destination: Send + Sync {
    async fn deliver(&self, outbound: &Outbound<'_>) -> AttemptOutcome;
}

/// Running delivery workers; ingest wakes them when it commits new deliveries.
pub struct Engine {
    wakers: HashMap<Name, Arc<Notify>>,
    workers: JoinSet<()>,
    status: DeliveryStatus,
    controls: Controls,
}

/// A running destination's switches and state, shared by its worker and the API.
pub struct DestinationControl {
    paused: std::sync::atomic::AtomicBool,
    breaker_open: Arc<std::sync::atomic::AtomicBool>,
    waker: Arc<Notify>,
}

impl DestinationControl {
    pub fn is_paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn is_failing(&self) -> bool {
        self.breaker_open.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Holds (true) or lets go (false) the destination's deliveries; attempts already in
    /// flight finish either way.
    pub fn set_paused(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::Release);
        self.waker.notify_one();
    }
}

/// Every running destination's control, by name.
#[derive(Clone, Default)]
pub struct Controls(Arc<HashMap<Name, Arc<DestinationControl>>>);

impl Controls {
    pub fn get(&self, name: &str) -> Option<&Arc<DestinationControl>> {
        self.0.get(name)
    }
}

/// What `/metrics` shows of delivery: each running destination's circuit breaker (open or
/// not) and the memory held by stored requests being delivered.
#[derive(Clone)]
pub struct DeliveryStatus {
    pub breakers: Arc<Vec<(Name, Arc<std::sync::atomic::AtomicBool>)>>,
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
        config: &Config,
        store: Arc<dyn Store>,
        paused: &HashMap<String, bool>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let lease_owner = format!(
            "{}-{}",
            std::process::id(),
            crate::domain::EventId::generate()
        );
        let mut defaults: HashMap<Name, Vec<String>> = HashMap::new();
        for (name, source) in &config.sources {
            let headers = provider_for(source.provider).forwarded_headers();
            defaults.insert(
                name.clone(),
                headers.iter().map(|h| h.to_string()).collect(),
            );
        }
        let defaults = Arc::new(defaults);
        let requests = Arc::new(requests::Requests::new(
            store.clone(),
            config.server.delivery_memory,
        ));
        let mut wakers = HashMap::new();
        let mut breakers = Vec::new();
        let mut controls = HashMap::new();
        let mut workers = JoinSet::new();
        for (name, destination) in &config.destinations {
            let is_paused = paused
                .get(name.as_str())
                .copied()
                .unwrap_or(destination.paused);
            if is_paused {
                tracing::info!(destination = %name, "paused: deliveries are held until resumed");
            }
            let waker = Arc::new(Notify::new());
            wakers.insert(name.clone(), waker.clone());
            let breaker_open = Arc::new(std::sync::atomic::AtomicBool::new(false));
            breakers.push((name.clone(), breaker_open.clone()));
            let control = Arc::new(DestinationControl {
                paused: is_paused.into(),
                breaker_open: breaker_open.clone(),
                waker: waker.clone(),
            });
            controls.insert(name.clone(), control.clone());
            let http = http::HttpDestination::new(destination)
                .map_err(|err| anyhow::anyhow!("destination {name}: {err}"))?;
            let ctx = worker::WorkerContext {
                name: name.clone(),
                config: destination.clone(),
                destination: Arc::new(http),
                store: store.clone(),
                waker,
                shutdown: shutdown.clone(),
                grace: config.server.shutdown_grace,
                lease_owner: lease_owner.clone(),
                default_forward: defaults.clone(),
                requests: requests.clone(),
                breaker: std::sync::Mutex::new(breaker::Breaker::new(destination.breaker)),
                breaker_open: breaker_open.clone(),
                control,
            };
            workers.spawn(worker::run(ctx));
        }
        Ok(Self {
            wakers,
            workers,
            status: DeliveryStatus {
                breakers: Arc::new(breakers),
                requests,
            },
            controls: Controls(Arc::new(controls)),
        })
    }

    pub fn controls(&self) -> Controls {
        self.controls.clone()
    }

    pub fn waker(&self) -> Wakers {
        Wakers(Arc::new(self.wakers.clone()))
    }

    pub fn status(&self) -> DeliveryStatus {
        self.status.clone()
    }

    /// Waits until every worker has stopped (after the shutdown token fired).
    pub async fn join(mut self) {
        while let Some(result) = self.workers.join_next().await {
            if let Err(err) = result {
                tracing::error!(error = %err, "delivery worker panicked");
            }
        }
    }
}

/// Cheap handle ingest uses to tell workers that new deliveries are due.
#[derive(Clone, Default)]
pub struct Wakers(Arc<HashMap<Name, Arc<Notify>>>);

impl Wakers {
    pub fn wake(&self, destinations: &[Name]) {
        for name in destinations {
            if let Some(waker) = self.0.get(name) {
                waker.notify_one();
            }
        }
    }
}
