//! Operator-driven writes (cancel, bulk steps, jobs, pause), run by the writer thread as
//! generic write commands; each is small, so none stalls ingest's group commits.

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::browse::{scope_clause, snapshot_of};
use super::ops::backend;
use super::query;
use super::read::{bad_input, state_at};
use crate::domain::{DeliveryId, DeliveryState, UnixMillis};
use crate::store::{BulkAction, BulkScope, BulkStep, CancelOutcome, Cursor, StoreError};

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

pub fn create_job(
    tx: &Connection,
    id: &str,
    scope: &BulkScope,
    matched: u64,
    now: UnixMillis,
) -> Result<(), StoreError> {
    let scope = serde_json::to_string(scope).map_err(|err| StoreError::Backend(err.to_string()))?;
    tx.execute(
        "INSERT INTO jobs (id, scope, created_at, matched) VALUES (?1, ?2, ?3, ?4)",
        params![id, scope, now, matched as i64],
    )
    .map_err(backend)?;
    Ok(())
}

/// Changes the next `limit` matching deliveries in ascending order after `after`, marks
/// them with the job, and adds them to its count.
pub fn bulk_step(
    tx: &Connection,
    job: &str,
    scope: &BulkScope,
    after: Option<&Cursor>,
    limit: usize,
    now: UnixMillis,
) -> Result<BulkStep, StoreError> {
    let snapshot = snapshot_of(tx, scope).map_err(backend)?;
    let mut clause = scope_clause(scope, snapshot);
    if let Some(cursor) = after {
        let seq = query::decode(cursor).map_err(|err| backend(bad_input(err)))?;
        clause.push("d.seq > ?", seq);
    }
    let limit_param = clause.next_param(limit as i64);
    let sql = format!(
        "SELECT d.seq FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE {} ORDER BY d.seq LIMIT {limit_param}",
        clause.sql()
    );
    let rows: Vec<i64> = tx
        .prepare(&sql)
        .and_then(|mut stmt| {
            stmt.query_map(params_from_iter(clause.params.iter()), |row| row.get(0))?
                .collect()
        })
        .map_err(backend)?;
    let change = match scope.action {
        BulkAction::Replay => {
            "UPDATE deliveries SET state = 'pending', due_at = ?2, attempts = 0,
                    window_start = ?2, updated_at = ?2, dead_reason = NULL, job = ?3
             WHERE seq = ?1 AND state != 'in_flight'"
        }
        BulkAction::Cancel => {
            "UPDATE deliveries SET state = 'cancelled', due_at = NULL, updated_at = ?2, job = ?3
             WHERE seq = ?1 AND state = 'pending'"
        }
    };
    let mut stmt = tx.prepare_cached(change).map_err(backend)?;
    let mut changed = 0;
    for seq in &rows {
        changed += stmt.execute(params![seq, now, job]).map_err(backend)? as u64;
    }
    tx.execute(
        "UPDATE jobs SET changed = changed + ?2 WHERE id = ?1",
        params![job, changed as i64],
    )
    .map_err(backend)?;
    let next = match rows.len() < limit {
        true => None,
        false => rows.last().map(|seq| query::encode(*seq)),
    };
    Ok(BulkStep { changed, next })
}

pub fn finish_job(
    tx: &Connection,
    job: &str,
    error: Option<&str>,
    now: UnixMillis,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE jobs SET finished_at = ?2, error = ?3 WHERE id = ?1",
        params![job, now, error],
    )
    .map_err(backend)?;
    Ok(())
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
