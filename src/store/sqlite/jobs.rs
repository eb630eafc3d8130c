//! Background work as rows: bulk jobs with their position and a lease (taken, stepped and
//! finished by whichever runner holds it), and named leases for one-at-a-time work.
//! Every function here runs on the writer thread, inside its transaction.

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::browse::{scope_clause, snapshot_of};
use super::ops::backend;
use crate::domain::UnixMillis;
use crate::store::{BulkAction, BulkScope, JobCancel, JobClaim, JobProgress, StoreError};

pub fn create_job(
    tx: &Connection,
    id: &str,
    scope: &BulkScope,
    matched: u64,
    now: UnixMillis,
) -> Result<(), StoreError> {
    let scope = serde_json::to_string(scope).map_err(|err| StoreError::Backend(err.to_string()))?;
    tx.execute(
        "INSERT INTO jobs (id, scope, created_at, matched, updated_at) VALUES (?1, ?2, ?3, ?4, ?3)",
        params![id, scope, now, matched as i64],
    )
    .map_err(backend)?;
    Ok(())
}

pub fn claim_job(
    tx: &Connection,
    owner: &str,
    now: UnixMillis,
    lease_until: UnixMillis,
) -> Result<Option<JobClaim>, StoreError> {
    loop {
        let next: Option<(String, String)> = tx
            .query_row(
                "SELECT id, scope FROM jobs
                 WHERE finished_at IS NULL AND (lease_until IS NULL OR lease_until < ?1)
                 ORDER BY created_at, id LIMIT 1",
                params![now],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(backend)?;
        let Some((id, scope)) = next else {
            return Ok(None);
        };
        match serde_json::from_str::<BulkScope>(&scope) {
            Ok(scope) => {
                tx.execute(
                    "UPDATE jobs SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1",
                    params![id, owner, lease_until],
                )
                .map_err(backend)?;
                return Ok(Some(JobClaim {
                    id,
                    scope,
                    owner: owner.to_owned(),
                }));
            }
            Err(err) => fail(
                tx,
                &id,
                &format!("its stored scope cannot be read: {err}"),
                now,
            )?,
        }
    }
}

pub fn job_step(
    tx: &Connection,
    job: &JobClaim,
    limit: usize,
    now: UnixMillis,
    lease_until: UnixMillis,
) -> Result<JobProgress, StoreError> {
    let held: Option<(Option<String>, Option<i64>, Option<i64>)> = tx
        .query_row(
            "SELECT lease_owner, position, finished_at FROM jobs WHERE id = ?1",
            params![job.id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()
        .map_err(backend)?;
    let position = match held {
        Some((Some(owner), position, None)) if owner == job.owner => position,
        _ => return Ok(JobProgress::Lost),
    };
    let snapshot = match snapshot_of(tx, &job.scope) {
        Ok(snapshot) => snapshot,
        Err(err) => {
            let reason = format!("its snapshot can no longer be honoured: {err}");
            fail(tx, &job.id, &reason, now)?;
            return Ok(JobProgress::Failed(reason));
        }
    };
    let (changed, last) = change_batch(tx, &job.id, &job.scope, snapshot, position, limit, now)?;
    let done = last.is_none();
    tx.execute(
        "UPDATE jobs SET changed = changed + ?2, position = COALESCE(?3, position),
                updated_at = ?4,
                lease_until = CASE WHEN ?5 THEN NULL ELSE ?6 END,
                lease_owner = CASE WHEN ?5 THEN NULL ELSE lease_owner END,
                finished_at = CASE WHEN ?5 THEN ?4 ELSE NULL END
         WHERE id = ?1",
        params![job.id, changed as i64, last, now, done, lease_until],
    )
    .map_err(backend)?;
    Ok(match done {
        true => JobProgress::Finished { changed },
        false => JobProgress::Continues { changed },
    })
}

/// Changes the next `limit` matching deliveries after `position` in ascending order and
/// marks them with the job; returns how many changed and the last one visited (`None` once
/// fewer than `limit` were left, so nothing remains).
fn change_batch(
    tx: &Connection,
    job: &str,
    scope: &BulkScope,
    snapshot: i64,
    position: Option<i64>,
    limit: usize,
    now: UnixMillis,
) -> Result<(u64, Option<i64>), StoreError> {
    let mut clause = scope_clause(scope, snapshot);
    if let Some(seq) = position {
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
    let last = match rows.len() < limit {
        true => None,
        false => rows.last().copied(),
    };
    Ok((changed, last))
}

/// Stops an unfinished job: the step that follows finds it finished and stops.
pub fn cancel_job(tx: &Connection, id: &str, now: UnixMillis) -> Result<JobCancel, StoreError> {
    let changed = tx
        .execute(
            "UPDATE jobs SET finished_at = ?2, updated_at = ?2, cancelled_at = ?2,
                    lease_owner = NULL, lease_until = NULL
             WHERE id = ?1 AND finished_at IS NULL",
            params![id, now],
        )
        .map_err(backend)?;
    if changed == 1 {
        return Ok(JobCancel::Cancelled);
    }
    let exists: Option<i64> = tx
        .query_row("SELECT 1 FROM jobs WHERE id = ?1", params![id], |row| {
            row.get(0)
        })
        .optional()
        .map_err(backend)?;
    Ok(match exists {
        Some(_) => JobCancel::Finished,
        None => JobCancel::NotFound,
    })
}

fn fail(tx: &Connection, id: &str, reason: &str, now: UnixMillis) -> Result<(), StoreError> {
    tracing::error!(job = %id, %reason, "bulk job failed");
    tx.execute(
        "UPDATE jobs SET finished_at = ?2, updated_at = ?2, error = ?3, lease_owner = NULL,
                lease_until = NULL
         WHERE id = ?1",
        params![id, now, reason],
    )
    .map_err(backend)?;
    Ok(())
}

pub fn take_lease(
    tx: &Connection,
    name: &str,
    owner: &str,
    now: UnixMillis,
    until: UnixMillis,
) -> Result<bool, StoreError> {
    let taken = tx
        .execute(
            "INSERT INTO leases (name, owner, until) VALUES (?1, ?2, ?4)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
             WHERE leases.owner = excluded.owner OR leases.until < ?3",
            params![name, owner, now, until],
        )
        .map_err(backend)?;
    Ok(taken == 1)
}

/// At a server's start: it holds the file's lock, so every lease in the file belongs to a
/// process that is gone; its jobs can be taken at once.
pub fn release_all(conn: &Connection) -> rusqlite::Result<usize> {
    let jobs = conn.execute(
        "UPDATE jobs SET lease_owner = NULL, lease_until = NULL
         WHERE finished_at IS NULL AND lease_owner IS NOT NULL",
        [],
    )?;
    conn.execute("DELETE FROM leases", [])?;
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_lease_has_one_holder_until_it_expires() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        // (owner, now, until) → taken?
        for (owner, now, until, taken) in [
            ("a", 0, 100, true),
            ("b", 50, 150, false),
            ("a", 60, 160, true), // renewed by its holder
            ("b", 150, 250, false),
            ("b", 161, 261, true), // expired: someone else takes it
            ("a", 170, 270, false),
        ] {
            assert_eq!(
                take_lease(&conn, "retention", owner, now, until).unwrap(),
                taken,
                "{owner} at {now}"
            );
        }
        assert!(take_lease(&conn, "other", "a", 170, 270).unwrap());
    }
}
