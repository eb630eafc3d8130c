//! Claiming for `latest` destinations: per coalescing key one delivery in flight at a time,
//! and when several wait, only the newest goes; the older ones become `superseded`.

use rusqlite::{Connection, params};

use crate::domain::UnixMillis;

/// The deliveries to claim now (at most `limit`), after superseding what the newest of each
/// key makes moot. A key with a delivery in flight under a live lease waits; deliveries
/// without a key (routed before the destination became `latest`) go one at a time too.
pub fn claimable(
    tx: &Connection,
    destination: &str,
    now: UnixMillis,
    limit: usize,
) -> rusqlite::Result<Vec<i64>> {
    // The newest waiting delivery of every key that has one due, oldest keys first.
    let newest: Vec<(Option<String>, i64)> = tx
        .prepare_cached(
            "SELECT coalesce_key, MAX(seq) FROM deliveries
             WHERE destination = CAST(?1 AS TEXT) AND state = 'pending' AND due_at <= ?2
             GROUP BY coalesce_key ORDER BY MIN(seq)",
        )?
        .query_map(params![destination, now], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut chosen = Vec::new();
    for (key, newest_seq) in newest {
        if chosen.len() >= limit {
            break;
        }
        let busy: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM deliveries
                 WHERE destination = CAST(?1 AS TEXT) AND coalesce_key IS ?2 AND state = 'in_flight'
                   AND due_at > ?3)",
            )?
            .query_row(params![destination, key, now], |row| row.get(0))?;
        if busy {
            continue;
        }
        tx.prepare_cached(
            "UPDATE deliveries SET state = 'superseded', due_at = NULL, updated_at = ?4
             WHERE destination = CAST(?1 AS TEXT) AND coalesce_key IS ?2 AND state = 'pending' AND seq < ?3",
        )?
        .execute(params![destination, key, newest_seq, now])?;
        chosen.push(newest_seq);
    }
    Ok(chosen)
}
