//! Typed configuration: one TOML file plus `HOOKRELAY_*` overrides, validated once, every error located.

pub mod api;
mod destination;
mod error;
mod notifications;
mod raw;
mod retention;
mod route;
mod server;
mod source;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use crate::delivery::destinations::{DestinationConfig, Target};
pub use crate::domain::Secret;
pub use error::{ConfigError, ConfigErrors};
use error::{toml_error, without_values};
pub use server::Roles;

use crate::domain::Name;
use crate::routing::Route;
use crate::settings::Checker;
use raw::RawConfig;

pub const DEFAULT_STORE: &str = "sqlite://hookrelay.db";
pub const DEFAULT_MAX_BODY: u64 = 25 * 1024 * 1024;
/// SQLite stores a blob of at most 1 GB; bodies are kept whole.
pub const MAX_BODY_LIMIT: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_MAX_INFLIGHT_BODY: u64 = 256 * 1024 * 1024;
const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub api: api::ApiConfig,
    pub retention: crate::domain::Retention,
    pub sources: BTreeMap<Name, SourceConfig>,
    pub destinations: BTreeMap<Name, DestinationConfig>,
    pub routes: Vec<Route>,
    /// When hookrelay tells of its own happenings (`[notifications]`).
    pub notifications: crate::notify::Settings,
    /// Valid but risky settings (`config check` prints them, `serve` logs them).
    pub warnings: Vec<ConfigError>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `sqlite://path`; the scheme picks the store implementation.
    pub store: String,
    /// How long in-flight deliveries may finish after SIGTERM before they are released.
    pub shutdown_grace: Duration,
    /// A pause between two steps of a bulk job (200 deliveries each), leaving the disk to
    /// ingest during a large replay.
    pub bulk_step_pause: Duration,
    /// A client slower than this to send its body gets 408 instead of holding a connection.
    pub body_read_timeout: Duration,
    /// Request bodies being received at once, all sources together; past it ingest answers
    /// 503 so a flood of large or slow uploads cannot exhaust memory.
    pub max_inflight_body: u64,
    /// Open connections at most; more clients wait in the accept backlog.
    pub max_connections: usize,
    /// Open connections from one address at most; more are closed at once, so one client
    /// cannot take every slot.
    pub max_connections_per_client: usize,
    /// From connecting (or the end of a response) to a whole request head; also how long an
    /// idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// Request line and headers; header memory is at most this times `max_connections`.
    pub max_header_bytes: usize,
    /// Bytes per second a body must average once its first seconds have passed.
    pub min_body_rate: u64,
    /// Requests per second from one client address (after proxies), if limited.
    pub rate_limit_per_client: Option<Rate>,
    /// Past this many deliveries waiting, ingest answers 503 instead of filling the disk.
    pub max_pending_deliveries: Option<u64>,
    /// Bytes of stored bodies the delivery workers may hold in memory at once.
    pub delivery_memory: u64,
    pub tls: Option<TlsFiles>,
    /// What this process does; several processes on one (PostgreSQL) store may split them.
    pub roles: Roles,
}

/// A request rate: `count` per `period`, in bursts of up to `count`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: Name,
    pub provider: crate::ingest::ProviderKind,
    /// What requests are verified with (ingest's own type).
    pub credentials: crate::ingest::Credentials,
    pub max_body_bytes: u64,
    /// Requests per period to this source, if limited.
    pub rate_limit: Option<Rate>,
    pub allow_ips: Option<Vec<ipnet::IpNet>>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

fn read_file(path: &Path) -> Result<(String, String), ConfigErrors> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((text, origin)),
        Err(err) => Err(ConfigErrors::whole_file(
            &origin,
            format!("cannot read file: {err}"),
            vec![],
        )),
    }
}

impl Config {
    /// Reads and validates a config file, applying `HOOKRELAY_*` variables of this process.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let (text, origin) = read_file(path)?;
        Self::parse(&text, &origin, std::env::vars())
    }

    pub fn parse(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|err| ConfigErrors::whole_file(origin, toml_error(&err, text), vec![]))?;
        let env_applied = raw::apply_env_overrides(&mut table, env);
        // Deserializing the text itself keeps line numbers in messages; the table only when
        // environment overrides changed it.
        let parsed = if env_applied.is_empty() {
            toml::from_str::<RawConfig>(text).map_err(|err| toml_error(&err, text))
        } else {
            RawConfig::deserialize_table(table)
        };
        let raw = parsed
            .map_err(|message| ConfigErrors::whole_file(origin, message, env_applied.clone()))?;
        validate(raw).map_err(|errors| ConfigErrors {
            origin: origin.to_owned(),
            errors,
            env_applied,
        })
    }
}

/// Where the local server serves its API: `api.socket` (file, then environment), what CLI
/// commands need, without resolving secrets they never use.
pub fn load_api_socket(path: &Path) -> Result<Option<std::path::PathBuf>, ConfigErrors> {
    let (text, origin) = read_file(path)?;
    let fail = |message: String| ConfigErrors::whole_file(&origin, message, vec![]);
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|err| fail(toml_error(&err, &text)))?;
    raw::apply_env_overrides(&mut table, std::env::vars());
    let text_at = |section: &str, key: &str| match table.get(section).and_then(|s| s.get(key)) {
        None => Ok(None),
        Some(toml::Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(fail(format!("{section}.{key} must be a string"))),
    };
    let store = text_at("server", "store")?.unwrap_or_else(|| DEFAULT_STORE.to_owned());
    Ok(api::socket_path(
        text_at("api", "socket")?.as_deref(),
        &store,
    ))
}

impl RawConfig {
    fn deserialize_table(table: toml::Table) -> Result<RawConfig, String> {
        use serde::Deserialize;
        RawConfig::deserialize(toml::Value::Table(table))
            .map_err(|err| without_values(err.message()))
    }
}

fn validate(raw: RawConfig) -> Result<Config, Vec<ConfigError>> {
    let mut c = Checker {
        errors: vec![],
        warnings: vec![],
    };
    let server = server::validate_server(&mut c, &raw.server);
    let store_url = raw.server.store.as_deref().unwrap_or(DEFAULT_STORE);
    let api = api::validate_api(&mut c, &raw.api, store_url);
    let retention = retention::validate_retention(&mut c, &raw.retention);
    let notifications = notifications::validate_notifications(&mut c, &raw.notifications);
    let mut sources = BTreeMap::new();
    for (name, source) in &raw.sources {
        let location = format!("sources.{name}");
        if let Some(parsed) = source::validate_source(&mut c, &location, name, source) {
            sources.insert(parsed.name.clone(), parsed);
        }
    }
    // Checked even when another server setting is wrong, so one run shows every error.
    let budget = match &server {
        Some(server) => Some(server.max_inflight_body),
        None => raw
            .server
            .max_inflight_body
            .as_ref()
            .map_or(Some(DEFAULT_MAX_INFLIGHT_BODY), |size| {
                raw::parse_size(size).ok()
            }),
    };
    if let Some(budget) = budget {
        for source in sources.values() {
            if source.max_body_bytes > budget {
                c.error(
                    format!("sources.{}.max_body", source.name),
                    format!(
                        "is larger than server.max_inflight_body ({budget} bytes): such a body could never be received"
                    ),
                );
            }
        }
    }
    let mut destinations = BTreeMap::new();
    for (name, destination) in &raw.destinations {
        let location = format!("destinations.{name}");
        if let Some(parsed) =
            destination::validate_destination(&mut c, &location, name, destination)
        {
            destinations.insert(parsed.name.clone(), parsed);
        }
    }
    if let Some(server) = &server {
        for destination in destinations.values() {
            if let Target::Http(http) = &destination.target
                && points_at_own_hooks(&http.url, server.listen)
            {
                c.error(
                    format!("destinations.{}.url", destination.name),
                    "points at this server's own /hooks: every event would come back as a new one",
                );
            }
        }
    }
    let mut routes = Vec::new();
    for (index, route) in raw.routes.iter().enumerate() {
        let location = format!("routes[{index}]");
        if let Some(parsed) = route::validate_route(&mut c, &location, route, &raw) {
            routes.push(parsed);
        }
    }
    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Config {
        server: server.expect("checked"),
        api,
        retention: retention.expect("checked"),
        sources,
        destinations,
        routes,
        notifications: notifications.expect("checked"),
        warnings: c.warnings,
    })
}

/// Whether `url` reaches `listen`'s `/hooks/...` (same port, a loopback or the same host).
fn points_at_own_hooks(url: &reqwest::Url, listen: SocketAddr) -> bool {
    let same_host = crate::delivery::address::literal_address(url).is_some_and(|ip| {
        ip == listen.ip()
            || ip.is_loopback() && (listen.ip().is_unspecified() || listen.ip().is_loopback())
    });
    same_host
        && url.port_or_known_default() == Some(listen.port())
        && url.path().starts_with("/hooks/")
}

#[cfg(test)]
mod tests;
