//! Delivery bookkeeping on PostgreSQL: claims (each one statement or transaction, atomic
//! across replicas), attempt records, releases, and an operator's replay, cancel and pause,
//! each one guarded statement. Bookkeeping runs on its own pool whose commits do not wait
//! for their WAL flush (as on SQLite, it reaches the disk with the next durable commit);
//! durable claims use the main pool and wait.

use super::pg_error;
use crate::domain::{DeliveryId, EventId, Ordering, UnixMillis};
use crate::store::{
    CancelOutcome, ClaimRequest, Claimed, ClaimedDelivery, Lease, ReplayOutcome, StoreError,
};

/// Takes the deliveries of destination `$1` that `$chosen` names (a query that may read `t`,
/// the store's time) under a lease until `t.now + $4`, for owner `$5`: one statement shape
/// for both claim paths. The chosen rows are looked up by key (an array, never a join the
/// planner may turn around) and the destination check is written so no index can serve it:
/// with the statistics of a young table the planner otherwise found the chosen rows by
/// reading every row of the destination, a cost that grew with the table on every claim.
macro_rules! take_chosen {
    ($chosen:literal) => {
        concat!(
            "WITH t AS (SELECT hookrelay_now($2) AS now), chosen AS (",
            $chosen,
            ")
UPDATE deliveries d SET state = 'in_flight', due_at = t.now + $4, lease_owner = $5,
       lease_token = d.lease_token + 1, updated_at = t.now,
       interrupted = d.interrupted OR d.state = 'in_flight'
FROM t, events e
WHERE d.seq = ANY(ARRAY(SELECT seq FROM chosen)) AND (d.destination = $1) IS TRUE
  AND e.seq = d.event_seq
RETURNING d.seq, d.lease_token, d.id, d.attempts, d.window_start, d.interrupted, e.id,
          octet_length(e.body)::bigint"
        )
    };
}

/// The due deliveries of a parallel destination: rows another replica is claiming right
/// now are skipped, not waited for.
pub(super) const CLAIM_PARALLEL: &str = take_chosen!(
    "SELECT seq FROM deliveries
    WHERE destination = $1 AND state IN ('pending', 'in_flight') AND due_at <= (SELECT now FROM t)
    ORDER BY due_at, seq LIMIT $3
    FOR UPDATE OF deliveries SKIP LOCKED"
);

/// The rows chosen under the destination's lock (`fifo`, `latest`), as `$3`.
const TAKE: &str = take_chosen!("SELECT unnest($3::bigint[]) AS seq");

/// One destination's `fifo` and `latest` claims, and its ingest batches, one at a time
/// across replicas (the lock ends with the transaction).
/// Named per schema: two hookrelay deployments sharing a database never wait on each other.
const LOCK_DESTINATION: &str = "SELECT pg_advisory_xact_lock(
    hashtextextended('hookrelay.destination.' || current_schema() || '.' || $1, 0))";

const NEXT_DUE: &str = "SELECT MIN(due_at) FROM deliveries
     WHERE destination = $1 AND state IN ('pending', 'in_flight')";

/// Claims on `client`: the bookkeeping pool's (commits that do not wait for their WAL
/// flush), or the main pool's for a durable claim.
pub async fn claim(
    client: &mut deadpool_postgres::Object,
    request: &ClaimRequest,
) -> Result<Claimed, StoreError> {
    let destination = request.destination.as_str();
    let lease = request.lease_until - request.now;
    let limit = request.limit.min(4096) as i64;
    let (rows, next_due) = match request.ordering {
        Ordering::Parallel => {
            let claim = client
                .prepare_cached(CLAIM_PARALLEL)
                .await
                .map_err(pg_error)?;
            let claim_params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
                &destination,
                &request.now,
                &limit,
                &lease,
                &request.lease_owner,
            ];
            let rows = client
                .query(&claim, &claim_params)
                .await
                .map_err(pg_error)?;
            // A full claim is claimed again at once, whatever is due next: reading the
            // next due time then would cost as much as the claim (under a backlog it walks
            // the index entries the claims just left behind).
            let next_due = match (rows.len() as i64) < limit {
                true => {
                    let next = client.prepare_cached(NEXT_DUE).await.map_err(pg_error)?;
                    client
                        .query_one(&next, &[&destination])
                        .await
                        .map_err(pg_error)?
                        .get(0)
                }
                false => None,
            };
            (rows, next_due)
        }
        ordered => {
            let tx = client.transaction().await.map_err(pg_error)?;
            let lock = tx
                .prepare_cached(LOCK_DESTINATION)
                .await
                .map_err(pg_error)?;
            tx.execute(&lock, &[&destination]).await.map_err(pg_error)?;
            let chosen = match ordered {
                Ordering::Fifo => fifo_head(&tx, destination, request.now, limit).await?,
                _ => latest_claimable(&tx, destination, request.now, limit).await?,
            };
            let rows = match chosen.is_empty() {
                true => Vec::new(),
                false => {
                    let take = tx.prepare_cached(TAKE).await.map_err(pg_error)?;
                    tx.query(
                        &take,
                        &[
                            &destination,
                            &request.now,
                            &chosen,
                            &lease,
                            &request.lease_owner,
                        ],
                    )
                    .await
                    .map_err(pg_error)?
                }
            };
            let next = tx.prepare_cached(NEXT_DUE).await.map_err(pg_error)?;
            let next_due = tx
                .query_one(&next, &[&destination])
                .await
                .map_err(pg_error)?
                .get(0);
            tx.commit().await.map_err(pg_error)?;
            (rows, next_due)
        }
    };
    let mut deliveries: Vec<ClaimedDelivery> = rows
        .iter()
        .map(|row| ClaimedDelivery {
            lease: Lease {
                row: row.get(0),
                token: row.get(1),
            },
            id: DeliveryId::from_stored(row.get(2)),
            destination: request.destination.clone(),
            attempts: row.get::<_, i32>(3).max(0) as u32,
            window_start: row.get(4),
            interrupted: row.get(5),
            event_id: EventId::from_stored(row.get(6)),
            body_len: row.get::<_, i64>(7).max(0) as u64,
        })
        .collect();
    deliveries.sort_by_key(|d| d.lease.row);
    Ok(Claimed {
        deliveries,
        next_due,
    })
}

/// Only the oldest unfinished delivery may go; if it is not due, nothing goes.
async fn fifo_head(
    tx: &deadpool_postgres::Transaction<'_>,
    destination: &str,
    now: UnixMillis,
    limit: i64,
) -> Result<Vec<i64>, StoreError> {
    let head = tx
        .query_opt(
            "SELECT seq, due_at <= hookrelay_now($2) FROM deliveries
             WHERE destination = $1 AND state IN ('pending', 'in_flight')
             ORDER BY seq LIMIT 1",
            &[&destination, &now],
        )
        .await
        .map_err(pg_error)?;
    Ok(match head {
        Some(row) if row.get::<_, bool>(1) && limit > 0 => vec![row.get(0)],
        _ => Vec::new(),
    })
}

/// Per coalescing key one delivery in flight at a time; of several waiting, only the newest
/// goes and the older ones become `superseded`, in the claim's transaction.
async fn latest_claimable(
    tx: &deadpool_postgres::Transaction<'_>,
    destination: &str,
    now: UnixMillis,
    limit: i64,
) -> Result<Vec<i64>, StoreError> {
    let rows = tx
        .query(
            "WITH t AS (SELECT hookrelay_now($2) AS now),
             newest AS (
                 SELECT coalesce_key, MAX(seq) AS seq, MIN(seq) AS first FROM deliveries, t
                 WHERE destination = $1 AND state = 'pending' AND due_at <= t.now
                 GROUP BY coalesce_key),
             free AS (
                 SELECT n.coalesce_key, n.seq, n.first FROM newest n, t
                 WHERE NOT EXISTS (SELECT 1 FROM deliveries b
                     WHERE b.destination = $1
                       AND b.coalesce_key IS NOT DISTINCT FROM n.coalesce_key
                       AND b.state = 'in_flight' AND b.due_at > t.now)
                 ORDER BY n.first LIMIT $3),
             gone AS (
                 UPDATE deliveries d SET state = 'superseded', due_at = NULL, updated_at = t.now
                 FROM free, t
                 WHERE d.destination = $1 AND d.state = 'pending'
                   AND d.coalesce_key IS NOT DISTINCT FROM free.coalesce_key
                   AND d.seq < free.seq
                 RETURNING 1)
             SELECT seq FROM free, (SELECT count(*) FROM gone) g ORDER BY first",
            &[&destination, &now, &limit],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

pub async fn release(
    tx: &deadpool_postgres::Object,
    leases: &[Lease],
    now: UnixMillis,
) -> Result<(), StoreError> {
    let rows: Vec<i64> = leases.iter().map(|lease| lease.row).collect();
    let tokens: Vec<i64> = leases.iter().map(|lease| lease.token).collect();
    tx.execute(
        "UPDATE deliveries d SET state = 'pending', due_at = hookrelay_now($3),
                lease_owner = NULL, updated_at = hookrelay_now($3)
         FROM unnest($1::bigint[], $2::bigint[]) AS l (seq, token)
         WHERE d.seq = l.seq AND d.lease_token = l.token AND d.state = 'in_flight'",
        &[&rows, &tokens, &now],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// One guarded statement: a delivery leased meanwhile (by any replica) is never reset.
pub async fn replay(
    client: &impl tokio_postgres::GenericClient,
    id: &DeliveryId,
    now: UnixMillis,
) -> Result<(ReplayOutcome, Option<String>), StoreError> {
    let row = client
        .query_opt(
            "WITH t AS (SELECT hookrelay_now($2) AS now),
             done AS (
                 UPDATE deliveries SET state = 'pending', due_at = t.now, attempts = 0,
                        window_start = t.now, updated_at = t.now, dead_reason = NULL
                 FROM t WHERE id = $1 AND state <> 'in_flight'
                 RETURNING destination)
             SELECT (SELECT destination FROM done),
                    EXISTS (SELECT 1 FROM deliveries WHERE id = $1)",
            &[&id.as_str(), &now],
        )
        .await
        .map_err(pg_error)?
        .expect("a SELECT without FROM returns one row");
    let (destination, exists): (Option<String>, bool) = (row.get(0), row.get(1));
    Ok(match (destination, exists) {
        (Some(destination), _) => (ReplayOutcome::Scheduled, Some(destination)),
        (None, true) => (ReplayOutcome::InFlight, None),
        (None, false) => (ReplayOutcome::NotFound, None),
    })
}

pub async fn cancel(
    client: &impl tokio_postgres::GenericClient,
    id: &DeliveryId,
    now: UnixMillis,
) -> Result<CancelOutcome, StoreError> {
    let row = client
        .query_opt(
            "WITH done AS (
                 UPDATE deliveries SET state = 'cancelled', due_at = NULL,
                        updated_at = hookrelay_now($2)
                 WHERE id = $1 AND state = 'pending' RETURNING 1)
             SELECT EXISTS (SELECT 1 FROM done),
                    (SELECT state FROM deliveries WHERE id = $1)",
            &[&id.as_str(), &now],
        )
        .await
        .map_err(pg_error)?
        .expect("a SELECT without FROM returns one row");
    let (cancelled, state): (bool, Option<String>) = (row.get(0), row.get(1));
    if cancelled {
        return Ok(CancelOutcome::Cancelled);
    }
    Ok(
        match state
            .as_deref()
            .map(str::parse::<crate::domain::DeliveryState>)
        {
            None => CancelOutcome::NotFound,
            Some(Ok(crate::domain::DeliveryState::InFlight)) => CancelOutcome::InFlight,
            // Pending in the snapshot but taken meanwhile: in flight by now.
            Some(Ok(crate::domain::DeliveryState::Pending)) => CancelOutcome::InFlight,
            Some(Ok(finished)) => CancelOutcome::Finished(finished),
            Some(Err(err)) => return Err(StoreError::Backend(err)),
        },
    )
}

pub async fn set_paused(
    client: &impl tokio_postgres::GenericClient,
    destination: &str,
    paused: bool,
    now: UnixMillis,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO destination_state (name, paused, updated_at)
             VALUES ($1, $2, hookrelay_now($3))
             ON CONFLICT (name) DO UPDATE
                 SET paused = excluded.paused, updated_at = excluded.updated_at",
            &[&destination, &paused, &now],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// A write through the real commit path (durable), as readiness asks.
pub async fn heartbeat(
    client: &impl tokio_postgres::GenericClient,
    now: UnixMillis,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO heartbeat (id, at) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            &[&now],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}
