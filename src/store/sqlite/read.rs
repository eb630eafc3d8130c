//! Read-only queries for inspection (CLI, later the API); they never block the writer.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::schema::decode_headers;
use crate::domain::{DeliveryId, DeliveryState, EventId, Name};
use crate::store::{AttemptView, DeliveryFilter, DeliverySummary, StoredRequest};

const SUMMARY_COLUMNS: &str = "d.id, e.id, e.source, e.event_type, d.destination, d.state,
    d.attempts, d.due_at, d.created_at, d.updated_at, d.last_status, d.last_error, d.seq";

fn summary(row: &Row<'_>) -> rusqlite::Result<DeliverySummary> {
    let state: String = row.get(5)?;
    Ok(DeliverySummary {
        id: DeliveryId::from_stored(row.get(0)?),
        event_id: EventId::from_stored(row.get(1)?),
        source: row.get(2)?,
        event_type: row.get(3)?,
        destination: row.get(4)?,
        state: state.parse().map_err(|err: String| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, err.into())
        })?,
        attempts: row.get(6)?,
        due_at: row.get(7)?,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
        last_status: row.get(10)?,
        last_error: row.get(11)?,
    })
}

pub fn list_deliveries(
    conn: &Connection,
    filter: &DeliveryFilter,
) -> rusqlite::Result<Vec<DeliverySummary>> {
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE (?1 IS NULL OR d.state = ?1) AND (?2 IS NULL OR d.destination = ?2)
         ORDER BY d.seq DESC LIMIT ?3"
    );
    let limit = if filter.limit == 0 { 100 } else { filter.limit } as i64;
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            filter.state.map(DeliveryState::as_str),
            filter.destination,
            limit
        ],
        summary,
    )?;
    rows.collect()
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
            Ok((summary(row)?, row.get::<_, i64>(12)?))
        })
        .optional()?;
    let Some((summary, seq)) = found else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT number, started_at, duration_ms, status, error, response_excerpt
         FROM attempts WHERE delivery_seq = ?1 ORDER BY seq",
    )?;
    let attempts = stmt
        .query_map(params![seq], |row| {
            Ok(AttemptView {
                number: row.get(0)?,
                started_at: row.get(1)?,
                duration_ms: row.get(2)?,
                status: row.get(3)?,
                error: row.get(4)?,
                response_excerpt: row.get(5)?,
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
        "SELECT id, source, received_at, event_type, content_type, headers, body
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
                content_type: row.get(4)?,
                headers: decode_headers(&headers),
                body: body.into(),
            })
        })
    })
}
