//! The single writer thread: group commit. Every write waiting in the queue shares one
//! transaction; a failing command is isolated so it spoils no other. Answers that promise
//! durability wait for the flush thread's fsync (`flusher.rs`) while the next batch runs.

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::dedup::DedupIndex;
use super::flusher::{Flusher, Reply};
use super::identity::Files;
use super::ops::{claim, complete, heartbeat, insert_event, release, replay};
use crate::domain::{DeliveryId, Name, UnixMillis};
use crate::store::{
    Accepted, AttemptRecord, Change, ClaimRequest, Claimed, NewEvent, ReplayOutcome, StoreError,
};

/// Most commands one transaction takes; bounds the latency a batch adds to its first member.
const MAX_BATCH: usize = 1024;

pub enum Command {
    Insert(Box<NewEvent>, oneshot::Sender<Result<Accepted, StoreError>>),
    Claim(ClaimRequest, oneshot::Sender<Result<Claimed, StoreError>>),
    Complete(AttemptRecord, oneshot::Sender<Result<(), StoreError>>),
    Release(
        Vec<crate::store::Lease>,
        UnixMillis,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Replay(
        DeliveryId,
        UnixMillis,
        // The outcome, and the destination a scheduled replay made due (to announce it).
        oneshot::Sender<Result<(ReplayOutcome, Option<String>), StoreError>>,
    ),
    /// A tiny write that proves the commit path works (readiness).
    Ping(UnixMillis, oneshot::Sender<Result<(), StoreError>>),
    /// Any other (rare, operator-driven) write; it may run twice if its batch is redone.
    Write(WriteFn, oneshot::Sender<Result<Answer, StoreError>>),
}

pub type Answer = Box<dyn std::any::Any + Send>;
pub type WriteFn = Box<dyn Fn(&Connection) -> Result<Answer, StoreError> + Send>;

/// A command's result, held until the batch's commit decides whether it stands.
enum Outcome {
    Insert(Result<Accepted, StoreError>),
    Claim(Result<Claimed, StoreError>),
    Unit(Result<(), StoreError>),
    Replay(Result<(ReplayOutcome, Option<String>), StoreError>),
    Write(Result<Answer, StoreError>),
}

impl Outcome {
    fn failed(&self) -> bool {
        match self {
            Outcome::Insert(r) => r.is_err(),
            Outcome::Claim(r) => r.is_err(),
            Outcome::Unit(r) => r.is_err(),
            Outcome::Replay(r) => r.is_err(),
            Outcome::Write(r) => r.is_err(),
        }
    }
}

impl Command {
    /// Whether the command's caller relies on it being on disk when answered. Delivery
    /// bookkeeping does not (see `Store::claim`): it is answered at commit, and the next
    /// flush (or checkpoint) takes it to the disk.
    fn needs_flush(&self) -> bool {
        match self {
            Command::Claim(request, _) => request.durable,
            Command::Complete(..) | Command::Release(..) => false,
            Command::Insert(..) | Command::Replay(..) | Command::Ping(..) | Command::Write(..) => {
                true
            }
        }
    }
}

fn execute(conn: &Connection, command: &Command, dedup: &mut DedupIndex) -> Outcome {
    match command {
        Command::Insert(event, _) => Outcome::Insert(insert_event(conn, event, dedup)),
        Command::Claim(request, _) => Outcome::Claim(claim(conn, request)),
        Command::Complete(record, _) => Outcome::Unit(complete(conn, record)),
        Command::Release(leases, now, _) => Outcome::Unit(release(conn, leases, *now)),
        Command::Replay(id, now, _) => Outcome::Replay(replay(conn, id, *now)),
        Command::Ping(now, _) => Outcome::Unit(heartbeat(conn, *now)),
        Command::Write(write, _) => Outcome::Write(write(conn)),
    }
}

/// A command's answer, to send when its batch is decided: a commit (or flush) failure turns
/// every success into an error. The event's body is dropped here, not kept until the flush.
/// A caller that went away (client disconnected) no longer needs its answer.
fn reply(command: Command, outcome: Outcome) -> Reply {
    fn send<T: Send + 'static>(
        tx: oneshot::Sender<Result<T, StoreError>>,
        result: Result<T, StoreError>,
    ) -> Reply {
        Box::new(move |problem| {
            let settled = match (result, problem) {
                (Ok(_), Some(problem)) => Err(StoreError::Unavailable(problem.to_owned())),
                (result, _) => result,
            };
            drop(tx.send(settled));
        })
    }
    match (command, outcome) {
        (Command::Insert(_, tx), Outcome::Insert(r)) => send(tx, r),
        (Command::Claim(_, tx), Outcome::Claim(r)) => send(tx, r),
        (Command::Complete(_, tx), Outcome::Unit(r))
        | (Command::Release(_, _, tx), Outcome::Unit(r))
        | (Command::Ping(_, tx), Outcome::Unit(r)) => send(tx, r),
        (Command::Replay(_, _, tx), Outcome::Replay(r)) => send(tx, r),
        (Command::Write(_, tx), Outcome::Write(r)) => send(tx, r),
        _ => {
            tracing::error!("store outcome does not match its command");
            Box::new(|_| {})
        }
    }
}

pub fn run(
    mut conn: Connection,
    mut queue: mpsc::Receiver<Command>,
    finish_checkpoint: &AtomicBool,
    mut dedup: DedupIndex,
    mut files: Files,
    flusher: Flusher,
    changes: tokio::sync::broadcast::Sender<Change>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Once the files are gone, nothing is acknowledged again until a restart: a commit to a
    // deleted file would be a 2xx for an event that no longer exists anywhere.
    let mut lost: Option<String> = None;
    // Commits write the WAL without syncing it; the flusher syncs it before durable answers.
    // Were this refused, commits would stay on FULL: slower, and as safe.
    if let Err(err) = conn.pragma_update(None, "synchronous", "NORMAL") {
        tracing::warn!(error = %err, "commits keep their own fsync");
    }
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        if lost.is_none()
            && let Err(problem) = files.check()
        {
            tracing::error!(%problem, "store files changed under the server; refusing writes");
            lost = Some(problem);
        }
        if lost.is_none() {
            lost = flusher.failure();
        }
        if let Some(problem) = &lost {
            for command in batch.drain(..) {
                reject(command, problem);
            }
            continue;
        }
        let applied = apply_batch(&mut conn, &mut batch, &mut dedup);
        announce(&changes, applied.due);
        flusher.after_flush(applied.durable, files.wal_id());
        if finish_checkpoint.swap(false, AtomicOrdering::AcqRel) {
            finish_wal_checkpoint(&conn);
        }
    }
}

/// Copies the few WAL frames the checkpoint thread has not, so the next transaction can
/// start the WAL over (see `checkpoint.rs`).
fn finish_wal_checkpoint(conn: &Connection) {
    let started = std::time::Instant::now();
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    }) {
        Ok((wal_pages, copied)) => tracing::trace!(
            wal_pages,
            copied,
            us = started.elapsed().as_micros(),
            "writer finished a checkpoint"
        ),
        Err(err) => tracing::debug!(error = %err, "writer checkpoint skipped"),
    }
}

/// What a committed batch leaves to do: answers that wait for a flush, and the destinations
/// it made due (announced on the change feed).
#[must_use = "durable answers wait for a flush"]
#[derive(Default)]
pub(super) struct Applied {
    pub durable: Vec<Reply>,
    pub due: Vec<Name>,
}

/// Which destinations a committed command made due: a new event's. (Operator writes, such
/// as a replay, announce themselves once answered, see `SqliteStore::announce`.)
fn made_due(command: &Command, outcome: &Outcome, due: &mut Vec<Name>) {
    if let (Command::Insert(event, _), Outcome::Insert(Ok(accepted))) = (command, outcome)
        && !accepted.duplicate
    {
        due.extend(
            event
                .destinations
                .iter()
                .map(|routed| routed.destination.clone()),
        );
    }
}

/// Announces a commit's due destinations, once each (a batch of a thousand events for one
/// destination wakes it once). No subscriber is not an error.
fn announce(changes: &tokio::sync::broadcast::Sender<Change>, mut due: Vec<Name>) {
    if due.is_empty() {
        return;
    }
    due.sort_unstable();
    due.dedup();
    let _ = changes.send(Change::Due(due));
}

/// Runs the batch in one transaction. Commands almost never fail, so the fast path has no
/// savepoints; if one does fail, the transaction is rolled back and the batch redone with a
/// savepoint per command, so the failure spoils no other command. Answers everything at
/// once except the committed commands that need a flush: those it returns.
pub(super) fn apply_batch(
    conn: &mut Connection,
    batch: &mut Vec<Command>,
    dedup: &mut DedupIndex,
) -> Applied {
    let started = std::time::Instant::now();
    let mut result = run_in_transaction(conn, batch, false, dedup);
    if let Ok((outcomes, _)) = &result
        && outcomes.iter().any(Outcome::failed)
    {
        result = run_in_transaction(conn, batch, true, dedup);
    }
    let total = started.elapsed();
    let size = batch.len();
    let telemetry = crate::telemetry::get();
    telemetry.commit_batch_size.observe(size as f64);
    telemetry.commit_seconds.observe(total.as_secs_f64());
    if total > std::time::Duration::from_millis(50) {
        tracing::warn!(size, total_ms = total.as_millis(), "slow store commit");
    } else {
        tracing::trace!(size, total_us = total.as_micros(), "commit");
    }
    match result {
        Ok((outcomes, commit_error)) => {
            if let Some(error) = &commit_error {
                tracing::error!(%error, "store commit failed; the whole batch is refused");
            }
            let problem = commit_error.map(|error| format!("commit failed: {error}"));
            let mut applied = Applied::default();
            for (command, outcome) in batch.drain(..).zip(outcomes) {
                if problem.is_none() {
                    made_due(&command, &outcome, &mut applied.due);
                }
                let waits = problem.is_none() && command.needs_flush() && !outcome.failed();
                let answer = reply(command, outcome);
                match waits {
                    true => applied.durable.push(answer),
                    false => answer(problem.as_deref()),
                }
            }
            applied
        }
        Err(err) => {
            let error = err.to_string();
            tracing::error!(%error, "store transaction could not start");
            for command in batch.drain(..) {
                reject(command, &error);
            }
            Applied::default()
        }
    }
}

type BatchResult = rusqlite::Result<(Vec<Outcome>, Option<String>)>;

/// Runs the batch; the dedup index learns the batch's keys only if its commit succeeds.
fn run_in_transaction(
    conn: &mut Connection,
    batch: &[Command],
    isolate: bool,
    dedup: &mut DedupIndex,
) -> BatchResult {
    dedup.discard();
    let result = run_commands(conn, batch, isolate, dedup);
    match &result {
        Ok((outcomes, None)) if isolate || !outcomes.iter().any(Outcome::failed) => dedup.commit(),
        _ => dedup.discard(),
    }
    result
}

fn run_commands(
    conn: &mut Connection,
    batch: &[Command],
    isolate: bool,
    dedup: &mut DedupIndex,
) -> BatchResult {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for command in batch {
        if !isolate {
            outcomes.push(execute(&tx, command, dedup));
            continue;
        }
        let mut savepoint = tx.savepoint()?;
        let staged_before = dedup.staged_len();
        let outcome = execute(&savepoint, command, dedup);
        if outcome.failed() {
            savepoint.rollback()?;
            dedup.truncate_staged(staged_before);
        }
        savepoint.commit()?;
        outcomes.push(outcome);
    }
    if !isolate && outcomes.iter().any(Outcome::failed) {
        tx.rollback()?;
        return Ok((outcomes, None));
    }
    let commit_error = tx.commit().err().map(|err| err.to_string());
    Ok((outcomes, commit_error))
}

fn reject(command: Command, error: &str) {
    let err = || StoreError::Unavailable(error.to_owned());
    match command {
        Command::Insert(_, tx) => drop(tx.send(Err(err()))),
        Command::Claim(_, tx) => drop(tx.send(Err(err()))),
        Command::Complete(_, tx) | Command::Release(_, _, tx) | Command::Ping(_, tx) => {
            drop(tx.send(Err(err())))
        }
        Command::Replay(_, _, tx) => drop(tx.send(Err(err()))),
        Command::Write(_, tx) => drop(tx.send(Err(err()))),
    }
}
