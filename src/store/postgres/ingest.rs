//! Durable group commit on PostgreSQL: requests arriving together on a replica share one
//! transaction (their statements pipelined on one connection) and so one WAL flush, with
//! `synchronous_commit` on: a 2xx still means committed and flushed.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_postgres::error::SqlState;

use super::feed::Notifier;
use super::{pg_error, pool_error};
use crate::domain::Name;
use crate::store::{Accepted, Change, NewEvent, StoreError};

/// Events in one transaction at most; more waiting go in the next.
const MAX_BATCH: usize = 1024;
/// Transactions of one replica committing at once (each waits for its WAL flush).
const COMMITS_IN_FLIGHT: usize = 1;
/// After a batch found the ingest order lock taken, how many batches wait for it instead
/// of trying for it in one round trip.
const IN_ORDER_AFTER_CONTENTION: usize = 16;
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
    // Batches still to wait for the order lock since one found it taken: while other
    // replicas' batches contend, a try in one round trip would mostly cost one more.
    let mut waiting_in_order = 0usize;
    loop {
        // Wait for a commit slot first: requests keep gathering meanwhile, into one batch.
        let Ok(slot) = commits.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = waiting.recv().await else {
            return;
        };
        let started = std::time::Instant::now();
        let (mut events, mut replies) = (vec![first.0], vec![first.1]);
        gather(&mut waiting, &mut events, &mut replies);
        let sent_at_once = match waiting_in_order {
            0 => match pool.get().await {
                Ok(client) => insert_and_commit(&client, &events, Opening::Try).await,
                Err(err) => Err(Retry::Never(pool_error(err))),
            },
            _ => Ok(None),
        };
        let sent = match sent_at_once {
            Ok(Some(answers)) => Sent::Done(Ok(answers)),
            Err(Retry::Never(err)) => Sent::Done(Err(Retry::Never(err))),
            // Another replica's batch held the order lock (or did lately): wait for it.
            // Whatever arrives while this replica waits goes into this batch.
            Ok(None) | Err(Retry::Again(_)) => {
                waiting_in_order = match waiting_in_order {
                    0 => IN_ORDER_AFTER_CONTENTION,
                    left => left - 1,
                };
                let opened = open_in_order(&pool).await;
                gather(&mut waiting, &mut events, &mut replies);
                Sent::Opened(opened)
            }
        };
        let (pool, notifier) = (pool.clone(), notifier.clone());
        tokio::spawn(async move {
            let mut result = match sent {
                Sent::Done(result) => result,
                Sent::Opened(Ok(client)) => insert_in_order(&client, &events).await,
                Sent::Opened(Err(err)) => Err(err),
            };
            // A deadlock or serialization failure aborts the whole batch; it is tried once
            // more (batches of different replicas never wait on each other's keys: they
            // take the ingest order lock first).
            if matches!(&result, Err(Retry::Again(_))) {
                result = match open_in_order(&pool).await {
                    Ok(client) => insert_in_order(&client, &events).await,
                    Err(err) => Err(err),
                };
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

/// Where a batch stands once the batcher lets it go.
enum Sent {
    /// Sent in one round trip: committed, or failed for good.
    Done(Result<Vec<Accepted>, Retry>),
    /// A connection holding the ingest order lock, the rest to send.
    Opened(Result<deadpool_postgres::Object, Retry>),
}

/// Moves what is waiting now into the batch, up to [`MAX_BATCH`].
fn gather(
    waiting: &mut mpsc::Receiver<(NewEvent, Reply)>,
    events: &mut Vec<NewEvent>,
    replies: &mut Vec<Reply>,
) {
    while events.len() < MAX_BATCH {
        let Ok((event, reply)) = waiting.try_recv() else {
            break;
        };
        events.push(event);
        replies.push(reply);
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

/// Serialises the ingest batches of every replica on this schema, from before their rows
/// take sequence values until they commit (the lock ends with the transaction): so events
/// and deliveries are numbered in commit order, a reader that sees a row sees every row
/// numbered before it, and a walker paging by number never passes a row that commits late.
/// The replicas' batches still share WAL flushes with everything else; under load a batch
/// waiting here grows, so it costs throughput little.
/// It also records, for the rest of the transaction, that the lock is held
/// (`hookrelay.ordered`): the destinations' locks and the insert do nothing without it.
const LOCK_INGEST_ORDER: &str = "
SELECT set_config('hookrelay.ordered', 'true', true) FROM (
    SELECT pg_advisory_xact_lock(hashtextextended('hookrelay.ingest.' || current_schema(), 0))
) locked";

/// Taken after [`LOCK_INGEST_ORDER`]: the destinations a batch adds deliveries to, which a
/// `fifo` or `latest` claim locks too (`claims::LOCK_DESTINATION`), so it never passes over
/// a delivery that has its number but has not committed.
const LOCK_DESTINATIONS: &str = "
SELECT count(pg_advisory_xact_lock(k)) FROM (
    SELECT DISTINCT hashtextextended('hookrelay.destination.' || current_schema() || '.' || d, 0)
        AS k
    FROM unnest($1::text[]) AS d
    WHERE current_setting('hookrelay.ordered', true) = 'true'
    ORDER BY k) locks";

/// [`LOCK_INGEST_ORDER`] without waiting, for a batch sent in one round trip: whether it
/// was taken is kept for the rest of the transaction (`hookrelay.ordered`), and when it was
/// not, the destinations' locks and the insert that follow in the same pipeline do nothing.
const TRY_INGEST_ORDER: &str = "
SELECT set_config('hookrelay.ordered',
    pg_try_advisory_xact_lock(hashtextextended('hookrelay.ingest.' || current_schema(), 0))::text,
    true)";

/// A connection in a transaction that holds the ingest order lock (BEGIN and the lock in
/// one round trip). On failure the transaction is rolled back before the connection goes
/// back to the pool.
async fn open_in_order(pool: &deadpool_postgres::Pool) -> Result<deadpool_postgres::Object, Retry> {
    let client = pool
        .get()
        .await
        .map_err(|err| Retry::Never(pool_error(err)))?;
    let order = client
        .prepare_cached(LOCK_INGEST_ORDER)
        .await
        .map_err(classify)?;
    let (begun, ordered) = tokio::join!(client.batch_execute("BEGIN"), client.execute(&order, &[]));
    if let Err(err) = begun.and(ordered.map(|_| ())) {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(classify(err));
    }
    Ok(client)
}

/// How a batch's transaction stands when its rows are sent.
#[derive(Clone, Copy, PartialEq)]
enum Opening {
    /// Begun by [`open_in_order`], holding the ingest order lock.
    Held,
    /// To begin in the same pipeline, with a try for the order lock ([`TRY_INGEST_ORDER`]).
    Try,
}

/// The batch's statements in one round trip, answered in order: BEGIN and the try for the
/// order lock when `opening` is [`Opening::Try`], the destinations' locks before the rows
/// take their numbers, the insert, COMMIT. None when the try found the order lock taken:
/// then the locks and the insert did nothing and an empty transaction committed. When a
/// statement fails the rest fail with it and the COMMIT rolls back, so the connection goes
/// back to the pool outside any transaction either way.
async fn insert_and_commit(
    client: &deadpool_postgres::Object,
    events: &[NewEvent],
    opening: Opening,
) -> Result<Option<Vec<Accepted>>, Retry> {
    let batch = super::batch::Batch::of(events);
    let prepared = async {
        let order = match opening {
            Opening::Try => Some(client.prepare_cached(TRY_INGEST_ORDER).await?),
            Opening::Held => None,
        };
        let lock = client.prepare_cached(LOCK_DESTINATIONS).await?;
        let insert = client.prepare_cached(super::batch::INSERT_BATCH).await?;
        Ok((order, lock, insert))
    };
    let (order, lock, insert) = match prepared.await {
        Ok(statements) => statements,
        Err(err) => {
            if opening == Opening::Held {
                let _ = client.batch_execute("ROLLBACK").await;
            }
            return Err(classify(err));
        }
    };
    let destinations = batch.destinations();
    let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&destinations];
    let params = batch.params();
    // Polled first, so BEGIN and the try go out ahead of the rest.
    let ordered = async {
        let Some(order) = &order else {
            return Ok(true);
        };
        let (begun, ordered) =
            tokio::join!(client.batch_execute("BEGIN"), client.query_one(order, &[]));
        begun?;
        Ok::<_, tokio_postgres::Error>(ordered?.get::<_, String>(0) == "true")
    };
    let (ordered, locked, rows, committed) = tokio::join!(
        ordered,
        client.query_one(&lock, &lock_params),
        client.query(&insert, &params),
        client.batch_execute("COMMIT"),
    );
    let ordered = ordered.map_err(classify)?;
    locked.map_err(classify)?;
    let rows = rows.map_err(classify)?;
    committed.map_err(classify)?;
    if !ordered {
        return Ok(None);
    }
    answer(client, &batch, events, &rows).await.map(Some)
}

/// [`insert_and_commit`] on a transaction that holds the order lock: it always inserts.
async fn insert_in_order(
    client: &deadpool_postgres::Object,
    events: &[NewEvent],
) -> Result<Vec<Accepted>, Retry> {
    insert_and_commit(client, events, Opening::Held)
        .await?
        .ok_or_else(|| Retry::Never(StoreError::Backend("the ingest order lock was lost".into())))
}

/// The answers of a committed batch: the events inserted, and for each repeat of a sender's
/// delivery id the original it repeats.
async fn answer(
    client: &deadpool_postgres::Object,
    batch: &super::batch::Batch,
    events: &[NewEvent],
    rows: &[tokio_postgres::Row],
) -> Result<Vec<Accepted>, Retry> {
    let inserted: std::collections::HashSet<String> = rows.iter().map(|row| row.get(0)).collect();
    // The originals of keyed events that were not inserted, committed before this batch
    // (the insert waited for any it met uncommitted).
    let missing = batch.keys_not_in(&inserted);
    let mut originals = std::collections::HashMap::new();
    if !missing.0.is_empty() {
        let find = client
            .prepare_cached(
                "SELECT k.source, k.key, k.event_id FROM dedup_keys k
                 JOIN unnest($1::text[], $2::text[]) AS m (source, key)
                   ON k.source = m.source AND k.key = m.key",
            )
            .await
            .map_err(committed_already)?;
        for row in client
            .query(&find, &[&missing.0, &missing.1])
            .await
            .map_err(committed_already)?
        {
            let (source, key, id): (String, String, String) = (row.get(0), row.get(1), row.get(2));
            originals.insert((source, key), id);
        }
    }
    batch
        .answers(events, &inserted, &originals)
        .map_err(Retry::Never)
}

/// An error after the batch committed: never tried again (its events would be stored twice).
fn committed_already(err: tokio_postgres::Error) -> Retry {
    Retry::Never(pg_error(err))
}
