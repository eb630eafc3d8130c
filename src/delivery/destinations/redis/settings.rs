//! `kind = "redis"` settings: the server URL (a secret: it may carry a password), the stream
//! key template, `MAXLEN ~`, whether to wait for the AOF fsync, and the dedup window.

use std::time::Duration;

use serde::Deserialize;

use crate::delivery::destinations::message::Template;
use crate::domain::Secret;
use crate::settings::{Checker, parse_duration};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://[user:password@]host[:port][/db]`; `env:NAME`/`file:PATH` too.
    pub url: Option<String>,
    /// The stream's key, e.g. `hooks:{source}`.
    pub stream: Option<String>,
    /// `XADD ... MAXLEN ~ n`: the stream is trimmed to about this many entries.
    pub maxlen: Option<u64>,
    /// `"none"` (the XADD reply) or `"aof"` (also `WAITAOF 1 0`: fsynced on the server).
    pub durable: Option<String>,
    /// How long a delivery id is remembered so a retry does not append twice; `"0"`: off.
    pub dedup_window: Option<String>,
    pub forward_headers: Option<Vec<String>>,
}

/// What "delivered" waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durable {
    /// The XADD reply: in the server's memory.
    Reply,
    /// And `WAITAOF 1 0`: written and fsynced to the server's append-only file.
    Aof,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisTarget {
    /// The whole URL, credentials included: only the client sees it.
    pub url: Secret,
    /// `host:port`: safe to print.
    pub address: String,
    pub stream: Template,
    pub maxlen: Option<u64>,
    pub durable: Durable,
    /// Zero: no dedup.
    pub dedup_window: Duration,
    /// Original headers sent as fields; `None` means the provider's defaults.
    pub forward_headers: Option<Vec<String>>,
}

/// The default dedup window: a day of retries of one delivery append once.
const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// The printable address of a Redis URL, or why it is not one (never the URL itself).
fn address(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|err| format!("is not a URL: {err}"))?;
    match url.scheme() {
        "redis" => {}
        "rediss" => return Err("rediss (TLS) is not supported; use redis://".to_owned()),
        other => return Err(format!("scheme {other:?} is not redis")),
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("has no host")?;
    redis::IntoConnectionInfo::into_connection_info(text)
        .map_err(|_| "is not a Redis URL (redis://[user:password@]host[:port][/db])")?;
    Ok(format!("{host}:{}", url.port().unwrap_or(6379)))
}

fn dedup_window(raw: &Option<String>) -> Result<Duration, String> {
    match raw.as_deref().map(str::trim) {
        None => Ok(DEFAULT_DEDUP_WINDOW),
        Some("0") => Ok(Duration::ZERO),
        Some(text) => {
            let window = parse_duration(text)?;
            if window < Duration::from_secs(1) {
                return Err("is under a second (write \"0\" to turn dedup off)".to_owned());
            }
            Ok(window)
        }
    }
}

pub(in crate::delivery::destinations) fn validate(
    c: &mut Checker,
    location: &str,
    raw: &RawRedis,
) -> Option<RedisTarget> {
    let url = match &raw.url {
        Some(text) => c.check(
            format!("{location}.url"),
            Secret::resolve(text).and_then(|secret| {
                let text =
                    std::str::from_utf8(secret.expose()).map_err(|_| "is not UTF-8".to_owned())?;
                Ok((address(text)?, secret))
            }),
        ),
        None => {
            c.error(format!("{location}.url"), "a redis destination needs a url");
            None
        }
    };
    let stream = match &raw.stream {
        Some(text) => c.check(format!("{location}.stream"), Template::parse(text)),
        None => {
            c.error(
                format!("{location}.stream"),
                "a redis destination needs a stream key, e.g. \"hooks:{source}\"",
            );
            None
        }
    };
    if raw.maxlen == Some(0) {
        c.error(
            format!("{location}.maxlen"),
            "is 0: the stream would keep nothing",
        );
    }
    let durable = match raw.durable.as_deref() {
        None | Some("none") => Some(Durable::Reply),
        Some("aof") => Some(Durable::Aof),
        Some(other) => {
            c.error(
                format!("{location}.durable"),
                format!("{other:?} is not \"none\" or \"aof\""),
            );
            None
        }
    };
    let window = c.check(
        format!("{location}.dedup_window"),
        dedup_window(&raw.dedup_window),
    );
    let forward_headers = crate::delivery::destinations::forward_headers(
        c,
        &format!("{location}.forward_headers"),
        &raw.forward_headers,
    )?;
    // `body` is the field the body travels in.
    if forward_headers.iter().flatten().any(|name| name == "body") {
        c.error(
            format!("{location}.forward_headers"),
            "\"body\" is the field the body is sent in",
        );
    }
    let (address, url) = url?;
    Some(RedisTarget {
        url,
        address,
        stream: stream?,
        maxlen: raw.maxlen.filter(|&n| n > 0),
        durable: durable?,
        dedup_window: window?,
        forward_headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_showing_them() {
        assert_eq!(
            address("redis://:pw@127.0.0.1/2"),
            Ok("127.0.0.1:6379".into())
        );
        assert_eq!(address("redis://u:pw@[::1]:6380"), Ok("[::1]:6380".into()));
        for bad in ["rediss://:hunter2@h", "http://:hunter2@h", "hunter2"] {
            let why = address(bad).unwrap_err();
            assert!(!why.contains("hunter2"), "{why}");
        }
    }

    #[test]
    fn the_dedup_window_defaults_to_a_day_and_zero_turns_it_off() {
        assert_eq!(dedup_window(&None), Ok(DEFAULT_DEDUP_WINDOW));
        assert_eq!(dedup_window(&Some("0".into())), Ok(Duration::ZERO));
        assert_eq!(
            dedup_window(&Some("10m".into())),
            Ok(Duration::from_secs(600))
        );
        assert!(dedup_window(&Some("10ms".into())).is_err());
        assert!(dedup_window(&Some("soon".into())).is_err());
    }
}
