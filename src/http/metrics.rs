//! Ingest counters and gauges, exposed at `/metrics` in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::extract::State;
use axum::response::IntoResponse;

use super::AppState;

/// Requests per source and outcome (`accepted`, `duplicate`, or the refusal's reason),
/// since the process started.
#[derive(Default)]
pub struct SourceCounts(
    std::sync::Mutex<
        std::collections::BTreeMap<String, std::collections::BTreeMap<&'static str, u64>>,
    >,
);

impl SourceCounts {
    pub fn count(&self, source: &str, outcome: &'static str) {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match counts.get_mut(source) {
            Some(by_outcome) => *by_outcome.entry(outcome).or_default() += 1,
            None => {
                counts.insert(source.to_owned(), [(outcome, 1)].into());
            }
        }
    }

    pub fn of(&self, source: &str) -> std::collections::BTreeMap<&'static str, u64> {
        let counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(source).cloned().unwrap_or_default()
    }
}

#[derive(Default)]
pub struct Metrics {
    pub by_source: std::sync::Arc<SourceCounts>,
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub too_large: AtomicU64,
    pub too_slow: AtomicU64,
    pub store_errors: AtomicU64,
    pub missing_credentials: AtomicU64,
    pub invalid_credentials: AtomicU64,
    pub address_not_allowed: AtomicU64,
    pub over_budget: AtomicU64,
    pub rate_limited: AtomicU64,
    pub backlog_full: AtomicU64,
    pub forwarding_loop: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_refused_per_client: AtomicU64,
}

impl Metrics {
    pub fn count_rejection(&self, reason: &str) {
        match reason {
            "missing_credentials" => &self.missing_credentials,
            "address_not_allowed" => &self.address_not_allowed,
            _ => &self.invalid_credentials,
        }
        .fetch_add(1, Relaxed);
    }

    fn write(&self, out: &mut String) {
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, &AtomicU64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {}", value.load(Relaxed));
            }
        };
        family(
            "hookrelay_events_accepted_total",
            "counter",
            "Webhooks durably stored and answered 2xx.",
            &[("", &self.accepted)],
        );
        family(
            "hookrelay_events_duplicate_total",
            "counter",
            "Webhooks recognised as repeats of a stored event.",
            &[("", &self.duplicates)],
        );
        family(
            "hookrelay_requests_rejected_total",
            "counter",
            "Webhooks refused before storage, by reason.",
            &[
                (
                    "{reason=\"missing_credentials\"}",
                    &self.missing_credentials,
                ),
                (
                    "{reason=\"invalid_credentials\"}",
                    &self.invalid_credentials,
                ),
                (
                    "{reason=\"address_not_allowed\"}",
                    &self.address_not_allowed,
                ),
                ("{reason=\"too_large\"}", &self.too_large),
                ("{reason=\"too_slow\"}", &self.too_slow),
                ("{reason=\"over_body_budget\"}", &self.over_budget),
                ("{reason=\"rate_limited\"}", &self.rate_limited),
                ("{reason=\"backlog_full\"}", &self.backlog_full),
                ("{reason=\"forwarding_loop\"}", &self.forwarding_loop),
                ("{reason=\"store_error\"}", &self.store_errors),
            ],
        );
        family(
            "hookrelay_connections_open",
            "gauge",
            "Client connections open now.",
            &[("", &self.connections_open)],
        );
        family(
            "hookrelay_connections_refused_total",
            "counter",
            "Connections closed at once: too many from the same address.",
            &[(
                "{reason=\"per_client\"}",
                &self.connections_refused_per_client,
            )],
        );
    }
}

pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = String::new();
    state.metrics.write(&mut text);
    text.push_str(
        "# HELP hookrelay_destination_circuit_open 1 while the destination's circuit breaker is open (only probes go out).\n\
         # TYPE hookrelay_destination_circuit_open gauge\n",
    );
    for (name, open) in state.delivery.breakers.snapshot() {
        let _ = writeln!(
            text,
            "hookrelay_destination_circuit_open{{destination=\"{name}\"}} {}",
            u8::from(open)
        );
    }
    let _ = writeln!(
        text,
        "# HELP hookrelay_delivery_memory_used_bytes Stored request bodies held for delivery (one copy per event).\n\
         # TYPE hookrelay_delivery_memory_used_bytes gauge\n\
         hookrelay_delivery_memory_used_bytes {}",
        state.delivery.memory_in_use()
    );
    let _ = writeln!(
        text,
        "# HELP hookrelay_ingest_body_budget_used_bytes Request bodies being received now.\n\
         # TYPE hookrelay_ingest_body_budget_used_bytes gauge\n\
         hookrelay_ingest_body_budget_used_bytes {}",
        state.body_budget.in_use()
    );
    ([("content-type", "text/plain; version=0.0.4")], text)
}
