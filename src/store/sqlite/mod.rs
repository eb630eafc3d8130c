//! Embedded store: SQLite in WAL mode, one group-committing writer thread whose durable
//! answers wait for a flush thread's fsync of the WAL, a reader connection for delivery and
//! another for inspection, and checkpoints kept off the commit path.

mod admin;
mod batch;
mod browse;
mod checkpoint;
mod dedup;
mod flusher;
mod identity;
mod jobs;
mod latest;
mod ops;
mod query;
mod read;
mod retention;
pub(crate) mod schema;
mod sessions;
mod store_impl;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::domain::now_millis;
use crate::store::StoreError;
use ops::backend;
use writer::Command;

/// Commands waiting for the writer; a full queue makes ingest wait (backpressure), not fail.
const QUEUE_DEPTH: usize = 8192;
const WAL_CAP_BYTES: i64 = 64 * 1024 * 1024;

/// Wakes the writer with a `Flushed` message. Weak: the writer stops once the store (every
/// strong sender) is gone, flusher or not. A full queue needs no nudge.
fn nudge(commands: &mpsc::Sender<Command>) -> impl Fn() + Send + Sync + 'static {
    let writer = commands.downgrade();
    move || {
        if let Some(writer) = writer.upgrade() {
            let _ = writer.try_send(Command::Flushed);
        }
    }
}

/// How the process will use the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The server: takes the file's lock, so leases left in the file belong to a process
    /// that is gone and are recovered at once.
    Server,
    /// Inspection next to a running server: no lock, no lease recovery, no migration.
    Client,
}

pub struct SqliteStore {
    commands: mpsc::Sender<Command>,
    /// For delivery and ingest's needs (loading requests, the backlog): never queued behind
    /// an operator's query.
    reader: Arc<Mutex<Connection>>,
    /// For inspection (API listings, figures, scrapes), which may scan.
    inspector: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Held for the life of a server: one server per database file.
    _lock: Option<File>,
    stop_checkpoints: Option<std::sync::mpsc::Sender<()>>,
    /// The change feed: the writer announces commits; operator writes announce themselves
    /// once committed.
    changes: tokio::sync::broadcast::Sender<crate::store::Change>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: the WAL is fsynced at every commit, so a 2xx survives power loss. The writer
    // alone moves that fsync to the flush thread (`flusher.rs`).
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Savepoint journals stay in memory instead of a temporary file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

impl SqliteStore {
    pub fn open(path: &Path, mode: OpenMode) -> Result<Self, StoreError> {
        if mode == OpenMode::Client && !path.exists() {
            return Err(StoreError::Missing(path.display().to_string()));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| {
                StoreError::Backend(format!("cannot create {}: {err}", parent.display()))
            })?;
        }
        let lock = match mode {
            OpenMode::Server => Some(identity::lock_database(path)?),
            OpenMode::Client => None,
        };
        let mut conn = open_connection(path).map_err(backend)?;
        // The WAL file keeps its size across restarts (up to `WAL_CAP_BYTES`), so starting
        // again on a full disk needs no new space for it.
        identity::persist_wal(&conn);
        // Checkpoints run on their own thread so no commit waits for one.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(backend)?;
        conn.pragma_update(None, "journal_size_limit", WAL_CAP_BYTES)
            .map_err(backend)?;
        match mode {
            OpenMode::Server => schema::migrate(&mut conn).map_err(backend)?,
            // A CLI command (even `config check` of a new release) never changes the schema
            // under a running server, so a rollback stays possible.
            OpenMode::Client => {
                schema::check_version(&conn).map_err(backend)?;
            }
        }
        if mode == OpenMode::Server {
            // We hold the lock, so every lease in the file belongs to an owner that is gone:
            // recover them now rather than at expiry. On a full disk this write fails, and
            // the leases are then recovered as they expire, as any backend does.
            match conn.execute(
                "UPDATE deliveries SET state = 'pending', due_at = ?1, lease_owner = NULL, interrupted = 1
                 WHERE state = 'in_flight'",
                [now_millis()],
            ) {
                Ok(0) => {}
                Ok(released) => {
                    tracing::info!(released, "released leases left by a previous process")
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not release old leases now; they expire on their own")
                }
            }
            match jobs::release_all(&conn) {
                Ok(0) => {}
                Ok(jobs) => {
                    tracing::info!(jobs, "unfinished jobs left by a previous process continue")
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not release old job leases now; they expire on their own")
                }
            }
        }
        // CLI commands never insert events, so only a server needs the recent keys.
        let dedup = match mode {
            OpenMode::Server => dedup::DedupIndex::load(&conn, now_millis()).map_err(backend)?,
            OpenMode::Client => dedup::DedupIndex::default(),
        };
        tracing::debug!(keys = dedup.len(), "dedup keys of the last window loaded");
        let reader = open_connection(path).map_err(backend)?;
        let (commands, queue) = mpsc::channel(QUEUE_DEPTH);
        let finish_checkpoint = Arc::new(AtomicBool::new(false));
        let flag = finish_checkpoint.clone();
        let files =
            identity::Files::of(path).map_err(|err| StoreError::Backend(err.to_string()))?;
        let (changes, _) = tokio::sync::broadcast::channel(crate::store::CHANGE_BUFFER);
        let announcer = changes.clone();
        let flusher = flusher::Flusher::spawn(files.wal_path().to_owned(), nudge(&commands))
            .map_err(|err| StoreError::Backend(format!("cannot start flush thread: {err}")))?;
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer::run(conn, queue, &flag, dedup, files, flusher, announcer))
            .map_err(|err| StoreError::Backend(format!("cannot start writer thread: {err}")))?;
        let stop_checkpoints = match mode {
            OpenMode::Server => Some(checkpoint::spawn_checkpointer(path, finish_checkpoint)?),
            OpenMode::Client => None,
        };
        Ok(Self {
            commands,
            reader: Arc::new(Mutex::new(reader)),
            inspector: Arc::new(Mutex::new(open_connection(path).map_err(backend)?)),
            path: path.to_owned(),
            _lock: lock,
            stop_checkpoints,
            changes,
        })
    }

    /// Announces an operator write's change, once it committed (no subscriber is fine).
    fn announce(&self, change: crate::store::Change) {
        let _ = self.changes.send(change);
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Unavailable("store writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("store writer has stopped".into()))?
    }

    /// Runs a write on the writer thread, inside its next batch.
    async fn write<T: Send + 'static>(
        &self,
        write: impl Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let boxed: writer::WriteFn =
            Box::new(move |conn| write(conn).map(|value| Box::new(value) as writer::Answer));
        let answer = self.call(|reply| Command::Write(boxed, reply)).await?;
        answer
            .downcast::<T>()
            .map(|value| *value)
            .map_err(|_| StoreError::Backend("write answered with the wrong type".into()))
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        Self::read_on(self.reader.clone(), query).await
    }

    /// A read for inspection, on its own connection.
    async fn inspect<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        Self::read_on(self.inspector.clone(), query).await
    }

    async fn read_on<T: Send + 'static>(
        reader: Arc<Mutex<Connection>>,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            query(&conn)
        })
        .await
        .map_err(|err| StoreError::Backend(format!("read task failed: {err}")))?
        .map_err(backend)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_checkpoints.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod flusher_tests;
#[cfg(test)]
mod tests;
