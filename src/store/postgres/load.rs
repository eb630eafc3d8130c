//! Loading stored requests for delivery on PostgreSQL: a whole claim's in one read.

use std::collections::HashMap;

use tokio_postgres::Row;

use super::browse::classification;
use super::pg_error;
use crate::domain::{EventId, Name};
use crate::store::{StoreError, StoredRequest, decode_headers};

/// Classification columns last, in the order [`classification`] reads them.
const REQUEST_COLUMNS: &str = "id, source, received_at, content_type, headers, body,
    event_type, action, git_ref, branch, tag, project, sender, commit_before, commit_after,
    dedup_key";

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
