//! The writer's open transaction: commands run as they arrive and are committed together, so
//! a batch can keep growing while a flush runs and its statements do not wait for the flush
//! to end (only the commit does).
//!
//! Commands almost never fail, so they run without savepoints; when one fails, the
//! transaction is rolled back and every command in it run again, from then on each in a
//! savepoint of its own, so the failure spoils no other command.

use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::dedup::DedupIndex;
use super::writer::{Applied, Command, Outcome, execute, made_due, reject, reply};

/// Commands run in one transaction that is still open.
#[derive(Default)]
pub(super) struct Batch {
    commands: Vec<Command>,
    outcomes: Vec<Outcome>,
    /// Commands answered at commit (bookkeeping) in the batch, counted as they come.
    answered_at_commit: usize,
    /// Each command in a savepoint of its own (once one failed).
    isolate: bool,
    open: bool,
    /// Time spent running statements and committing, not the time the batch was held.
    busy: Duration,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Whether every command's answer waits for a flush anyway (bookkeeping is answered at
    /// its commit, so a batch holding any is never kept open).
    pub fn only_durable(&self) -> bool {
        self.answered_at_commit == 0
    }

    /// Runs `command` in the open transaction, opening one first if needed.
    pub fn take(&mut self, conn: &Connection, dedup: &mut DedupIndex, command: Command) {
        let started = Instant::now();
        if !self.open {
            dedup.discard();
            if let Err(err) = conn.execute_batch("BEGIN IMMEDIATE") {
                let error = format!("store transaction could not start: {err}");
                tracing::error!(%error);
                reject(command, &error);
                return;
            }
            self.open = true;
        }
        match self.run(conn, dedup, &command) {
            Ok(outcome) => {
                let failed = outcome.failed();
                self.answered_at_commit += usize::from(!command.needs_flush());
                self.commands.push(command);
                self.outcomes.push(outcome);
                if failed && !self.isolate {
                    self.redo_isolated(conn, dedup);
                }
            }
            Err(err) => {
                self.commands.push(command);
                self.abort(conn, dedup, &format!("store transaction failed: {err}"));
            }
        }
        self.busy += started.elapsed();
    }

    fn run(
        &self,
        conn: &Connection,
        dedup: &mut DedupIndex,
        command: &Command,
    ) -> rusqlite::Result<Outcome> {
        if !self.isolate {
            return Ok(execute(conn, command, dedup));
        }
        conn.execute_batch("SAVEPOINT command")?;
        let staged = dedup.staged_len();
        let outcome = execute(conn, command, dedup);
        if outcome.failed() {
            conn.execute_batch("ROLLBACK TO command")?;
            dedup.truncate_staged(staged);
        }
        conn.execute_batch("RELEASE command")?;
        Ok(outcome)
    }

    /// Rolls back and runs every command again, each in a savepoint.
    fn redo_isolated(&mut self, conn: &Connection, dedup: &mut DedupIndex) {
        self.isolate = true;
        dedup.discard();
        let restarted = conn
            .execute_batch("ROLLBACK")
            .and_then(|()| conn.execute_batch("BEGIN IMMEDIATE"));
        if let Err(err) = restarted {
            self.open = false;
            return self.abort(conn, dedup, &format!("store transaction failed: {err}"));
        }
        let mut outcomes = Vec::with_capacity(self.commands.len());
        for command in &self.commands {
            match self.run(conn, dedup, command) {
                Ok(outcome) => outcomes.push(outcome),
                Err(err) => {
                    return self.abort(conn, dedup, &format!("store transaction failed: {err}"));
                }
            }
        }
        self.outcomes = outcomes;
    }

    /// Refuses every command of the batch; nothing of it stays.
    fn abort(&mut self, conn: &Connection, dedup: &mut DedupIndex, error: &str) {
        tracing::error!(%error, "store batch refused");
        if self.open {
            let _ = conn.execute_batch("ROLLBACK");
        }
        dedup.discard();
        for command in self.commands.drain(..) {
            reject(command, error);
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.outcomes.clear();
        self.answered_at_commit = 0;
        self.isolate = false;
        self.open = false;
        self.busy = Duration::ZERO;
    }

    /// Commits what ran, or with `refuse` rolls it back and refuses it. Answers every
    /// command except the committed ones that wait for a flush, which it returns.
    pub fn finish(
        &mut self,
        conn: &Connection,
        dedup: &mut DedupIndex,
        refuse: Option<&str>,
    ) -> Applied {
        if self.commands.is_empty() {
            self.reset();
            return Applied::default();
        }
        let started = Instant::now();
        let problem = match refuse {
            Some(problem) => {
                let _ = conn.execute_batch("ROLLBACK");
                Some(problem.to_owned())
            }
            None => conn.execute_batch("COMMIT").err().map(|err| {
                tracing::error!(error = %err, "store commit failed; the whole batch is refused");
                let _ = conn.execute_batch("ROLLBACK");
                format!("commit failed: {err}")
            }),
        };
        match problem {
            None => dedup.commit(),
            Some(_) => dedup.discard(),
        }
        self.observe(started.elapsed());
        let mut applied = Applied::default();
        for (command, outcome) in self.commands.drain(..).zip(self.outcomes.drain(..)) {
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
        self.reset();
        applied
    }

    fn observe(&self, commit: Duration) {
        let total = self.busy + commit;
        let size = self.commands.len();
        let telemetry = crate::telemetry::get();
        telemetry.commit_batch_size.observe(size as f64);
        telemetry.commit_seconds.observe(total.as_secs_f64());
        if total > Duration::from_millis(50) {
            tracing::warn!(size, total_ms = total.as_millis(), "slow store commit");
        } else {
            tracing::trace!(size, total_us = total.as_micros(), "commit");
        }
    }
}
