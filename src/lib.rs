//! hookrelay: receives webhooks, stores them durably before answering, delivers them with retries.
//!
//! Code map (see ARCHITECTURE.md for the whole picture):
//! - [`config`]: the TOML file and `HOOKRELAY_*` overrides, validated once.
//! - [`ingest`]: providers (verify + classify), pure.
//! - [`routing`]: which destinations an event goes to, pure.
//! - [`http`]: the axum surface (`/hooks/{source}`, health, metrics).
//! - [`store`]: the `Store` trait and the embedded SQLite implementation.
//! - [`delivery`]: workers, the retry planner, destinations.
//! - [`send`]: signed sample events for `hookrelay send`.
//! - [`cli`]: the command line.

pub mod cli;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod routing;
pub mod send;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::{OpenMode, Store};

/// Runs the service on `listener` until `shutdown` completes, then drains: the listener stops,
/// in-flight deliveries get the grace period, unfinished ones are released for the next start.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = store::open(&config.server.store, OpenMode::Server)
        .with_context(|| format!("opening store {}", config.server.store))?;
    for warning in &config.warnings {
        tracing::warn!(location = %warning.location, "{}", warning.message);
    }
    let token = CancellationToken::new();
    let engine = delivery::Engine::start(&config, store.clone(), token.clone())?;
    let state = http::AppState::new(&config, store.clone(), engine.waker());
    let app = http::router(state);
    let trigger = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new requests, draining deliveries");
        trigger.cancel();
    });
    let listener = http::listener::LimitedListener::new(listener, config.server.max_connections);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<http::listener::PeerAddr>(),
    )
    .with_graceful_shutdown(token.clone().cancelled_owned())
    .await
    .context("serving HTTP")?;
    engine.join().await;
    tracing::info!("stopped");
    Ok(())
}
