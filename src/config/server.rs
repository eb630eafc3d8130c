//! Validation of `[server]`: listener, store, timeouts, and the limits that keep the front
//! door open under hostile clients (connections, header and body budgets, rates, backlog).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawServer, RawSize, parse_duration_in, parse_size};
use super::{
    Checker, DEFAULT_MAX_INFLIGHT_BODY, DEFAULT_STORE, HOUR, Rate, ServerConfig, TlsFiles,
};

/// Limits past which a setting stops making sense (and could overflow arithmetic).
const MAX_COUNT: i64 = 1_000_000;

pub(super) fn validate_server(c: &mut Checker, server: &RawServer) -> Option<ServerConfig> {
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
    if crate::store::is_postgres(&store) {
        #[cfg(feature = "postgres")]
        if let Err(err) = crate::store::postgres::Settings::parse(&store) {
            c.error("server.store", err.to_string());
        }
        #[cfg(not(feature = "postgres"))]
        c.error(
            "server.store",
            "this hookrelay was built without PostgreSQL (the `postgres` feature)",
        );
    } else if !store.starts_with("sqlite://") {
        c.error(
            "server.store",
            "expected sqlite://PATH or postgres://USER@HOST/DATABASE",
        );
    }
    let duration =
        |c: &mut Checker, key: &str, raw: &Option<String>, default: Duration, min| match raw {
            Some(text) => c.check(format!("server.{key}"), parse_duration_in(text, min, HOUR)),
            None => Some(default),
        };
    let roles = match &server.roles {
        None => Some(Roles::ALL),
        Some(raw) => c.check("server.roles", Roles::parse(&raw.names())),
    };
    if let Some(roles) = roles
        && !roles.deliver
        && store.starts_with("sqlite://")
    {
        c.warn(
            "server.roles",
            "has no \"deliver\": one server at a time can use a SQLite store, so nothing will deliver its events",
        );
    }
    let shutdown_grace = duration(
        c,
        "shutdown_grace",
        &server.shutdown_grace,
        Duration::from_secs(10),
        Duration::ZERO,
    );
    let bulk_step_pause = duration(
        c,
        "bulk_step_pause",
        &server.bulk_step_pause,
        Duration::ZERO,
        Duration::ZERO,
    );
    let body_read_timeout = duration(
        c,
        "body_read_timeout",
        &server.body_read_timeout,
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    let header_read_timeout = duration(
        c,
        "header_read_timeout",
        &server.header_read_timeout,
        Duration::from_secs(5),
        Duration::from_millis(100),
    );
    let size = |c: &mut Checker, key: &str, raw: &Option<RawSize>, default: u64, min: u64| {
        let parsed = raw.as_ref().map_or(Ok(default), parse_size);
        c.check(
            format!("server.{key}"),
            parsed.and_then(|bytes| {
                if bytes < min {
                    Err(format!("{bytes} bytes is below the minimum of {min}"))
                } else {
                    Ok(bytes)
                }
            }),
        )
    };
    let max_inflight_body = size(
        c,
        "max_inflight_body",
        &server.max_inflight_body,
        DEFAULT_MAX_INFLIGHT_BODY,
        1024,
    );
    let max_header_bytes = size(
        c,
        "max_header_bytes",
        &server.max_header_bytes,
        32 * 1024,
        1024,
    )
    .and_then(|bytes| {
        c.check(
            "server.max_header_bytes",
            if bytes <= 1024 * 1024 {
                Ok(bytes as usize)
            } else {
                Err("is above 1MiB".to_owned())
            },
        )
    });
    let min_body_rate = size(c, "min_body_rate", &server.min_body_rate, 1024, 0);
    let delivery_memory = size(
        c,
        "delivery_memory",
        &server.delivery_memory,
        256 * 1024 * 1024,
        1024 * 1024,
    );
    let count = |c: &mut Checker, key: &str, raw: Option<i64>, default: i64| {
        c.check(
            format!("server.{key}"),
            match raw.unwrap_or(default) {
                n @ 1..=MAX_COUNT => Ok(n as usize),
                n => Err(format!("{n} is outside 1..={MAX_COUNT}")),
            },
        )
    };
    let max_connections = count(c, "max_connections", server.max_connections, 1024);
    let max_connections_per_client = count(
        c,
        "max_connections_per_client",
        server.max_connections_per_client,
        64,
    );
    let max_pending_deliveries = match server.max_pending_deliveries {
        None => Some(None),
        Some(n) if n >= 1 => Some(Some(n as u64)),
        Some(n) => c.check(
            "server.max_pending_deliveries",
            Err(format!("{n} must be at least 1")),
        ),
    };
    let rate_limit_per_client = match &server.rate_limit_per_client {
        None => Some(None),
        Some(text) => c
            .check("server.rate_limit_per_client", Rate::parse(text))
            .map(Some),
    };
    let tls = match &server.tls {
        None => Some(None),
        Some(raw) => {
            let file = |c: &mut Checker, key: &str, path: &str| {
                let path = PathBuf::from(path);
                c.check(
                    format!("server.tls.{key}"),
                    if path.is_file() {
                        Ok(path)
                    } else {
                        Err(format!("{} is not a readable file", path.display()))
                    },
                )
            };
            let cert = file(c, "cert", &raw.cert);
            let key = file(c, "key", &raw.key);
            Some(Some(TlsFiles {
                cert: cert?,
                key: key?,
            }))
        }
    };
    Some(ServerConfig {
        listen: listen?,
        store,
        shutdown_grace: shutdown_grace?,
        bulk_step_pause: bulk_step_pause?,
        body_read_timeout: body_read_timeout?,
        header_read_timeout: header_read_timeout?,
        max_inflight_body: max_inflight_body?,
        max_header_bytes: max_header_bytes?,
        min_body_rate: min_body_rate?,
        max_connections: max_connections?,
        max_connections_per_client: max_connections_per_client?,
        rate_limit_per_client: rate_limit_per_client?,
        max_pending_deliveries: max_pending_deliveries?,
        delivery_memory: delivery_memory?,
        tls: tls?,
        roles: roles?,
    })
}

/// What one process does (`[server] roles`). Every role by default; with several processes
/// on one store, a deployment can run ingest behind the public load balancer and delivery
/// elsewhere. Health, readiness and metrics are served whatever the roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// `/hooks/{source}` on the main listener.
    pub ingest: bool,
    /// The management API (its socket, `api.listen`, or the main listener).
    pub api: bool,
    /// Delivery workers.
    pub deliver: bool,
    /// Background work taken by lease: bulk jobs and retention sweeps.
    pub sweep: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        ingest: true,
        api: true,
        deliver: true,
        sweep: true,
    };

    pub fn parse(names: &[String]) -> Result<Roles, String> {
        let mut roles = Roles {
            ingest: false,
            api: false,
            deliver: false,
            sweep: false,
        };
        if names.is_empty() {
            return Err("name at least one role: ingest, api, deliver, sweep".into());
        }
        for name in names {
            let role = match name.as_str() {
                "ingest" => &mut roles.ingest,
                "api" => &mut roles.api,
                "deliver" => &mut roles.deliver,
                "sweep" => &mut roles.sweep,
                other => {
                    return Err(format!(
                        "{other:?} is not a role (ingest, api, deliver or sweep)"
                    ));
                }
            };
            if std::mem::replace(role, true) {
                return Err(format!("{name:?} is named twice"));
            }
        }
        Ok(roles)
    }

    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.ingest, "ingest"),
            (self.api, "api"),
            (self.deliver, "deliver"),
            (self.sweep, "sweep"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

impl Rate {
    /// `"100/s"`, `"600/min"`, `"5000/h"`: that many requests per period, in bursts up to it.
    pub fn parse(raw: &str) -> Result<Rate, String> {
        let bad = || format!("{raw:?} is not a rate like \"50/s\", \"600/min\" or \"5000/h\"");
        let (count, period) = raw.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let period = match period.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("{raw:?}: the count must be at least 1"));
        }
        Ok(Rate { count, period })
    }
}
