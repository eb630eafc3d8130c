//! PostgreSQL store, for several replicas on one database: a pool of connections, ingest
//! group-committed per replica, claims that are each one guarded statement or transaction,
//! and a change feed over `LISTEN/NOTIFY` with a slow poll behind it.

mod batch;
mod browse;
mod claims;
mod feed;
mod figures;
mod ingest;
mod jobs;
mod load;
mod query;
mod records;
mod schema;
mod sessions;
mod store_impl;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::broadcast;

use crate::store::{Change, StoreError};

/// Connections per replica unless the URL says otherwise (`pool_size=N`).
const DEFAULT_POOL_SIZE: usize = 16;

/// How the process will use the store (see `sqlite::OpenMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    Server,
    Client,
}

/// What a `postgres://` URL configures beyond what the driver reads.
#[derive(Debug, Clone)]
pub struct Settings {
    pub connection: tokio_postgres::Config,
    pub pool_size: usize,
    /// No `LISTEN` (connection poolers in transaction mode cannot): changes made by other
    /// replicas are seen by the poll alone.
    pub poll_only: bool,
    /// How often the feed polls behind `LISTEN` (or instead of it).
    pub poll_interval: Duration,
    /// TLS to the database (`sslmode=require`), the server's certificate verified.
    pub tls: Option<tls::MakeRustls>,
}

impl std::fmt::Debug for tls::MakeRustls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MakeRustls")
    }
}

impl Settings {
    /// Reads `postgres://user:pass@host:port/db?...`; hookrelay's own parameters
    /// (`pool_size`, `poll_only`, `poll_interval_ms`, `sslrootcert`) are taken out before
    /// the driver reads the rest. Errors never contain the password.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut settings = (DEFAULT_POOL_SIZE, false, Duration::from_secs(1));
        let mut root_file: Option<String> = None;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || StoreError::InvalidUrl(format!("{key}={value} is not valid"));
            match key {
                "pool_size" => {
                    settings.0 = value.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?
                }
                "poll_only" => settings.1 = value.parse().map_err(|_| bad())?,
                "poll_interval_ms" => {
                    let ms: u64 = value.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
                    settings.2 = Duration::from_millis(ms);
                }
                "sslrootcert" => {
                    let path: String = form_urlencoded::parse(format!("p={value}").as_bytes())
                        .map(|(_, v)| v.into_owned())
                        .next()
                        .unwrap_or_default();
                    root_file = Some(path).filter(|p| !p.is_empty());
                }
                _ => kept.push(pair),
            }
        }
        let driver_url = match kept.is_empty() {
            true => base.to_owned(),
            false => format!("{base}?{}", kept.join("&")),
        };
        let connection: tokio_postgres::Config = driver_url.parse().map_err(|err| {
            // The driver's message names the part it could not read, never the password.
            StoreError::InvalidUrl(format!("{err}"))
        })?;
        // `require` verifies the server's certificate (as libpq's `verify-full` does); the
        // driver's `prefer` (its default) and `disable` connect without TLS.
        let tls = match connection.get_ssl_mode() {
            tokio_postgres::config::SslMode::Require => {
                Some(tls::MakeRustls::new(root_file.as_deref())?)
            }
            _ if root_file.is_some() => {
                return Err(StoreError::InvalidUrl(
                    "sslrootcert is given but sslmode is not require".into(),
                ));
            }
            _ => None,
        };
        Ok(Self {
            connection,
            pool_size: settings.0,
            poll_only: settings.1,
            poll_interval: settings.2,
            tls,
        })
    }
}

pub struct PgStore {
    pool: Pool,
    /// Claims, attempt records and releases: commits that do not wait for the WAL flush.
    bookkeeping: Pool,
    changes: broadcast::Sender<Change>,
    inserts: ingest::Inserts,
    records: records::Records,
    notifier: feed::Notifier,
    _feed: Option<feed::Feed>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// A driver error as the store's: connection trouble is `Unavailable` (ingest answers 503
/// and the caller may try again); anything else is a failure. The text never holds the URL.
pub(super) fn pg_error(err: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    let message = match err.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        // The cause says what went wrong ("invalid peer certificate: UnknownIssuer").
        None => {
            let mut message = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            message
        }
    };
    let unavailable = err.is_closed()
        || err.as_db_error().is_none()
        || err.code().is_some_and(|code| {
            [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::DISK_FULL,
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::READ_ONLY_SQL_TRANSACTION,
            ]
            .contains(code)
        });
    match unavailable {
        true => StoreError::Unavailable(message),
        false => StoreError::Backend(message),
    }
}

pub(super) fn pool_error(err: deadpool_postgres::PoolError) -> StoreError {
    match err {
        deadpool_postgres::PoolError::Backend(err) => pg_error(err),
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    }
}

fn build_pool(
    connection: tokio_postgres::Config,
    size: usize,
    tls: &Option<tls::MakeRustls>,
) -> Result<Pool, StoreError> {
    let config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        Some(tls) => Manager::from_config(connection, tls.clone(), config),
        None => Manager::from_config(connection, tokio_postgres::NoTls, config),
    };
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|err| StoreError::Backend(format!("cannot build the pool: {err}")))
}

impl PgStore {
    pub async fn open(url: &str, mode: OpenMode) -> Result<Self, StoreError> {
        Self::open_with(Settings::parse(url)?, mode).await
    }

    pub async fn open_with(settings: Settings, mode: OpenMode) -> Result<Self, StoreError> {
        let pool = build_pool(
            settings.connection.clone(),
            settings.pool_size,
            &settings.tls,
        )?;
        // Delivery bookkeeping commits without waiting for its WAL flush, as on SQLite: a
        // session setting on connections of their own, so ingest keeps waiting for its.
        // Every bookkeeping statement finds its rows by key or through the due index; with
        // the statistics of a young table (its first minute, before autovacuum analyzes it)
        // the planner chose sequential scans of `deliveries` for them, a cost that grew with
        // the table on every claim, so they are ruled out here.
        let mut relaxed = settings.connection.clone();
        let options = format!(
            "{} -c synchronous_commit=off -c enable_seqscan=off",
            settings.connection.get_options().unwrap_or_default()
        );
        relaxed.options(options.trim_start());
        let bookkeeping = build_pool(relaxed, settings.pool_size, &settings.tls)?;
        {
            let mut client = pool.get().await.map_err(pool_error)?;
            match mode {
                OpenMode::Server => {
                    schema::migrate(&mut client).await?;
                    schema::check_vacuum(&client).await?;
                }
                OpenMode::Client => {
                    if schema::version(&client).await? == 0 {
                        return Err(StoreError::Missing(
                            "no hookrelay schema in this database (a server creates it)".into(),
                        ));
                    }
                }
            }
        }
        let schema: String = {
            let client = pool.get().await.map_err(pool_error)?;
            let row = client
                .query_one("SELECT current_schema()", &[])
                .await
                .map_err(pg_error)?;
            row.get(0)
        };
        // Tells this process's notifications apart from other replicas' (they come back on
        // `LISTEN` too, and were announced here already).
        let origin: Arc<str> = crate::domain::DeliveryId::generate().as_str().into();
        let (changes, _) = broadcast::channel(crate::store::CHANGE_BUFFER);
        let notifier = feed::Notifier::new(
            pool.clone(),
            changes.clone(),
            origin,
            feed::channel_of(&schema).into(),
        );
        let feed = match mode {
            OpenMode::Server => {
                let (listening, listens) = tokio::sync::oneshot::channel();
                let feed = feed::Feed::start(&settings, &notifier, listening);
                if !settings.poll_only
                    && tokio::time::timeout(Duration::from_secs(5), listens)
                        .await
                        .is_err()
                {
                    tracing::warn!(
                        "not listening for other replicas' changes yet; polling every {:?} until then",
                        settings.poll_interval
                    );
                }
                Some(feed)
            }
            OpenMode::Client => None,
        };
        Ok(Self {
            inserts: ingest::Inserts::start(pool.clone(), notifier.clone()),
            records: records::Records::start(bookkeeping.clone()),
            pool,
            bookkeeping,
            changes,
            notifier,
            _feed: feed,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn bookkeeping(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.bookkeeping.get().await.map_err(pool_error)
    }

    /// Announces a committed change here at once and to the other replicas.
    async fn announce(&self, change: Change) {
        self.notifier.announce(change).await;
    }
}

#[cfg(test)]
mod tests;
