//! Typed configuration: one TOML file plus `HOOKRELAY_*` overrides, validated once, every error located.

mod destination;
mod raw;
mod route;
mod secret;
mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use secret::Secret;

use crate::delivery::plan::RetryPolicy;
use crate::domain::{Name, Ordering};
use crate::routing::Route;
use raw::{RawConfig, parse_duration_in, parse_size};

pub const DEFAULT_STORE: &str = "sqlite://hookrelay.db";
pub const DEFAULT_MAX_BODY: u64 = 25 * 1024 * 1024;
/// SQLite stores a blob of at most 1 GB; bodies are kept whole.
pub const MAX_BODY_LIMIT: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_MAX_INFLIGHT_BODY: u64 = 256 * 1024 * 1024;
const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub sources: BTreeMap<Name, SourceConfig>,
    pub destinations: BTreeMap<Name, DestinationConfig>,
    pub routes: Vec<Route>,
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
    /// A client slower than this to send its body gets 408 instead of holding a connection.
    pub body_read_timeout: Duration,
    /// Request bodies being received at once, all sources together; past it ingest answers
    /// 503 so a flood of large or slow uploads cannot exhaust memory.
    pub max_inflight_body: u64,
    /// Open connections at most; more clients wait in the accept backlog.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: Name,
    pub provider: crate::ingest::ProviderKind,
    /// Every secret accepted at once, so a rotation never rejects real events.
    pub secrets: Vec<Secret>,
    /// Standard Webhooks symmetric keys, already base64-decoded from `whsec_...`.
    pub signing_secrets: Vec<Secret>,
    /// Standard Webhooks v1a public keys.
    pub public_keys: Vec<ed25519_dalek::VerifyingKey>,
    /// Refuse requests without a valid `webhook-signature` (GitLab sources).
    pub require_signature: bool,
    /// How far `webhook-timestamp` may be from our clock, either way.
    pub timestamp_tolerance: Duration,
    pub max_body_bytes: u64,
    pub allow_ips: Option<Vec<ipnet::IpNet>>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub generic_auth: crate::ingest::generic::GenericAuth,
}

#[derive(Debug, Clone)]
pub struct DestinationConfig {
    pub name: Name,
    pub url: reqwest::Url,
    pub timeout: Duration,
    pub concurrency: usize,
    pub ordering: Ordering,
    /// Signs forwarded requests (`webhook-signature`) so the receiver can verify us.
    pub secret: Option<Secret>,
    /// Original headers copied onto forwarded requests; `None` means the provider's defaults.
    pub forward_headers: Option<Vec<String>>,
    /// Deliveries are stored and held, not attempted, until the destination is resumed.
    pub paused: bool,
    pub retry: RetryPolicy,
}

/// One problem in the config and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub location: String,
    pub message: String,
}

/// Every problem found, so one `config check` run shows them all.
#[derive(Debug)]
pub struct ConfigErrors {
    pub origin: String,
    pub errors: Vec<ConfigError>,
    pub env_applied: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        writeln!(f, "{}: {count} error(s) in the configuration", self.origin)?;
        for error in &self.errors {
            writeln!(f, "  {}: {}", error.location, error.message)?;
        }
        if !self.env_applied.is_empty() {
            writeln!(
                f,
                "  (environment overrides applied: {})",
                self.env_applied.join(", ")
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// One problem with the file as a whole (unreadable, not TOML, wrong shape).
    fn whole_file(origin: &str, message: String, env_applied: Vec<String>) -> Self {
        Self {
            origin: origin.to_owned(),
            errors: vec![ConfigError {
                location: origin.to_owned(),
                message,
            }],
            env_applied,
        }
    }
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
            .map_err(|err| ConfigErrors::whole_file(origin, err.to_string(), vec![]))?;
        let env_applied = raw::apply_env_overrides(&mut table, env);
        // Deserializing the text itself keeps line numbers in messages; the table only when
        // environment overrides changed it.
        let parsed = if env_applied.is_empty() {
            toml::from_str::<RawConfig>(text).map_err(|err| err.to_string())
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

/// Only `server.store` (file, then environment): what CLI commands next to a running server
/// need, without resolving secrets they never use.
pub fn load_store_url(path: &Path) -> Result<String, ConfigErrors> {
    let (text, origin) = read_file(path)?;
    let fail = |message: String| ConfigErrors::whole_file(&origin, message, vec![]);
    let mut table: toml::Table = toml::from_str(&text).map_err(|err| fail(err.to_string()))?;
    raw::apply_env_overrides(&mut table, std::env::vars());
    match table.get("server").and_then(|server| server.get("store")) {
        None => Ok(DEFAULT_STORE.to_owned()),
        Some(toml::Value::String(url)) => Ok(url.clone()),
        Some(_) => Err(fail(
            "server.store must be a string like sqlite://PATH".to_owned(),
        )),
    }
}

impl RawConfig {
    fn deserialize_table(table: toml::Table) -> Result<RawConfig, String> {
        use serde::Deserialize;
        RawConfig::deserialize(toml::Value::Table(table)).map_err(|err| err.to_string())
    }
}

/// Collects errors (and warnings) instead of stopping at the first one.
struct Checker {
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Checker {
    fn error(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            location: location.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            location: location.into(),
            message: message.into(),
        });
    }

    fn check<T>(&mut self, location: impl Into<String>, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|message| {
                self.errors.push(ConfigError {
                    location: location.into(),
                    message,
                })
            })
            .ok()
    }
}

fn validate(raw: RawConfig) -> Result<Config, Vec<ConfigError>> {
    let mut c = Checker {
        errors: vec![],
        warnings: vec![],
    };
    let server = &raw.server;
    let listen = c.check(
        "server.listen",
        server
            .listen
            .as_deref()
            .unwrap_or("127.0.0.1:8080")
            .parse::<SocketAddr>()
            .map_err(|err| format!("expected an address like 127.0.0.1:8080: {err}")),
    );
    let store = server
        .store
        .clone()
        .unwrap_or_else(|| DEFAULT_STORE.to_owned());
    if !store.starts_with("sqlite://") {
        c.error(
            "server.store",
            format!("{store:?}: only sqlite://PATH is supported in this version"),
        );
    }
    let duration_or =
        |c: &mut Checker, location: &str, raw: &Option<String>, default: u64, min: Duration| {
            match raw {
                Some(text) => c.check(location, parse_duration_in(text, min, HOUR)),
                None => Some(Duration::from_secs(default)),
            }
        };
    let shutdown_grace = duration_or(
        &mut c,
        "server.shutdown_grace",
        &server.shutdown_grace,
        10,
        Duration::ZERO,
    );
    let body_read_timeout = duration_or(
        &mut c,
        "server.body_read_timeout",
        &server.body_read_timeout,
        30,
        Duration::from_secs(1),
    );

    let mut sources = BTreeMap::new();
    for (name, source) in &raw.sources {
        let location = format!("sources.{name}");
        if let Some(parsed) = source::validate_source(&mut c, &location, name, source) {
            sources.insert(parsed.name.clone(), parsed);
        }
    }
    let max_inflight_body = match &server.max_inflight_body {
        Some(size) => c.check("server.max_inflight_body", parse_size(size)),
        None => Some(DEFAULT_MAX_INFLIGHT_BODY),
    };
    if let Some(budget) = max_inflight_body {
        for source in sources.values() {
            if source.max_body_bytes > budget {
                c.error(
                    format!("sources.{}.max_body", source.name),
                    format!("is larger than server.max_inflight_body ({budget} bytes): such a body could never be received"),
                );
            }
        }
    }
    let max_connections = c.check(
        "server.max_connections",
        match server.max_connections {
            None => Ok(4096),
            Some(n) if (1..=1_000_000).contains(&n) => Ok(n as usize),
            Some(n) => Err(format!("{n} is outside 1..=1000000")),
        },
    );
    let mut destinations = BTreeMap::new();
    for (name, destination) in &raw.destinations {
        let location = format!("destinations.{name}");
        if let Some(parsed) =
            destination::validate_destination(&mut c, &location, name, destination)
        {
            destinations.insert(parsed.name.clone(), parsed);
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
        server: ServerConfig {
            listen: listen.expect("checked"),
            store,
            shutdown_grace: shutdown_grace.expect("checked"),
            body_read_timeout: body_read_timeout.expect("checked"),
            max_inflight_body: max_inflight_body.expect("checked"),
            max_connections: max_connections.expect("checked"),
        },
        sources,
        destinations,
        routes,
        warnings: c.warnings,
    })
}

#[cfg(test)]
mod tests;
