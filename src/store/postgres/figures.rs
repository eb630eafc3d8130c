//! The API's figures on PostgreSQL: jobs with their outcomes, destination figures, gauges,
//! pauses and the backlog.

use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::browse::{ATTEMPT_COLUMNS, attempt_at, state_at};
use super::query;
use crate::domain::DeliveryState;
use crate::store::{BulkScope, DeliveryGauge, DestinationStats, JobState, JobView, StoreError};

pub async fn job(client: &impl GenericClient, id: &str) -> Result<Option<JobView>, StoreError> {
    let sql = "SELECT scope, created_at, finished_at, matched, changed, error, updated_at,
                      cancelled_at
               FROM jobs WHERE id = $1";
    let Some(row) = query::opt(client, sql, &[&id]).await? else {
        return Ok(None);
    };
    let (finished_at, error): (Option<i64>, Option<String>) = (row.get(2), row.get(5));
    let state = JobState::of_row(finished_at, error.as_deref(), row.get(7));
    // As on SQLite, an unreadable stored scope is answered as a bad request.
    let scope: BulkScope = serde_json::from_str(row.get::<_, &str>(0))
        .map_err(|err| StoreError::BadRequest(format!("stored job: {err}")))?;
    let mut view = JobView {
        id: id.to_owned(),
        state,
        updated_at: row.get(6),
        scope,
        created_at: row.get(1),
        finished_at,
        matched: row.get::<_, i64>(3).max(0) as u64,
        changed: row.get::<_, i64>(4).max(0) as u64,
        succeeded: 0,
        failed: 0,
        waiting: 0,
        error,
    };
    let sql = "SELECT state, attempts > 0, COUNT(*) FROM deliveries WHERE job = $1
               GROUP BY state, attempts > 0";
    for row in &query::all(client, sql, &[&id]).await? {
        let (attempted, n) = (row.get::<_, bool>(1), row.get::<_, i64>(2).max(0) as u64);
        match (state_at(row, 0)?, attempted) {
            (DeliveryState::Succeeded, _) => view.succeeded += n,
            (DeliveryState::Pending | DeliveryState::InFlight, false) => view.waiting += n,
            _ => view.failed += n,
        }
    }
    Ok(Some(view))
}

pub async fn list_jobs(
    client: &impl GenericClient,
    limit: usize,
) -> Result<Vec<JobView>, StoreError> {
    let sql = r#"SELECT id FROM jobs ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT $1"#;
    let ids: Vec<String> = query::all(client, sql, &[&(limit as i64)])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut jobs = Vec::with_capacity(ids.len());
    for id in &ids {
        jobs.extend(job(client, id).await?);
    }
    Ok(jobs)
}

/// Names are ordered bytewise (`COLLATE "C"`), as SQLite orders them, whatever the
/// database's collation.
pub async fn destination_stats(
    client: &impl GenericClient,
) -> Result<Vec<DestinationStats>, StoreError> {
    let mut stats: Vec<DestinationStats> = Vec::new();
    let sql = r#"SELECT destination, state, COUNT(*), MIN(created_at) FROM deliveries
                 GROUP BY destination, state ORDER BY destination COLLATE "C""#;
    for row in &query::all(client, sql, &[]).await? {
        let (name, state, count): (String, _, u64) = (
            row.get(0),
            state_at(row, 1)?,
            row.get::<_, i64>(2).max(0) as u64,
        );
        let oldest: Option<i64> = row.get(3);
        if stats.last().is_none_or(|last| last.name != name) {
            stats.push(DestinationStats {
                name,
                ..Default::default()
            });
        }
        let entry = stats.last_mut().expect("pushed above");
        if matches!(state, DeliveryState::Pending | DeliveryState::InFlight) {
            // The older of both groups: what one query over both states would give.
            entry.oldest_pending_at = entry.oldest_pending_at.into_iter().chain(oldest).min();
        }
        match state {
            DeliveryState::Pending => entry.pending = count,
            DeliveryState::InFlight => entry.in_flight = count,
            DeliveryState::Succeeded => entry.succeeded = count,
            DeliveryState::Dead => entry.dead = count,
            DeliveryState::Superseded | DeliveryState::Cancelled => entry.cancelled += count,
        }
    }
    let failure = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts a JOIN deliveries d ON d.seq = a.delivery_seq
         WHERE d.destination = $1 AND a.verdict <> 'delivered' ORDER BY a.seq DESC LIMIT 1"
    );
    for entry in &mut stats {
        let name = &[&entry.name as &(dyn ToSql + Sync)];
        let sql = "SELECT a.started_at + a.duration_ms FROM attempts a
                   JOIN deliveries d ON d.seq = a.delivery_seq
                   WHERE d.destination = $1 AND a.verdict = 'delivered'
                   ORDER BY a.seq DESC LIMIT 1";
        entry.last_success_at = query::opt(client, sql, name).await?.map(|row| row.get(0));
        let last_failure = query::opt(client, &failure, name).await?;
        entry.last_failure = last_failure.map(|row| attempt_at(&row, 0)).transpose()?;
    }
    let pauses = paused_destinations(client).await?;
    Ok(DestinationStats::with_pauses(stats, pauses))
}

pub async fn delivery_gauges(
    client: &impl GenericClient,
) -> Result<Vec<DeliveryGauge>, StoreError> {
    let sql = "SELECT destination, state, COUNT(*), MIN(created_at) FROM deliveries
               WHERE state IN ('pending', 'in_flight', 'dead', 'superseded')
               GROUP BY destination, state";
    query::all(client, sql, &[])
        .await?
        .iter()
        .map(|row| {
            Ok(DeliveryGauge {
                destination: row.get(0),
                state: state_at(row, 1)?,
                count: row.get::<_, i64>(2).max(0) as u64,
                oldest: row.get(3),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()
}

pub async fn paused_destinations(
    client: &impl GenericClient,
) -> Result<Vec<(String, bool)>, StoreError> {
    let sql = r#"SELECT name, paused FROM destination_state ORDER BY name COLLATE "C""#;
    Ok(query::all(client, sql, &[])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// Deliveries pending or in flight, counted up to `cap` so the cost stays bounded.
pub async fn backlog(client: &impl GenericClient, cap: u64) -> Result<u64, StoreError> {
    let cap = cap.min(i64::MAX as u64) as i64;
    let sql = "SELECT COUNT(*) FROM (SELECT 1 FROM deliveries
                                     WHERE state IN ('pending', 'in_flight') LIMIT $1) AS waiting";
    let count: i64 = query::one(client, sql, &[&cap]).await?.get(0);
    Ok(count.max(0) as u64)
}

pub async fn waiting_by_destination(
    client: &impl GenericClient,
) -> Result<Vec<(String, u64)>, StoreError> {
    let sql = r#"SELECT destination, COUNT(*) FROM deliveries
                 WHERE state IN ('pending', 'in_flight')
                 GROUP BY destination ORDER BY destination COLLATE "C""#;
    Ok(query::all(client, sql, &[])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get::<_, i64>(1).max(0) as u64))
        .collect())
}

/// One destination's breaker as a replica last shared it.
pub async fn keep_breaker(
    client: &impl GenericClient,
    destination: &str,
    open: bool,
) -> Result<(), StoreError> {
    let sql = "INSERT INTO breakers (name, open, updated_at) VALUES ($1, $2, hookrelay_now(0))
               ON CONFLICT (name) DO UPDATE SET open = excluded.open,
                                                updated_at = excluded.updated_at";
    client
        .execute(sql, &[&destination, &open])
        .await
        .map_err(super::pg_error)?;
    Ok(())
}

pub async fn open_breakers(client: &impl GenericClient) -> Result<Vec<String>, StoreError> {
    let sql = r#"SELECT name FROM breakers WHERE open ORDER BY name COLLATE "C""#;
    Ok(query::all(client, sql, &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}
