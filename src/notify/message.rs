//! A notification as an event: its JSON body (the documented fields and a one-line `text`
//! for people), its classification and its dedup key. Pure.

use serde_json::{Value, json};

use super::rules::Kind;
use crate::domain::{Classification, UnixMillis};

/// What a notification says, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum About {
    Dead {
        destination: String,
        delivery_id: String,
        event_id: String,
        source: String,
        event_type: Option<String>,
        attempts: u32,
        reason: String,
    },
    /// Several dead deliveries told at once (`dead_digest`).
    DeadDigest {
        /// (destination, delivery id, event id) of the first ones.
        deliveries: Vec<(String, String, String)>,
        count: u64,
        /// Per destination, how many.
        by_destination: Vec<(String, u64)>,
        window_seconds: u64,
    },
    Failing {
        destination: String,
        reason: String,
    },
    Recovered {
        destination: String,
    },
    Backlog {
        destination: String,
        waiting: u64,
        oldest_waiting_seconds: Option<u64>,
        threshold: u64,
        age_seconds: u64,
    },
    Rejecting {
        source: String,
        refused: u64,
        requests: u64,
        window_minutes: u32,
        reasons: Vec<String>,
    },
}

impl About {
    pub fn kind(&self) -> Kind {
        match self {
            About::Dead { .. } | About::DeadDigest { .. } => Kind::DeliveryDead,
            About::Failing { .. } => Kind::DestinationFailing,
            About::Recovered { .. } => Kind::DestinationRecovered,
            About::Backlog { .. } => Kind::BacklogHigh,
            About::Rejecting { .. } => Kind::SourceRejecting,
        }
    }

    /// Who it is about: a delivery, a destination or a source.
    pub fn subject(&self) -> &str {
        match self {
            About::Dead { delivery_id, .. } => delivery_id,
            About::DeadDigest { deliveries, .. } => deliveries.first().map_or("", |d| &d.1),
            About::Failing { destination, .. }
            | About::Recovered { destination }
            | About::Backlog { destination, .. } => destination,
            About::Rejecting { source, .. } => source,
        }
    }

    /// The destination (or source) it is about, which routes' `projects` can pick.
    pub fn about(&self) -> Option<&str> {
        match self {
            About::Dead { destination, .. }
            | About::Failing { destination, .. }
            | About::Recovered { destination }
            | About::Backlog { destination, .. } => Some(destination),
            About::Rejecting { source, .. } => Some(source),
            About::DeadDigest { .. } => None,
        }
    }

    /// One line for people (chat tools show it as it is).
    pub fn text(&self) -> String {
        match self {
            About::Dead {
                destination,
                delivery_id,
                event_id,
                source,
                event_type,
                attempts,
                reason,
            } => format!(
                "Delivery {delivery_id} of {source} {} ({event_id}) to destination \"{destination}\" is dead after {attempts} attempt{}: {}. Replay it with: hookrelay replay {delivery_id}",
                event_type.as_deref().unwrap_or("event"),
                if *attempts == 1 { "" } else { "s" },
                one_line(reason),
            ),
            About::DeadDigest {
                deliveries,
                count,
                by_destination,
                window_seconds,
            } => {
                let per: Vec<String> = by_destination
                    .iter()
                    .map(|(destination, n)| format!("{n} to \"{destination}\""))
                    .collect();
                let ids: Vec<&str> = deliveries.iter().map(|d| d.1.as_str()).collect();
                format!(
                    "{count} deliveries went dead in {}: {} ({}{}). Replay them with: hookrelay replay --state dead",
                    humantime::format_duration(std::time::Duration::from_secs(*window_seconds)),
                    per.join(", "),
                    ids.join(", "),
                    if (*count as usize) > ids.len() {
                        ", …"
                    } else {
                        ""
                    },
                )
            }
            About::Failing {
                destination,
                reason,
            } => format!(
                "Destination \"{destination}\" is failing: {}. Its deliveries wait and it is probed until it answers again.",
                one_line(reason)
            ),
            About::Recovered { destination } => {
                format!("Destination \"{destination}\" recovered: deliveries flow again.")
            }
            About::Backlog {
                destination,
                waiting,
                oldest_waiting_seconds,
                ..
            } => format!(
                "Destination \"{destination}\" has {waiting} deliveries waiting{}.",
                match oldest_waiting_seconds {
                    Some(age) => format!(
                        "; the oldest has waited {}",
                        humantime::format_duration(std::time::Duration::from_secs(*age))
                    ),
                    None => String::new(),
                }
            ),
            About::Rejecting {
                source,
                refused,
                requests,
                window_minutes,
                reasons,
            } => format!(
                "Source \"{source}\" refused {refused} of {requests} requests in the last {window_minutes} minutes ({}): is the sender's secret or token right?",
                reasons.join(", ")
            ),
        }
    }

    /// The event's body: the documented JSON (see README, "Notifications").
    pub fn body(&self, at: UnixMillis, held_back: u64) -> Value {
        let mut body = json!({
            "type": self.kind().event_type(),
            "text": self.text(),
            "at": crate::domain::format_millis(at),
            "held_back": held_back,
        });
        let details = match self {
            About::Dead {
                destination,
                delivery_id,
                event_id,
                source,
                event_type,
                attempts,
                reason,
            } => json!({
                "destination": destination, "delivery_id": delivery_id, "event_id": event_id,
                "source": source, "event_type": event_type, "attempts": attempts, "reason": reason,
            }),
            About::DeadDigest {
                deliveries,
                count,
                by_destination,
                window_seconds,
            } => json!({
                "count": count,
                "window_seconds": window_seconds,
                "by_destination": by_destination.iter().map(|(d, n)| json!({"destination": d, "count": n})).collect::<Vec<_>>(),
                "deliveries": deliveries.iter().map(|(d, id, event)| json!({"destination": d, "delivery_id": id, "event_id": event})).collect::<Vec<_>>(),
            }),
            About::Failing {
                destination,
                reason,
            } => json!({ "destination": destination, "reason": reason }),
            About::Recovered { destination } => json!({ "destination": destination }),
            About::Backlog {
                destination,
                waiting,
                oldest_waiting_seconds,
                threshold,
                age_seconds,
            } => json!({
                "destination": destination, "waiting": waiting,
                "oldest_waiting_seconds": oldest_waiting_seconds,
                "threshold": threshold, "age_seconds": age_seconds,
            }),
            About::Rejecting {
                source,
                refused,
                requests,
                window_minutes,
                reasons,
            } => json!({
                "source": source, "refused": refused, "requests": requests,
                "window_minutes": window_minutes, "reasons": reasons,
            }),
        };
        if let (Some(body), Value::Object(details)) = (body.as_object_mut(), details) {
            body.extend(details);
        }
        body
    }

    /// What it is classified as: its type, and the destination or source it is about as the
    /// project (so routes' `projects` and filters can pick by it); `dedup_key` makes the same
    /// notification from two replicas (or twice) one event: `at` places it in its cooldown
    /// period (for a recovery, the time its failure was told, so a recovery pairs with its
    /// failure's period).
    pub fn classification(&self, at: UnixMillis, min_interval_ms: i64) -> Classification {
        let kind = self.kind();
        let dedup_key = match (kind, self) {
            (_, About::DeadDigest { .. }) => {
                format!("{}/digest/{}", kind.event_type(), self.subject())
            }
            // A replayed delivery may die again: each death is its own notification.
            (Kind::DeliveryDead, _) => format!("{}/{}/{at}", kind.event_type(), self.subject()),
            // One per subject per cooldown period, whichever replica sends it.
            _ => format!(
                "{}/{}/{}",
                kind.event_type(),
                self.subject(),
                at.div_euclid(min_interval_ms.max(1))
            ),
        };
        Classification {
            event_type: Some(kind.event_type().to_owned()),
            project: self.about().map(str::to_owned),
            dedup_key: Some(dedup_key),
            ..Classification::default()
        }
    }
}

/// Text from a destination or a sender, made one short line.
fn one_line(text: &str) -> String {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if text.chars().count() > 300 {
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_type_text_and_details() {
        let about = About::Failing {
            destination: "deploy".into(),
            reason: "connection refused\nsecond line".into(),
        };
        let body = about.body(0, 2);
        assert_eq!(body["type"], "destination.failing");
        assert_eq!(body["destination"], "deploy");
        assert_eq!(body["held_back"], 2);
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("connection refused second line"), "{text}");
        let class = about.classification(1_000_000, 600_000);
        assert_eq!(class.event_type.as_deref(), Some("destination.failing"));
        assert_eq!(
            class.dedup_key.as_deref(),
            Some("destination.failing/deploy/1")
        );
    }
}
