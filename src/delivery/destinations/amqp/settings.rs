//! `kind = "amqp"` settings: the broker URL (a secret: it carries the password), the exchange
//! and the routing key template, the forwarded headers.

use std::str::FromStr;

use serde::Deserialize;

use crate::delivery::destinations::message::{Template, replace_chars};
use crate::domain::Secret;
use crate::settings::Checker;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmqp {
    /// `amqp://user:password@host:port/vhost`, or `env:NAME` / `file:PATH` holding it.
    pub url: Option<String>,
    /// Empty (the default exchange) routes by queue name.
    pub exchange: Option<String>,
    pub routing_key: Option<String>,
    pub forward_headers: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AmqpTarget {
    /// The whole URL, password included: never printed.
    pub url: Secret,
    pub exchange: String,
    pub routing_key: Template,
    /// Original headers copied into the message's headers; `None` means the provider's.
    pub forward_headers: Option<Vec<String>>,
}

/// AMQP names (exchange, routing key, content type) are short strings: at most 255 bytes.
pub const MAX_NAME_BYTES: usize = 255;

pub(in crate::delivery::destinations) fn validate(
    c: &mut Checker,
    location: &str,
    raw: &RawAmqp,
) -> Option<AmqpTarget> {
    let url = match &raw.url {
        Some(text) => c.check(format!("{location}.url"), parse_url(text)),
        None => {
            c.error(format!("{location}.url"), "an amqp destination needs a url");
            None
        }
    };
    let exchange = raw.exchange.clone().unwrap_or_default();
    let exchange_ok = exchange.len() <= MAX_NAME_BYTES
        && exchange
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.:".contains(ch));
    if !exchange_ok {
        c.error(
            format!("{location}.exchange"),
            "an exchange name is at most 255 letters, digits, '-', '_', '.' or ':'",
        );
    }
    let routing_key = match &raw.routing_key {
        Some(text) => c.check(
            format!("{location}.routing_key"),
            Template::parse(text).map_err(|err| format!("template {err}")),
        ),
        None => {
            c.error(
                format!("{location}.routing_key"),
                "an amqp destination needs a routing_key (with the default exchange: a queue name)",
            );
            None
        }
    };
    let forward_headers = crate::delivery::destinations::forward_headers(
        c,
        &format!("{location}.forward_headers"),
        &raw.forward_headers,
    );
    Some(AmqpTarget {
        url: url?,
        exchange: exchange_ok.then_some(exchange)?,
        routing_key: routing_key?,
        forward_headers: forward_headers?,
    })
}

/// Resolves `env:`/`file:` and checks the URL; errors never quote it (it holds a password).
fn parse_url(text: &str) -> Result<Secret, String> {
    let secret = Secret::resolve(text)?;
    let url = std::str::from_utf8(secret.expose()).map_err(|_| "is not UTF-8".to_owned())?;
    if !url.starts_with("amqp://") {
        return Err("must start with amqp:// (this build has no TLS for AMQP)".to_owned());
    }
    lapin::uri::AMQPUri::from_str(url).map_err(|_| {
        "is not an AMQP URL (amqp://user:password@host:port/vhost, %2f for the vhost /)".to_owned()
    })?;
    Ok(secret)
}

/// A field value inside a routing key: `.` separates words and `*`/`#` are wildcards in
/// topic exchanges, so none may come from an event.
pub fn clean_word(value: &str) -> String {
    replace_chars(value, |ch| matches!(ch, '.' | '*' | '#' | ' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(table: &str) -> Result<AmqpTarget, String> {
        let raw: RawAmqp = toml::from_str(table).map_err(|err| err.message().to_owned())?;
        let mut c = Checker {
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let target = validate(&mut c, "destinations.q", &raw);
        let problems: Vec<String> = c.errors.iter().map(|e| e.message.clone()).collect();
        target.ok_or(problems.join("\n"))
    }

    #[test]
    fn settings_are_checked_without_printing_the_url() {
        let good = check(
            r#"url = "amqp://guest:guest@127.0.0.1:5672/%2f"
routing_key = "gitlab.{project}""#,
        )
        .unwrap();
        assert_eq!(good.exchange, "");
        assert!(!format!("{good:?}").contains("guest"));
        for (table, expected) in [
            (r#"routing_key = "q""#, "needs a url"),
            (r#"url = "amqp://u:pw@h/%2f""#, "needs a routing_key"),
            (
                r#"url = "amqps://u:hunter2@h/%2f"
routing_key = "q""#,
                "must start with amqp://",
            ),
            (
                r#"url = "amqp://u:hunter2@h:notaport/%2f"
routing_key = "q""#,
                "is not an AMQP URL",
            ),
            (
                r#"url = "amqp://h"
routing_key = "x.{nope}""#,
                "unknown field {nope}",
            ),
            (
                r#"url = "amqp://h"
routing_key = "q"
exchange = "a b""#,
                "exchange name",
            ),
            (
                r#"url = "amqp://h"
routing_key = "q"
mandatory = false"#,
                "unknown field",
            ),
        ] {
            let err = check(table).unwrap_err();
            assert!(err.contains(expected), "{table}: {err}");
            assert!(!err.contains("hunter2"), "{table}: {err}");
        }
    }

    #[test]
    fn field_values_cannot_add_words_or_wildcards() {
        assert_eq!(clean_word("group/app.v2 *#\n"), "group/app_v2____");
    }
}
