//! `kind = "mqtt"` settings: the broker URL (a secret: it may carry a password), the topic
//! template, QoS (1 only), retain, client id, keep-alive, the forwarded headers.

use std::time::Duration;

use serde::Deserialize;

use crate::delivery::destinations::message::{Template, replace_chars};
use crate::domain::Secret;
use crate::settings::{Checker, parse_duration_in};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    /// `mqtt://user:password@host:1883`, or `env:NAME` / `file:PATH` holding it.
    pub url: Option<String>,
    pub topic: Option<String>,
    pub qos: Option<u8>,
    pub retain: Option<bool>,
    pub client_id: Option<String>,
    pub keep_alive: Option<String>,
    pub forward_headers: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttTarget {
    /// The whole URL, password included: never printed.
    pub url: Secret,
    pub topic: Template,
    pub retain: bool,
    /// `None`: `hookrelay-<destination>-<random>`, new for every connection.
    pub client_id: Option<String>,
    pub keep_alive: Duration,
    /// Original headers sent as user properties; `None` means the provider's.
    pub forward_headers: Option<Vec<String>>,
}

/// Where to connect, read from the URL when a connection is made.
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

pub(in crate::delivery::destinations) fn validate(
    c: &mut Checker,
    location: &str,
    raw: &RawMqtt,
) -> Option<MqttTarget> {
    let url = match &raw.url {
        Some(text) => c.check(
            format!("{location}.url"),
            Secret::resolve(text).and_then(|secret| broker(&secret).map(|_| secret)),
        ),
        None => {
            c.error(format!("{location}.url"), "an mqtt destination needs a url");
            None
        }
    };
    let topic = match &raw.topic {
        Some(text) => c.check(format!("{location}.topic"), parse_topic(text)),
        None => {
            c.error(
                format!("{location}.topic"),
                "an mqtt destination needs a topic",
            );
            None
        }
    };
    let qos_ok = raw.qos.is_none_or(|qos| qos == 1);
    if !qos_ok {
        // QoS 0 has no acknowledgement to call "delivered"; QoS 2 adds nothing the delivery
        // id does not already give a consumer (deduplication).
        c.error(
            format!("{location}.qos"),
            "only QoS 1 is supported: delivered means the broker's PUBACK",
        );
    }
    let client_id_ok = raw
        .client_id
        .as_ref()
        .is_none_or(|id| !id.is_empty() && id.len() <= 128 && !id.chars().any(char::is_control));
    if !client_id_ok {
        c.error(
            format!("{location}.client_id"),
            "a client id is 1 to 128 characters, no control characters",
        );
    }
    let keep_alive = match &raw.keep_alive {
        Some(text) => c.check(
            format!("{location}.keep_alive"),
            parse_duration_in(text, Duration::from_secs(5), Duration::from_secs(65_535)),
        ),
        None => Some(Duration::from_secs(30)),
    };
    let forward_headers = crate::delivery::destinations::forward_headers(
        c,
        &format!("{location}.forward_headers"),
        &raw.forward_headers,
    );
    if !(qos_ok && client_id_ok) {
        return None;
    }
    Some(MqttTarget {
        url: url?,
        topic: topic?,
        retain: raw.retain.unwrap_or(false),
        client_id: raw.client_id.clone(),
        keep_alive: keep_alive?,
        forward_headers: forward_headers?,
    })
}

/// A topic template whose literal text is a valid topic name (no wildcards, no NUL).
fn parse_topic(text: &str) -> Result<Template, String> {
    if text.contains(['+', '#', '\0']) {
        return Err("a topic name cannot contain the wildcards + and # (nor NUL)".to_owned());
    }
    Template::parse(text).map_err(|err| format!("template {err}"))
}

/// Host, port and credentials from the URL; errors never quote it (it may hold a password).
pub fn broker(url: &Secret) -> Result<Broker, String> {
    let text = std::str::from_utf8(url.expose()).map_err(|_| "is not UTF-8".to_owned())?;
    let url = reqwest::Url::parse(text).map_err(|err| format!("is not a URL: {err}"))?;
    if !matches!(url.scheme(), "mqtt" | "tcp") {
        return Err("must start with mqtt:// (this build has no TLS for MQTT)".to_owned());
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err("takes no path or query: mqtt://user:password@host:port".to_owned());
    }
    let host = match url.host_str() {
        // An IPv6 address is written in brackets in a URL, and connected to without.
        Some(host) if !host.is_empty() => host.trim_start_matches('[').trim_end_matches(']'),
        _ => return Err("has no host".to_owned()),
    }
    .to_owned();
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| "has a user or password that is not UTF-8".to_owned())
    };
    let credentials = match url.username() {
        "" => None,
        user => Some((decode(user)?, decode(url.password().unwrap_or_default())?)),
    };
    Ok(Broker {
        host,
        port: url.port().unwrap_or(1883),
        credentials,
    })
}

/// A field value inside a topic: `/` would add levels, `+` and `#` are wildcards.
pub fn clean_level(value: &str) -> String {
    replace_chars(value, |ch| matches!(ch, '/' | '+' | '#' | '\0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(table: &str) -> Result<MqttTarget, String> {
        let raw: RawMqtt = toml::from_str(table).map_err(|err| err.message().to_owned())?;
        let mut c = Checker {
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let target = validate(&mut c, "destinations.m", &raw);
        let problems: Vec<String> = c.errors.iter().map(|e| e.message.clone()).collect();
        target.ok_or(problems.join("\n"))
    }

    #[test]
    fn settings_are_checked_without_printing_the_url() {
        let good = check(
            r#"url = "mqtt://bot:p%40ss@127.0.0.1"
topic = "hooks/{source}/{event_type}""#,
        )
        .unwrap();
        assert!(!good.retain);
        assert!(!format!("{good:?}").contains("p%40ss"));
        let broker = broker(&good.url).unwrap();
        assert_eq!((broker.host.as_str(), broker.port), ("127.0.0.1", 1883));
        assert_eq!(
            broker.credentials,
            Some(("bot".to_owned(), "p@ss".to_owned()))
        );
        for (table, expected) in [
            (r#"topic = "t""#, "needs a url"),
            (r#"url = "mqtt://h""#, "needs a topic"),
            (
                "url = \"mqtts://u:hunter2@h\"\ntopic = \"t\"",
                "must start with mqtt://",
            ),
            (
                "url = \"mqtt://u:hunter2@h:99999\"\ntopic = \"t\"",
                "is not a URL",
            ),
            ("url = \"mqtt://u:hunter2@h/x\"\ntopic = \"t\"", "no path"),
            ("url = \"mqtt://h\"\ntopic = \"a/+/b\"", "wildcards"),
            (
                "url = \"mqtt://h\"\ntopic = \"a/{nope}\"",
                "unknown field {nope}",
            ),
            ("url = \"mqtt://h\"\ntopic = \"t\"\nqos = 0", "only QoS 1"),
            ("url = \"mqtt://h\"\ntopic = \"t\"\nkeep_alive = \"1s\"", ""),
            (
                "url = \"mqtt://h\"\ntopic = \"t\"\nqueue = \"q\"",
                "unknown field",
            ),
        ] {
            let err = check(table).unwrap_err();
            assert!(err.contains(expected), "{table}: {err}");
            assert!(!err.contains("hunter2"), "{table}: {err}");
        }
    }

    #[test]
    fn field_values_cannot_add_levels_or_wildcards() {
        assert_eq!(clean_level("group/app+#\0.x\n"), "group_app___.x_");
    }
}
