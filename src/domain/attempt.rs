//! What one attempt was, as its destination judged it: the verdict, the metric class the
//! destination chose and a transport-neutral detail. This is what the store records and what
//! figures, metrics, the CLI and the API read; nothing else interprets status or exit codes.

use serde::{Deserialize, Serialize};

use super::UnixMillis;

/// The destination's judgement of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The destination took it (HTTP 2xx, exit 0, a broker's acknowledgement).
    Delivered,
    /// It did not, and another try may help.
    Retryable,
    /// It did not, and another try cannot help: the delivery is dead at once.
    Permanent,
    /// hookrelay's own stop (or crash) cut the attempt off; nobody knows what it did.
    Interrupted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
            Self::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Delivered,
            Self::Retryable,
            Self::Permanent,
            Self::Interrupted,
        ]
        .into_iter()
        .find(|v| v.as_str() == text)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an attempt's transport said, in terms every kind shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptDetail {
    /// A few words a person reads in a table: `HTTP 200`, `HTTP 503`, `exit 0`, `exit 3`,
    /// `timeout`, `killed by signal 9`, `connect error`.
    pub summary: String,
    /// The HTTP status, for HTTP destinations that got an answer.
    pub status: Option<u16>,
    /// What went wrong, in full (never a secret); `None` when delivered.
    pub error: Option<String>,
    /// The start of what the destination answered (response body, command output).
    pub response_excerpt: Option<String>,
    /// The answer's headers (HTTP), a `name: value` line each, bounded; for comparing
    /// attempts. Absent for attempts recorded before hookrelay kept them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<String>,
}

impl AttemptDetail {
    /// An attempt that got no answer to record: what kind of failure, and what went wrong.
    pub fn failed(summary: impl Into<String>, error: String) -> Self {
        Self {
            summary: summary.into(),
            status: None,
            error: Some(error),
            response_excerpt: None,
            response_headers: None,
        }
    }
}

/// One attempt on record: when, how long, the verdict, the metric class and the detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub started_at: UnixMillis,
    pub duration_ms: i64,
    pub verdict: Verdict,
    /// The `outcome` label of `hookrelay_delivery_attempts_total`, chosen by the destination
    /// (`2xx`, `5xx`, `timeout`, `exit_0`, `exit_nonzero`, ...).
    pub class: String,
    #[serde(flatten)]
    pub detail: AttemptDetail,
}

impl Attempt {
    pub fn finished_at(&self) -> UnixMillis {
        self.started_at + self.duration_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_round_trip_through_their_stored_names() {
        for verdict in [
            Verdict::Delivered,
            Verdict::Retryable,
            Verdict::Permanent,
            Verdict::Interrupted,
        ] {
            assert_eq!(Verdict::parse(verdict.as_str()), Some(verdict));
            assert_eq!(
                serde_json::to_value(verdict).unwrap(),
                serde_json::Value::String(verdict.as_str().into())
            );
        }
        assert_eq!(Verdict::parse("2xx"), None);
    }
}
