//! Read-only queries behind the management API: events, destination figures, bulk counts
//! and jobs. They run on the reader connection and never block the writer.

use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::query;
use super::read::{
    ATTEMPT_COLUMNS, SUMMARY_COLUMNS, attempt_at, bad_input, page_end, state_at, summary,
};
use super::schema::decode_headers;
use crate::domain::{Classification, DeliveryId, DeliveryState, EventId};
use crate::store::{
    BulkScope, Cursor, DeliveryBrief, DeliverySummary, DestinationStats, EventDetail, EventSummary,
    Filter, JobState, JobView, Page, look,
};

const EVENT_COLUMNS: &str = "e.seq, e.id, e.source, e.received_at, e.remote_addr,
    e.content_type, length(e.body), e.event_type, e.action, e.git_ref, e.branch, e.tag,
    e.project, e.sender, e.commit_before, e.commit_after, e.dedup_key";

fn event_row(row: &Row<'_>) -> rusqlite::Result<(EventSummary, i64)> {
    let summary = EventSummary {
        id: EventId::from_stored(row.get(1)?),
        source: row.get(2)?,
        received_at: row.get(3)?,
        remote_addr: row.get(4)?,
        content_type: row.get(5)?,
        body_bytes: row.get::<_, i64>(6)?.max(0) as u64,
        classification: Classification {
            event_type: row.get(7)?,
            action: row.get(8)?,
            git_ref: row.get(9)?,
            branch: row.get(10)?,
            tag: row.get(11)?,
            project: row.get(12)?,
            sender: row.get(13)?,
            commit_before: row.get(14)?,
            commit_after: row.get(15)?,
            dedup_key: row.get(16)?,
        },
        deliveries: Vec::new(),
    };
    Ok((summary, row.get(0)?))
}

fn briefs(conn: &Connection, event_seq: i64) -> rusqlite::Result<Vec<DeliveryBrief>> {
    conn.prepare_cached(
        "SELECT id, destination, state FROM deliveries WHERE event_seq = ?1 ORDER BY seq",
    )?
    .query_map(params![event_seq], |row| {
        Ok(DeliveryBrief {
            id: DeliveryId::from_stored(row.get(0)?),
            destination: row.get(1)?,
            state: state_at(row, 2)?,
        })
    })?
    .collect()
}

pub fn list_events(
    conn: &Connection,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: usize,
) -> rusqlite::Result<Page<EventSummary>> {
    let few = few_deliveries_match(conn, filter)?;
    list_events_as(conn, filter, after, limit, few, look::BUDGET)
}

/// `list_events` with the way of matching deliveries and the time budget chosen by the
/// caller (tests).
pub(super) fn list_events_as(
    conn: &Connection,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: usize,
    few: bool,
    budget: std::time::Duration,
) -> rusqlite::Result<Page<EventSummary>> {
    // A bad cursor is refused even when there is nothing to list.
    let cursor_seq = after.map(query::decode).transpose().map_err(bad_input)?;
    // Two subqueries: SQLite answers min() or max() alone from the key, but not both at once.
    let bounds: (Option<i64>, Option<i64>) = conn.query_row(
        "SELECT (SELECT min(seq) FROM events), (SELECT max(seq) FROM events)",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let (Some(lowest), Some(highest)) = bounds else {
        return Ok(Page {
            items: Vec::new(),
            next: None,
            looked_back_to: None,
        });
    };
    let mut walk = look::Walk::new(lowest, highest, cursor_seq, limit, budget);
    let mut rows: Vec<(EventSummary, i64)> = Vec::new();
    let mut looked_back_to = None;
    while let Some((lower, upper, wanted)) = walk.next_range(rows.len()) {
        let mut clause = query::events(filter, None, few).map_err(bad_input)?;
        clause.push("e.seq < ?", upper);
        clause.push("e.seq >= ?", lower);
        let limit_param = clause.next_param(wanted as i64);
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE {} ORDER BY e.seq DESC LIMIT {limit_param}",
            clause.sql()
        );
        let found = conn
            .prepare_cached(&sql)?
            .query_map(params_from_iter(clause.params.iter()), event_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.extend(found);
        if walk.out_of_time(rows.len()) {
            looked_back_to = conn
                .query_row(
                    "SELECT received_at FROM events WHERE seq >= ?1 ORDER BY seq LIMIT 1",
                    params![walk.resume_below()],
                    |row| row.get(0),
                )
                .optional()?;
        }
    }
    let next = match looked_back_to {
        Some(_) => Some(query::encode(walk.resume_below())),
        None => page_end(&mut rows, limit),
    };
    let mut items = Vec::with_capacity(rows.len());
    for (mut event, seq) in rows {
        event.deliveries = briefs(conn, seq)?;
        items.push(event);
    }
    Ok(Page {
        items,
        next,
        looked_back_to,
    })
}

/// Deliveries counted at most before the listing checks events one by one instead.
const FEW_DELIVERIES: i64 = 5_000;

/// Whether the filter's delivery conditions match fewer than `FEW_DELIVERIES` deliveries:
/// then the listing names their events from the index (a filter matching nothing costs no
/// scan of every event), else it checks the newest events in turn (which find many matches
/// at once). At most `FEW_DELIVERIES` index entries are read to tell.
fn few_deliveries_match(conn: &Connection, filter: &Filter) -> rusqlite::Result<bool> {
    if filter.delivery_conditions().is_empty() {
        return Ok(false);
    }
    let clause = query::delivery_only(filter);
    let sql = format!(
        "SELECT count(*) FROM (SELECT 1 FROM deliveries d WHERE {} LIMIT {FEW_DELIVERIES})",
        clause.sql()
    );
    let counted: i64 = conn
        .prepare_cached(&sql)?
        .query_row(params_from_iter(clause.params.iter()), |row| row.get(0))?;
    Ok(counted < FEW_DELIVERIES)
}

pub fn event(conn: &Connection, id: &EventId) -> rusqlite::Result<Option<EventDetail>> {
    let sql = format!("SELECT {EVENT_COLUMNS}, e.headers, e.body FROM events e WHERE e.id = ?1");
    let found = conn
        .prepare_cached(&sql)?
        .query_row(params![id.as_str()], |row| {
            let (summary, seq) = event_row(row)?;
            let headers: Vec<u8> = row.get(17)?;
            let body: Vec<u8> = row.get(18)?;
            Ok((summary, seq, headers, body))
        })
        .optional()?;
    let Some((mut summary, seq, headers, body)) = found else {
        return Ok(None);
    };
    summary.deliveries = briefs(conn, seq)?;
    Ok(Some(EventDetail {
        summary,
        headers: decode_headers(&headers),
        body: body.into(),
    }))
}

/// The scope as SQL; only deliveries up to the snapshot (row ids only grow).
pub(super) fn scope_clause(scope: &BulkScope, snapshot: i64) -> query::Clause {
    let mut clause = query::deliveries(&scope.filter);
    clause.push("d.seq <= ?", snapshot);
    clause.push_fixed(scope.action.eligible_sql());
    clause
}

pub(super) fn snapshot_of(conn: &Connection, scope: &BulkScope) -> rusqlite::Result<i64> {
    match &scope.snapshot {
        Some(cursor) => query::decode(cursor).map_err(bad_input),
        None => conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM deliveries", [], |row| {
            row.get(0)
        }),
    }
}

pub fn bulk_count(
    conn: &Connection,
    scope: &BulkScope,
    examples: usize,
) -> rusqlite::Result<(u64, Vec<DeliverySummary>, Cursor)> {
    let snapshot = snapshot_of(conn, scope)?;
    let mut clause = scope_clause(scope, snapshot);
    let sql = format!(
        "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {}",
        clause.sql()
    );
    let count: i64 = conn.query_row(&sql, params_from_iter(clause.params.iter()), |row| {
        row.get(0)
    })?;
    let limit_param = clause.next_param(examples as i64);
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE {} ORDER BY d.seq LIMIT {limit_param}",
        clause.sql()
    );
    let shown = conn
        .prepare(&sql)?
        .query_map(params_from_iter(clause.params.iter()), summary)?
        .collect::<rusqlite::Result<_>>()?;
    Ok((count.max(0) as u64, shown, query::encode(snapshot)))
}

pub fn job(conn: &Connection, id: &str) -> rusqlite::Result<Option<JobView>> {
    let found = conn
        .query_row(
            "SELECT scope, created_at, finished_at, matched, changed, error, updated_at,
                    cancelled_at
             FROM jobs WHERE id = ?1",
            params![id],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, Option<String>>(5)?,
                    row.get::<_, Option<i64>>(6)?,
                    row.get::<_, Option<i64>>(7)?,
                ))
            },
        )
        .optional()?;
    let Some((scope, created_at, finished_at, matched, changed, error, updated_at, cancelled_at)) =
        found
    else {
        return Ok(None);
    };
    let state = JobState::of_row(finished_at, error.as_deref(), cancelled_at);
    let scope: BulkScope =
        serde_json::from_str(&scope).map_err(|err| bad_input(format!("stored job: {err}")))?;
    let mut view = JobView {
        id: id.to_owned(),
        state,
        updated_at,
        scope,
        created_at,
        finished_at,
        matched: matched.max(0) as u64,
        changed: changed.max(0) as u64,
        succeeded: 0,
        failed: 0,
        waiting: 0,
        error,
    };
    let mut stmt = conn.prepare_cached(
        "SELECT state, attempts > 0, COUNT(*) FROM deliveries WHERE job = ?1
         GROUP BY state, attempts > 0",
    )?;
    let counts = stmt.query_map(params![id], |row| {
        Ok((
            state_at(row, 0)?,
            row.get::<_, bool>(1)?,
            row.get::<_, i64>(2)?.max(0) as u64,
        ))
    })?;
    for count in counts {
        match count? {
            (DeliveryState::Succeeded, _, n) => view.succeeded += n,
            (DeliveryState::Pending | DeliveryState::InFlight, false, n) => view.waiting += n,
            (_, _, n) => view.failed += n,
        }
    }
    Ok(Some(view))
}

pub fn list_jobs(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<JobView>> {
    let ids: Vec<String> = conn
        .prepare_cached("SELECT id FROM jobs ORDER BY created_at DESC, id DESC LIMIT ?1")?
        .query_map(params![limit as i64], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        jobs.extend(job(conn, &id)?);
    }
    Ok(jobs)
}

pub fn destination_stats(conn: &Connection) -> rusqlite::Result<Vec<DestinationStats>> {
    let mut stats: Vec<DestinationStats> = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT destination, state, COUNT(*) FROM deliveries
         GROUP BY destination, state ORDER BY destination",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            state_at(row, 1)?,
            row.get::<_, i64>(2)?.max(0) as u64,
        ))
    })?;
    for row in rows {
        let (name, state, count) = row?;
        if stats.last().is_none_or(|last| last.name != name) {
            stats.push(DestinationStats {
                name,
                ..Default::default()
            });
        }
        let entry = stats.last_mut().expect("pushed above");
        match state {
            DeliveryState::Pending => entry.pending = count,
            DeliveryState::InFlight => entry.in_flight = count,
            DeliveryState::Succeeded => entry.succeeded = count,
            DeliveryState::Dead => entry.dead = count,
            DeliveryState::Superseded | DeliveryState::Cancelled => entry.cancelled += count,
        }
    }
    for entry in &mut stats {
        entry.oldest_pending_at = conn
            .prepare_cached(
                "SELECT MIN(created_at) FROM deliveries
                 WHERE destination = ?1 AND state IN ('pending', 'in_flight')",
            )?
            .query_row(params![entry.name], |row| row.get(0))?;
        entry.last_success_at = conn
            .prepare_cached(
                "SELECT a.started_at + a.duration_ms FROM attempts a
                 JOIN deliveries d ON d.seq = a.delivery_seq
                 WHERE d.destination = ?1 AND a.verdict = 'delivered'
                 ORDER BY a.seq DESC LIMIT 1",
            )?
            .query_row(params![entry.name], |row| row.get(0))
            .optional()?;
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts a JOIN deliveries d ON d.seq = a.delivery_seq
             WHERE d.destination = ?1 AND a.verdict != 'delivered'
             ORDER BY a.seq DESC LIMIT 1"
        );
        entry.last_failure = conn
            .prepare_cached(&sql)?
            .query_row(params![entry.name], |row| attempt_at(row, 0))
            .optional()?;
    }
    let mut paused = conn.prepare_cached("SELECT name, paused FROM destination_state")?;
    let set: Vec<(String, bool)> = paused
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(DestinationStats::with_pauses(stats, set))
}
