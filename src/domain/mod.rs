//! Pure domain types shared by every layer: ids, names, delivery states, ordering modes.

mod attempt;
mod secret;

pub use attempt::{Attempt, AttemptDetail, Verdict};
pub use secret::Secret;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Id of one accepted request. UUID v7, so ids sort by arrival time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(String);

/// Id of one (event, destination) delivery. Sent to destinations as `webhook-id`,
/// stable across retries so receivers can deduplicate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeliveryId(String);

macro_rules! uuid_id {
    ($ty:ident, $prefix:literal) => {
        impl $ty {
            pub fn generate() -> Self {
                // Encoded straight into the string: the formatting machinery costs more
                // than the id (the writer makes one per delivery).
                let mut hex = [0u8; uuid::fmt::Simple::LENGTH];
                let hex = time_ordered_uuid().simple().encode_lower(&mut hex);
                let mut id = String::with_capacity($prefix.len() + hex.len());
                id.push_str($prefix);
                id.push_str(hex);
                Self(id)
            }

            /// Parses an id typed by a person; only the shape is checked.
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                let rest = raw.strip_prefix($prefix).ok_or(IdError {
                    kind: stringify!($ty),
                    raw: raw.to_owned(),
                })?;
                if rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(Self(raw.to_owned()))
                } else {
                    Err(IdError {
                        kind: stringify!($ty),
                        raw: raw.to_owned(),
                    })
                }
            }

            /// Wraps an id read back from the store, which only holds ids we generated.
            pub fn from_stored(raw: String) -> Self {
                Self(raw)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }
    };
}

/// UUID v7 (RFC 9562): a 48-bit millisecond time, then a 12-bit counter that keeps ids made in
/// the same millisecond in order (method 1), then random bits from a fast user-space
/// generator (no syscall per id): ids must be unique and ordered, not unguessable.
fn time_ordered_uuid() -> uuid::Uuid {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = (now_millis().max(0) as u64) << 12;
    let previous = LAST
        .fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |last| Some(now.max(last + 1)),
        )
        .unwrap_or(now);
    let stamp = now.max(previous + 1);
    let (millis, counter) = (stamp >> 12, (stamp & 0xfff) as u16);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = 0x70 | (counter >> 8) as u8;
    bytes[7] = counter as u8;
    fastrand::fill(&mut bytes[8..]);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    uuid::Uuid::from_bytes(bytes)
}

uuid_id!(EventId, "evt_");
uuid_id!(DeliveryId, "dlv_");

#[derive(Debug, thiserror::Error)]
#[error("{raw:?} is not a valid {kind} (expected a prefix and 32 hex digits)")]
pub struct IdError {
    kind: &'static str,
    raw: String,
}

/// Name of a source or destination as written in the config and in `/hooks/{source}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "{raw:?} is not a valid name: use 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Where a delivery is in its life. Terminal states are kept for inspection and replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    InFlight,
    Succeeded,
    Dead,
    Superseded,
    Cancelled,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 6] = [
        Self::Pending,
        Self::InFlight,
        Self::Succeeded,
        Self::Dead,
        Self::Superseded,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InFlight => "in_flight",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
            Self::Superseded => "superseded",
            Self::Cancelled => "cancelled",
        }
    }
}

impl FromStr for DeliveryState {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let wanted = raw.replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == wanted)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown state {raw:?}; known: {}", known.join(", "))
            })
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a destination orders its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Up to `concurrency` deliveries in flight, in any order.
    #[default]
    Parallel,
    /// One at a time in arrival order; a failing head blocks the ones behind it.
    Fifo,
    /// One at a time per coalescing key; when several wait, only the newest goes and the
    /// older ones become `superseded` (deploys: the newest commit is what matters).
    Latest,
}

/// What an attempt cut off by hookrelay stopping leads to: another try, or dead at once
/// (for commands that must not run twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnInterrupt {
    #[default]
    Retry,
    Dead,
}

/// What a `latest` destination's coalescing key is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart {
    Source,
    Ref,
    Branch,
    Tag,
    Project,
    EventType,
}

impl FromStr for KeyPart {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Ok(match raw {
            "source" => Self::Source,
            "ref" => Self::Ref,
            "branch" => Self::Branch,
            "tag" => Self::Tag,
            "project" => Self::Project,
            "event_type" => Self::EventType,
            other => {
                return Err(format!(
                    "unknown key part {other:?}; use source, ref, branch, tag, project or event_type"
                ));
            }
        })
    }
}

/// A destination an event was routed to, with the coalescing key its delivery carries when
/// the destination keeps only the latest per key.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub destination: Name,
    pub coalesce_key: Option<String>,
}

/// Milliseconds since the Unix epoch: the only clock representation stored or compared.
pub type UnixMillis = i64;

/// Counts the relays a request has passed through (set on every forwarded request).
pub const HOPS_HEADER: &str = "x-hookrelay-hops";
/// Ingest refuses a request that has passed through hookrelay this often: a destination
/// pointing back at a hook would otherwise make events forever.
pub const MAX_HOPS: u32 = 4;

/// How a destination retries: the policy the (pure) planner in `delivery::plan` applies.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay planned after the first failure; doubles after each further one.
    pub initial_delay: std::time::Duration,
    pub max_delay: std::time::Duration,
    /// Attempts made before the delivery is declared dead.
    pub max_attempts: u32,
    /// A delivery whose next try would be later than this after it became due is dead.
    pub max_age: std::time::Duration,
    /// The longest `Retry-After` we honour; a receiver cannot park a delivery for a year.
    pub retry_after_cap: std::time::Duration,
    /// Treat 4xx (other than 408, 409, 425, 429) as permanent: dead at once, no retries.
    pub permanent_4xx: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: std::time::Duration::from_secs(5),
            max_delay: std::time::Duration::from_secs(3600),
            max_attempts: 30,
            max_age: std::time::Duration::from_secs(3 * 24 * 3600),
            retry_after_cap: std::time::Duration::from_secs(3600),
            permanent_4xx: false,
        }
    }
}

/// How long finished events are kept, and how often they are swept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub succeeded: std::time::Duration,
    pub dead: std::time::Duration,
    pub interval: std::time::Duration,
}

/// How long a sender's delivery id is remembered: a repeat within it is a duplicate.
pub const DEDUP_WINDOW_MS: UnixMillis = 3 * 24 * 3600 * 1000;

pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 text for people reading the CLI.
pub fn format_millis(ms: UnixMillis) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// What ingest extracts from a request for routing and dedup; stored with the event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Classification {
    pub event_type: Option<String>,
    pub action: Option<String>,
    /// The full ref when the sender gives one (`refs/heads/main`, `refs/tags/v1`).
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// Project or repository path (`group/app`, `owner/repo`).
    pub project: Option<String>,
    pub commit_before: Option<String>,
    pub commit_after: Option<String>,
    pub sender: Option<String>,
    /// Sender's id for this delivery; a repeat with the same key is a duplicate.
    pub dedup_key: Option<String>,
}

impl Classification {
    /// Sets `branch`/`tag` from a full ref; a bare name counts as a branch.
    pub fn set_ref(&mut self, raw: Option<String>) {
        let Some(raw) = raw else { return };
        if let Some(tag) = raw.strip_prefix("refs/tags/") {
            self.tag = Some(tag.to_owned());
        } else {
            self.branch = Some(raw.strip_prefix("refs/heads/").unwrap_or(&raw).to_owned());
        }
        self.git_ref = Some(raw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_sort_by_time() {
        let first = EventId::generate();
        let second = EventId::generate();
        assert_eq!(EventId::parse(first.as_str()).unwrap(), first);
        assert!(first.as_str() < second.as_str());
        // Many in the same millisecond still sort in creation order, and are real v7 UUIDs.
        let many: Vec<String> = (0..10_000).map(|_| DeliveryId::generate().0).collect();
        assert!(many.windows(2).all(|w| w[0] < w[1]));
        let parsed = uuid::Uuid::parse_str(&many[0]["dlv_".len()..]).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert!(DeliveryId::parse(first.as_str()).is_err());
        assert!(DeliveryId::parse("dlv_xyz").is_err());
    }

    #[test]
    fn names_reject_path_tricks() {
        for bad in ["", "a/b", "..%2f", "with space", &"x".repeat(65)] {
            assert!(Name::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Name::parse("gitlab-main_1.prod").is_ok());
    }

    #[test]
    fn states_round_trip_through_text() {
        for state in DeliveryState::ALL {
            assert_eq!(state.as_str().parse::<DeliveryState>().unwrap(), state);
        }
        assert!("in-flight".parse::<DeliveryState>().is_ok());
        assert!("lost".parse::<DeliveryState>().is_err());
    }
}
