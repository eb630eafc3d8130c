//! Durable group commit on PostgreSQL: requests arriving together on a replica share one
//! transaction (their statements pipelined on one connection) and so one WAL flush, with
//! `synchronous_commit` on: a 2xx still means committed and flushed.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_postgres::error::SqlState;

use super::feed::Notifier;
use super::{pg_error, pool_error};
use crate::domain::{DEDUP_WINDOW_MS, DeliveryId, EventId, Name};
use crate::store::{Accepted, Change, NewEvent, StoreError};

/// Events in one transaction at most; more waiting go in the next.
const MAX_BATCH: usize = 1024;
/// Transactions of one replica committing at once (each waits for its WAL flush).
const COMMITS_IN_FLIGHT: usize = 1;
/// Requests waiting for a batch; a full queue makes ingest wait (backpressure), not fail.
const QUEUE_DEPTH: usize = 4096;

type Reply = oneshot::Sender<Result<Accepted, StoreError>>;

/// The queue ingest's inserts go through.
pub struct Inserts {
    queue: mpsc::Sender<(NewEvent, Reply)>,
}

impl Inserts {
    pub fn start(pool: deadpool_postgres::Pool, notifier: Notifier) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(batcher(pool, notifier, waiting));
        Self { queue }
    }

    pub async fn insert(&self, event: NewEvent) -> Result<Accepted, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the store's ingest queue has stopped".into());
        self.queue
            .send((event, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn batcher(
    pool: deadpool_postgres::Pool,
    notifier: Notifier,
    mut waiting: mpsc::Receiver<(NewEvent, Reply)>,
) {
    let commits = Arc::new(Semaphore::new(COMMITS_IN_FLIGHT));
    loop {
        // Wait for a commit slot first: requests keep gathering meanwhile, into one batch.
        let Ok(slot) = commits.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = waiting.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (pool, notifier) = (pool.clone(), notifier.clone());
        tokio::spawn(async move {
            let (events, replies): (Vec<NewEvent>, Vec<Reply>) = batch.into_iter().unzip();
            let started = std::time::Instant::now();
            let mut result = commit(&pool, &events).await;
            // Two replicas' batches may wait on each other's keys: the database aborts one,
            // which is tried once more.
            if matches!(&result, Err(Retry::Again(_))) {
                result = commit(&pool, &events).await;
            }
            drop(slot);
            let telemetry = crate::telemetry::get();
            telemetry.commit_batch_size.observe(events.len() as f64);
            telemetry
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(answers) => {
                    let due = due_destinations(&events, &answers);
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok(answer));
                    }
                    if !due.is_empty() {
                        notifier.announce(Change::Due(due)).await;
                    }
                }
                Err(Retry::Again(err) | Retry::Never(err)) => {
                    for reply in replies {
                        let _ = reply.send(Err(clone_error(&err)));
                    }
                }
            }
        });
    }
}

enum Retry {
    Again(StoreError),
    Never(StoreError),
}

fn classify(err: tokio_postgres::Error) -> Retry {
    let again = err.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    });
    match again {
        true => Retry::Again(pg_error(err)),
        false => Retry::Never(pg_error(err)),
    }
}

fn clone_error(err: &StoreError) -> StoreError {
    match err {
        StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
        other => StoreError::Backend(other.to_string()),
    }
}

fn due_destinations(events: &[NewEvent], answers: &[Accepted]) -> Vec<Name> {
    let mut due: Vec<Name> = events
        .iter()
        .zip(answers)
        .filter(|(_, answer)| !answer.duplicate)
        .flat_map(|(event, _)| event.destinations.iter().map(|r| r.destination.clone()))
        .collect();
    due.sort();
    due.dedup();
    due
}

/// One event: its dedup key claimed (or taken over once its window ended), the event and
/// its deliveries inserted only if the key was new, in one statement.
const INSERT_EVENT: &str = "
WITH key AS (
    INSERT INTO dedup_keys (source, key, event_id, received_at)
    SELECT $2, $6, $1, $3 WHERE $6::text IS NOT NULL
    ON CONFLICT (source, key) DO UPDATE
        SET event_id = excluded.event_id, received_at = excluded.received_at
        WHERE dedup_keys.received_at < $18
    RETURNING 1
), ev AS (
    INSERT INTO events (id, source, received_at, remote_addr, event_type, dedup_key,
                        content_type, headers, body, action, git_ref, branch, tag, project,
                        sender, commit_before, commit_after)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17
    WHERE $6::text IS NULL OR EXISTS (SELECT 1 FROM key)
    RETURNING seq
), made AS (
    INSERT INTO deliveries (id, event_seq, destination, state, due_at, window_start,
                            created_at, updated_at, coalesce_key)
    SELECT d.id, ev.seq, d.destination, 'pending', t.now, t.now, t.now, t.now, d.key
    FROM ev, (SELECT hookrelay_now($3) AS now) t,
         unnest($19::text[], $20::text[], $21::text[]) AS d (id, destination, key)
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM ev), (SELECT count(*) FROM made),
       (SELECT event_id FROM dedup_keys WHERE source = $2 AND key = $6)";

/// Serialises the batches that add deliveries to the same destination, across replicas,
/// from before their rows take sequence values until they commit: so a destination's
/// deliveries are numbered in commit order, which `fifo` and `latest` claims rely on.
const LOCK_DESTINATIONS: &str = "
SELECT count(pg_advisory_xact_lock(k)) FROM (
    SELECT DISTINCT hashtextextended('hookrelay.destination.' || d, 0) AS k
    FROM unnest($1::text[]) AS d ORDER BY k) locks";

async fn commit(
    pool: &deadpool_postgres::Pool,
    events: &[NewEvent],
) -> Result<Vec<Accepted>, Retry> {
    let mut client = pool
        .get()
        .await
        .map_err(|err| Retry::Never(pool_error(err)))?;
    let tx = client.transaction().await.map_err(classify)?;
    let mut destinations: Vec<&str> = events
        .iter()
        .flat_map(|event| event.destinations.iter().map(|r| r.destination.as_str()))
        .collect();
    destinations.sort_unstable();
    destinations.dedup();
    tx.query_one(LOCK_DESTINATIONS, &[&destinations])
        .await
        .map_err(classify)?;
    let statement = tx.prepare_cached(INSERT_EVENT).await.map_err(classify)?;
    // Each event's row values, kept alive while the pipelined statements run.
    let rows: Vec<EventRow> = events.iter().map(EventRow::of).collect();
    let pending = rows.iter().map(|row| {
        let params = row.params();
        let statement = &statement;
        let tx = &tx;
        async move { tx.query_one(statement, &params).await }
    });
    let results = futures_join_all(pending).await;
    let mut answers = Vec::with_capacity(events.len());
    for (event, result) in events.iter().zip(results) {
        let row = result.map_err(classify)?;
        let (inserted, made, original): (bool, i64, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        answers.push(match inserted {
            true => Accepted {
                event_id: event.id.clone(),
                deliveries: made.max(0) as usize,
                duplicate: false,
            },
            false => Accepted {
                event_id: match original {
                    Some(id) => EventId::from_stored(id),
                    // The original committed while this statement waited for its key:
                    // a new statement sees it.
                    None => original_of(&tx, event).await.map_err(classify)?,
                },
                deliveries: 0,
                duplicate: true,
            },
        });
    }
    tx.commit().await.map_err(classify)?;
    Ok(answers)
}

async fn original_of(
    tx: &deadpool_postgres::Transaction<'_>,
    event: &NewEvent,
) -> Result<EventId, tokio_postgres::Error> {
    let row = tx
        .query_one(
            "SELECT event_id FROM dedup_keys WHERE source = $1 AND key = $2",
            &[&event.source.as_str(), &event.classification.dedup_key],
        )
        .await?;
    Ok(EventId::from_stored(row.get(0)))
}

/// Runs the futures at once, so their statements are pipelined on the one connection.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        match done {
            true => std::task::Poll::Ready(()),
            false => std::task::Poll::Pending,
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// One event's parameters, owned.
struct EventRow {
    id: String,
    source: String,
    received_at: i64,
    remote_addr: Option<String>,
    class: crate::domain::Classification,
    content_type: Option<String>,
    headers: Vec<u8>,
    body: Vec<u8>,
    dedup_cutoff: i64,
    delivery_ids: Vec<String>,
    destinations: Vec<String>,
    keys: Vec<Option<String>>,
}

impl EventRow {
    fn of(event: &NewEvent) -> Self {
        Self {
            id: event.id.as_str().to_owned(),
            source: event.source.as_str().to_owned(),
            received_at: event.received_at,
            remote_addr: event.remote_addr.clone(),
            class: event.classification.clone(),
            content_type: event.content_type.clone(),
            headers: crate::store::encode_headers(&event.headers),
            body: event.body.to_vec(),
            dedup_cutoff: event.received_at - DEDUP_WINDOW_MS,
            delivery_ids: event
                .destinations
                .iter()
                .map(|_| DeliveryId::generate().as_str().to_owned())
                .collect(),
            destinations: event
                .destinations
                .iter()
                .map(|r| r.destination.as_str().to_owned())
                .collect(),
            keys: event
                .destinations
                .iter()
                .map(|r| r.coalesce_key.clone())
                .collect(),
        }
    }

    fn params(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        let c = &self.class;
        vec![
            &self.id,
            &self.source,
            &self.received_at,
            &self.remote_addr,
            &c.event_type,
            &c.dedup_key,
            &self.content_type,
            &self.headers,
            &self.body,
            &c.action,
            &c.git_ref,
            &c.branch,
            &c.tag,
            &c.project,
            &c.sender,
            &c.commit_before,
            &c.commit_after,
            &self.dedup_cutoff,
            &self.delivery_ids,
            &self.destinations,
            &self.keys,
        ]
    }
}
