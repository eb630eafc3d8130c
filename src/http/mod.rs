//! The HTTP surface (the only module that knows axum): ingest, health, metrics, the accept
//! loop, TLS, and the admission limits (body budget, rates, backlog).

pub mod api;
mod backlog;
pub mod body;
pub mod budget;
pub mod console;
mod ingest;
pub mod metrics;
pub mod rate;
pub mod server;
pub mod tls;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};

pub use metrics::Metrics;

use crate::config::{Config, Rate, SourceConfig};
use crate::delivery::DeliveryStatus;
use crate::domain::Name;
use crate::ingest::{Provider, provider_for};
use crate::routing::Route;
use crate::store::Store;
pub use backlog::Backlog;
use budget::{BodyBudget, BudgetLimits};
use rate::RateLimiter;

pub struct SourceRuntime {
    pub config: SourceConfig,
    pub provider: &'static dyn Provider,
}

/// Sources and routes: what a config reload replaces while requests are being served.
pub struct Routing {
    pub sources: HashMap<Name, SourceRuntime>,
    pub routes: Vec<Route>,
    /// `latest` destinations and what their coalescing keys are made of.
    pub coalescing: HashMap<Name, Vec<crate::domain::KeyPart>>,
    /// What of a payload is parsed: the providers' paths and the routes' conditions'.
    pub fields: crate::ingest::Fields,
}

impl Routing {
    pub fn from_config(config: &Config) -> Self {
        let sources = config
            .sources
            .iter()
            .map(|(name, source)| {
                let runtime = SourceRuntime {
                    config: source.clone(),
                    provider: provider_for(source.provider),
                };
                (name.clone(), runtime)
            })
            .collect();
        let coalescing = config
            .destinations
            .values()
            .filter(|d| d.ordering == crate::domain::Ordering::Latest)
            .map(|d| (d.name.clone(), d.coalesce_by.clone()))
            .collect();
        Self {
            sources,
            fields: crate::ingest::Fields::with(crate::routing::condition_pointers(&config.routes)),
            routes: config.routes.clone(),
            coalescing,
        }
    }
}

/// The routing in force; each request takes the current one once and keeps it throughout.
#[derive(Clone)]
pub struct LiveRouting(Arc<std::sync::RwLock<Arc<Routing>>>);

impl LiveRouting {
    pub fn current(&self) -> Arc<Routing> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, routing: Routing) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routing);
    }
}

#[derive(Clone)]
pub struct AppState {
    pub routing: LiveRouting,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub body_read_timeout: Duration,
    pub min_body_rate: u64,
    pub body_budget: Arc<BodyBudget>,
    pub client_rate: Option<Rate>,
    pub client_rates: Arc<RateLimiter<IpAddr>>,
    pub source_rates: Arc<RateLimiter<Name>>,
    pub backlog: Arc<Backlog>,
    pub delivery: DeliveryStatus,
    /// The last readiness answer and when it was found: probes within a second share it,
    /// so hammering `/readyz` cannot queue writes in front of ingest.
    pub readiness: Arc<tokio::sync::Mutex<Option<Readiness>>>,
    /// Proxies some source trusts: exempt from the per-client connection cap.
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
}

impl AppState {
    pub fn new(config: &Config, store: Arc<dyn Store>, delivery: DeliveryStatus) -> Self {
        let largest_body = config
            .sources
            .values()
            .map(|s| s.max_body_bytes)
            .max()
            .unwrap_or(0);
        Self {
            routing: LiveRouting(Arc::new(std::sync::RwLock::new(Arc::new(
                Routing::from_config(config),
            )))),
            store,
            metrics: Arc::default(),
            body_read_timeout: config.server.body_read_timeout,
            min_body_rate: config.server.min_body_rate,
            body_budget: BodyBudget::new(BudgetLimits::shares(
                config.server.max_inflight_body,
                largest_body,
            )),
            client_rate: config.server.rate_limit_per_client,
            client_rates: Arc::default(),
            source_rates: Arc::default(),
            backlog: Arc::new(Backlog::new(config.server.max_pending_deliveries)),
            delivery,
            readiness: Arc::default(),
            trusted_proxies: Arc::new(
                config
                    .sources
                    .values()
                    .flat_map(|s| s.trusted_proxies.iter().copied())
                    .collect(),
            ),
        }
    }
}

/// A readiness answer and when it was found.
type Readiness = (std::time::Instant, Result<(), String>);

/// The main listener's routes; `ingest` false (`server.roles` without it) answers `/hooks`
/// with 404 and says why, for a load balancer sending webhooks to the wrong replicas.
pub fn router(state: AppState, ingest: bool) -> Router {
    let hooks = match ingest {
        true => post(ingest::receive),
        false => post(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({
                    "error": "this hookrelay does not take webhooks (server.roles has no \"ingest\")"
                })),
            )
        }),
    };
    Router::new()
        .route("/hooks/{source}", hooks)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics::render))
        .with_state(state)
}

/// Ready means an event could be acknowledged now: the store commits (a real write through
/// the commit path), its files are the ones it opened, and the backlog has room.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.backlog.full() {
        return (StatusCode::SERVICE_UNAVAILABLE, "backlog full\n".to_owned());
    }
    let mut last = state.readiness.lock().await;
    let fresh = last
        .as_ref()
        .filter(|(at, _)| at.elapsed() < Duration::from_secs(1));
    let answer = match fresh {
        Some((_, answer)) => answer.clone(),
        None => {
            let answer = state.store.ready().await.map_err(|err| err.to_string());
            *last = Some((std::time::Instant::now(), answer.clone()));
            answer
        }
    };
    match answer {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")),
    }
}
