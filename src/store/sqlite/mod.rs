//! Embedded store: SQLite in WAL mode with synchronous=FULL, one group-committing writer
//! thread, a reader connection, and checkpoints kept off the commit path.

mod admin;
mod browse;
mod checkpoint;
mod dedup;
mod identity;
mod latest;
mod ops;
mod query;
mod read;
mod retention;
mod schema;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::domain::{DeliveryId, EventId, UnixMillis, now_millis};
use crate::store::{
    Accepted, AttemptRecord, AttemptView, BulkScope, BulkStep, CancelOutcome, ClaimRequest,
    Claimed, Cursor, DeliverySummary, DestinationStats, EventDetail, EventSummary, Filter, JobView,
    Lease, NewEvent, Page, ReplayOutcome, Store, StoreError, StoredRequest,
};
use ops::backend;
use writer::Command;

/// Commands waiting for the writer; a full queue makes ingest wait (backpressure), not fail.
const QUEUE_DEPTH: usize = 8192;
const WAL_CAP_BYTES: i64 = 64 * 1024 * 1024;

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
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Held for the life of a server: one server per database file.
    _lock: Option<File>,
    stop_checkpoints: Option<std::sync::mpsc::Sender<()>>,
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
    // FULL: the WAL is fsynced at every commit, so a 2xx survives power loss.
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
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer::run(conn, queue, &flag, dedup, files))
            .map_err(|err| StoreError::Backend(format!("cannot start writer thread: {err}")))?;
        let stop_checkpoints = match mode {
            OpenMode::Server => Some(checkpoint::spawn_checkpointer(path, finish_checkpoint)?),
            OpenMode::Client => None,
        };
        Ok(Self {
            commands,
            reader: Arc::new(Mutex::new(reader)),
            path: path.to_owned(),
            _lock: lock,
            stop_checkpoints,
        })
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
        let reader = self.reader.clone();
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

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn insert_event(&self, event: NewEvent) -> Result<Accepted, StoreError> {
        self.call(|reply| Command::Insert(Box::new(event), reply))
            .await
    }

    async fn claim(&self, request: ClaimRequest) -> Result<Claimed, StoreError> {
        self.call(|reply| Command::Claim(request, reply)).await
    }

    async fn complete(&self, record: AttemptRecord) -> Result<(), StoreError> {
        self.call(|reply| Command::Complete(record, reply)).await
    }

    async fn release(&self, leases: Vec<Lease>, now: UnixMillis) -> Result<(), StoreError> {
        self.call(|reply| Command::Release(leases, now, reply))
            .await
    }

    async fn list_events(
        &self,
        filter: Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<EventSummary>, StoreError> {
        self.read(move |conn| browse::list_events(conn, &filter, after.as_ref(), limit))
            .await
    }

    async fn event(&self, id: &EventId) -> Result<Option<EventDetail>, StoreError> {
        let id = id.clone();
        self.read(move |conn| browse::event(conn, &id)).await
    }

    async fn list_deliveries(
        &self,
        filter: Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<DeliverySummary>, StoreError> {
        self.read(move |conn| read::list_deliveries(conn, &filter, after.as_ref(), limit))
            .await
    }

    async fn cancel(&self, id: &DeliveryId, now: UnixMillis) -> Result<CancelOutcome, StoreError> {
        let id = id.clone();
        self.write(move |conn| admin::cancel(conn, &id, now)).await
    }

    async fn bulk_count(
        &self,
        scope: BulkScope,
        examples: usize,
    ) -> Result<(u64, Vec<DeliverySummary>, Cursor), StoreError> {
        self.read(move |conn| browse::bulk_count(conn, &scope, examples))
            .await
    }

    async fn create_job(
        &self,
        id: String,
        scope: BulkScope,
        matched: u64,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.write(move |conn| admin::create_job(conn, &id, &scope, matched, now))
            .await
    }

    async fn bulk_step(
        &self,
        job: String,
        scope: BulkScope,
        after: Option<Cursor>,
        limit: usize,
        now: UnixMillis,
    ) -> Result<BulkStep, StoreError> {
        self.write(move |conn| admin::bulk_step(conn, &job, &scope, after.as_ref(), limit, now))
            .await
    }

    async fn finish_job(
        &self,
        job: String,
        error: Option<String>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.write(move |conn| admin::finish_job(conn, &job, error.as_deref(), now))
            .await
    }

    async fn job(&self, id: &str) -> Result<Option<JobView>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| browse::job(conn, &id)).await
    }

    async fn destination_stats(&self) -> Result<Vec<DestinationStats>, StoreError> {
        self.read(browse::destination_stats).await
    }

    async fn prune_step(
        &self,
        policy: crate::domain::Retention,
        after: Option<Cursor>,
        now: UnixMillis,
    ) -> Result<crate::store::PruneStep, StoreError> {
        self.write(move |conn| retention::prune_step(conn, &policy, after.as_ref(), now))
            .await
    }

    async fn delivery_gauges(&self) -> Result<Vec<crate::store::DeliveryGauge>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT destination, state, COUNT(*), MIN(created_at) FROM deliveries
                 WHERE state IN ('pending', 'in_flight', 'dead', 'superseded')
                 GROUP BY destination, state",
            )?
            .query_map([], |row| {
                Ok(crate::store::DeliveryGauge {
                    destination: row.get(0)?,
                    state: read::state_at(row, 1)?,
                    count: row.get::<_, i64>(2)?.max(0) as u64,
                    oldest: row.get(3)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn paused_destinations(&self) -> Result<Vec<(String, bool)>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT name, paused FROM destination_state ORDER BY name")?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .await
    }

    async fn set_paused(
        &self,
        destination: &str,
        paused: bool,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let destination = destination.to_owned();
        self.write(move |conn| admin::set_paused(conn, &destination, paused, now))
            .await
    }

    async fn delivery(
        &self,
        id: &DeliveryId,
    ) -> Result<Option<(DeliverySummary, Vec<AttemptView>)>, StoreError> {
        let id = id.clone();
        self.read(move |conn| read::delivery(conn, &id)).await
    }

    async fn replay(&self, id: &DeliveryId, now: UnixMillis) -> Result<ReplayOutcome, StoreError> {
        let id = id.clone();
        self.call(|reply| Command::Replay(id, now, reply)).await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.call(|reply| Command::Ping(now_millis(), reply)).await
    }

    async fn backlog(&self, cap: u64) -> Result<u64, StoreError> {
        self.read(move |conn| read::backlog(conn, cap)).await
    }

    async fn load_request(&self, event: &EventId) -> Result<StoredRequest, StoreError> {
        let event = event.clone();
        self.read(move |conn| read::load_request(conn, &event))
            .await
    }

    async fn waiting_by_destination(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(read::waiting_by_destination).await
    }
}

#[cfg(test)]
mod admin_tests;
#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod latest_tests;
#[cfg(test)]
mod tests;
