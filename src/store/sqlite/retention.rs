//! Retention: finished events are deleted after their age, in small batches, each its own
//! short write, so ingest never waits long behind housekeeping. Freed pages are reused by
//! later inserts, so under steady load the file stops growing.

use rusqlite::{Connection, params};

use super::ops::backend;
use super::query;
use crate::domain::{DEDUP_WINDOW_MS, Retention, UnixMillis};
use crate::store::{Cursor, PruneStep, StoreError};

/// Events looked at per step.
const BATCH: i64 = 500;

/// Looks at the next `BATCH` events after `after`, oldest first, and removes those whose
/// deliveries are all finished long enough ago. An event whose sender id is still inside
/// the dedup window leaves its id and key behind until the window ends, so a repeat is still
/// recognised (in `pruned_events`); the dedup keys past the window go with the last step.
pub fn prune_step(
    tx: &Connection,
    policy: &Retention,
    after: Option<&Cursor>,
    now: UnixMillis,
) -> Result<PruneStep, StoreError> {
    let ok_cutoff = now - policy.succeeded.as_millis() as i64;
    let dead_cutoff = now - policy.dead.as_millis() as i64;
    let dedup_cutoff = now - DEDUP_WINDOW_MS;
    let after = match after {
        Some(cursor) => query::decode(cursor).map_err(StoreError::BadRequest)?,
        None => 0,
    };
    let scanned: Vec<(i64, i64, bool)> = tx
        .prepare_cached(
            "SELECT seq, received_at, dedup_key IS NOT NULL FROM events
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![after, BATCH], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?
            .collect()
        })
        .map_err(backend)?;
    let mut step = PruneStep::default();
    let mut last = after;
    let mut reached_recent = scanned.len() < BATCH as usize;
    for (seq, received_at, keyed) in scanned {
        // Events arrive in order: once one is younger than both ages, so is the rest.
        if received_at >= ok_cutoff.max(dead_cutoff) {
            reached_recent = true;
            break;
        }
        last = seq;
        if !expired(tx, seq, ok_cutoff, dead_cutoff)? {
            continue;
        }
        tx.prepare_cached(
            "DELETE FROM attempts WHERE delivery_seq IN
                 (SELECT seq FROM deliveries WHERE event_seq = ?1)",
        )
        .and_then(|mut stmt| stmt.execute(params![seq]))
        .map_err(backend)?;
        tx.prepare_cached("DELETE FROM deliveries WHERE event_seq = ?1")
            .and_then(|mut stmt| stmt.execute(params![seq]))
            .map_err(backend)?;
        if keyed && received_at >= dedup_cutoff {
            tx.prepare_cached(
                "INSERT INTO pruned_events (seq, id, source, dedup_key, received_at)
                 SELECT seq, id, source, dedup_key, received_at FROM events WHERE seq = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![seq]))
            .map_err(backend)?;
        }
        tx.prepare_cached("DELETE FROM events WHERE seq = ?1")
            .and_then(|mut stmt| stmt.execute(params![seq]))
            .map_err(backend)?;
        step.events_pruned += 1;
    }
    if reached_recent {
        // Pruned events' sender ids whose dedup window has ended.
        tx.execute(
            "DELETE FROM pruned_events WHERE seq IN (SELECT seq FROM pruned_events
             WHERE received_at < ?1 ORDER BY seq LIMIT ?2)",
            params![dedup_cutoff, BATCH],
        )
        .map_err(backend)?;
        tx.execute(
            "DELETE FROM dedup_keys WHERE seq IN (SELECT seq FROM dedup_keys
             WHERE received_at < ?1 LIMIT ?2)",
            params![dedup_cutoff, BATCH * 4],
        )
        .map_err(backend)?;
    } else {
        step.next = Some(query::encode(last));
    }
    Ok(step)
}

/// Every delivery finished, and long enough ago for its outcome (an event no route took
/// counts as succeeded).
fn expired(
    tx: &Connection,
    event: i64,
    ok_cutoff: UnixMillis,
    dead_cutoff: UnixMillis,
) -> Result<bool, StoreError> {
    let keeping: bool = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM deliveries WHERE event_seq = ?1 AND (
                 state IN ('pending', 'in_flight')
                 OR (state = 'dead' AND updated_at >= ?3)
                 OR (state != 'dead' AND updated_at >= ?2)))",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![event, ok_cutoff, dead_cutoff], |row| row.get(0))
        })
        .map_err(backend)?;
    Ok(!keeping)
}
