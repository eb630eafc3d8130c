//! Every destination kind, each in one file owning its raw settings, their validation, how it
//! is built and what an attempt is: the only code that knows a transport (HTTP status codes,
//! exit codes, broker acknowledgements). `config` checks the settings every kind shares and
//! hands the rest of a destination's table to [`validate`]; delivery builds with [`build`].

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod command;
pub mod http;
pub mod message;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(any(
    feature = "nats",
    feature = "redis",
    feature = "amqp",
    feature = "mqtt"
))]
mod reconnect;
#[cfg(feature = "redis")]
pub mod redis;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::Destination;
use super::breaker::BreakerPolicy;
use crate::domain::{KeyPart, Name, OnInterrupt, Ordering, RetryPolicy};
use crate::settings::{Checker, without_values};

/// Every kind this build knows, as written in `kind = "..."`.
pub const KINDS: &[&str] = &[
    "http",
    "command",
    #[cfg(feature = "nats")]
    "nats",
    #[cfg(feature = "redis")]
    "redis",
    #[cfg(feature = "amqp")]
    "amqp",
    #[cfg(feature = "mqtt")]
    "mqtt",
];

/// One destination as configured: what every kind shares, and its kind's own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationConfig {
    pub name: Name,
    /// What the destination is, by kind.
    pub target: Target,
    pub timeout: Duration,
    pub concurrency: usize,
    pub ordering: Ordering,
    /// `latest` ordering: the parts of an event its coalescing key is made of.
    pub coalesce_by: Vec<KeyPart>,
    /// Deliveries are stored and held, not attempted, until the destination is resumed.
    pub paused: bool,
    pub breaker: BreakerPolicy,
    pub retry: RetryPolicy,
    /// What an attempt cut off by hookrelay stopping (kill -9, power loss) leads to.
    pub on_interrupt: OnInterrupt,
}

/// A destination's kind and what only that kind needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Http(http::HttpTarget),
    Command(command::CommandTarget),
    #[cfg(feature = "nats")]
    Nats(nats::NatsTarget),
    #[cfg(feature = "redis")]
    Redis(redis::RedisTarget),
    #[cfg(feature = "amqp")]
    Amqp(amqp::AmqpTarget),
    #[cfg(feature = "mqtt")]
    Mqtt(mqtt::MqttTarget),
}

impl Target {
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Http(_) => "http",
            Target::Command(_) => "command",
            #[cfg(feature = "nats")]
            Target::Nats(_) => "nats",
            #[cfg(feature = "redis")]
            Target::Redis(_) => "redis",
            #[cfg(feature = "amqp")]
            Target::Amqp(_) => "amqp",
            #[cfg(feature = "mqtt")]
            Target::Mqtt(_) => "mqtt",
        }
    }
}

/// Checks a kind's own settings: `settings` is the destination's table without the keys
/// every kind shares. Problems are recorded in `c` under `location`.
pub fn validate(
    c: &mut Checker,
    location: &str,
    kind: &str,
    settings: &toml::Table,
) -> Option<Target> {
    match kind {
        "http" => {
            let raw = parse(c, location, settings)?;
            http::validate(c, location, &raw).map(Target::Http)
        }
        "command" => {
            let raw = parse(c, location, settings)?;
            command::validate(c, location, &raw).map(Target::Command)
        }
        #[cfg(feature = "nats")]
        "nats" => {
            let raw = parse(c, location, settings)?;
            nats::validate(c, location, &raw).map(Target::Nats)
        }
        #[cfg(feature = "redis")]
        "redis" => {
            let raw = parse(c, location, settings)?;
            redis::validate(c, location, &raw).map(Target::Redis)
        }
        #[cfg(feature = "amqp")]
        "amqp" => {
            let raw = parse(c, location, settings)?;
            amqp::validate(c, location, &raw).map(Target::Amqp)
        }
        #[cfg(feature = "mqtt")]
        "mqtt" => {
            let raw = parse(c, location, settings)?;
            mqtt::validate(c, location, &raw).map(Target::Mqtt)
        }
        other => {
            let known = KINDS
                .iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            c.error(
                format!("{location}.kind"),
                format!("unknown destination kind {other:?}; this build supports {known}"),
            );
            None
        }
    }
}

/// A kind's raw settings from the rest of the destination's table (unknown keys refused).
fn parse<T: DeserializeOwned>(
    c: &mut Checker,
    location: &str,
    settings: &toml::Table,
) -> Option<T> {
    c.check(
        location,
        T::deserialize(toml::Value::Table(settings.clone()))
            .map_err(|err| without_values(err.message())),
    )
}

/// Per source, the original headers its provider's deliveries carry on when a destination
/// names none.
pub type ForwardDefaults = Arc<HashMap<Name, Vec<String>>>;

/// Builds a destination of the configured kind. Nothing connects here: kinds with a
/// connection make it on first use and keep it.
pub fn build(
    config: &DestinationConfig,
    defaults: &ForwardDefaults,
) -> anyhow::Result<Arc<dyn Destination>> {
    Ok(match &config.target {
        Target::Http(target) => Arc::new(http::HttpDestination::new(
            config,
            target,
            defaults.clone(),
        )?),
        Target::Command(target) => Arc::new(command::CommandDestination::new(
            target.clone(),
            config.timeout,
        )),
        #[cfg(feature = "nats")]
        Target::Nats(target) => {
            Arc::new(nats::NatsDestination::new(config, target, defaults.clone()))
        }
        #[cfg(feature = "redis")]
        Target::Redis(target) => Arc::new(redis::RedisDestination::new(
            config,
            target,
            defaults.clone(),
        )),
        #[cfg(feature = "amqp")]
        Target::Amqp(target) => {
            Arc::new(amqp::AmqpDestination::new(config, target, defaults.clone()))
        }
        #[cfg(feature = "mqtt")]
        Target::Mqtt(target) => {
            Arc::new(mqtt::MqttDestination::new(config, target, defaults.clone()))
        }
    })
}

/// Headers hookrelay sets itself and hop-by-hop headers are never copied (nor credentials,
/// which ingest knows: `ingest::CREDENTIAL_HEADERS`).
const NOT_FORWARDABLE: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
];

/// `forward_headers = [...]`: the original headers a destination passes on (lowercase);
/// `None` when unset (the source provider's defaults).
pub(crate) fn forward_headers(
    c: &mut Checker,
    location: &str,
    raw: &Option<Vec<String>>,
) -> Option<Option<Vec<String>>> {
    let Some(list) = raw else {
        return Some(None);
    };
    let mut names = Vec::new();
    for (i, name) in list.iter().enumerate() {
        let lower = name.to_ascii_lowercase();
        if ::http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            c.error(
                format!("{location}[{i}]"),
                format!("{name:?} is not a header name"),
            );
        } else if not_forwardable(&lower.as_str()) {
            c.error(
                format!("{location}[{i}]"),
                format!("{name:?} is set by hookrelay or must not be forwarded"),
            );
        } else {
            names.push(lower);
        }
    }
    Some(Some(names))
}

fn not_forwardable(name: &&str) -> bool {
    NOT_FORWARDABLE.contains(name) || crate::ingest::CREDENTIAL_HEADERS.contains(name)
}
