//! Follows the store's change feed: wakes the workers of destinations that have deliveries
//! due and applies pauses and other replicas' breakers, whichever process made the change.

use std::sync::Arc;

use tokio::sync::broadcast::{Receiver, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::{Controls, Wakers};
use crate::store::{Change, Store};

pub async fn follow(
    mut changes: Receiver<Change>,
    store: Arc<dyn Store>,
    wakers: Wakers,
    controls: Controls,
    stop: CancellationToken,
) {
    // Subscribed before reading, so a breaker that changes meanwhile is heard after.
    apply_open_breakers(store.as_ref(), &controls).await;
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            _ = stop.cancelled() => return,
        };
        match change {
            Ok(Change::Due(destinations)) => wakers.wake(&destinations),
            Ok(Change::AnyDue) => wakers.wake_all(),
            Ok(Change::Paused(destination, paused)) => pause(&controls, &destination, paused),
            Ok(Change::JobCreated) => {}
            Ok(Change::Breaker(destination, open)) => {
                if let Some(control) = controls.get(&destination) {
                    control.breaker_elsewhere(open);
                }
            }
            // Changes were missed: act as if everything changed.
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "change feed fell behind; waking every destination");
                wakers.wake_all();
                match store.paused_destinations().await {
                    Ok(pauses) => {
                        for (destination, paused) in pauses {
                            pause(&controls, &destination, paused);
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "could not read pauses again"),
                }
                apply_open_breakers(store.as_ref(), &controls).await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Applies a pause to this process's worker of `destination`, if it runs one.
fn pause(controls: &Controls, destination: &str, paused: bool) {
    if let Some(control) = controls.get(destination) {
        control.set_paused(paused);
    }
}

/// Opens this process's breakers that another process shared as open (and none closed).
async fn apply_open_breakers(store: &dyn Store, controls: &Controls) {
    match store.open_breakers().await {
        Ok(open) => {
            for destination in open {
                if let Some(control) = controls.get(&destination) {
                    control.breaker_elsewhere(true);
                }
            }
        }
        Err(err) => tracing::warn!(error = %err, "could not read shared breakers"),
    }
}
