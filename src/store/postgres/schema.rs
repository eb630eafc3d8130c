//! PostgreSQL schema and migrations, applied at start under an advisory lock (so replicas
//! starting together apply each once) and tracked in `hookrelay_schema`.

use tokio_postgres::Client;

use super::pg_error;
use crate::store::StoreError;

/// Any fixed number: the advisory lock every replica takes to migrate.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_7265_6c61;

/// Each entry moves the schema from version `index` to `index + 1`. Never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    r#"
-- The clock every decision reads (due, lease expiry, retention ages): the database's, so
-- replicas with skewed clocks agree. Tests that drive time themselves set the session
-- setting `hookrelay.clock = caller`, and the caller's reading is used instead.
CREATE FUNCTION hookrelay_now(caller bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN current_setting('hookrelay.clock', true) = 'caller' THEN caller
                ELSE (extract(epoch FROM statement_timestamp()) * 1000)::bigint END
$$;

CREATE TABLE events (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            text NOT NULL UNIQUE,
    source        text NOT NULL,
    received_at   bigint NOT NULL,
    remote_addr   text,
    event_type    text,
    dedup_key     text,
    content_type  text,
    headers       bytea NOT NULL,
    body          bytea NOT NULL,
    action        text,
    git_ref       text,
    branch        text,
    tag           text,
    project       text,
    sender        text,
    commit_before text,
    commit_after  text
);
CREATE INDEX events_by_received ON events (received_at);
-- Bodies are stored as they came, uncompressed (compressing every body costs the commit
-- path CPU, and delivery reads them whole), and in the row up to a page: a typical push
-- (3 KB) then costs no out-of-line chunks.
ALTER TABLE events ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE events SET (toast_tuple_target = 8160);

-- Senders' delivery ids: the unique key makes a repeat posted to two replicas at once
-- one event. Kept apart from events, so retention can prune an event and keep its key
-- for the rest of the dedup window.
CREATE TABLE dedup_keys (
    source      text NOT NULL,
    key         text NOT NULL,
    event_id    text NOT NULL,
    received_at bigint NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE INDEX dedup_keys_by_age ON dedup_keys (received_at);

CREATE TABLE deliveries (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           text NOT NULL UNIQUE,
    event_seq    bigint NOT NULL REFERENCES events (seq),
    destination  text NOT NULL,
    state        text NOT NULL,
    -- pending: next attempt; in_flight: lease expiry; terminal states: NULL.
    due_at       bigint,
    attempts     integer NOT NULL DEFAULT 0,
    window_start bigint NOT NULL,
    lease_owner  text,
    lease_token  bigint NOT NULL DEFAULT 0,
    created_at   bigint NOT NULL,
    updated_at   bigint NOT NULL,
    last_status  integer,
    last_error   text,
    dead_reason  text,
    interrupted  boolean NOT NULL DEFAULT false,
    coalesce_key text,
    job          text,
    last_verdict text,
    last_summary text,
    -- The transaction that created the row: a bulk snapshot is a `pg_snapshot`, and a
    -- delivery is in it when this transaction is visible in it (sequence values are taken
    -- before commit, so "the highest seq" is no snapshot when replicas commit out of order).
    created_xid  xid8 NOT NULL DEFAULT pg_current_xact_id()
);
-- The hot table: every delivery is updated a few times within seconds, and claims scan
-- its partial indexes, whose dead entries only a vacuum removes; vacuum it early and often.
ALTER TABLE deliveries SET (autovacuum_vacuum_scale_factor = 0.01,
                            autovacuum_vacuum_insert_scale_factor = 0.05,
                            autovacuum_vacuum_cost_delay = 0);
CREATE INDEX deliveries_due ON deliveries (destination, due_at)
    WHERE state IN ('pending', 'in_flight');
CREATE INDEX deliveries_active_order ON deliveries (destination, seq)
    WHERE state IN ('pending', 'in_flight');
CREATE INDEX deliveries_by_key ON deliveries (destination, coalesce_key, seq)
    WHERE coalesce_key IS NOT NULL AND state IN ('pending', 'in_flight');
CREATE INDEX deliveries_by_state ON deliveries (state, seq);
CREATE INDEX deliveries_by_event ON deliveries (event_seq);
CREATE INDEX deliveries_by_destination ON deliveries (destination, seq);
CREATE INDEX deliveries_by_job ON deliveries (job) WHERE job IS NOT NULL;

CREATE TABLE attempts (
    seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_seq     bigint NOT NULL REFERENCES deliveries (seq),
    number           integer NOT NULL,
    started_at       bigint NOT NULL,
    duration_ms      bigint NOT NULL,
    status           integer,
    error            text,
    response_excerpt text,
    verdict          text NOT NULL,
    class            text NOT NULL,
    summary          text NOT NULL
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_seq);
CREATE INDEX attempts_by_verdict ON attempts (verdict, seq);

-- One row, rewritten by readiness checks: a write through the real commit path.
CREATE TABLE heartbeat (
    id integer PRIMARY KEY CHECK (id = 1),
    at bigint NOT NULL
);

CREATE TABLE jobs (
    id          text PRIMARY KEY,
    scope       text NOT NULL,
    created_at  bigint NOT NULL,
    finished_at bigint,
    matched     bigint NOT NULL,
    changed     bigint NOT NULL DEFAULT 0,
    error       text,
    position    bigint,
    updated_at  bigint,
    lease_owner text,
    lease_until bigint
);

-- Named leases for work one replica at a time does (retention sweeps).
CREATE TABLE leases (
    name  text PRIMARY KEY,
    owner text NOT NULL,
    until bigint NOT NULL
);

-- Runtime state an operator set (pause), shared by every replica; config is the default.
CREATE TABLE destination_state (
    name       text PRIMARY KEY,
    paused     boolean NOT NULL,
    updated_at bigint NOT NULL
);
"#,
    r#"
-- Claims take the due deliveries in (due_at, seq) order: with seq in the index the scan
-- stops after the rows it takes, instead of reading and sorting every due delivery
-- (10 ms a claim with a backlog of 17,000).
CREATE INDEX deliveries_due_in_order ON deliveries (destination, due_at, seq)
    WHERE state IN ('pending', 'in_flight');
DROP INDEX deliveries_due;
"#,
    r#"
-- Circuit breakers as a replica last shared them, for replicas that start later.
CREATE TABLE breakers (
    name       text PRIMARY KEY,
    open       boolean NOT NULL,
    updated_at bigint NOT NULL
);
"#,
    r#"
-- The writers keep these links themselves, as on SQLite (which does not enforce them): a
-- delivery is inserted in its event's transaction, an attempt only while its delivery
-- exists (records.rs), and retention removes children before their parents. The checks cost each delivery inserted and each attempt recorded a lookup
-- and a lock on its parent row: about 10 % of ingest at 32 connections.
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_event_seq_fkey;
ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_delivery_seq_fkey;
"#,
    r#"
-- When an operator stopped an unfinished job (it is then finished too).
ALTER TABLE jobs ADD COLUMN cancelled_at bigint;
-- The answer's headers, for comparing attempts.
ALTER TABLE attempts ADD COLUMN response_headers text;
-- Console sessions, by the SHA-256 of the cookie's value.
CREATE TABLE console_sessions (
    key          text PRIMARY KEY,
    token_name   text NOT NULL,
    token_digest text NOT NULL,
    scope        text NOT NULL,
    form_token   text NOT NULL,
    created_at   bigint NOT NULL,
    idle_until   bigint NOT NULL,
    expires_at   bigint NOT NULL
);
"#,
];

/// Applies what is missing, one replica at a time; refuses a schema newer than this binary.
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    let result = apply(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error);
    result.and(unlock.map(|_| ()))
}

async fn apply(client: &mut Client) -> Result<(), StoreError> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS hookrelay_schema (version integer NOT NULL)")
        .await
        .map_err(pg_error)?;
    let current = version(client).await?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.batch_execute(sql).await.map_err(pg_error)?;
        tx.execute("DELETE FROM hookrelay_schema", &[])
            .await
            .map_err(pg_error)?;
        tx.execute(
            "INSERT INTO hookrelay_schema (version) VALUES ($1)",
            &[&((index + 1) as i32)],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        tracing::info!(version = index + 1, "PostgreSQL schema migrated");
    }
    Ok(())
}

/// The schema version in the database, refused when newer than this binary knows.
pub async fn version(client: &Client) -> Result<usize, StoreError> {
    let row = client
        .query_opt("SELECT version FROM hookrelay_schema", &[])
        .await
        .map_err(pg_error)?;
    let current = row.map_or(0, |row| row.get::<_, i32>(0).max(0) as usize);
    if current > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this hookrelay ({}); upgrade hookrelay",
            MIGRATIONS.len()
        )));
    }
    Ok(current)
}

/// Reads the server's vacuum settings and warns when its dead rows would never be
/// reclaimed. A warning, not a refusal: a server whose VACUUM runs on a schedule of its own
/// is fine, and only its operator knows.
pub async fn check_vacuum(client: &Client) -> Result<(), StoreError> {
    let row = client
        .query_one(
            "SELECT current_setting('autovacuum'), current_setting('track_counts')",
            &[],
        )
        .await
        .map_err(pg_error)?;
    if let Some((problem, setting)) = vacuum_problem(row.get(0), row.get(1)) {
        tracing::warn!(
            "{problem}: the rows retention deletes and those each delivery's updates leave \
             behind are never reclaimed, so hookrelay's tables grow without bound and claims \
             slow down; turn it on (ALTER SYSTEM SET {setting} = on; SELECT pg_reload_conf()) \
             or VACUUM the schema's tables on a schedule"
        );
    }
    Ok(())
}

/// What of the server's settings stops autovacuum, if anything, and the setting to change.
fn vacuum_problem(autovacuum: &str, track_counts: &str) -> Option<(&'static str, &'static str)> {
    match (autovacuum, track_counts) {
        ("on", "on") => None,
        ("on", _) => Some((
            "track_counts is off on this PostgreSQL server, so autovacuum never starts",
            "track_counts",
        )),
        _ => Some(("autovacuum is off on this PostgreSQL server", "autovacuum")),
    }
}

#[cfg(test)]
mod vacuum_tests {
    use super::vacuum_problem;

    #[test]
    fn a_server_that_never_vacuums_is_named() {
        assert_eq!(vacuum_problem("on", "on"), None);
        for (autovacuum, track_counts, named, setting) in [
            ("off", "on", "autovacuum is off", "autovacuum"),
            ("off", "off", "autovacuum is off", "autovacuum"),
            ("on", "off", "track_counts is off", "track_counts"),
        ] {
            let (problem, to_set) = vacuum_problem(autovacuum, track_counts).expect("a problem");
            assert!(
                problem.contains(named),
                "{autovacuum}/{track_counts}: {problem}"
            );
            assert_eq!(to_set, setting);
        }
    }
}
