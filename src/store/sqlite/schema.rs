//! SQLite schema and migrations, applied in order and tracked with `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry moves the schema from version `index` to `index + 1`. Never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    source       TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    remote_addr  TEXT,
    event_type   TEXT,
    dedup_key    TEXT,
    content_type TEXT,
    headers      BLOB NOT NULL,
    body         BLOB NOT NULL
);

-- Senders' delivery ids, appended in arrival order; the writer keeps the recent ones in
-- memory (see dedup.rs). No index: random keys would cost a random page write each.
CREATE TABLE dedup_keys (
    seq         INTEGER PRIMARY KEY,
    hash        INTEGER NOT NULL,
    event_seq   INTEGER NOT NULL,
    received_at INTEGER NOT NULL
);

CREATE TABLE deliveries (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    event_seq    INTEGER NOT NULL REFERENCES events(seq),
    destination  TEXT NOT NULL,
    state        TEXT NOT NULL,
    -- pending: next attempt; in_flight: lease expiry; terminal states: NULL.
    due_at       INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    window_start INTEGER NOT NULL,
    lease_owner  TEXT,
    lease_token  INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    last_status  INTEGER,
    last_error   TEXT
);
CREATE INDEX deliveries_due ON deliveries(destination, due_at)
    WHERE state IN ('pending', 'in_flight');
CREATE INDEX deliveries_active_order ON deliveries(destination, seq)
    WHERE state IN ('pending', 'in_flight');
CREATE INDEX deliveries_by_state ON deliveries(state, seq);

CREATE TABLE attempts (
    seq              INTEGER PRIMARY KEY,
    delivery_seq     INTEGER NOT NULL REFERENCES deliveries(seq),
    number           INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    status           INTEGER,
    error            TEXT,
    response_excerpt TEXT
);
CREATE INDEX attempts_by_delivery ON attempts(delivery_seq);
"#,
    r#"
-- One row, rewritten by readiness checks: a write through the real commit path.
CREATE TABLE heartbeat (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    at   INTEGER NOT NULL,
    room BLOB
);
"#,
    r#"
-- What ingest classified, for filters, coalescing keys and display.
ALTER TABLE events ADD COLUMN action TEXT;
ALTER TABLE events ADD COLUMN git_ref TEXT;
ALTER TABLE events ADD COLUMN branch TEXT;
ALTER TABLE events ADD COLUMN tag TEXT;
ALTER TABLE events ADD COLUMN project TEXT;
ALTER TABLE events ADD COLUMN sender TEXT;
ALTER TABLE events ADD COLUMN commit_before TEXT;
ALTER TABLE events ADD COLUMN commit_after TEXT;
CREATE INDEX events_by_received ON events(received_at);
-- What retention keeps of a pruned event whose sender id is still inside the dedup window,
-- so a late repeat is still recognised; a small table of its own, so the events table's
-- pages empty out and are reused.
CREATE TABLE pruned_events (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL,
    source      TEXT NOT NULL,
    dedup_key   TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
-- Why a delivery went dead (attempts exhausted, max age, permanent failure).
ALTER TABLE deliveries ADD COLUMN dead_reason TEXT;
CREATE INDEX deliveries_by_event ON deliveries(event_seq);
CREATE INDEX deliveries_by_destination ON deliveries(destination, seq);
-- Set when a delivery's attempt was cut off by its worker going away (crash, kill -9):
-- the next claim records the interruption and applies the destination's `on_interrupt`.
ALTER TABLE deliveries ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
-- `latest` destinations: one delivery in flight per key, only the newest waiting one goes.
ALTER TABLE deliveries ADD COLUMN coalesce_key TEXT;
CREATE INDEX deliveries_by_key ON deliveries(destination, coalesce_key, seq)
    WHERE coalesce_key IS NOT NULL AND state IN ('pending', 'in_flight');
-- The bulk job that last replayed or cancelled a delivery, so the job can count outcomes.
ALTER TABLE deliveries ADD COLUMN job TEXT;
CREATE INDEX deliveries_by_job ON deliveries(job) WHERE job IS NOT NULL;
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    scope       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER,
    matched     INTEGER NOT NULL,
    changed     INTEGER NOT NULL DEFAULT 0,
    error       TEXT
);
-- Runtime state an operator set (pause), which outlives a restart; config is the default.
CREATE TABLE destination_state (
    name       TEXT PRIMARY KEY,
    paused     INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
"#,
    r#"
-- Each attempt as its destination judged it: the verdict (delivered, retryable, permanent,
-- interrupted), the metric class it chose and a short summary ("exit 0", "HTTP 503").
-- Figures and listings read these; nothing re-derives them from status codes.
ALTER TABLE attempts ADD COLUMN verdict TEXT NOT NULL DEFAULT 'retryable';
ALTER TABLE attempts ADD COLUMN class TEXT NOT NULL DEFAULT 'error';
ALTER TABLE attempts ADD COLUMN summary TEXT NOT NULL DEFAULT '';
-- Rows written before: an attempt without an error was delivered (HTTP 2xx, or exit 0).
UPDATE attempts SET
    verdict = CASE
        WHEN error IS NULL THEN 'delivered'
        WHEN error LIKE 'interrupted%' THEN 'interrupted'
        WHEN error LIKE 'exit % (permanent)' THEN 'permanent'
        ELSE 'retryable' END,
    class = CASE
        WHEN status BETWEEN 200 AND 299 THEN '2xx'
        WHEN status BETWEEN 300 AND 399 THEN '3xx'
        WHEN status BETWEEN 400 AND 499 THEN '4xx'
        WHEN status IS NOT NULL THEN '5xx'
        WHEN error IS NULL THEN 'exit_0'
        WHEN error LIKE 'exit %' THEN 'exit_nonzero'
        WHEN error LIKE 'killed by signal%' THEN 'signal'
        WHEN error LIKE 'timeout%' THEN 'timeout'
        WHEN error LIKE 'connect%' THEN 'connect_error'
        WHEN error LIKE 'refused%' THEN 'refused'
        WHEN error LIKE 'interrupted%' THEN 'interrupted'
        ELSE 'error' END,
    summary = CASE
        WHEN status IS NOT NULL THEN 'HTTP ' || status
        WHEN error IS NULL THEN 'exit 0'
        WHEN error LIKE 'timeout%' THEN 'timeout'
        WHEN error LIKE 'connect error%' THEN 'connect error'
        WHEN error LIKE 'interrupted%' THEN 'interrupted'
        ELSE substr(error, 1, 60) END;
-- An HTTP answer judged permanent killed its delivery at once: its last attempt says so.
UPDATE attempts SET verdict = 'permanent'
WHERE seq IN (SELECT MAX(a.seq) FROM attempts a JOIN deliveries d ON d.seq = a.delivery_seq
              WHERE d.dead_reason LIKE 'permanent%' GROUP BY a.delivery_seq);
ALTER TABLE deliveries ADD COLUMN last_verdict TEXT;
ALTER TABLE deliveries ADD COLUMN last_summary TEXT;
UPDATE deliveries SET (last_verdict, last_summary) =
    (SELECT verdict, summary FROM attempts a WHERE a.delivery_seq = deliveries.seq
     ORDER BY a.seq DESC LIMIT 1);
"#,
    r#"
-- Background work owned by the store: a job is continued by whoever holds its lease, from
-- the position its last step recorded (in that step's transaction).
ALTER TABLE jobs ADD COLUMN position INTEGER;
ALTER TABLE jobs ADD COLUMN updated_at INTEGER;
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until INTEGER;
-- Named leases for work one process at a time does (retention sweeps).
CREATE TABLE leases (
    name  TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until INTEGER NOT NULL
);
"#,
    r#"
-- When an operator stopped an unfinished job (it is then finished too).
ALTER TABLE jobs ADD COLUMN cancelled_at INTEGER;
-- The answer's headers, for comparing attempts.
ALTER TABLE attempts ADD COLUMN response_headers TEXT;
-- Console sessions, by the SHA-256 of the cookie's value.
CREATE TABLE console_sessions (
    key          TEXT PRIMARY KEY,
    token_name   TEXT NOT NULL,
    token_digest TEXT NOT NULL,
    scope        TEXT NOT NULL,
    form_token   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    idle_until   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
"#,
];

/// The schema version, refused when newer than this binary knows.
pub fn check_version(conn: &Connection) -> rusqlite::Result<usize> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {current} is newer than this hookrelay ({}); upgrade hookrelay",
            MIGRATIONS.len()
        )));
    }
    Ok(current)
}

pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    migrate_to(conn, MIGRATIONS.len())
}

fn migrate_to(conn: &mut Connection, target: usize) -> rusqlite::Result<()> {
    let current = check_version(conn)?;
    for (version, sql) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (version + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Encodes headers as HTTP/1 wire lines (`name: value\r\n`): lossless for any byte values
/// a header may legally hold, order and duplicates kept.
pub fn encode_headers(headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub fn decode_headers(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    raw.split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r")?;
            let colon = line.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).into_owned();
            let value = line[colon + 1..]
                .strip_prefix(b" ")
                .unwrap_or(&line[colon + 1..]);
            Some((name, value.to_vec()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_exactly() {
        let headers = vec![
            ("x-gitlab-event".to_owned(), b"Push Hook".to_vec()),
            ("x-dup".to_owned(), b"one".to_vec()),
            ("x-dup".to_owned(), b"two: with colon".to_vec()),
            ("x-binary".to_owned(), vec![0xff, 0x80, b' ', b'x']),
            ("x-empty".to_owned(), vec![]),
        ];
        assert_eq!(decode_headers(&encode_headers(&headers)), headers);
    }

    #[test]
    fn attempts_recorded_before_verdicts_were_stored_get_the_verdict_they_had() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 3).unwrap();
        conn.execute_batch(
            "INSERT INTO events (seq, id, source, received_at, headers, body)
                 VALUES (1, 'evt_1', 'gitlab', 0, x'', x'');
             INSERT INTO deliveries (seq, id, event_seq, destination, state, window_start,
                                     created_at, updated_at, dead_reason)
                 VALUES (1, 'dlv_1', 1, 'deploy', 'succeeded', 0, 0, 0, NULL),
                        (2, 'dlv_2', 1, 'ci', 'dead', 0, 0, 0, 'permanent failure (the destination''s rules)'),
                        (3, 'dlv_3', 1, 'deploy', 'pending', 0, 0, 0, NULL);
             INSERT INTO attempts (seq, delivery_seq, number, started_at, duration_ms, status, error)
                 VALUES (1, 1, 1, 10, 5, NULL, NULL),
                        (2, 2, 1, 10, 5, 503, 'HTTP 503 Service Unavailable'),
                        (3, 2, 2, 20, 5, 404, 'HTTP 404 Not Found'),
                        (4, 3, 1, 30, 5, NULL, 'exit 3'),
                        (5, 3, 2, 40, 0, NULL, 'interrupted: hookrelay stopped during this attempt'),
                        (6, 1, 2, 50, 5, 200, NULL);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let attempts: Vec<(String, String, String)> = conn
            .prepare("SELECT verdict, class, summary FROM attempts ORDER BY seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected = [
            ("delivered", "exit_0", "exit 0"),
            ("retryable", "5xx", "HTTP 503"),
            ("permanent", "4xx", "HTTP 404"),
            ("retryable", "exit_nonzero", "exit 3"),
            ("interrupted", "interrupted", "interrupted"),
            ("delivered", "2xx", "HTTP 200"),
        ];
        let got: Vec<(&str, &str, &str)> = attempts
            .iter()
            .map(|(v, c, s)| (v.as_str(), c.as_str(), s.as_str()))
            .collect();
        assert_eq!(got, expected);
        let last: Vec<(Option<String>, Option<String>)> = conn
            .prepare("SELECT last_verdict, last_summary FROM deliveries ORDER BY seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let last: Vec<(&str, &str)> = last
            .iter()
            .map(|(v, s)| (v.as_deref().unwrap(), s.as_deref().unwrap()))
            .collect();
        assert_eq!(
            last,
            [
                ("delivered", "HTTP 200"),
                ("permanent", "HTTP 404"),
                ("interrupted", "interrupted")
            ]
        );
    }

    #[test]
    fn migrations_apply_once_and_refuse_newer_schemas() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("newer"), "{err}");
    }
}
