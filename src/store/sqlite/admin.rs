//! Operator-driven writes (cancel, pause), run by the writer thread as
//! generic write commands; each is small, so none stalls ingest's group commits.

use rusqlite::{Connection, OptionalExtension, params};

use super::ops::backend;
use super::read::state_at;
use crate::domain::{DeliveryId, DeliveryState, UnixMillis};
use crate::store::{CancelOutcome, StoreError};

pub fn cancel(
    tx: &Connection,
    id: &DeliveryId,
    now: UnixMillis,
) -> Result<CancelOutcome, StoreError> {
    let state = tx
        .query_row(
            "SELECT state FROM deliveries WHERE id = ?1",
            params![id.as_str()],
            |row| state_at(row, 0),
        )
        .optional()
        .map_err(backend)?;
    match state {
        None => Ok(CancelOutcome::NotFound),
        Some(DeliveryState::InFlight) => Ok(CancelOutcome::InFlight),
        Some(DeliveryState::Pending) => {
            tx.execute(
                "UPDATE deliveries SET state = 'cancelled', due_at = NULL, updated_at = ?2
                 WHERE id = ?1 AND state = 'pending'",
                params![id.as_str(), now],
            )
            .map_err(backend)?;
            Ok(CancelOutcome::Cancelled)
        }
        Some(finished) => Ok(CancelOutcome::Finished(finished)),
    }
}

pub fn set_paused(
    tx: &Connection,
    destination: &str,
    paused: bool,
    now: UnixMillis,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO destination_state (name, paused, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
        params![destination, paused, now],
    )
    .map_err(backend)?;
    Ok(())
}
