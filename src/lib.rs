//! hookrelay: receives webhooks, stores them durably before answering, delivers them with retries.
//!
//! Code map (see ARCHITECTURE.md for the whole picture):
//! - [`app`]: wiring: store, delivery, HTTP surfaces, shutdown, config reload.
//! - [`config`]: the TOML file and `HOOKRELAY_*` overrides, validated once.
//! - [`ingest`]: providers (verify + classify), pure.
//! - [`routing`]: which destinations an event goes to, pure.
//! - [`http`]: the axum surface (`/hooks/{source}`, `/api/v1`, health, metrics), accept loop, TLS.
//! - [`store`]: the `Store` trait and the embedded SQLite implementation.
//! - [`delivery`]: workers, the retry planner, destinations.
//! - [`jobs`]: leased background work (bulk jobs, retention sweeps), continued by any runner.
//! - [`notify`]: hookrelay's own happenings (dead deliveries, failing destinations, ...) as events of the built-in source `hookrelay`.
//! - [`telemetry`]: Prometheus metrics, recorded where things happen.
//! - [`signing`]: HMAC and Standard Webhooks primitives, inbound verify and outbound sign.
//! - [`import`]: adnanh/webhook hooks files as hookrelay configs.
//! - [`settings`]: how settings are checked (located problems, durations, sizes), for config and destinations.
//! - [`send`]: signed sample events for `hookrelay send`.
//! - [`client`]: a typed client of the management API (CLI, tests).
//! - [`cli`]: the command line.

pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod http;
pub mod import;
pub mod ingest;
pub mod jobs;
pub mod notify;
pub mod recent;
pub mod routing;
pub mod send;
pub mod settings;
pub mod signing;
pub mod store;
pub mod telemetry;

/// The version with the git revision it was built from (`hookrelay --version`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("HOOKRELAY_GIT_REVISION"),
    ")"
);

use std::future::Future;

use tokio::net::TcpListener;

pub use app::{App, orphaned_deliveries};
use config::Config;

/// Runs the service on `listener` until `shutdown` completes (see [`App::run_until`]).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    App::build(config, listener)
        .await?
        .run_until(shutdown)
        .await;
    Ok(())
}
