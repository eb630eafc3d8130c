//! Config errors: every problem with its location, and TOML errors that locate a problem
//! without quoting the text (or value) that may hold a secret.

use std::fmt;

pub use crate::settings::ConfigError;
pub(super) use crate::settings::without_values;

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
    pub(super) fn whole_file(origin: &str, message: String, env_applied: Vec<String>) -> Self {
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

/// A TOML error as `line L, column C: message`. toml's own text quotes the offending line,
/// and that line may hold a secret (written unquoted, or under a misspelled key): the
/// location is enough to find it.
pub(super) fn toml_error(err: &toml::de::Error, text: &str) -> String {
    let message = without_values(err.message());
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}
