//! The HTTP surface (the only module that knows axum): ingest, health, metrics.

mod ingest;
pub mod listener;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::config::{Config, SourceConfig};
use crate::delivery::Wakers;
use crate::domain::Name;
use crate::ingest::{Provider, provider_for};
use crate::routing::Route;
use crate::store::Store;

pub struct SourceRuntime {
    pub config: SourceConfig,
    pub provider: &'static dyn Provider,
    /// Parse the body as JSON: the provider or a route filter of this source needs it.
    pub needs_payload: bool,
}

impl SourceRuntime {
    /// A generic source's own token header, stored by name only like `X-Gitlab-Token`.
    pub fn token_header(&self) -> Option<&str> {
        match &self.config.generic_auth {
            crate::ingest::generic::GenericAuth::Token { header } => Some(header),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub sources: Arc<HashMap<Name, SourceRuntime>>,
    pub routes: Arc<Vec<Route>>,
    pub store: Arc<dyn Store>,
    pub wakers: Wakers,
    pub metrics: Arc<Metrics>,
    pub body_read_timeout: Duration,
    /// Bytes of request bodies that may be in memory at once, in KiB permits.
    pub body_budget: Arc<tokio::sync::Semaphore>,
    pub body_budget_kib: usize,
}

impl AppState {
    pub fn new(config: &Config, store: Arc<dyn Store>, wakers: Wakers) -> Self {
        let sources = config
            .sources
            .iter()
            .map(|(name, source)| {
                let provider = provider_for(source.provider);
                let filtered = config
                    .routes
                    .iter()
                    .any(|route| &route.source == name && route.needs_payload());
                let runtime = SourceRuntime {
                    config: source.clone(),
                    provider,
                    needs_payload: provider.needs_payload() || filtered,
                };
                (name.clone(), runtime)
            })
            .collect();
        let budget_kib = config.server.max_inflight_body.div_ceil(1024) as usize;
        Self {
            sources: Arc::new(sources),
            routes: Arc::new(config.routes.clone()),
            store,
            wakers,
            metrics: Arc::default(),
            body_read_timeout: config.server.body_read_timeout,
            body_budget: Arc::new(tokio::sync::Semaphore::new(budget_kib)),
            body_budget_kib: budget_kib,
        }
    }
}

/// Counters exposed at `/metrics` in the Prometheus text format.
#[derive(Default)]
pub struct Metrics {
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub too_large: AtomicU64,
    pub store_errors: AtomicU64,
    pub missing_credentials: AtomicU64,
    pub invalid_credentials: AtomicU64,
    pub address_not_allowed: AtomicU64,
    pub over_budget: AtomicU64,
}

impl Metrics {
    pub fn count_rejection(&self, reason: &str) {
        match reason {
            "missing_credentials" => &self.missing_credentials,
            "address_not_allowed" => &self.address_not_allowed,
            _ => &self.invalid_credentials,
        }
        .fetch_add(1, Relaxed);
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        counter(
            "hookrelay_events_accepted_total",
            "Webhooks durably stored and answered 2xx.",
            &[("", self.accepted.load(Relaxed))],
        );
        counter(
            "hookrelay_events_duplicate_total",
            "Webhooks recognised as repeats of a stored event.",
            &[("", self.duplicates.load(Relaxed))],
        );
        counter(
            "hookrelay_requests_rejected_total",
            "Webhooks refused before storage, by reason.",
            &[
                (
                    "{reason=\"missing_credentials\"}",
                    self.missing_credentials.load(Relaxed),
                ),
                (
                    "{reason=\"invalid_credentials\"}",
                    self.invalid_credentials.load(Relaxed),
                ),
                (
                    "{reason=\"address_not_allowed\"}",
                    self.address_not_allowed.load(Relaxed),
                ),
                ("{reason=\"too_large\"}", self.too_large.load(Relaxed)),
                (
                    "{reason=\"over_body_budget\"}",
                    self.over_budget.load(Relaxed),
                ),
                ("{reason=\"store_error\"}", self.store_errors.load(Relaxed)),
            ],
        );
        out
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/hooks/{source}", post(ingest::receive))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let probe = crate::store::DeliveryFilter {
        limit: 1,
        ..Default::default()
    };
    match state.store.list_deliveries(probe).await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n"),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let in_use = state.body_budget_kib - state.body_budget.available_permits();
    let mut text = state.metrics.render();
    let _ = writeln!(
        text,
        "# HELP hookrelay_ingest_body_budget_used_bytes Request bodies being received now.\n\
         # TYPE hookrelay_ingest_body_budget_used_bytes gauge\n\
         hookrelay_ingest_body_budget_used_bytes {}",
        in_use * 1024
    );
    ([("content-type", "text/plain; version=0.0.4")], text)
}
