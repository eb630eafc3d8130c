//! Read-only queries on PostgreSQL behind the management API: events, deliveries and bulk
//! counts, and the row readers `figures.rs` and `load.rs` share. Each runs on any pooled
//! connection and takes no lock, so none waits for a claim or an ingest batch.

use std::collections::HashMap;

use tokio_postgres::{GenericClient, Row};

use super::query;
use crate::domain::{
    Attempt, AttemptDetail, Classification, DeliveryId, DeliveryState, EventId, Verdict,
};
use crate::store::{
    AttemptView, BulkScope, Cursor, DeliveryBrief, DeliverySummary, EventDetail, EventSummary,
    Filter, Page, StoreError, decode_headers, look,
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
    a.summary, a.status, a.error, a.response_excerpt, a.response_headers";

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
            response_headers: row.get(start + 8),
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
pub(super) fn classification(row: &Row, start: usize) -> Classification {
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
    // A bad cursor is refused even when there is nothing to list.
    let cursor_seq = after.map(query::decode).transpose()?;
    let bounds = query::one(
        client,
        "SELECT (SELECT min(seq) FROM events), (SELECT max(seq) FROM events)",
        &[],
    )
    .await?;
    let (Some(lowest), Some(highest)) = (
        bounds.get::<_, Option<i64>>(0),
        bounds.get::<_, Option<i64>>(1),
    ) else {
        return Ok(Page {
            items: Vec::new(),
            next: None,
            looked_back_to: None,
        });
    };
    // As on SQLite: ranges of seqs, newest first, until the page is full or the time is up.
    let mut walk = look::Walk::new(lowest, highest, cursor_seq, limit, look::BUDGET);
    let mut rows: Vec<(EventSummary, i64)> = Vec::new();
    let mut looked_back_to = None;
    while let Some((lower, upper, wanted)) = walk.next_range(rows.len()) {
        let mut clause = query::events(filter, None)?;
        clause.push("e.seq < ?", upper);
        clause.push("e.seq >= ?", lower);
        let limit_param = clause.next_param(wanted as i64);
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE {} ORDER BY e.seq DESC LIMIT {limit_param}",
            clause.sql()
        );
        let found = query::all(client, &sql, &clause.refs()).await?;
        rows.extend(found.iter().map(event_row));
        if walk.out_of_time(rows.len()) {
            let sql = "SELECT received_at FROM events WHERE seq >= $1 ORDER BY seq LIMIT 1";
            let resume = walk.resume_below();
            looked_back_to = query::opt(client, sql, &[&resume])
                .await?
                .map(|row| row.get(0));
        }
    }
    let next = match looked_back_to {
        Some(_) => Some(query::encode(walk.resume_below())),
        None => query::page_end(&mut rows, limit),
    };
    let seqs: Vec<i64> = rows.iter().map(|(_, seq)| *seq).collect();
    let mut briefs = briefs(client, &seqs).await?;
    for (event, seq) in rows.iter_mut() {
        event.deliveries = briefs.remove(&*seq).unwrap_or_default();
    }
    let items = rows.into_iter().map(|(event, _)| event).collect();
    Ok(Page {
        items,
        next,
        looked_back_to,
    })
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
        looked_back_to: None,
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
    clause.push_fixed(scope.action.eligible_sql());
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
