//! Wiring: open the store, start delivery, build the HTTP surfaces (hooks, API on its
//! socket and listener), serve until shutdown, drain; and apply a new config while running.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::api::{ApiState, Catalog, Reload};
use crate::store::Store;
use crate::{delivery, http, store};

/// The service with its store open and its workers started, not yet serving.
pub struct App {
    config: Config,
    /// This process's name on leases (deliveries, jobs, the retention sweep).
    owner: String,
    listener: TcpListener,
    store: Arc<dyn Store>,
    engine: Arc<Mutex<delivery::Engine>>,
    state: http::AppState,
    api: ApiState,
    token: CancellationToken,
    tls: Option<http::tls::TlsAcceptor>,
    api_socket: Option<http::api::socket::ApiSocket>,
    api_listener: Option<TcpListener>,
    notifications: Arc<std::sync::RwLock<crate::notify::Settings>>,
}

impl App {
    /// Opens the store and starts delivery. Errors here mean the service cannot run at all;
    /// a full disk is not one of them (ingest answers 503 until space returns).
    pub async fn build(config: Config, listener: TcpListener) -> anyhow::Result<App> {
        let store = store::open(&config.server.store).await.with_context(|| {
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
        let roles = config.server.roles;
        tracing::info!(roles = %roles.names().join(", "), "roles");
        let api_socket = match &config.api.socket {
            Some(path) if roles.api => Some(http::api::socket::ApiSocket::bind(path).await?),
            _ => None,
        };
        let api_listener = match config.api.listen {
            Some(addr) if roles.api => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (api.listen)"))?,
            ),
            _ => None,
        };
        let token = CancellationToken::new();
        let paused = store
            .paused_destinations()
            .await
            .context("reading paused destinations")?
            .into_iter()
            .collect();
        let owner = format!(
            "{}-{}",
            std::process::id(),
            crate::domain::EventId::generate()
        );
        let (tell, told) = crate::notify::channel();
        let engine = delivery::Engine::start(
            &delivery_settings(&config),
            store.clone(),
            &paused,
            owner.clone(),
            token.clone(),
            roles.deliver.then(|| tell.clone()),
        )?;
        if roles.sweep {
            crate::jobs::Runner {
                store: store.clone(),
                owner: owner.clone(),
                pause: config.server.bulk_step_pause,
                stop: token.clone(),
            }
            .spawn();
        }
        let state = http::AppState::new(&config, store.clone(), engine.status());
        let notifications = Arc::new(std::sync::RwLock::new(config.notifications.clone()));
        if roles.deliver {
            let router = notification_router(state.routing.clone());
            let breakers = engine.status().breakers;
            let breakers: crate::notify::Breakers = Arc::new(move || {
                breakers
                    .snapshot()
                    .into_iter()
                    .map(|(name, open)| (name.as_str().to_owned(), open))
                    .collect()
            });
            let notifier = crate::notify::Notifier::new(
                store.clone(),
                router,
                breakers,
                notifications.clone(),
            );
            tokio::spawn(notifier.run(told, token.clone()));
        }
        let api = ApiState {
            store: store.clone(),
            catalog: Arc::new(std::sync::RwLock::new(Arc::new(Catalog::from_config(
                &config,
            )))),
            controls: engine.controls(),
            counts: state.metrics.by_source.clone(),
            reload: None,
        };
        Ok(App {
            config,
            owner,
            listener,
            store,
            engine: Arc::new(Mutex::new(engine)),
            state,
            api,
            token,
            tls,
            api_socket,
            api_listener,
            notifications,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether the listener speaks HTTPS.
    pub fn tls(&self) -> Option<&http::tls::TlsAcceptor> {
        self.tls.as_ref()
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

    /// A handle that drives delivery step by step (tests): see [`Delivery::deliver_due`].
    pub fn delivery(&self) -> Delivery {
        Delivery(self.engine.clone())
    }

    /// Lets `config_path` be applied again while running (SIGHUP, `POST /api/v1/reload`);
    /// `listen` is the command line's override of `server.listen`, kept on every reload.
    pub fn reload_from(
        &mut self,
        config_path: PathBuf,
        listen: Option<SocketAddr>,
    ) -> Arc<ConfigReloader> {
        let reloader = Arc::new(ConfigReloader {
            path: config_path,
            listen,
            current: Mutex::new(self.config.clone()),
            engine: self.engine.clone(),
            store: self.store.clone(),
            routing: self.state.routing.clone(),
            catalog: self.api.catalog.clone(),
            notifications: self.notifications.clone(),
        });
        self.api.reload = Some(reloader.clone());
        reloader
    }

    /// Serves until `shutdown` completes, then drains: the listener stops, requests in
    /// progress finish, in-flight deliveries get the grace period, the rest are released.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let state = self.state;
        tokio::spawn(
            state
                .backlog
                .clone()
                .watch(self.store.clone(), self.token.clone()),
        );
        let roles = self.config.server.roles;
        if roles.sweep {
            tokio::spawn(crate::jobs::sweep(
                self.store.clone(),
                self.owner.clone(),
                self.config.retention,
                self.token.clone(),
            ));
        }
        let uncapped = state.trusted_proxies.to_vec();
        let tokens = Arc::new(self.config.api.tokens.clone());
        let sessions = http::console::session::Sessions::new(self.api.store.clone());
        let console = |secure: bool| {
            http::console::router(http::console::ConsoleState {
                api: self.api.clone(),
                sessions: sessions.clone(),
                tokens: tokens.clone(),
                secure,
            })
        };
        let mut app = http::router(state, roles.ingest);
        if self.config.api.on_main_listener && roles.api {
            app = app
                .merge(http::api::router(self.api.clone(), Some(tokens.clone())))
                .merge(console(self.tls.is_some()));
        }
        let trigger = self.token.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: no new requests, draining deliveries");
            trigger.cancel();
        });
        let mut api_tasks = tokio::task::JoinSet::new();
        if let Some(socket) = self.api_socket {
            let app = http::api::router(self.api.clone(), None);
            api_tasks.spawn(socket.serve(app, self.token.clone()));
        }
        let server = &self.config.server;
        let limits = |max_connections, uncapped| http::server::ConnectionLimits {
            max_connections,
            max_per_client: server.max_connections_per_client,
            header_read_timeout: server.header_read_timeout,
            max_header_bytes: server.max_header_bytes,
            shutdown_grace: server.shutdown_grace,
            uncapped,
        };
        if let Some(listener) = self.api_listener {
            let app =
                http::api::router(self.api.clone(), Some(tokens.clone())).merge(console(false));
            api_tasks.spawn(http::server::serve(
                listener,
                app,
                limits(256, vec![]),
                None,
                self.token.clone(),
            ));
        }
        http::server::serve(
            self.listener,
            app,
            limits(server.max_connections, uncapped),
            self.tls,
            self.token.clone(),
        )
        .await;
        while api_tasks.join_next().await.is_some() {}
        self.engine.lock().await.join().await;
        tracing::info!("stopped");
    }
}

/// The running delivery engine, from outside.
/// Routes hookrelay's own notifications with the routes in force (reloads included).
fn notification_router(routing: http::LiveRouting) -> crate::notify::Router {
    let source = crate::domain::Name::parse(crate::notify::SOURCE).expect("a valid name");
    Arc::new(move |classification| {
        let routing = routing.current();
        if !routing.routes.iter().any(|route| route.source == source) {
            return None;
        }
        let facts = crate::routing::EventFacts {
            classification,
            payload: None,
        };
        let routed = crate::routing::destinations_for(&routing.routes, &source, &facts)
            .into_iter()
            .map(|destination| crate::domain::Routed {
                coalesce_key: routing
                    .coalescing
                    .get(&destination)
                    .map(|parts| crate::routing::coalescing_key(parts, &source, classification)),
                destination,
            })
            .collect();
        Some(routed)
    })
}

/// What delivery runs, from the config: delivery itself never reads the config.
pub fn delivery_settings(config: &Config) -> delivery::Settings {
    let forward_defaults = config
        .sources
        .iter()
        .map(|(name, source)| {
            let headers = crate::ingest::provider_for(source.provider).forwarded_headers();
            (
                name.clone(),
                headers.iter().map(|h| h.to_string()).collect(),
            )
        })
        .collect();
    delivery::Settings {
        destinations: config.destinations.clone(),
        forward_defaults: Arc::new(forward_defaults),
        memory: config.server.delivery_memory,
        grace: config.server.shutdown_grace,
        deliver: config.server.roles.deliver,
    }
}

#[derive(Clone)]
pub struct Delivery(Arc<Mutex<delivery::Engine>>);

impl Delivery {
    /// Claims what is due for `destination` now, attempts it and records the outcomes,
    /// returning how many were attempted (`None`: no such destination). With the destination
    /// paused, its own worker stays out of the way and a test decides when delivery happens.
    pub async fn deliver_due(&self, destination: &str) -> Option<usize> {
        self.0.lock().await.deliver_due(destination).await
    }
}

/// Applies the config file again without a restart: sources, routes and destinations.
pub struct ConfigReloader {
    path: PathBuf,
    listen: Option<SocketAddr>,
    current: Mutex<Config>,
    engine: Arc<Mutex<delivery::Engine>>,
    store: Arc<dyn Store>,
    routing: http::LiveRouting,
    catalog: Arc<std::sync::RwLock<Arc<Catalog>>>,
    notifications: Arc<std::sync::RwLock<crate::notify::Settings>>,
}

#[async_trait::async_trait]
impl Reload for ConfigReloader {
    async fn reload(&self) -> Result<Vec<String>, String> {
        let mut config = Config::load(&self.path).map_err(|errors| {
            let text = errors.to_string();
            tracing::error!("config reload refused; the running config stays:\n{text}");
            text.lines().map(str::trim).collect::<Vec<_>>().join("; ")
        })?;
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        let mut current = self.current.lock().await;
        let mut notes = restart_only_changes(&current, &config);
        // Destinations first: a route must never name a destination with no worker.
        self.engine
            .lock()
            .await
            .apply(&delivery_settings(&config), &Default::default())
            .map_err(|err| format!("{err:#}"))?;
        self.routing.replace(http::Routing::from_config(&config));
        *self
            .notifications
            .write()
            .unwrap_or_else(|p| p.into_inner()) = config.notifications.clone();
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Catalog::from_config(&config));
        notes.extend(orphaned_deliveries(&config, self.store.as_ref()).await);
        notes.insert(
            0,
            format!(
                "config reloaded: {} sources, {} destinations, {} routes",
                config.sources.len(),
                config.destinations.len(),
                config.routes.len()
            ),
        );
        for note in &notes {
            tracing::info!("{note}");
        }
        *current = config;
        Ok(notes)
    }
}

/// Settings a running server cannot change (its sockets, store, limits): said, not applied.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    if format!("{:?}", old.server) != format!("{:?}", new.server) {
        notes.push("[server] settings changed: they apply at the next restart".to_owned());
    }
    let api = |config: &Config| {
        let tokens: Vec<_> = config
            .api
            .tokens
            .iter()
            .map(|t| (t.name.clone(), *t.secret.digest(), t.scope))
            .collect();
        (
            config.api.socket.clone(),
            config.api.listen,
            config.api.on_main_listener,
            tokens,
        )
    };
    if api(old) != api(new) {
        notes.push("[api] settings changed: they apply at the next restart".to_owned());
    }
    if old.retention != new.retention {
        notes.push("[retention] settings changed: they apply at the next restart".to_owned());
    }
    notes
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
