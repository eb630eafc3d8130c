//! hookrelay's own happenings as events of the built-in source `hookrelay`, routed like any
//! other: `delivery.dead`, `destination.failing`, `destination.recovered`, `backlog.high`,
//! `source.rejecting`. Delivery tells happenings through [`Tell`]; the notifier also reads
//! levels (backlogs, refusals) every `check_interval`; [`rules::Gate`] decides what goes out.

pub mod message;
pub mod rules;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::domain::{Classification, EventId, Name, Routed, UnixMillis, now_millis};
use crate::store::{NewEvent, Store};
pub use message::About;
use rules::{Decision, Gate, Limits};

/// The built-in source's name (a config may not define a source of its own by this name).
pub const SOURCE: &str = "hookrelay";

/// Refusals that mean "the sender is not who it should be" (the secret or token is wrong),
/// as opposed to hookrelay refusing for its own reasons (rates, backlog).
const REJECTIONS: &[&str] = &[
    "missing_credentials",
    "invalid_credentials",
    "address_not_allowed",
];

/// What is told and when (`[notifications]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// At most one notification of a kind about one destination or source this often.
    pub min_interval: Duration,
    pub max_per_minute: u32,
    /// `backlog.high` when this many deliveries wait for a destination...
    pub backlog_threshold: u64,
    /// ... or the oldest has waited this long.
    pub backlog_age: Duration,
    /// `source.rejecting` when this share of a source's requests was refused ...
    pub rejecting_share: f64,
    /// ... over this many minutes ...
    pub rejecting_window_minutes: u32,
    /// ... and at least this many requests came.
    pub rejecting_min_requests: u64,
    pub check_interval: Duration,
    /// Dead deliveries told together, one message per this long; `None`: one each.
    pub dead_digest: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(600),
            max_per_minute: 30,
            backlog_threshold: 1000,
            backlog_age: Duration::from_secs(600),
            rejecting_share: 0.5,
            rejecting_window_minutes: 5,
            rejecting_min_requests: 5,
            check_interval: Duration::from_secs(15),
            dead_digest: None,
        }
    }
}

impl Settings {
    fn limits(&self) -> Limits {
        Limits {
            min_interval_ms: self.min_interval.as_millis() as i64,
            max_per_minute: self.max_per_minute,
        }
    }
}

/// How delivery tells the notifier what happened; never blocks (a full queue drops, counted).
#[derive(Clone)]
pub struct Tell(mpsc::Sender<About>);

impl Tell {
    pub fn tell(&self, about: About) {
        if let Err(err) = self.0.try_send(about) {
            let kind = match &err {
                mpsc::error::TrySendError::Full(about)
                | mpsc::error::TrySendError::Closed(about) => about.kind(),
            };
            crate::telemetry::get().notification(kind.event_type(), "dropped");
        }
    }
}

pub fn channel() -> (Tell, mpsc::Receiver<About>) {
    let (sender, receiver) = mpsc::channel(4096);
    (Tell(sender), receiver)
}

/// Routes a `hookrelay` event by its classification; `None` when no route takes the
/// built-in source at all (then nothing is stored).
pub type Router = Arc<dyn Fn(&Classification) -> Option<Vec<Routed>> + Send + Sync>;

/// Each running destination's circuit breaker now: (name, open).
pub type Breakers = Arc<dyn Fn() -> Vec<(String, bool)> + Send + Sync>;

pub struct Notifier {
    pub store: Arc<dyn Store>,
    pub router: Router,
    pub breakers: Breakers,
    pub settings: Arc<RwLock<Settings>>,
    gate: Gate,
    /// Dead deliveries waiting for the digest, and when it goes out.
    digest: Vec<About>,
    digest_due: Option<tokio::time::Instant>,
}

/// At most this many deliveries are named in a digest (all are counted).
const DIGEST_NAMES: usize = 20;

impl Notifier {
    pub fn new(
        store: Arc<dyn Store>,
        router: Router,
        breakers: Breakers,
        settings: Arc<RwLock<Settings>>,
    ) -> Self {
        Self {
            store,
            router,
            breakers,
            settings,
            gate: Gate::default(),
            digest: Vec::new(),
            digest_due: None,
        }
    }

    fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs until `stop`: happenings as they come, levels every `check_interval`.
    pub async fn run(mut self, mut told: mpsc::Receiver<About>, stop: CancellationToken) {
        let mut next_check = tokio::time::Instant::now() + self.settings().check_interval;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                about = told.recv() => match about {
                    Some(about) => self.happening(about).await,
                    None => return,
                },
                _ = tokio::time::sleep_until(next_check) => {
                    self.check_levels().await;
                    next_check = tokio::time::Instant::now() + self.settings().check_interval;
                }
                _ = sleep_until_some(self.digest_due) => self.send_digest().await,
            }
        }
    }

    async fn happening(&mut self, about: About) {
        // A notification that could not be delivered is never notified: its destination may
        // be the one that failed, and each dead one would make another.
        if let About::Dead { source, .. } = &about
            && source == SOURCE
        {
            crate::telemetry::get().notification(about.kind().event_type(), "loop");
            return;
        }
        if !self.routed_at_all() {
            return;
        }
        let now = now_millis();
        let settings = self.settings();
        if let (About::Dead { .. }, Some(every)) = (&about, settings.dead_digest) {
            self.digest.push(about);
            self.digest_due
                .get_or_insert_with(|| tokio::time::Instant::now() + every);
            return;
        }
        let decision = self.decide(&about, now, &settings);
        self.act(about, decision, now, &settings).await;
    }

    async fn send_digest(&mut self) {
        self.digest_due = None;
        let dead = std::mem::take(&mut self.digest);
        let settings = self.settings();
        let mut by_destination: Vec<(String, u64)> = Vec::new();
        let mut deliveries = Vec::new();
        for about in &dead {
            if let About::Dead {
                destination,
                delivery_id,
                event_id,
                ..
            } = about
            {
                match by_destination.iter_mut().find(|(d, _)| d == destination) {
                    Some((_, n)) => *n += 1,
                    None => by_destination.push((destination.clone(), 1)),
                }
                if deliveries.len() < DIGEST_NAMES {
                    deliveries.push((destination.clone(), delivery_id.clone(), event_id.clone()));
                }
            }
        }
        if deliveries.is_empty() {
            return;
        }
        let about = About::DeadDigest {
            deliveries,
            count: dead.len() as u64,
            by_destination,
            window_seconds: settings.dead_digest.unwrap_or_default().as_secs(),
        };
        let now = now_millis();
        let decision = self.decide(&about, now, &settings);
        self.act(about, decision, now, &settings).await;
    }

    async fn check_levels(&mut self) {
        if !self.routed_at_all() {
            return;
        }
        let settings = self.settings();
        let now = now_millis();
        let mut last_failures = std::collections::HashMap::new();
        match self.store.destination_stats().await {
            Ok(stats) => {
                for stat in stats {
                    if let Some(failure) = &stat.last_failure {
                        last_failures.insert(stat.name.clone(), failure.detail.summary.clone());
                    }
                    let oldest = stat
                        .oldest_pending_at
                        .map(|at| ((now - at).max(0) / 1000) as u64);
                    let high = stat.pending >= settings.backlog_threshold
                        || oldest.is_some_and(|age| age >= settings.backlog_age.as_secs());
                    let about = About::Backlog {
                        destination: stat.name.clone(),
                        waiting: stat.pending,
                        oldest_waiting_seconds: oldest,
                        threshold: settings.backlog_threshold,
                        age_seconds: settings.backlog_age.as_secs(),
                    };
                    self.level(about, high, now, &settings).await;
                }
            }
            Err(err) => tracing::warn!(error = %err, "notifications: backlogs not read"),
        }
        self.check_breakers(&last_failures, now, &settings).await;
        for (source, refused, requests, reasons) in refusals(settings.rejecting_window_minutes) {
            if source == SOURCE {
                continue;
            }
            let high = requests >= settings.rejecting_min_requests
                && refused as f64 >= settings.rejecting_share * requests as f64;
            let about = About::Rejecting {
                source,
                refused,
                requests,
                window_minutes: settings.rejecting_window_minutes,
                reasons,
            };
            self.level(about, high, now, &settings).await;
        }
    }

    /// The breakers as they are now, against what was told: a failure held back (cooldown,
    /// budget) is told once it may be while the breaker is still open; a destination told
    /// failing whose breaker is closed now (rebuilt by a reload, say) is told recovered; one
    /// that is gone is forgotten.
    async fn check_breakers(
        &mut self,
        last_failures: &std::collections::HashMap<String, String>,
        now: UnixMillis,
        settings: &Settings,
    ) {
        let breakers = (self.breakers)();
        for (destination, open) in &breakers {
            let told = self.gate.failing_since(destination).is_some();
            let about = match (open, told) {
                (true, false) => About::Failing {
                    destination: destination.clone(),
                    reason: last_failures
                        .get(destination)
                        .cloned()
                        .unwrap_or_else(|| "its circuit breaker is open".to_owned()),
                },
                (false, true) => About::Recovered {
                    destination: destination.clone(),
                },
                _ => continue,
            };
            let decision = self.decide(&about, now, settings);
            self.act(about, decision, now, settings).await;
        }
        for destination in self.gate.failing() {
            if !breakers.iter().any(|(name, _)| *name == destination) {
                self.gate.forget(&destination);
            }
        }
    }

    /// The gate's decision, and for a recovery the time its failure was told (its dedup key
    /// pairs it with that failure).
    fn decide(
        &mut self,
        about: &About,
        now: UnixMillis,
        settings: &Settings,
    ) -> (Decision, UnixMillis) {
        let key_time = match about {
            About::Recovered { destination } => self.gate.failing_since(destination).unwrap_or(now),
            _ => now,
        };
        let decision = self
            .gate
            .happening(about.kind(), about.subject(), now, settings.limits());
        (decision, key_time)
    }

    async fn level(&mut self, about: About, high: bool, now: UnixMillis, settings: &Settings) {
        if let Some(decision) =
            self.gate
                .level(about.kind(), about.subject(), high, now, settings.limits())
        {
            self.act(about, (decision, now), now, settings).await;
        }
    }

    fn routed_at_all(&self) -> bool {
        (self.router)(&Classification::default()).is_some()
    }

    /// Stores the notification the gate let through; `key_time` places it in its dedup
    /// period.
    async fn act(
        &mut self,
        about: About,
        (decision, key_time): (Decision, UnixMillis),
        now: UnixMillis,
        settings: &Settings,
    ) {
        let kind = about.kind().event_type();
        let held_back = match decision {
            Decision::Send { held_back } => held_back,
            Decision::Hold(why) => {
                crate::telemetry::get().notification(kind, why.label());
                return;
            }
        };
        let classification = about.classification(key_time, settings.limits().min_interval_ms);
        let destinations = (self.router)(&classification).unwrap_or_default();
        if destinations.is_empty() {
            crate::telemetry::get().notification(kind, "unrouted");
            return;
        }
        let body = about.body(now, held_back);
        let event = NewEvent {
            id: EventId::generate(),
            source: Name::parse(SOURCE).expect("a valid name"),
            received_at: now,
            remote_addr: None,
            classification,
            content_type: Some("application/json".to_owned()),
            headers: vec![],
            body: Bytes::from(body.to_string()),
            destinations,
        };
        match self.store.insert_event(event).await {
            Ok(accepted) => {
                let outcome = if accepted.duplicate {
                    "duplicate"
                } else {
                    "sent"
                };
                crate::telemetry::get().notification(kind, outcome);
                tracing::info!(notification = kind, subject = %about.subject(), event = %accepted.event_id, "notification");
            }
            Err(err) => {
                crate::telemetry::get().notification(kind, "not_stored");
                tracing::warn!(notification = kind, error = %err, "notification not stored");
            }
        }
    }
}

async fn sleep_until_some(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Per source over the last `minutes`: (source, refused as a sender's fault, all requests,
/// the refusal reasons seen), from this process's counts.
fn refusals(minutes: u32) -> Vec<(String, u64, u64, Vec<String>)> {
    let recent = crate::recent::requests();
    let take = (minutes as usize).clamp(1, crate::recent::MINUTES);
    recent
        .names()
        .into_iter()
        .map(|source| {
            let mut refused = 0;
            let mut all = 0;
            let mut reasons = Vec::new();
            for (outcome, minutes) in recent.last_hour(&source) {
                let count: u64 = minutes.iter().rev().take(take).sum();
                all += count;
                if REJECTIONS.contains(&outcome.as_str()) && count > 0 {
                    refused += count;
                    reasons.push(outcome);
                }
            }
            (source, refused, all, reasons)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::rules::Kind;

    #[test]
    fn every_kind_has_its_event_type() {
        let types: Vec<_> = Kind::ALL.iter().map(|k| k.event_type()).collect();
        assert_eq!(
            types,
            [
                "delivery.dead",
                "destination.failing",
                "destination.recovered",
                "backlog.high",
                "source.rejecting"
            ]
        );
    }
}
