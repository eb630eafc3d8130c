//! The single writer thread: group commit. Every write waiting in the queue shares one
//! transaction (`batch.rs`); a failing command is isolated so it spoils no other. Answers
//! that promise durability wait for the flush thread's fsync (`flusher.rs`) while the next
//! batch runs; a batch of only such writes stays open while a flush runs (it would wait for
//! the next flush anyway), taking in what arrives, and commits when the flush ends.

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::batch::Batch;
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
    /// From the flush thread: the flush a held batch waited for has ended.
    Flushed,
}

pub type Answer = Box<dyn std::any::Any + Send>;
pub type WriteFn = Box<dyn Fn(&Connection) -> Result<Answer, StoreError> + Send>;

/// A command's result, held until the batch's commit decides whether it stands.
pub(super) enum Outcome {
    Insert(Result<Accepted, StoreError>),
    Claim(Result<Claimed, StoreError>),
    Unit(Result<(), StoreError>),
    Replay(Result<(ReplayOutcome, Option<String>), StoreError>),
    Write(Result<Answer, StoreError>),
}

impl Outcome {
    pub(super) fn failed(&self) -> bool {
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
    pub(super) fn needs_flush(&self) -> bool {
        match self {
            Command::Claim(request, _) => request.durable,
            Command::Complete(..) | Command::Release(..) | Command::Flushed => false,
            Command::Insert(..) | Command::Replay(..) | Command::Ping(..) | Command::Write(..) => {
                true
            }
        }
    }
}

pub(super) fn execute(conn: &Connection, command: &Command, dedup: &mut DedupIndex) -> Outcome {
    match command {
        Command::Insert(event, _) => Outcome::Insert(insert_event(conn, event, dedup)),
        Command::Claim(request, _) => Outcome::Claim(claim(conn, request)),
        Command::Complete(record, _) => Outcome::Unit(complete(conn, record)),
        Command::Release(leases, now, _) => Outcome::Unit(release(conn, leases, *now)),
        Command::Replay(id, now, _) => Outcome::Replay(replay(conn, id, *now)),
        Command::Ping(now, _) => Outcome::Unit(heartbeat(conn, *now)),
        Command::Write(write, _) => Outcome::Write(write(conn)),
        Command::Flushed => Outcome::Unit(Ok(())),
    }
}

/// A command's answer, to send when its batch is decided: a commit (or flush) failure turns
/// every success into an error. The event's body is dropped here, not kept until the flush.
/// A caller that went away (client disconnected) no longer needs its answer.
pub(super) fn reply(command: Command, outcome: Outcome) -> Reply {
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
        (Command::Flushed, _) => Box::new(|_| {}),
        _ => {
            tracing::error!("store outcome does not match its command");
            Box::new(|_| {})
        }
    }
}

pub fn run(
    conn: Connection,
    mut queue: mpsc::Receiver<Command>,
    finish_checkpoint: &AtomicBool,
    dedup: DedupIndex,
    files: Files,
    flusher: Flusher,
    changes: tokio::sync::broadcast::Sender<Change>,
) {
    // Commits write the WAL without syncing it; the flusher syncs it before durable answers.
    // Were this refused, commits would stay on FULL: slower, and as safe.
    if let Err(err) = conn.pragma_update(None, "synchronous", "NORMAL") {
        tracing::warn!(error = %err, "commits keep their own fsync");
    }
    let mut writer = Writer {
        conn,
        dedup,
        files,
        flusher,
        changes,
        batch: Batch::default(),
        lost: None,
    };
    while let Some(first) = queue.blocking_recv() {
        writer.notice_failed_flush();
        writer.take(first);
        while writer.batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(command) => writer.take(command),
                Err(_) => break,
            }
        }
        if writer.batch.is_empty() {
            continue;
        }
        // Committed now, these would be answered after the next flush all the same: the
        // batch stays open, taking in what arrives, until the running flush ends.
        if writer.batch.len() < MAX_BATCH
            && writer.batch.only_durable()
            && writer.flusher.hold_until_flushed()
        {
            continue;
        }
        writer.commit();
        if finish_checkpoint.swap(false, AtomicOrdering::AcqRel) {
            finish_wal_checkpoint(&writer.conn);
        }
    }
    writer.commit();
}

struct Writer {
    conn: Connection,
    dedup: DedupIndex,
    files: Files,
    flusher: Flusher,
    changes: tokio::sync::broadcast::Sender<Change>,
    batch: Batch,
    /// Once the files are gone or a flush failed, nothing is acknowledged again until a
    /// restart: a commit to a deleted file would be a 2xx for an event that no longer
    /// exists anywhere.
    lost: Option<String>,
}

impl Writer {
    /// Once per wake-up, not per command: a failed flush refuses everything after it.
    fn notice_failed_flush(&mut self) {
        if self.lost.is_none() {
            self.lost = self.flusher.failure();
        }
    }

    fn take(&mut self, command: Command) {
        if matches!(command, Command::Flushed) {
            return;
        }
        match &self.lost {
            Some(problem) => reject(command, problem),
            None => self.batch.take(&self.conn, &mut self.dedup, command),
        }
    }

    fn commit(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        if self.lost.is_none()
            && let Err(problem) = self.files.check()
        {
            tracing::error!(%problem, "store files changed under the server; refusing writes");
            self.lost = Some(problem);
        }
        let applied = self
            .batch
            .finish(&self.conn, &mut self.dedup, self.lost.as_deref());
        announce(&self.changes, applied.due);
        self.flusher
            .after_flush(applied.durable, self.files.wal_id());
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
pub(super) fn made_due(command: &Command, outcome: &Outcome, due: &mut Vec<Name>) {
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

/// Runs `batch` as one transaction and commits it (the writer thread's batches, formed
/// for certain: for tests of isolation).
#[cfg(test)]
pub(super) fn apply_batch(
    conn: &mut Connection,
    batch: &mut Vec<Command>,
    dedup: &mut DedupIndex,
) -> Applied {
    let mut open = Batch::default();
    for command in batch.drain(..) {
        open.take(conn, dedup, command);
    }
    open.finish(conn, dedup, None)
}

pub(super) fn reject(command: Command, error: &str) {
    let err = || StoreError::Unavailable(error.to_owned());
    match command {
        Command::Insert(_, tx) => drop(tx.send(Err(err()))),
        Command::Claim(_, tx) => drop(tx.send(Err(err()))),
        Command::Complete(_, tx) | Command::Release(_, _, tx) | Command::Ping(_, tx) => {
            drop(tx.send(Err(err())))
        }
        Command::Replay(_, _, tx) => drop(tx.send(Err(err()))),
        Command::Write(_, tx) => drop(tx.send(Err(err()))),
        Command::Flushed => {}
    }
}
