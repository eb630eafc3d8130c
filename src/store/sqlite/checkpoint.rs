//! Checkpoints on their own thread, so no commit waits for one (see `checkpoint`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rusqlite::Connection;

use super::open_connection;
use super::ops::backend;
use crate::store::StoreError;

/// WAL pages (4 KiB) after which the WAL is made to start over; `journal_size_limit` then
/// trims the file to `WAL_CAP_BYTES`.
const WAL_RESTART_PAGES: i64 = 2 * 1024;
/// Frames the writer may be left to copy when it finishes a checkpoint.
const SMALL_TAIL_PAGES: i64 = 128;
/// Small, frequent checkpoints keep each one's fsync short.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

pub(super) fn spawn_checkpointer(
    path: &Path,
    writer_should_finish: Arc<AtomicBool>,
) -> Result<std::sync::mpsc::Sender<()>, StoreError> {
    let conn = open_connection(path).map_err(backend)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("store-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_INTERVAL)
            {
                checkpoint(&conn, &writer_should_finish);
            }
            checkpoint(&conn, &writer_should_finish);
        })
        .map_err(|err| StoreError::Backend(format!("cannot start checkpoint thread: {err}")))?;
    Ok(stop)
}

/// Checkpoints run beside the writer, passive, so they never block it. Under continuous load,
/// though, a passive checkpoint never leaves the WAL fully copied at the moment the writer
/// begins, so the WAL would never start over and would grow (and appending to a growing file
/// costs far more than rewriting one already in the page cache). So once the WAL is large and
/// a checkpoint has copied nearly all of it, the writer is asked to finish the job between two
/// batches: its own passive checkpoint copies only the last few frames, and its next
/// transaction starts the WAL over.
fn checkpoint(conn: &Connection, writer_should_finish: &AtomicBool) {
    let passive = || {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        })
    };
    let (mut wal_pages, mut copied) = match passive() {
        Ok(counts) => counts,
        Err(err) => {
            tracing::warn!(error = %err, "checkpoint failed");
            return;
        }
    };
    if wal_pages < WAL_RESTART_PAGES {
        return;
    }
    // Each pass copies what the writer added during the previous one, so passes shrink; once
    // the tail is small, the writer's share of the work (and of the fsync) is small too.
    for _ in 0..4 {
        let before = wal_pages;
        match passive() {
            Ok(counts) => (wal_pages, copied) = counts,
            Err(_) => return,
        }
        if wal_pages - before <= SMALL_TAIL_PAGES {
            break;
        }
    }
    if copied == wal_pages {
        writer_should_finish.store(true, std::sync::atomic::Ordering::Release);
    }
}
