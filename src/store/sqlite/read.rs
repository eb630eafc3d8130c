//! Read-only queries for inspection (CLI, later the API); they never block the writer.

use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::query;
use super::schema::decode_headers;
use crate::domain::{Attempt, AttemptDetail, DeliveryId, EventId, Name, Verdict};
use crate::store::{AttemptView, Cursor, DeliverySummary, Filter, Page, StoredRequest};

pub(super) const SUMMARY_COLUMNS: &str = "d.id, e.id, e.source, e.event_type, d.destination,
    d.state, d.attempts, d.due_at, d.created_at, d.updated_at, d.last_status, d.last_error,
    d.dead_reason, d.seq, d.last_verdict, d.last_summary";

/// The columns [`attempt_at`] reads, in its order, for a table aliased `a`.
pub(super) const ATTEMPT_COLUMNS: &str = "a.started_at, a.duration_ms, a.verdict, a.class,
    a.summary, a.status, a.error, a.response_excerpt, a.response_headers";

/// An attempt read from [`ATTEMPT_COLUMNS`] starting at `start`.
pub(super) fn attempt_at(row: &Row<'_>, start: usize) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        started_at: row.get(start)?,
        duration_ms: row.get(start + 1)?,
        verdict: verdict_at(row, start + 2)?,
        class: row.get(start + 3)?,
        detail: AttemptDetail {
            summary: row.get(start + 4)?,
            status: row.get(start + 5)?,
            error: row.get(start + 6)?,
            response_excerpt: row.get(start + 7)?,
            response_headers: row.get(start + 8)?,
        },
    })
}

fn verdict_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Verdict> {
    let text: String = row.get(index)?;
    Verdict::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("unknown verdict {text:?}").into(),
        )
    })
}

/// A state column read back; the schema only ever stores known names.
pub(super) fn state_at(
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<crate::domain::DeliveryState> {
    let state: String = row.get(index)?;
    state.parse().map_err(|err: String| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, err.into())
    })
}

pub(super) fn summary(row: &Row<'_>) -> rusqlite::Result<DeliverySummary> {
    Ok(DeliverySummary {
        id: DeliveryId::from_stored(row.get(0)?),
        event_id: EventId::from_stored(row.get(1)?),
        source: row.get(2)?,
        event_type: row.get(3)?,
        destination: row.get(4)?,
        state: state_at(row, 5)?,
        attempts: row.get(6)?,
        due_at: row.get(7)?,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
        last_status: row.get(10)?,
        last_error: row.get(11)?,
        dead_reason: row.get(12)?,
        last_verdict: row
            .get::<_, Option<String>>(14)?
            .and_then(|v| Verdict::parse(&v)),
        last_summary: row.get(15)?,
    })
}

/// Deliveries matching `filter`, newest first, below `after`: one more row than asked is
/// read to know whether a next page exists.
pub fn list_deliveries(
    conn: &Connection,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: usize,
) -> rusqlite::Result<Page<DeliverySummary>> {
    let mut clause = query::deliveries(filter);
    if let Some(cursor) = after {
        let seq = query::decode(cursor).map_err(bad_input)?;
        clause.push("d.seq < ?", seq);
    }
    let limit_param = clause.next_param((limit + 1) as i64);
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE {} ORDER BY d.seq DESC LIMIT {limit_param}",
        clause.sql()
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows: Vec<(DeliverySummary, i64)> = stmt
        .query_map(params_from_iter(clause.params.iter()), |row| {
            Ok((summary(row)?, row.get(13)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let next = page_end(&mut rows, limit);
    Ok(Page {
        items: rows.into_iter().map(|(item, _)| item).collect(),
        next,
        looked_back_to: None,
    })
}

/// Cuts the look-ahead row off and says where the next page starts, if there is one.
pub(super) fn page_end<T>(rows: &mut Vec<(T, i64)>, limit: usize) -> Option<Cursor> {
    if rows.len() <= limit {
        return None;
    }
    rows.truncate(limit);
    rows.last().map(|(_, seq)| query::encode(*seq))
}

/// A caller's mistake (a bad cursor), carried through rusqlite's error type to `backend`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct BadInput(pub String);

pub(super) fn bad_input(message: String) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(BadInput(message)))
}

pub fn delivery(
    conn: &Connection,
    id: &DeliveryId,
) -> rusqlite::Result<Option<(DeliverySummary, Vec<AttemptView>)>> {
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE d.id = ?1"
    );
    let found = conn
        .prepare_cached(&sql)?
        .query_row(params![id.as_str()], |row| {
            Ok((summary(row)?, row.get::<_, i64>(13)?))
        })
        .optional()?;
    let Some((summary, seq)) = found else {
        return Ok(None);
    };
    let sql = format!(
        "SELECT a.number, {ATTEMPT_COLUMNS} FROM attempts a WHERE a.delivery_seq = ?1
         ORDER BY a.seq"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let attempts = stmt
        .query_map(params![seq], |row| {
            Ok(AttemptView {
                number: row.get(0)?,
                attempt: attempt_at(row, 1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some((summary, attempts)))
}

/// Deliveries pending or in flight, counted up to `cap` so the cost stays bounded.
pub fn backlog(conn: &Connection, cap: u64) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "SELECT COUNT(*) FROM (SELECT 1 FROM deliveries
                               WHERE state IN ('pending', 'in_flight') LIMIT ?1)",
    )?
    .query_row(params![cap as i64], |row| row.get::<_, i64>(0))
    .map(|count| count as u64)
}

pub fn waiting_by_destination(conn: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    conn.prepare_cached(
        "SELECT destination, COUNT(*) FROM deliveries
         WHERE state IN ('pending', 'in_flight') GROUP BY destination ORDER BY destination",
    )?
    .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?
    .collect()
}

/// The stored request of an event, read for delivery (on the reader, never the writer).
pub fn load_request(conn: &Connection, event: &EventId) -> rusqlite::Result<StoredRequest> {
    conn.prepare_cached(
        "SELECT id, source, received_at, event_type, content_type, headers, body, action,
                git_ref, branch, tag, project, sender, commit_before, commit_after, dedup_key
         FROM events WHERE id = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_row(params![event.as_str()], |row| {
            let source: String = row.get(1)?;
            let headers: Vec<u8> = row.get(5)?;
            let body: Vec<u8> = row.get(6)?;
            Ok(StoredRequest {
                event_id: EventId::from_stored(row.get(0)?),
                source: Name::parse(&source).unwrap_or_else(|_| Name::parse("unknown").unwrap()),
                received_at: row.get(2)?,
                event_type: row.get(3)?,
                classification: crate::domain::Classification {
                    event_type: row.get(3)?,
                    action: row.get(7)?,
                    git_ref: row.get(8)?,
                    branch: row.get(9)?,
                    tag: row.get(10)?,
                    project: row.get(11)?,
                    sender: row.get(12)?,
                    commit_before: row.get(13)?,
                    commit_after: row.get(14)?,
                    dedup_key: row.get(15)?,
                },
                content_type: row.get(4)?,
                headers: decode_headers(&headers),
                body: body.into(),
            })
        })
    })
}
