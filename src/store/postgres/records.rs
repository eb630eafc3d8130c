//! Attempt records in small batches: the records arriving while one batch commits share the
//! next statement (one `UPDATE ... FROM unnest(...)` and one multi-row insert), on the
//! bookkeeping pool, so a replica's delivery costs a fraction of a commit per attempt.

use tokio::sync::{mpsc, oneshot};

use super::{pg_error, pool_error};
use crate::store::{AttemptRecord, NextState, StoreError};

const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<(), StoreError>>;

pub struct Records {
    queue: mpsc::Sender<(AttemptRecord, Reply)>,
}

impl Records {
    pub fn start(pool: deadpool_postgres::Pool) -> Self {
        let (queue, waiting) = mpsc::channel(4096);
        tokio::spawn(writer(pool, waiting));
        Self { queue }
    }

    pub async fn record(&self, record: AttemptRecord) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the store's record queue has stopped".into());
        self.queue
            .send((record, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn writer(
    pool: deadpool_postgres::Pool,
    mut waiting: mpsc::Receiver<(AttemptRecord, Reply)>,
) {
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (records, replies): (Vec<AttemptRecord>, Vec<Reply>) = batch.into_iter().unzip();
        match write(&pool, &records).await {
            Ok(()) => replies.into_iter().for_each(|reply| {
                let _ = reply.send(Ok(()));
            }),
            Err(err) => {
                let message = err.to_string();
                let unavailable = matches!(err, StoreError::Unavailable(_));
                for reply in replies {
                    let _ = reply.send(Err(match unavailable {
                        true => StoreError::Unavailable(message.clone()),
                        false => StoreError::Backend(message.clone()),
                    }));
                }
            }
        }
    }
}

/// Every record's delivery moved on (where the lease is still its) and its attempt
/// inserted, numbered after the delivery's earlier attempts.
const RECORD: &str = "
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[],
                         $6::int[], $7::text[], $8::text[], $9::text[], $10::text[],
                         $11::bigint[], $12::bigint[], $13::text[], $14::text[],
                         $15::text[])
        AS r (seq, token, state, retry_in, finished, status, error, dead_reason, verdict,
              summary, started_at, duration_ms, excerpt, class, headers)),
moved AS (
    UPDATE deliveries d SET state = r.state,
           due_at = CASE WHEN r.retry_in IS NULL THEN NULL
                         ELSE hookrelay_now(r.finished) + r.retry_in END,
           attempts = d.attempts + 1, lease_owner = NULL, updated_at = hookrelay_now(r.finished),
           last_status = r.status, last_error = r.error, dead_reason = r.dead_reason,
           interrupted = false, last_verdict = r.verdict, last_summary = r.summary
    FROM input r
    WHERE d.seq = r.seq AND d.lease_token = r.token AND d.state = 'in_flight'
    RETURNING 1),
recorded AS (
    INSERT INTO attempts (delivery_seq, number, started_at, duration_ms, status, error,
                          response_excerpt, verdict, class, summary, response_headers)
    SELECT r.seq,
           (SELECT COUNT(*) FROM attempts a WHERE a.delivery_seq = r.seq)
               + row_number() OVER (PARTITION BY r.seq ORDER BY r.started_at),
           r.started_at, r.duration_ms, r.status, r.error, r.excerpt, r.verdict, r.class,
           r.summary, r.headers
    FROM input r
    -- A stale record whose delivery retention already removed leaves no orphan attempt.
    WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = r.seq)
    RETURNING 1)
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM recorded)";

async fn write(
    pool: &deadpool_postgres::Pool,
    records: &[AttemptRecord],
) -> Result<(), StoreError> {
    let mut columns = Columns::default();
    for record in records {
        columns.push(record);
    }
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client.prepare_cached(RECORD).await.map_err(pg_error)?;
    let c = &columns;
    let row = client
        .query_one(
            &statement,
            &[
                &c.seq,
                &c.token,
                &c.state,
                &c.retry_in,
                &c.finished,
                &c.status,
                &c.error,
                &c.dead_reason,
                &c.verdict,
                &c.summary,
                &c.started_at,
                &c.duration_ms,
                &c.excerpt,
                &c.class,
                &c.headers,
            ],
        )
        .await
        .map_err(pg_error)?;
    let moved: i64 = row.get(0);
    if (moved as usize) < records.len() {
        tracing::warn!(
            stale = records.len() - moved as usize,
            "attempts finished after their lease was taken over; recorded, state left alone"
        );
    }
    Ok(())
}

/// The records as columns, one array per parameter.
#[derive(Default)]
struct Columns {
    seq: Vec<i64>,
    token: Vec<i64>,
    state: Vec<&'static str>,
    retry_in: Vec<Option<i64>>,
    finished: Vec<i64>,
    status: Vec<Option<i32>>,
    error: Vec<Option<String>>,
    dead_reason: Vec<Option<String>>,
    verdict: Vec<&'static str>,
    summary: Vec<String>,
    started_at: Vec<i64>,
    duration_ms: Vec<i64>,
    excerpt: Vec<Option<String>>,
    headers: Vec<Option<String>>,
    class: Vec<String>,
}

impl Columns {
    fn push(&mut self, record: &AttemptRecord) {
        let attempt = &record.attempt;
        let finished = attempt.finished_at();
        let (state, retry_in, dead_reason) = match &record.next {
            NextState::Succeeded => ("succeeded", None, None),
            // The caller's retry time, as a delay from when it finished: the store's clock
            // decides when that is.
            NextState::RetryAt(at) => ("pending", Some(at - finished), None),
            NextState::Dead(reason) => ("dead", None, Some(reason.clone())),
        };
        let detail = &attempt.detail;
        self.seq.push(record.lease.row);
        self.token.push(record.lease.token);
        self.state.push(state);
        self.retry_in.push(retry_in);
        self.finished.push(finished);
        self.status.push(detail.status.map(i32::from));
        self.error.push(detail.error.clone());
        self.dead_reason.push(dead_reason);
        self.verdict.push(attempt.verdict.as_str());
        self.summary.push(detail.summary.clone());
        self.started_at.push(attempt.started_at);
        self.duration_ms.push(attempt.duration_ms);
        self.excerpt.push(detail.response_excerpt.clone());
        self.headers.push(detail.response_headers.clone());
        self.class.push(attempt.class.clone());
    }
}
