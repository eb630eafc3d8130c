//! How settings are checked, shared by `config` and each destination kind: the collector of
//! located problems, and the parsers of durations and sizes.

use std::time::Duration;

use serde::Deserialize;

/// One problem in the config and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub location: String,
    pub message: String,
}

/// Collects errors (and warnings) instead of stopping at the first one.
pub struct Checker {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

impl Checker {
    pub fn error(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            location: location.into(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            location: location.into(),
            message: message.into(),
        });
    }

    pub fn check<T>(
        &mut self,
        location: impl Into<String>,
        result: Result<T, String>,
    ) -> Option<T> {
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

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|err| format!("{raw:?} is not a duration like \"10s\" or \"1h 30m\": {err}"))
}

/// A duration within `min..=max`, so no setting can stall or overflow the server.
pub fn parse_duration_in(raw: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let duration = parse_duration(raw)?;
    if duration < min || duration > max {
        return Err(format!(
            "{raw:?} is outside {} ..= {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(duration)
}

pub fn parse_size(raw: &RawSize) -> Result<u64, String> {
    let text = match raw {
        RawSize::Bytes(bytes) => return Ok(*bytes),
        RawSize::Text(text) => text.trim(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like \"25MiB\" or 1048576"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1024,
        "mb" => 1000 * 1000,
        "mib" | "m" => 1024 * 1024,
        "gb" => 1000 * 1000 * 1000,
        "gib" | "g" => 1024 * 1024 * 1024,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// serde's messages quote the value they did not expect (`invalid type: string "..."`,
/// `integer `12345``); the value may be a secret, the kind of value is enough.
pub fn without_values(message: &str) -> String {
    static VALUE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r#"(invalid (?:type|value|length): [a-z ]+?) ?(?:"(?:[^"\\]|\\.)*"|`[^`]*`)"#,
        )
        .expect("valid pattern")
    });
    VALUE.replace_all(message.trim(), "$1").into_owned()
}
