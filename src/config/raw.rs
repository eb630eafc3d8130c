//! The config file as written (serde shapes), `HOOKRELAY_*` environment overlays, unit parsing.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use crate::settings::{RawSize, parse_duration, parse_duration_in, parse_size};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub api: super::api::RawApi,
    #[serde(default)]
    pub retention: super::retention::RawRetention,
    #[serde(default)]
    pub sources: BTreeMap<String, RawSource>,
    #[serde(default)]
    pub destinations: BTreeMap<String, RawDestination>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub notifications: super::notifications::RawNotifications,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub store: Option<String>,
    pub shutdown_grace: Option<String>,
    pub bulk_step_pause: Option<String>,
    pub body_read_timeout: Option<String>,
    pub max_inflight_body: Option<RawSize>,
    pub max_connections: Option<i64>,
    pub max_connections_per_client: Option<i64>,
    pub header_read_timeout: Option<String>,
    pub max_header_bytes: Option<RawSize>,
    /// Bytes per second.
    pub min_body_rate: Option<RawSize>,
    pub rate_limit_per_client: Option<String>,
    pub max_pending_deliveries: Option<i64>,
    pub delivery_memory: Option<RawSize>,
    pub tls: Option<RawTls>,
    pub roles: Option<RawRoles>,
}

/// `roles = ["ingest", "api"]`, or `"ingest,api"` (as an environment variable gives it).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRoles {
    List(Vec<String>),
    Text(String),
}

impl RawRoles {
    pub fn names(&self) -> Vec<String> {
        match self {
            RawRoles::List(names) => names.clone(),
            RawRoles::Text(text) => text.split(',').map(|name| name.trim().to_owned()).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub provider: String,
    /// One secret; `secrets` takes several at once so a rotation never rejects real events.
    pub secret: Option<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Standard Webhooks keys (`whsec_...`): GitLab 19.0+ signing tokens, `standard` sources.
    #[serde(default)]
    pub signing_secrets: Vec<String>,
    /// Standard Webhooks v1a Ed25519 public keys (`whpk_...`).
    #[serde(default)]
    pub public_keys: Vec<String>,
    pub require_signature: Option<bool>,
    /// GitLab: refuse a signed request without `X-Gitlab-Token` (by default a valid signature
    /// is enough, as GitLab documents).
    pub require_token: Option<bool>,
    pub timestamp_tolerance: Option<String>,
    pub max_body: Option<RawSize>,
    pub rate_limit: Option<String>,
    /// CIDRs allowed to send; absent means any address.
    pub allow_ips: Option<Vec<String>>,
    /// Proxies whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub auth: Option<RawGenericAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawGenericAuth {
    Bearer,
    Hmac {
        header: String,
        algorithm: Option<String>,
        encoding: Option<String>,
        prefix: Option<String>,
        timestamp_header: Option<String>,
    },
    Token {
        header: String,
    },
    Basic {
        username: String,
    },
    Query {
        param: String,
    },
}

/// Unknown keys are not refused here: they are the kind's, which refuses what it does not know.
#[derive(Debug, Deserialize)]
pub struct RawDestination {
    #[serde(alias = "type", default = "default_destination_type")]
    pub kind: String,
    /// `"retry"` (default) or `"dead"`: after an attempt cut off by hookrelay stopping.
    pub on_interrupt: Option<String>,
    /// `latest` ordering: what the coalescing key is made of (default source and ref).
    pub coalesce_by: Option<Vec<String>>,
    pub timeout: Option<String>,
    pub concurrency: Option<i64>,
    pub ordering: Option<String>,
    pub paused: Option<bool>,
    #[serde(default)]
    pub circuit_breaker: RawBreaker,
    #[serde(default)]
    pub retry: RawRetry,
    /// The kind's own settings (`delivery::destinations` checks them).
    #[serde(flatten)]
    pub settings: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Consecutive failed attempts that open the breaker.
    pub failures: Option<i64>,
    /// The longest wait between two probes of an open breaker.
    pub probe_interval: Option<String>,
    /// The first wait after the breaker opens (doubling per failed probe up to
    /// `probe_interval`); default: the retry policy's `initial_delay`.
    pub min_probe_interval: Option<String>,
}

fn default_destination_type() -> String {
    "http".to_owned()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub initial_delay: Option<String>,
    pub max_delay: Option<String>,
    pub max_attempts: Option<i64>,
    pub max_age: Option<String>,
    pub retry_after_cap: Option<String>,
    pub permanent_4xx: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub source: String,
    /// Event types (`X-Gitlab-Event` values); absent means every event.
    pub events: Option<Vec<String>>,
    /// Branch name globs; with `tags`, an event matches when either matches.
    pub branches: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    /// Project or repository path globs (`group/*`).
    pub projects: Option<Vec<String>>,
    /// JSON payload conditions: `{ pointer, equals | in | regex | exists }`, `all`, `any`, `not`.
    pub when: Option<toml::Value>,
    pub destinations: Vec<String>,
}

/// Applies `HOOKRELAY_A__B__C=value` variables to the parsed file as `a.b.c = value`.
/// Returns the names of the variables applied, so errors can point at them.
pub fn apply_env_overrides(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<String> {
    let mut applied = Vec::new();
    for (name, value) in vars {
        let Some(path) = name.strip_prefix("HOOKRELAY_") else {
            continue;
        };
        if !path.contains("__") {
            continue; // HOOKRELAY_LOG and friends are not config paths.
        }
        let segments: Vec<String> = path.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if segments.iter().any(String::is_empty) {
            continue;
        }
        let key = segments.last().map(String::as_str).unwrap_or_default();
        set_path(table, &segments, parse_env_value(key, &value));
        applied.push(name);
    }
    applied
}

fn set_path(table: &mut toml::Table, segments: &[String], value: toml::Value) {
    let (first, rest) = segments.split_first().expect("non-empty path");
    let key = table
        .keys()
        .find(|existing| same_key(existing, first))
        .cloned()
        .unwrap_or_else(|| first.clone());
    if rest.is_empty() {
        table.insert(key, value);
        return;
    }
    let entry = table
        .entry(key)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    if let toml::Value::Table(inner) = entry {
        set_path(inner, rest, value);
    }
}

fn same_key(existing: &str, wanted: &str) -> bool {
    existing.len() == wanted.len()
        && existing
            .bytes()
            .zip(wanted.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'-' && b == b'_'))
}

/// Keys whose values are numbers or booleans; every other scalar stays text, so a secret
/// like `12345678` is never retyped (and then echoed in a type error).
const SCALAR_KEYS: &[&str] = &[
    "concurrency",
    "max_connections",
    "max_connections_per_client",
    "max_pending_deliveries",
    "max_header_bytes",
    "min_body_rate",
    "delivery_memory",
    "max_inflight_body",
    "max_attempts",
    "paused",
    "allow_private_network",
    "follow_redirects",
    "failures",
    "require_signature",
    "require_token",
    "permanent_4xx",
    "max_body",
];
/// Keys whose values are lists: `[..]` in TOML syntax, or one bare value.
const LIST_KEYS: &[&str] = &[
    "secrets",
    "signing_secrets",
    "public_keys",
    "allow_ips",
    "trusted_proxies",
    "events",
    "branches",
    "tags",
    "projects",
    "destinations",
    "forward_headers",
];

fn parse_env_value(key: &str, raw: &str) -> toml::Value {
    let literal = || {
        toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut table| table.remove("v"))
    };
    let text = || toml::Value::String(raw.to_owned());
    if LIST_KEYS.contains(&key) {
        return match literal() {
            Some(list @ toml::Value::Array(_)) => list,
            _ => toml::Value::Array(vec![text()]),
        };
    }
    if SCALAR_KEYS.contains(&key) {
        return match literal() {
            Some(value @ (toml::Value::Integer(_) | toml::Value::Boolean(_))) => value,
            _ => text(),
        };
    }
    text()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn env_overrides_reach_nested_keys_case_insensitively() {
        let mut table: toml::Table = toml::from_str(
            "[server]\nlisten = \"a\"\n[sources.gitlab-main]\nprovider = \"gitlab\"",
        )
        .unwrap();
        let applied = apply_env_overrides(
            &mut table,
            [
                ("HOOKRELAY_SERVER__LISTEN".into(), "0.0.0.0:9000".into()),
                (
                    "HOOKRELAY_SOURCES__GITLAB_MAIN__SECRET".into(),
                    "env:X".into(),
                ),
                ("HOOKRELAY_DESTINATIONS__CI__CONCURRENCY".into(), "4".into()),
                (
                    "HOOKRELAY_SOURCES__GITLAB_MAIN__SECRETS".into(),
                    "12345678".into(),
                ),
                (
                    "HOOKRELAY_SOURCES__GITLAB_MAIN__PROVIDER".into(),
                    "true".into(),
                ),
                ("HOOKRELAY_LOG".into(), "debug".into()),
                ("PATH".into(), "/bin".into()),
            ],
        );
        assert_eq!(applied.len(), 5);
        assert_eq!(table["server"]["listen"].as_str(), Some("0.0.0.0:9000"));
        assert_eq!(
            table["sources"]["gitlab-main"]["secret"].as_str(),
            Some("env:X")
        );
        assert_eq!(
            table["destinations"]["ci"]["concurrency"].as_integer(),
            Some(4)
        );
        // Secrets and other text stay text, however they look.
        let secrets = table["sources"]["gitlab-main"]["secrets"]
            .as_array()
            .unwrap();
        assert_eq!(secrets[0].as_str(), Some("12345678"));
        assert_eq!(
            table["sources"]["gitlab-main"]["provider"].as_str(),
            Some("true")
        );
    }

    #[test]
    fn sizes_and_durations_parse_with_units() {
        let cases = [
            (RawSize::Text("25MiB".into()), Ok(25 * 1024 * 1024)),
            (RawSize::Text("10 kb".into()), Ok(10_000)),
            (RawSize::Bytes(7), Ok(7)),
            (RawSize::Text("12 parsecs".into()), Err(())),
            (RawSize::Text("lots".into()), Err(())),
        ];
        for (raw, expected) in cases {
            assert_eq!(parse_size(&raw).map_err(|_| ()), expected, "{raw:?}");
        }
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").is_err());
    }
}
