//! What waits for the WAL's fsync and what does not: the writer thread runs against a
//! flusher whose fsync the test holds, so "answered before the flush returned" is seen,
//! not timed.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc as std_mpsc;

use tokio::sync::{mpsc, oneshot};

use super::flusher::Flusher;
use super::tests::event;
use super::writer::{self, Command};
use super::*;
use crate::store::{Accepted, StoreError};

/// A running writer whose flushes the test starts and finishes by hand.
struct HeldWriter {
    _dir: tempfile::TempDir,
    commands: mpsc::Sender<Command>,
    flushes_begun: std_mpsc::Receiver<()>,
    finish_flush: std_mpsc::Sender<Result<(), String>>,
    /// The writer's announcements: one `Due` per commit that added events.
    commits: tokio::sync::broadcast::Receiver<crate::store::Change>,
}

impl HeldWriter {
    fn start() -> Self {
        let (dir, path, conn, dedup) = super::tests::writer_connection();
        let files = identity::Files::of(&path).unwrap();
        let (started, flushes_begun) = std_mpsc::channel();
        let (finish_flush, finished) = std_mpsc::channel::<Result<(), String>>();
        let (commands, queue) = mpsc::channel(16);
        let flusher = Flusher::spawn_with(
            move |_| {
                started.send(()).unwrap();
                let limit = std::time::Duration::from_secs(10);
                finished
                    .recv_timeout(limit)
                    .unwrap_or_else(|_| Err("the test never finished this flush".into()))
            },
            super::nudge(&commands),
        )
        .unwrap();
        let (changes, commits) = tokio::sync::broadcast::channel(8);
        std::thread::spawn(move || {
            let finish = AtomicBool::new(false);
            writer::run(conn, queue, &finish, dedup, files, flusher, changes)
        });
        Self {
            _dir: dir,
            commands,
            flushes_begun,
            finish_flush,
            commits,
        }
    }

    /// Waits for the flusher to begin a flush (it then holds it until `finish_flush`).
    fn flush_started(&self) {
        let limit = std::time::Duration::from_secs(10);
        if self.flushes_begun.recv_timeout(limit).is_err() {
            panic!("no flush began: nothing was left waiting for one");
        }
    }

    fn insert(&self, key: &str) -> oneshot::Receiver<Result<Accepted, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Insert(Box::new(event(Some(key), &["a"], 0)), reply);
        self.commands.blocking_send(command).unwrap();
        answer
    }

    fn release_nothing(&self) -> oneshot::Receiver<Result<(), StoreError>> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Release(Vec::new(), 0, reply);
        self.commands.blocking_send(command).unwrap();
        answer
    }
}

fn not_yet<T>(answer: &mut oneshot::Receiver<T>) -> bool {
    matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Empty))
}

#[test]
fn an_event_is_answered_only_after_a_flush_that_began_after_its_commit() {
    let writer = HeldWriter::start();
    let mut first = writer.insert("one");
    // The flush starts after the commit; until it returns, the answer is held.
    writer.flush_started();
    assert!(not_yet(&mut first), "answered before the WAL was flushed");
    // Meanwhile the writer goes on: bookkeeping is answered at once, and the next event is
    // committed with it but waits for a flush of its own (the one running began before it).
    let bookkeeping = writer.release_nothing();
    bookkeeping.blocking_recv().unwrap().unwrap();
    let mut second = writer.insert("two");
    // Commands run in order, so once this is answered the second event is committed.
    writer.release_nothing().blocking_recv().unwrap().unwrap();
    assert!(not_yet(&mut second), "answered before any flush covered it");
    writer.finish_flush.send(Ok(())).unwrap();
    assert!(!first.blocking_recv().unwrap().unwrap().duplicate);
    writer.flush_started();
    assert!(
        not_yet(&mut second),
        "answered by a flush that began before its commit"
    );
    writer.finish_flush.send(Ok(())).unwrap();
    assert!(!second.blocking_recv().unwrap().unwrap().duplicate);
}

#[test]
fn a_failed_flush_refuses_what_it_held_and_every_write_after_it() {
    let writer = HeldWriter::start();
    let held = writer.insert("one");
    writer.flush_started();
    writer
        .finish_flush
        .send(Err(
            "fdatasync of hr.db-wal failed: Input/output error".into()
        ))
        .unwrap();
    let refused = held.blocking_recv().unwrap().unwrap_err();
    assert!(
        refused.to_string().contains("Input/output error"),
        "{refused}"
    );
    // A later flush could succeed and still prove nothing about the pages the failed one
    // held, so nothing is acknowledged again, and no flush is even tried.
    let later = writer.insert("two").blocking_recv().unwrap().unwrap_err();
    assert!(later.to_string().contains("Input/output error"), "{later}");
    let bookkeeping = writer.release_nothing().blocking_recv().unwrap();
    assert!(bookkeeping.is_err());
    assert!(writer.flushes_begun.try_recv().is_err());
}

#[test]
fn events_arriving_during_a_flush_are_gathered_into_one_commit_after_it() {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut writer = HeldWriter::start();
    let first = writer.insert("one");
    writer.flush_started();
    assert!(
        writer.commits.try_recv().is_ok(),
        "the first commit is announced"
    );
    // Committed now, they would wait for the next flush all the same: the writer holds its
    // batch open until the running flush ends and commits them together.
    let second = writer.insert("two");
    let third = writer.insert("three");
    let commits = &mut writer.commits;
    let quiet = std::time::Instant::now() + std::time::Duration::from_millis(5);
    while std::time::Instant::now() < quiet {
        assert!(
            matches!(commits.try_recv(), Err(TryRecvError::Empty)),
            "committed while a flush ran, alone"
        );
        std::thread::yield_now();
    }
    writer.finish_flush.send(Ok(())).unwrap();
    assert!(!first.blocking_recv().unwrap().unwrap().duplicate);
    writer.flush_started();
    writer.finish_flush.send(Ok(())).unwrap();
    assert!(!second.blocking_recv().unwrap().unwrap().duplicate);
    assert!(!third.blocking_recv().unwrap().unwrap().duplicate);
    assert!(writer.commits.try_recv().is_ok(), "the gathered commit");
    assert!(
        matches!(writer.commits.try_recv(), Err(TryRecvError::Empty)),
        "two commits where one would do"
    );
}
