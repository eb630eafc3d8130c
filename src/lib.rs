//! hookrelay: receives webhooks, stores them durably before answering, delivers them with retries.
//!
//! Code map (see ARCHITECTURE.md for the whole picture):
//! - [`config`]: the TOML file and `HOOKRELAY_*` overrides, validated once.
//! - [`ingest`]: providers (verify + classify), pure.
//! - [`routing`]: which destinations an event goes to, pure.
//! - [`http`]: the axum surface (`/hooks/{source}`, `/api/v1`, health, metrics), accept loop, TLS.
//! - [`store`]: the `Store` trait and the embedded SQLite implementation.
//! - [`delivery`]: workers, the retry planner, destinations.
//! - [`send`]: signed sample events for `hookrelay send`.
//! - [`client`]: a typed client of the management API (CLI, tests).
//! - [`cli`]: the command line.

pub mod cli;
pub mod client;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod routing;
pub mod send;
pub mod store;

/// The version with the git revision it was built from (`hookrelay --version`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("HOOKRELAY_GIT_REVISION"),
    ")"
);

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::Store;

/// The service with its store open and its workers started, not yet serving.
pub struct App {
    config: Config,
    listener: TcpListener,
    store: Arc<dyn Store>,
    engine: delivery::Engine,
    token: CancellationToken,
    tls: Option<http::tls::TlsAcceptor>,
    api_socket: Option<http::api::socket::ApiSocket>,
    api_listener: Option<TcpListener>,
}

impl App {
    /// Opens the store and starts delivery. Errors here mean the service cannot run at all;
    /// a full disk is not one of them (ingest answers 503 until space returns).
    pub async fn build(config: Config, listener: TcpListener) -> anyhow::Result<App> {
        let store = store::open(&config.server.store).with_context(|| {
            format!(
                "opening the store {} (server.store)",
                store::redact_url(&config.server.store)
            )
        })?;
        for warning in &config.warnings {
            tracing::warn!(location = %warning.location, "{}", warning.message);
        }
        for warning in orphaned_deliveries(&config, store.as_ref()).await {
            tracing::warn!("{warning}");
        }
        let tls = match &config.server.tls {
            Some(files) => Some(http::tls::TlsAcceptor::load(&files.cert, &files.key)?),
            None => None,
        };
        let api_socket = match &config.api.socket {
            Some(path) => Some(http::api::socket::ApiSocket::bind(path).await?),
            None => None,
        };
        let api_listener = match config.api.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (api.listen)"))?,
            ),
            None => None,
        };
        let token = CancellationToken::new();
        let paused = store
            .paused_destinations()
            .await
            .context("reading paused destinations")?
            .into_iter()
            .collect();
        let engine = delivery::Engine::start(&config, store.clone(), &paused, token.clone())?;
        Ok(App {
            config,
            listener,
            store,
            engine,
            token,
            tls,
            api_socket,
            api_listener,
        })
    }

    /// Where the API listens on TCP (`api.listen`), if it does.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The API's unix socket, if any.
    pub fn api_socket(&self) -> Option<&std::path::Path> {
        self.api_socket.as_ref().map(|socket| socket.path())
    }

    fn api_state(&self, counts: Arc<http::metrics::SourceCounts>) -> http::api::ApiState {
        http::api::ApiState {
            store: self.store.clone(),
            destinations: Arc::new(
                self.config
                    .destinations
                    .values()
                    .map(|d| http::api::DestinationInfo {
                        name: d.name.clone(),
                        ordering: d.ordering,
                        concurrency: d.concurrency,
                    })
                    .collect(),
            ),
            sources: Arc::new(
                self.config
                    .sources
                    .values()
                    .map(|s| (s.name.clone(), s.provider.name()))
                    .collect(),
            ),
            controls: self.engine.controls(),
            counts,
            wakers: self.engine.waker(),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether the listener speaks HTTPS.
    pub fn tls(&self) -> Option<&http::tls::TlsAcceptor> {
        self.tls.as_ref()
    }

    /// Serves until `shutdown` completes, then drains: the listener stops, requests in
    /// progress finish, in-flight deliveries get the grace period, the rest are released.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let state = http::AppState::new(
            &self.config,
            self.store.clone(),
            self.engine.waker(),
            self.engine.status(),
        );
        let metrics = state.metrics.clone();
        tokio::spawn(
            state
                .backlog
                .clone()
                .watch(self.store.clone(), self.token.clone()),
        );
        let uncapped = state.trusted_proxies.to_vec();
        let api = self.api_state(state.metrics.by_source.clone());
        let tokens = Arc::new(self.config.api.tokens.clone());
        let mut app = http::router(state);
        if self.config.api.on_main_listener {
            app = app.merge(http::api::router(api.clone(), Some(tokens.clone())));
        }
        let trigger = self.token.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: no new requests, draining deliveries");
            trigger.cancel();
        });
        let mut api_tasks = tokio::task::JoinSet::new();
        if let Some(socket) = self.api_socket {
            let app = http::api::router(api.clone(), None);
            api_tasks.spawn(socket.serve(app, self.token.clone()));
        }
        let server = &self.config.server;
        let api_limits = http::server::ConnectionLimits {
            max_connections: 256,
            max_per_client: server.max_connections_per_client,
            header_read_timeout: server.header_read_timeout,
            max_header_bytes: server.max_header_bytes,
            shutdown_grace: server.shutdown_grace,
            uncapped: vec![],
        };
        if let Some(listener) = self.api_listener {
            let app = http::api::router(api, Some(tokens));
            api_tasks.spawn(http::server::serve(
                listener,
                app,
                api_limits,
                None,
                metrics.clone(),
                self.token.clone(),
            ));
        }
        let limits = http::server::ConnectionLimits {
            max_connections: server.max_connections,
            max_per_client: server.max_connections_per_client,
            header_read_timeout: server.header_read_timeout,
            max_header_bytes: server.max_header_bytes,
            shutdown_grace: server.shutdown_grace,
            uncapped,
        };
        http::server::serve(
            self.listener,
            app,
            limits,
            self.tls,
            metrics,
            self.token.clone(),
        )
        .await;
        while api_tasks.join_next().await.is_some() {}
        self.engine.join().await;
        tracing::info!("stopped");
    }
}

/// Deliveries waiting for a destination the config no longer has: nobody will attempt them,
/// so say so (they stay listed, and are delivered if the destination comes back).
pub async fn orphaned_deliveries(config: &Config, store: &dyn Store) -> Vec<String> {
    let waiting = match store.waiting_by_destination().await {
        Ok(waiting) => waiting,
        Err(err) => return vec![format!("could not look for orphaned deliveries: {err}")],
    };
    waiting
        .into_iter()
        .filter(|(name, _)| !config.destinations.keys().any(|d| d.as_str() == name))
        .map(|(name, count)| {
            format!(
                "{count} deliveries wait for destination {name:?}, which is not in the config: \
                 nothing will attempt them until it is configured again (they stay listed: \
                 `hookrelay deliveries list --destination {name}`)"
            )
        })
        .collect()
}

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
