//! Prometheus metrics (with `prometheus-client`): one registry for the process, recorded
//! where things happen (ingest, the store's commits, delivery attempts, retention) and
//! rendered at `/metrics`.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceOutcome {
    pub source: String,
    /// `accepted`, `duplicate`, or why the request was refused.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationOutcome {
    pub destination: String,
    /// The destination's verdict: `delivered`, `retryable`, `permanent` or `interrupted`.
    pub verdict: String,
    /// The class the destination chose: HTTP `2xx`, `3xx`, `4xx`, `5xx`, `timeout`,
    /// `connect_error`, `refused`, `error`; command `exit_0`, `exit_nonzero`, `signal`,
    /// `timeout`, `spawn_error`; `interrupted`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationState {
    pub destination: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationOutcome {
    /// `delivery.dead`, `destination.failing`, ...
    pub r#type: String,
    /// `sent`, `duplicate` (another replica sent it), or why not: `cooldown`,
    /// `already_failing`, `nothing_to_recover`, `still_high`, `budget`, `loop`, `unrouted`,
    /// `dropped`, `not_stored`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Telemetry {
    registry: Registry,
    pub requests: Family<SourceOutcome, Counter>,
    pub ingest_seconds: HistogramFamily<SourceLabel>,
    pub commit_batch_size: Histogram,
    pub commit_seconds: Histogram,
    pub flush_seconds: Histogram,
    pub attempts: Family<DestinationOutcome, Counter>,
    pub delivered_seconds: HistogramFamily<DestinationLabel>,
    pub deliveries: Family<DestinationState, Gauge>,
    pub oldest_pending_seconds: Family<DestinationLabel, Gauge>,
    pub circuit_open: Family<DestinationLabel, Gauge>,
    pub retention_pruned: Counter,
    pub csp_reports: Counter,
    pub notifications: Family<NotificationOutcome, Counter>,
    pub connections_open: Gauge,
    pub connections_refused: Family<Reason, Counter>,
    pub body_budget_used: Gauge,
    pub delivery_memory_used: Gauge,
}

fn latency() -> Histogram {
    // 1 ms to about 16 min.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

fn fast_latency() -> Histogram {
    // 100 µs to about 3 s: ingest answers in milliseconds.
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

impl Telemetry {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("hookrelay");
        let t = Self {
            requests: Family::default(),
            ingest_seconds: Family::new_with_constructor(fast_latency),
            commit_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            commit_seconds: fast_latency(),
            flush_seconds: fast_latency(),
            attempts: Family::default(),
            delivered_seconds: Family::new_with_constructor(latency),
            deliveries: Family::default(),
            oldest_pending_seconds: Family::default(),
            circuit_open: Family::default(),
            retention_pruned: Counter::default(),
            csp_reports: Counter::default(),
            notifications: Family::default(),
            connections_open: Gauge::default(),
            connections_refused: Family::default(),
            body_budget_used: Gauge::default(),
            delivery_memory_used: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "requests",
            "Webhook requests by source and outcome: accepted, duplicate, or the refusal's reason",
            t.requests.clone(),
        );
        r.register(
            "ingest_duration_seconds",
            "From request to answer, for accepted and duplicate webhooks",
            t.ingest_seconds.clone(),
        );
        r.register(
            "store_commit_batch_size",
            "Commands committed together by one store transaction (group commit)",
            t.commit_batch_size.clone(),
        );
        r.register(
            "store_commit_duration_seconds",
            "One group commit (its fsync is counted in store_flush_duration_seconds)",
            t.commit_seconds.clone(),
        );
        r.register(
            "store_flush_duration_seconds",
            "One fdatasync of the WAL; durable writes committed before it are answered after it",
            t.flush_seconds.clone(),
        );
        r.register(
            "delivery_attempts",
            "Delivery attempts by destination, the destination's verdict and its outcome class",
            t.attempts.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "From receiving a webhook to its successful delivery, by destination",
            t.delivered_seconds.clone(),
        );
        r.register(
            "deliveries",
            "Deliveries waiting, in flight, dead or superseded (latest ordering), by destination",
            t.deliveries.clone(),
        );
        r.register(
            "oldest_pending_age_seconds",
            "Age of the oldest delivery still waiting, by destination",
            t.oldest_pending_seconds.clone(),
        );
        r.register(
            "destination_circuit_open",
            "1 while the destination's circuit breaker is open (only probes go out)",
            t.circuit_open.clone(),
        );
        r.register(
            "retention_pruned_events",
            "Finished events removed by retention",
            t.retention_pruned.clone(),
        );
        r.register(
            "notifications",
            "hookrelay's own notifications (delivery.dead, destination.failing, ...): sent, or why not",
            t.notifications.clone(),
        );
        r.register(
            "console_csp_reports",
            "Content-Security-Policy violations browsers reported from the console (should stay 0)",
            t.csp_reports.clone(),
        );
        r.register(
            "connections_open",
            "Client connections open now",
            t.connections_open.clone(),
        );
        r.register(
            "connections_refused",
            "Connections closed at once, by reason",
            t.connections_refused.clone(),
        );
        r.register(
            "ingest_body_budget_used_bytes",
            "Request bodies being received now",
            t.body_budget_used.clone(),
        );
        r.register(
            "delivery_memory_used_bytes",
            "Stored request bodies held for delivery (one copy per event)",
            t.delivery_memory_used.clone(),
        );
        Self { registry, ..t }
    }

    /// The registry in the Prometheus (OpenMetrics) text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %err, "metrics could not be encoded");
        }
        text
    }

    pub fn request(&self, source: &str, outcome: &'static str) {
        crate::recent::requests().count(source, outcome);
        self.requests
            .get_or_create(&SourceOutcome {
                source: source.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn notification(&self, r#type: &str, outcome: &str) {
        self.notifications
            .get_or_create(&NotificationOutcome {
                r#type: r#type.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn attempt(&self, destination: &str, verdict: crate::domain::Verdict, class: &str) {
        let kind = match verdict {
            crate::domain::Verdict::Delivered => "delivered",
            _ => "failed",
        };
        crate::recent::attempts().count(destination, kind);
        self.attempts
            .get_or_create(&DestinationOutcome {
                destination: destination.to_owned(),
                verdict: verdict.as_str().to_owned(),
                outcome: class.to_owned(),
            })
            .inc();
    }
}

/// The process's metrics.
pub fn get() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(Telemetry::new)
}
