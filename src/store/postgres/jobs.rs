//! Background work on PostgreSQL: bulk jobs with their position and a lease (taken, stepped
//! and finished by whichever replica holds it), named leases for one-at-a-time work, and
//! retention. Leases run on the database's clock (`hookrelay_now`): a caller's `until` is
//! taken as a duration from its `now`, so replicas with skewed clocks agree on when a lease
//! ends.

use std::collections::HashSet;

use tokio_postgres::{GenericClient, Transaction};

use super::browse::{scope_clause, snapshot_of, state_at};
use super::{pg_error, query};
use crate::domain::{DEDUP_WINDOW_MS, DeliveryState, Retention, UnixMillis};
use crate::store::{
    BulkAction, BulkScope, Cursor, JobCancel, JobClaim, JobProgress, PruneStep, StoreError,
};

/// Events looked at per retention step.
const BATCH: i64 = 500;
/// Expired dedup keys removed by the last step of a sweep.
const DEDUP_BATCH: i64 = BATCH * 4;

pub async fn create_job(
    client: &impl GenericClient,
    id: &str,
    scope: &BulkScope,
    matched: u64,
    now: UnixMillis,
) -> Result<(), StoreError> {
    let scope = serde_json::to_string(scope).map_err(|err| StoreError::Backend(err.to_string()))?;
    client
        .execute(
            "INSERT INTO jobs (id, scope, created_at, matched, updated_at)
             VALUES ($1, $2, hookrelay_now($3), $4, hookrelay_now($3))",
            &[&id, &scope, &now, &(matched as i64)],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// Takes the oldest unfinished job no one holds, in one statement: replicas claiming at once
/// skip the row another is taking rather than wait for it, so no job is handed out twice.
const CLAIM_JOB: &str = r#"
UPDATE jobs SET lease_owner = $1, lease_until = hookrelay_now($2) + $3::bigint
WHERE id = (SELECT id FROM jobs
            WHERE finished_at IS NULL
              AND (lease_until IS NULL OR lease_until < hookrelay_now($2))
            ORDER BY created_at, id COLLATE "C" LIMIT 1
            FOR UPDATE SKIP LOCKED)
RETURNING id, scope"#;

pub async fn claim_job(
    client: &impl GenericClient,
    owner: &str,
    now: UnixMillis,
    lease_until: UnixMillis,
) -> Result<Option<JobClaim>, StoreError> {
    let lease = lease_until - now;
    loop {
        let Some(row) = query::opt(client, CLAIM_JOB, &[&owner, &now, &lease]).await? else {
            return Ok(None);
        };
        let (id, scope): (String, &str) = (row.get(0), row.get(1));
        match serde_json::from_str::<BulkScope>(scope) {
            Ok(scope) => {
                return Ok(Some(JobClaim {
                    id,
                    scope,
                    owner: owner.to_owned(),
                }));
            }
            Err(err) => {
                let reason = format!("its stored scope cannot be read: {err}");
                fail(client, &id, &reason, now).await?;
            }
        }
    }
}

/// One step, inside the caller's transaction: the job's row stays locked until it commits,
/// so a runner that lost the job meanwhile waits for the step and then sees it is not theirs.
/// Stops an unfinished job: a step waiting on the row's lock then finds it finished.
pub async fn cancel_job(
    client: &impl GenericClient,
    id: &str,
    now: UnixMillis,
) -> Result<JobCancel, StoreError> {
    let changed = client
        .execute(
            "UPDATE jobs SET finished_at = $2, updated_at = $2, cancelled_at = $2,
                    lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND finished_at IS NULL",
            &[&id, &now],
        )
        .await
        .map_err(pg_error)?;
    if changed == 1 {
        return Ok(JobCancel::Cancelled);
    }
    let exists = query::opt(client, "SELECT 1 FROM jobs WHERE id = $1", &[&id]).await?;
    Ok(match exists {
        Some(_) => JobCancel::Finished,
        None => JobCancel::NotFound,
    })
}

pub async fn job_step(
    tx: &Transaction<'_>,
    job: &JobClaim,
    limit: usize,
    now: UnixMillis,
    lease_until: UnixMillis,
) -> Result<JobProgress, StoreError> {
    let held = query::opt(
        tx,
        "SELECT lease_owner, position, finished_at FROM jobs WHERE id = $1 FOR UPDATE",
        &[&job.id],
    )
    .await?;
    let position: Option<i64> = match held {
        Some(row)
            if row.get::<_, Option<&str>>(0) == Some(job.owner.as_str())
                && row.get::<_, Option<i64>>(2).is_none() =>
        {
            row.get(1)
        }
        _ => return Ok(JobProgress::Lost),
    };
    let snapshot = match snapshot_of(tx, &job.scope).await {
        Ok(snapshot) => snapshot,
        // Only a snapshot that cannot be read fails the job. A database error has aborted
        // the transaction (nothing more can be recorded in it): the step is tried again.
        Err(StoreError::BadRequest(err)) => {
            let reason = format!("its snapshot can no longer be honoured: {err}");
            fail(tx, &job.id, &reason, now).await?;
            return Ok(JobProgress::Failed(reason));
        }
        Err(err) => return Err(err),
    };
    let (changed, last) =
        change_batch(tx, &job.id, &job.scope, &snapshot, position, limit, now).await?;
    let done = last.is_none();
    tx.execute(
        "UPDATE jobs SET changed = changed + $2::bigint, position = COALESCE($3::bigint, position),
                updated_at = hookrelay_now($4),
                lease_until = CASE WHEN $5::boolean THEN NULL
                                   ELSE hookrelay_now($4) + $6::bigint END,
                lease_owner = CASE WHEN $5::boolean THEN NULL ELSE lease_owner END,
                finished_at = CASE WHEN $5::boolean THEN hookrelay_now($4) ELSE NULL END
         WHERE id = $1",
        &[
            &job.id,
            &(changed as i64),
            &last,
            &now,
            &done,
            &(lease_until - now),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(match done {
        true => JobProgress::Finished { changed },
        false => JobProgress::Continues { changed },
    })
}

/// Changes the next `limit` matching deliveries after `position` in ascending order and
/// marks them with the job; returns how many changed and the last one visited (`None` once
/// fewer than `limit` were left, so nothing remains).
async fn change_batch(
    tx: &Transaction<'_>,
    job: &str,
    scope: &BulkScope,
    snapshot: &str,
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
    let rows: Vec<i64> = query::all(tx, &sql, &clause.refs())
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    // The state guard is checked again on each row as the update locks it: a delivery a
    // claim on any replica took since the read above is left alone.
    let change = match scope.action {
        BulkAction::Replay => {
            "UPDATE deliveries SET state = 'pending', due_at = hookrelay_now($2), attempts = 0,
                    window_start = hookrelay_now($2), updated_at = hookrelay_now($2),
                    dead_reason = NULL, job = $3
             WHERE seq = ANY($1) AND state <> 'in_flight'"
        }
        BulkAction::Cancel => {
            "UPDATE deliveries SET state = 'cancelled', due_at = NULL,
                    updated_at = hookrelay_now($2), job = $3
             WHERE seq = ANY($1) AND state = 'pending'"
        }
    };
    let changed = match rows.is_empty() {
        true => 0,
        false => tx
            .execute(change, &[&rows, &now, &job])
            .await
            .map_err(pg_error)?,
    };
    let last = match rows.len() < limit {
        true => None,
        false => rows.last().copied(),
    };
    Ok((changed, last))
}

async fn fail(
    client: &impl GenericClient,
    id: &str,
    reason: &str,
    now: UnixMillis,
) -> Result<(), StoreError> {
    tracing::error!(job = %id, %reason, "bulk job failed");
    client
        .execute(
            "UPDATE jobs SET finished_at = hookrelay_now($2), updated_at = hookrelay_now($2),
                    error = $3, lease_owner = NULL, lease_until = NULL
             WHERE id = $1",
            &[&id, &now, &reason],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}

pub async fn take_lease(
    client: &impl GenericClient,
    name: &str,
    owner: &str,
    now: UnixMillis,
    until: UnixMillis,
) -> Result<bool, StoreError> {
    let taken = client
        .execute(
            "INSERT INTO leases (name, owner, until) VALUES ($1, $2, hookrelay_now($3) + $4::bigint)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until
             WHERE leases.owner = excluded.owner OR leases.until < hookrelay_now($3)",
            &[&name, &owner, &now, &(until - now)],
        )
        .await
        .map_err(pg_error)?;
    Ok(taken == 1)
}

/// Retention: looks at the next `BATCH` events after `after`, oldest first, and removes
/// those whose deliveries are all finished long enough ago, in one short transaction so
/// ingest never waits long behind housekeeping. Dedup keys live apart from events: pruning
/// an event keeps its sender id recognised for the rest of the dedup window, and the keys
/// past the window go with the last step.
pub async fn prune_step(
    tx: &Transaction<'_>,
    policy: &Retention,
    after: Option<&Cursor>,
    now: UnixMillis,
) -> Result<PruneStep, StoreError> {
    let after = match after {
        Some(cursor) => query::decode(cursor)?,
        None => 0,
    };
    // On the database's clock, read once so every statement of the step agrees.
    let cutoffs = query::one(
        tx,
        "SELECT hookrelay_now($1) - $2::bigint, hookrelay_now($1) - $3::bigint,
                hookrelay_now($1) - $4::bigint",
        &[
            &now,
            &(policy.succeeded.as_millis() as i64),
            &(policy.dead.as_millis() as i64),
            &DEDUP_WINDOW_MS,
        ],
    )
    .await?;
    let (ok_cutoff, dead_cutoff, dedup_cutoff): (i64, i64, i64) =
        (cutoffs.get(0), cutoffs.get(1), cutoffs.get(2));
    let scanned = query::all(
        tx,
        "SELECT seq, received_at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
        &[&after, &BATCH],
    )
    .await?;
    let mut last = after;
    let mut reached_recent = scanned.len() < BATCH as usize;
    let mut candidates = Vec::with_capacity(scanned.len());
    for row in &scanned {
        // Events arrive in order: once one is younger than both ages, so is the rest.
        if row.get::<_, i64>(1) >= ok_cutoff.max(dead_cutoff) {
            reached_recent = true;
            break;
        }
        last = row.get(0);
        candidates.push(last);
    }
    let mut step = PruneStep::default();
    let expired = expired(tx, &candidates, ok_cutoff, dead_cutoff).await?;
    if !expired.is_empty() {
        for delete in [
            "DELETE FROM attempts WHERE delivery_seq IN
                 (SELECT seq FROM deliveries WHERE event_seq = ANY($1))",
            "DELETE FROM deliveries WHERE event_seq = ANY($1)",
        ] {
            tx.execute(delete, &[&expired]).await.map_err(pg_error)?;
        }
        step.events_pruned = tx
            .execute("DELETE FROM events WHERE seq = ANY($1)", &[&expired])
            .await
            .map_err(pg_error)?;
    }
    if reached_recent {
        // Sender ids whose dedup window has ended. A key a new event took over meanwhile is
        // a new row version (another ctid), so it is not deleted.
        tx.execute(
            "DELETE FROM dedup_keys WHERE ctid IN (SELECT ctid FROM dedup_keys
             WHERE received_at < $1 LIMIT $2)",
            &[&dedup_cutoff, &DEDUP_BATCH],
        )
        .await
        .map_err(pg_error)?;
    } else {
        step.next = Some(query::encode(last));
    }
    Ok(step)
}

/// Of `events`, those whose deliveries are all finished, and long enough ago for their
/// outcome (an event no route took counts as succeeded). The deliveries are locked first,
/// and their latest versions read: a replay on another replica cannot bring one back while
/// its event is deleted, nor be lost by it.
async fn expired(
    tx: &Transaction<'_>,
    events: &[i64],
    ok_cutoff: UnixMillis,
    dead_cutoff: UnixMillis,
) -> Result<Vec<i64>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let rows = query::all(
        tx,
        "SELECT event_seq, state, updated_at FROM deliveries WHERE event_seq = ANY($1)
         ORDER BY seq FOR UPDATE",
        &[&events],
    )
    .await?;
    let mut keeping = HashSet::new();
    for row in &rows {
        let updated_at: i64 = row.get(2);
        let keep = match state_at(row, 1)? {
            DeliveryState::Pending | DeliveryState::InFlight => true,
            DeliveryState::Dead => updated_at >= dead_cutoff,
            _ => updated_at >= ok_cutoff,
        };
        if keep {
            keeping.insert(row.get::<_, i64>(0));
        }
    }
    Ok(events
        .iter()
        .copied()
        .filter(|seq| !keeping.contains(seq))
        .collect())
}
