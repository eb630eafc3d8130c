//! The SQL of each write command, run by the writer thread inside its batch transaction.

use rusqlite::{Connection, OptionalExtension, params};

use super::dedup::{DedupIndex, dedup_hash};
use super::schema::encode_headers;
use crate::domain::{DeliveryId, EventId, Ordering, UnixMillis};
use crate::store::{
    Accepted, AttemptRecord, ClaimRequest, Claimed, ClaimedDelivery, Lease, NewEvent, NextState,
    ReplayOutcome, StoreError,
};

pub fn backend(err: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::ToSqlConversionFailure(inner) = &err
        && let Some(bad) = inner.downcast_ref::<super::read::BadInput>()
    {
        return StoreError::BadRequest(bad.0.clone());
    }
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) | Some(rusqlite::ErrorCode::DatabaseBusy) => {
            StoreError::Unavailable(err.to_string())
        }
        _ => StoreError::Backend(err.to_string()),
    }
}

pub(super) fn insert_event(
    tx: &Connection,
    event: &NewEvent,
    dedup: &mut DedupIndex,
) -> Result<Accepted, StoreError> {
    let class = &event.classification;
    let hash = class
        .dedup_key
        .as_deref()
        .map(|key| dedup_hash(event.source.as_str(), key));
    if let (Some(hash), Some(key)) = (hash, &class.dedup_key)
        && let Some(seq) = dedup.find(hash)
    {
        // Confirm against the event itself: a hash collision must not swallow an event.
        // The event itself, or what retention kept of it.
        let original: Option<(String, String, Option<String>)> = tx
            .prepare_cached(
                "SELECT id, source, dedup_key FROM events WHERE seq = ?1
                 UNION ALL
                 SELECT id, source, dedup_key FROM pruned_events WHERE seq = ?1 LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![seq], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
            })
            .map_err(backend)?;
        if let Some((id, source, Some(stored_key))) = original
            && source == event.source.as_str()
            && &stored_key == key
        {
            return Ok(Accepted {
                event_id: EventId::from_stored(id),
                deliveries: 0,
                duplicate: true,
            });
        }
    }
    let event_seq = dedup.take_event_seq();
    tx.prepare_cached(
        "INSERT INTO events (id, source, received_at, remote_addr, event_type, dedup_key,
                             content_type, headers, body, action, git_ref, branch, tag,
                             project, sender, commit_before, commit_after, seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            event.id.as_str(),
            event.source.as_str(),
            event.received_at,
            event.remote_addr,
            class.event_type,
            class.dedup_key,
            event.content_type,
            encode_headers(&event.headers),
            &event.body[..],
            class.action,
            class.git_ref,
            class.branch,
            class.tag,
            class.project,
            class.sender,
            class.commit_before,
            class.commit_after,
            event_seq,
        ])
    })
    .map_err(backend)?;
    if let Some(hash) = hash {
        tx.prepare_cached(
            "INSERT INTO dedup_keys (hash, event_seq, received_at) VALUES (?1, ?2, ?3)",
        )
        .and_then(|mut stmt| stmt.execute(params![hash, event_seq, event.received_at]))
        .map_err(backend)?;
    }
    let mut insert_delivery = tx
        .prepare_cached(
            "INSERT INTO deliveries (id, event_seq, destination, state, due_at, window_start,
                                     created_at, updated_at, coalesce_key)
             VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?4, ?4, ?5)",
        )
        .map_err(backend)?;
    for routed in &event.destinations {
        insert_delivery
            .execute(params![
                DeliveryId::generate().as_str(),
                event_seq,
                routed.destination.as_str(),
                event.received_at,
                routed.coalesce_key,
            ])
            .map_err(backend)?;
    }
    if let Some(hash) = hash {
        dedup.stage(event.received_at, hash, event_seq);
    }
    Ok(Accepted {
        event_id: event.id.clone(),
        deliveries: event.destinations.len(),
        duplicate: false,
    })
}

/// The due deliveries of a parallel destination. Two things in the claim statements keep
/// SQLite from preparing them again at every claim (it did: 5 % of all CPU in a drain): the
/// destination is compared as `CAST(?1 AS TEXT)`, since a bare parameter compared with an
/// indexed column marks the statement to be re-planned whenever its parameters are cleared
/// (which the statement cache does after each use), and the LIMIT is a literal, since SQLite
/// reads a bound LIMIT's value when planning.
pub(super) const PARALLEL_DUE: &str = "SELECT seq FROM deliveries
     WHERE destination = CAST(?1 AS TEXT) AND state IN ('pending', 'in_flight') AND due_at <= ?2
     ORDER BY due_at, seq LIMIT 4096";

pub(super) fn claim(tx: &Connection, request: &ClaimRequest) -> Result<Claimed, StoreError> {
    let destination = request.destination.as_str();
    let candidates: Vec<i64> = match request.ordering {
        // The index gives the rows in order, so they stream and are taken as needed.
        Ordering::Parallel => tx.prepare_cached(PARALLEL_DUE).and_then(|mut stmt| {
            stmt.query_map(params![destination, request.now], |row| row.get(0))?
                .take(request.limit)
                .collect()
        }),
        // Only the oldest unfinished delivery may go; if it is not due, nothing goes.
        Ordering::Fifo => tx
            .prepare_cached(
                "SELECT seq, due_at FROM deliveries
                 WHERE destination = CAST(?1 AS TEXT) AND state IN ('pending', 'in_flight')
                 ORDER BY seq LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![destination], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
                })
                .optional()
            })
            .map(|head| match head {
                Some((seq, due)) if due <= request.now && request.limit > 0 => vec![seq],
                _ => vec![],
            }),
        Ordering::Latest => super::latest::claimable(tx, destination, request.now, request.limit),
    }
    .map_err(backend)?;

    // A plain read then a plain write per row: an `UPDATE ... RETURNING` costs about twice
    // as much in SQLite (its rows go through an ephemeral table), and this is the hottest
    // write of delivery.
    let mut read = tx
        .prepare_cached(
            "SELECT d.id, d.attempts, d.window_start, d.lease_token, d.interrupted,
                    d.state = 'in_flight', e.id, length(e.body)
             FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.seq = ?1",
        )
        .map_err(backend)?;
    let mut take = tx
        .prepare_cached(
            "UPDATE deliveries SET state = 'in_flight', due_at = ?2, lease_owner = ?3,
                    lease_token = ?4, updated_at = ?5, interrupted = ?6
             WHERE seq = ?1",
        )
        .map_err(backend)?;
    let mut deliveries = Vec::with_capacity(candidates.len());
    for seq in candidates {
        // length() of a blob reads its size from the record header, not the body.
        let (id, attempts, window_start, token, interrupted, in_flight, event_id, body_len) = read
            .query_row(params![seq], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, u32>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, bool>(4)?,
                    row.get::<_, bool>(5)?,
                    row.get::<_, String>(6)?,
                    row.get::<_, i64>(7)?,
                ))
            })
            .map_err(backend)?;
        // A delivery still in flight under an expired lease: its worker went away mid-attempt.
        let interrupted = interrupted || in_flight;
        let lease_token = token + 1;
        take.execute(params![
            seq,
            request.lease_until,
            request.lease_owner,
            lease_token,
            request.now,
            interrupted
        ])
        .map_err(backend)?;
        deliveries.push(ClaimedDelivery {
            lease: Lease {
                row: seq,
                token: lease_token,
            },
            id: DeliveryId::from_stored(id),
            destination: request.destination.clone(),
            attempts,
            window_start,
            interrupted,
            event_id: EventId::from_stored(event_id),
            body_len: body_len.max(0) as u64,
        });
    }
    let next_due = tx
        .prepare_cached(
            "SELECT MIN(due_at) FROM deliveries
             WHERE destination = CAST(?1 AS TEXT) AND state IN ('pending', 'in_flight')",
        )
        .and_then(|mut stmt| stmt.query_row(params![destination], |row| row.get(0)))
        .map_err(backend)?;
    Ok(Claimed {
        deliveries,
        next_due,
    })
}

pub(super) fn complete(tx: &Connection, record: &AttemptRecord) -> Result<(), StoreError> {
    let (state, due_at, dead_reason) = match &record.next {
        NextState::Succeeded => ("succeeded", None, None),
        NextState::RetryAt(at) => ("pending", Some(*at), None),
        NextState::Dead(reason) => ("dead", None, Some(reason.as_str())),
    };
    let attempt = &record.attempt;
    let detail = &attempt.detail;
    let updated = tx
        .prepare_cached(
            "UPDATE deliveries SET state = ?3, due_at = ?4, attempts = attempts + 1,
                    lease_owner = NULL, updated_at = ?5, last_status = ?6, last_error = ?7,
                    dead_reason = ?8, interrupted = 0, last_verdict = ?9, last_summary = ?10
             WHERE seq = ?1 AND lease_token = ?2 AND state = 'in_flight'",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                record.lease.row,
                record.lease.token,
                state,
                due_at,
                attempt.finished_at(),
                detail.status,
                detail.error,
                dead_reason,
                attempt.verdict.as_str(),
                detail.summary,
            ])
        })
        .map_err(backend)?;
    if updated == 0 {
        tracing::warn!(
            delivery = record.lease.row,
            "attempt finished after its lease was taken over; recorded, state left alone"
        );
    }
    tx.prepare_cached(
        "INSERT INTO attempts (delivery_seq, number, started_at, duration_ms, status, error,
                               response_excerpt, verdict, class, summary, response_headers)
         VALUES (?1, (SELECT COUNT(*) + 1 FROM attempts WHERE delivery_seq = ?1), ?2, ?3, ?4, ?5,
                 ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            record.lease.row,
            attempt.started_at,
            attempt.duration_ms,
            detail.status,
            detail.error,
            detail.response_excerpt,
            attempt.verdict.as_str(),
            attempt.class,
            detail.summary,
            detail.response_headers,
        ])
    })
    .map_err(backend)?;
    Ok(())
}

pub(super) fn release(
    tx: &Connection,
    leases: &[Lease],
    now: UnixMillis,
) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "UPDATE deliveries SET state = 'pending', due_at = ?3, lease_owner = NULL,
                    updated_at = ?3
             WHERE seq = ?1 AND lease_token = ?2 AND state = 'in_flight'",
        )
        .map_err(backend)?;
    for lease in leases {
        stmt.execute(params![lease.row, lease.token, now])
            .map_err(backend)?;
    }
    Ok(())
}

/// Replays one delivery; when it is scheduled, also says for which destination (to wake it).
pub(super) fn replay(
    tx: &Connection,
    id: &DeliveryId,
    now: UnixMillis,
) -> Result<(ReplayOutcome, Option<String>), StoreError> {
    // One guarded statement: a delivery leased meanwhile (by any process) is never reset.
    let scheduled: Option<String> = tx
        .query_row(
            "UPDATE deliveries SET state = 'pending', due_at = ?2, attempts = 0, window_start = ?2,
                    updated_at = ?2, dead_reason = NULL
             WHERE id = ?1 AND state <> 'in_flight'
             RETURNING destination",
            params![id.as_str(), now],
            |row| row.get(0),
        )
        .optional()
        .map_err(backend)?;
    if let Some(destination) = scheduled {
        return Ok((ReplayOutcome::Scheduled, Some(destination)));
    }
    let exists = tx
        .query_row(
            "SELECT 1 FROM deliveries WHERE id = ?1",
            params![id.as_str()],
            |_| Ok(()),
        )
        .optional()
        .map_err(backend)?;
    let outcome = match exists {
        Some(()) => ReplayOutcome::InFlight,
        None => ReplayOutcome::NotFound,
    };
    Ok((outcome, None))
}

/// Rewrites the heartbeat row with 64 KiB, about a typical event's worth of WAL space: if
/// this commits, a typical event would too.
pub(super) fn heartbeat(tx: &Connection, now: UnixMillis) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO heartbeat (id, at, room) VALUES (1, ?1, zeroblob(65536))",
    )
    .and_then(|mut stmt| stmt.execute(params![now]))
    .map_err(backend)?;
    Ok(())
}
