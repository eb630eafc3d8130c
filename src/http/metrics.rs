//! `/metrics` (the process's registry, see `telemetry`) and the per-source counts the API shows.

use axum::extract::State;
use axum::response::IntoResponse;

use super::AppState;
use crate::domain::DeliveryState;

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

/// What the HTTP layer keeps beyond the Prometheus registry: per-source counts for the API.
#[derive(Default)]
pub struct Metrics {
    pub by_source: std::sync::Arc<SourceCounts>,
}

/// `/metrics`: the registry, with the gauges only the store and the running state know set
/// at scrape time.
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let telemetry = crate::telemetry::get();
    match state.store.delivery_gauges().await {
        Ok(gauges) => {
            telemetry.deliveries.clear();
            telemetry.oldest_pending_seconds.clear();
            // Every destination this process knows shows its empty states as 0: a gauge
            // that vanishes when its count reaches 0 silences the alerts built on it.
            for (destination, _) in state.delivery.breakers.snapshot() {
                for empty in [
                    DeliveryState::Pending,
                    DeliveryState::InFlight,
                    DeliveryState::Dead,
                ] {
                    telemetry
                        .deliveries
                        .get_or_create(&crate::telemetry::DestinationState {
                            destination: destination.as_str().to_owned(),
                            state: empty.as_str().to_owned(),
                        })
                        .set(0);
                }
            }
            let now = crate::domain::now_millis();
            for gauge in gauges {
                telemetry
                    .deliveries
                    .get_or_create(&crate::telemetry::DestinationState {
                        destination: gauge.destination.clone(),
                        state: gauge.state.as_str().to_owned(),
                    })
                    .set(gauge.count as i64);
                if let (DeliveryState::Pending, Some(oldest)) = (gauge.state, gauge.oldest) {
                    telemetry
                        .oldest_pending_seconds
                        .get_or_create(&crate::telemetry::DestinationLabel {
                            destination: gauge.destination,
                        })
                        .set((now - oldest).max(0) / 1000);
                }
            }
        }
        Err(err) => tracing::debug!(error = %err, "metrics: backlog not read"),
    }
    telemetry.circuit_open.clear();
    for (name, open) in state.delivery.breakers.snapshot() {
        telemetry
            .circuit_open
            .get_or_create(&crate::telemetry::DestinationLabel {
                destination: name.as_str().to_owned(),
            })
            .set(i64::from(open));
    }
    telemetry
        .delivery_memory_used
        .set(state.delivery.memory_in_use() as i64);
    telemetry
        .body_budget_used
        .set(state.body_budget.in_use() as i64);
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        telemetry.render(),
    )
}
