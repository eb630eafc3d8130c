//! Console sessions on PostgreSQL, so any replica knows a browser's session.

use tokio_postgres::GenericClient;
use tokio_postgres::Row;

use super::{pg_error, query};
use crate::domain::UnixMillis;
use crate::store::{ConsoleSession, StoreError};

pub async fn create(
    client: &impl GenericClient,
    session: &ConsoleSession,
    now: UnixMillis,
) -> Result<(), StoreError> {
    client
        .execute(
            "DELETE FROM console_sessions WHERE idle_until <= $1 OR expires_at <= $1",
            &[&now],
        )
        .await
        .map_err(pg_error)?;
    client
        .execute(
            "INSERT INTO console_sessions (key, token_name, token_digest, scope, form_token,
                                           created_at, idle_until, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &session.key,
                &session.token_name,
                &session.token_digest,
                &session.scope,
                &session.form_token,
                &session.created_at,
                &session.idle_until,
                &session.expires_at,
            ],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}

fn session_at(row: &Row) -> ConsoleSession {
    ConsoleSession {
        key: row.get(0),
        token_name: row.get(1),
        token_digest: row.get(2),
        scope: row.get(3),
        form_token: row.get(4),
        created_at: row.get(5),
        idle_until: row.get(6),
        expires_at: row.get(7),
    }
}

pub async fn find(
    client: &impl GenericClient,
    key: &str,
    now: UnixMillis,
) -> Result<Option<ConsoleSession>, StoreError> {
    let sql = "SELECT key, token_name, token_digest, scope, form_token, created_at, idle_until,
                      expires_at
               FROM console_sessions WHERE key = $1 AND idle_until > $2 AND expires_at > $2";
    Ok(query::opt(client, sql, &[&key, &now])
        .await?
        .as_ref()
        .map(session_at))
}

pub async fn touch(
    client: &impl GenericClient,
    key: &str,
    idle_until: UnixMillis,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE console_sessions SET idle_until = least($2, expires_at) WHERE key = $1",
            &[&key, &idle_until],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}

pub async fn end(client: &impl GenericClient, key: &str) -> Result<(), StoreError> {
    client
        .execute("DELETE FROM console_sessions WHERE key = $1", &[&key])
        .await
        .map_err(pg_error)?;
    Ok(())
}
