//! Read-only queries on PostgreSQL behind the management API and delivery: events,
//! deliveries, bulk counts, jobs, figures and stored requests. Each runs on any pooled
//! connection and takes no lock, so none waits for a claim or an ingest batch.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use super::{pg_error, query};
use crate::domain::{
    Attempt, AttemptDetail, Classification, DeliveryId, DeliveryState, EventId, Name, Verdict,
};
use crate::store::{
    AttemptView, BulkAction, BulkScope, Cursor, DeliveryBrief, DeliveryGauge, DeliverySummary,
    DestinationStats, EventDetail, EventSummary, Filter, JobState, JobView, Page, StoreError,
    StoredRequest, decode_headers,
};

const EVENT_COLUMNS: &str = "e.seq, e.id, e.source, e.received_at, e.remote_addr,
    e.content_type, octet_length(e.body)::bigint, e.event_type, e.action, e.git_ref, e.branch,
    e.tag, e.project, e.sender, e.commit_before, e.commit_after, e.dedup_key";

/// The columns [`summary`] reads, for deliveries `d` joined to their event `e`; `d.seq` is
/// at index 13.
pub(super) const SUMMARY_COLUMNS: &str = "d.id, e.id, e.source, e.event_type, d.destination,
    d.state, d.attempts, d.due_at, d.created_at, d.updated_at, d.last_status, d.last_error,
    d.dead_reason, d.seq, d.last_verdict, d.last_summary";

/// The columns [`attempt_at`] reads, in its order, for a table aliased `a`.
pub(super) const ATTEMPT_COLUMNS: &str = "a.started_at, a.duration_ms, a.verdict, a.class,
    a.summary, a.status, a.error, a.response_excerpt";

/// Classification columns last, in the order [`classification`] reads them.
const REQUEST_COLUMNS: &str = "id, source, received_at, content_type, headers, body,
    event_type, action, git_ref, branch, tag, project, sender, commit_before, commit_after,
    dedup_key";

/// A state column read back; the schema only ever stores known names.
pub(super) fn state_at(row: &Row, index: usize) -> Result<DeliveryState, StoreError> {
    row.get::<_, &str>(index)
        .parse::<DeliveryState>()
        .map_err(|err| StoreError::Backend(format!("stored delivery state: {err}")))
}

fn verdict_at(row: &Row, index: usize) -> Result<Verdict, StoreError> {
    let text: &str = row.get(index);
    Verdict::parse(text).ok_or_else(|| StoreError::Backend(format!("unknown verdict {text:?}")))
}

/// An attempt read from [`ATTEMPT_COLUMNS`] starting at `start`.
pub(super) fn attempt_at(row: &Row, start: usize) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        started_at: row.get(start),
        duration_ms: row.get(start + 1),
        verdict: verdict_at(row, start + 2)?,
        class: row.get(start + 3),
        detail: AttemptDetail {
            summary: row.get(start + 4),
            status: status(row, start + 5),
            error: row.get(start + 6),
            response_excerpt: row.get(start + 7),
        },
    })
}

fn status(row: &Row, index: usize) -> Option<u16> {
    row.get::<_, Option<i32>>(index)
        .and_then(|status| u16::try_from(status).ok())
}

/// A delivery read from [`SUMMARY_COLUMNS`].
pub(super) fn summary(row: &Row) -> Result<DeliverySummary, StoreError> {
    Ok(DeliverySummary {
        id: DeliveryId::from_stored(row.get(0)),
        event_id: EventId::from_stored(row.get(1)),
        source: row.get(2),
        event_type: row.get(3),
        destination: row.get(4),
        state: state_at(row, 5)?,
        attempts: row.get::<_, i32>(6).max(0) as u32,
        due_at: row.get(7),
        created_at: row.get(8),
        updated_at: row.get(9),
        last_status: status(row, 10),
        last_error: row.get(11),
        dead_reason: row.get(12),
        last_verdict: row.get::<_, Option<&str>>(14).and_then(Verdict::parse),
        last_summary: row.get(15),
    })
}

/// What ingest classified, from ten columns starting at `start` (event type to dedup key).
fn classification(row: &Row, start: usize) -> Classification {
    Classification {
        event_type: row.get(start),
        action: row.get(start + 1),
        git_ref: row.get(start + 2),
        branch: row.get(start + 3),
        tag: row.get(start + 4),
        project: row.get(start + 5),
        sender: row.get(start + 6),
        commit_before: row.get(start + 7),
        commit_after: row.get(start + 8),
        dedup_key: row.get(start + 9),
    }
}

fn event_row(row: &Row) -> (EventSummary, i64) {
    let summary = EventSummary {
        id: EventId::from_stored(row.get(1)),
        source: row.get(2),
        received_at: row.get(3),
        remote_addr: row.get(4),
        content_type: row.get(5),
        body_bytes: row.get::<_, i64>(6).max(0) as u64,
        classification: classification(row, 7),
        deliveries: Vec::new(),
    };
    (summary, row.get(0))
}

/// The deliveries of several events, by event, in one query for a whole page.
async fn briefs(
    client: &impl GenericClient,
    events: &[i64],
) -> Result<HashMap<i64, Vec<DeliveryBrief>>, StoreError> {
    let sql = "SELECT event_seq, id, destination, state FROM deliveries
               WHERE event_seq = ANY($1) ORDER BY seq";
    let mut by_event: HashMap<i64, Vec<DeliveryBrief>> = HashMap::new();
    for row in &query::all(client, sql, &[&events]).await? {
        by_event.entry(row.get(0)).or_default().push(DeliveryBrief {
            id: DeliveryId::from_stored(row.get(1)),
            destination: row.get(2),
            state: state_at(row, 3)?,
        });
    }
    Ok(by_event)
}

pub async fn list_events(
    client: &impl GenericClient,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<Page<EventSummary>, StoreError> {
    let mut clause = query::events(filter, after)?;
    let limit_param = clause.next_param((limit + 1) as i64);
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events e WHERE {} ORDER BY e.seq DESC LIMIT {limit_param}",
        clause.sql()
    );
    let rows = query::all(client, &sql, &clause.refs()).await?;
    let mut rows: Vec<(EventSummary, i64)> = rows.iter().map(event_row).collect();
    let next = query::page_end(&mut rows, limit);
    let seqs: Vec<i64> = rows.iter().map(|(_, seq)| *seq).collect();
    let mut briefs = briefs(client, &seqs).await?;
    for (event, seq) in rows.iter_mut() {
        event.deliveries = briefs.remove(&*seq).unwrap_or_default();
    }
    let items = rows.into_iter().map(|(event, _)| event).collect();
    Ok(Page { items, next })
}

pub async fn event(
    client: &impl GenericClient,
    id: &EventId,
) -> Result<Option<EventDetail>, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS}, e.headers, e.body FROM events e WHERE e.id = $1");
    let Some(row) = query::opt(client, &sql, &[&id.as_str()]).await? else {
        return Ok(None);
    };
    let (mut summary, seq) = event_row(&row);
    let headers = decode_headers(row.get(17));
    let body = bytes::Bytes::from(row.get::<_, Vec<u8>>(18));
    summary.deliveries = briefs(client, &[seq])
        .await?
        .remove(&seq)
        .unwrap_or_default();
    Ok(Some(EventDetail {
        summary,
        headers,
        body,
    }))
}

/// Deliveries matching `filter`, newest first, below `after`: one more row than asked is
/// read to know whether a next page exists.
pub async fn list_deliveries(
    client: &impl GenericClient,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: usize,
) -> Result<Page<DeliverySummary>, StoreError> {
    let mut clause = query::deliveries(filter);
    if let Some(cursor) = after {
        clause.push("d.seq < ?", query::decode(cursor)?);
    }
    let limit_param = clause.next_param((limit + 1) as i64);
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE {} ORDER BY d.seq DESC LIMIT {limit_param}",
        clause.sql()
    );
    let rows = query::all(client, &sql, &clause.refs()).await?;
    let mut rows: Vec<(DeliverySummary, i64)> = rows
        .iter()
        .map(|row| Ok((summary(row)?, row.get(13))))
        .collect::<Result<_, StoreError>>()?;
    let next = query::page_end(&mut rows, limit);
    Ok(Page {
        items: rows.into_iter().map(|(item, _)| item).collect(),
        next,
    })
}

pub async fn delivery(
    client: &impl GenericClient,
    id: &DeliveryId,
) -> Result<Option<(DeliverySummary, Vec<AttemptView>)>, StoreError> {
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE d.id = $1"
    );
    let Some(row) = query::opt(client, &sql, &[&id.as_str()]).await? else {
        return Ok(None);
    };
    let (found, seq) = (summary(&row)?, row.get::<_, i64>(13));
    let sql = format!(
        "SELECT a.number, {ATTEMPT_COLUMNS} FROM attempts a WHERE a.delivery_seq = $1
         ORDER BY a.seq"
    );
    let attempts = query::all(client, &sql, &[&seq])
        .await?
        .iter()
        .map(|row| {
            Ok(AttemptView {
                number: row.get::<_, i32>(0).max(0) as u32,
                attempt: attempt_at(row, 1)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some((found, attempts)))
}

/// The states a bulk action may change: replay anything not in flight; cancel what waits.
pub(super) fn eligible(action: BulkAction) -> &'static str {
    match action {
        BulkAction::Replay => {
            "d.state IN ('pending', 'succeeded', 'dead', 'superseded', 'cancelled')"
        }
        BulkAction::Cancel => "d.state = 'pending'",
    }
}

/// The scope as SQL; only deliveries whose creating transaction is visible in the snapshot.
/// Not "up to a seq" as on SQLite: sequence values are taken before commit, so replicas
/// commit them out of order and a highest seq marks no point in time.
pub(super) fn scope_clause(scope: &BulkScope, snapshot: &str) -> query::Clause {
    let mut clause = query::deliveries(&scope.filter);
    // Sent as text: the driver has no Rust type for `pg_snapshot`.
    clause.push(
        "pg_visible_in_snapshot(d.created_xid, ?::text::pg_snapshot)",
        snapshot.to_owned(),
    );
    clause.push_fixed(eligible(scope.action));
    clause
}

/// The scope's snapshot text, or a new one (everything committed now) when it has none.
pub(super) async fn snapshot_of(
    client: &impl GenericClient,
    scope: &BulkScope,
) -> Result<String, StoreError> {
    match &scope.snapshot {
        Some(cursor) => query::decode_snapshot(cursor),
        None => Ok(
            query::one(client, "SELECT pg_current_snapshot()::text", &[])
                .await?
                .get(0),
        ),
    }
}

pub async fn bulk_count(
    client: &impl GenericClient,
    scope: &BulkScope,
    examples: usize,
) -> Result<(u64, Vec<DeliverySummary>, Cursor), StoreError> {
    let snapshot = snapshot_of(client, scope).await?;
    let mut clause = scope_clause(scope, &snapshot);
    let sql = format!(
        "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {}",
        clause.sql()
    );
    let count: i64 = query::one(client, &sql, &clause.refs()).await?.get(0);
    let limit_param = clause.next_param(examples as i64);
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE {} ORDER BY d.seq LIMIT {limit_param}",
        clause.sql()
    );
    let shown: Vec<DeliverySummary> = query::all(client, &sql, &clause.refs())
        .await?
        .iter()
        .map(summary)
        .collect::<Result<_, _>>()?;
    Ok((
        count.max(0) as u64,
        shown,
        query::encode_snapshot(&snapshot),
    ))
}

pub async fn job(client: &impl GenericClient, id: &str) -> Result<Option<JobView>, StoreError> {
    let sql = "SELECT scope, created_at, finished_at, matched, changed, error, updated_at
               FROM jobs WHERE id = $1";
    let Some(row) = query::opt(client, sql, &[&id]).await? else {
        return Ok(None);
    };
    let (finished_at, error): (Option<i64>, Option<String>) = (row.get(2), row.get(5));
    let state = match (finished_at, &error) {
        (None, _) => JobState::Running,
        (Some(_), None) => JobState::Finished,
        (Some(_), Some(_)) => JobState::Failed,
    };
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
    for (name, value) in paused_destinations(client).await? {
        match stats.iter_mut().find(|entry| entry.name == name) {
            Some(entry) => entry.paused = Some(value),
            None => stats.push(DestinationStats {
                name,
                paused: Some(value),
                ..Default::default()
            }),
        }
    }
    Ok(stats)
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

fn stored_request(row: &Row) -> StoredRequest {
    let source: &str = row.get(1);
    let body: Vec<u8> = row.get(5);
    StoredRequest {
        event_id: EventId::from_stored(row.get(0)),
        source: Name::parse(source).unwrap_or_else(|_| Name::parse("unknown").unwrap()),
        received_at: row.get(2),
        event_type: row.get(6),
        classification: classification(row, 6),
        content_type: row.get(3),
        headers: decode_headers(row.get(4)),
        body: body.into(),
    }
}

/// The stored requests of several events (a whole claim's bodies) in one query, in the
/// order asked.
pub async fn load_requests(
    client: &deadpool_postgres::Object,
    events: &[EventId],
) -> Result<Vec<StoredRequest>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = events.iter().map(|id| id.as_str()).collect();
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM events WHERE id = ANY($1)");
    let statement = client.prepare_cached(&sql).await.map_err(pg_error)?;
    let found: HashMap<String, StoredRequest> = client
        .query(&statement, &[&ids])
        .await
        .map_err(pg_error)?
        .iter()
        .map(stored_request)
        .map(|request| (request.event_id.as_str().to_owned(), request))
        .collect();
    events
        .iter()
        // Cloned, as an event may be asked for twice; the body is shared, not copied.
        .map(|id| {
            found
                .get(id.as_str())
                .cloned()
                .ok_or_else(|| StoreError::Backend(format!("event {} not found", id.as_str())))
        })
        .collect()
}

/// The stored request of an event, read for delivery.
pub async fn load_request(
    client: &deadpool_postgres::Object,
    event: &EventId,
) -> Result<StoredRequest, StoreError> {
    let mut loaded = load_requests(client, std::slice::from_ref(event)).await?;
    Ok(loaded.pop().expect("one asked, one loaded or an error"))
}
