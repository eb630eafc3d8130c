//! Console sessions on SQLite: written by the writer, read by the inspector.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::ops::backend;
use crate::domain::UnixMillis;
use crate::store::{ConsoleSession, StoreError};

pub fn create(
    conn: &Connection,
    session: &ConsoleSession,
    now: UnixMillis,
) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM console_sessions WHERE idle_until <= ?1 OR expires_at <= ?1",
        params![now],
    )
    .map_err(backend)?;
    conn.execute(
        "INSERT INTO console_sessions (key, token_name, token_digest, scope, form_token,
                                       created_at, idle_until, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            session.key,
            session.token_name,
            session.token_digest,
            session.scope,
            session.form_token,
            session.created_at,
            session.idle_until,
            session.expires_at
        ],
    )
    .map_err(backend)?;
    Ok(())
}

fn session_at(row: &Row<'_>) -> rusqlite::Result<ConsoleSession> {
    Ok(ConsoleSession {
        key: row.get(0)?,
        token_name: row.get(1)?,
        token_digest: row.get(2)?,
        scope: row.get(3)?,
        form_token: row.get(4)?,
        created_at: row.get(5)?,
        idle_until: row.get(6)?,
        expires_at: row.get(7)?,
    })
}

pub fn find(
    conn: &Connection,
    key: &str,
    now: UnixMillis,
) -> rusqlite::Result<Option<ConsoleSession>> {
    conn.prepare_cached(
        "SELECT key, token_name, token_digest, scope, form_token, created_at, idle_until,
                expires_at
         FROM console_sessions WHERE key = ?1 AND idle_until > ?2 AND expires_at > ?2",
    )?
    .query_row(params![key, now], session_at)
    .optional()
}

pub fn touch(conn: &Connection, key: &str, idle_until: UnixMillis) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE console_sessions SET idle_until = min(?2, expires_at) WHERE key = ?1",
        params![key, idle_until],
    )
    .map_err(backend)?;
    Ok(())
}

pub fn end(conn: &Connection, key: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM console_sessions WHERE key = ?1", params![key])
        .map_err(backend)?;
    Ok(())
}
