//! The WAL's fsync on a thread of its own. The writer commits with `synchronous=NORMAL`
//! (the batch's frames are written to the WAL, not synced), hands the answers that promise
//! durability here and goes on with the next batch; they are sent after one `fdatasync` of
//! the WAL that began after their commit. That is what `synchronous=FULL` does at the end of
//! each commit, moved off the writer's path, so one batch's flush overlaps the next one's
//! inserts, and several batches share one flush.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use super::identity::Identity;

/// A command's answer, sent once its batch is decided: `None` when it stands, or the
/// problem that turns a success into an error.
pub type Reply = Box<dyn FnOnce(Option<&str>) + Send>;

/// Answers waiting for a flush, with the WAL the writer checked before committing them.
struct Committed {
    replies: Vec<Reply>,
    wal: Option<Identity>,
}

pub struct Flusher {
    queue: mpsc::Sender<Committed>,
    failure: Arc<Mutex<Option<String>>>,
    waiting: Arc<Waiting>,
}

/// Whether a flush is running or about to, and whether the writer holds a batch open until
/// it ends. The two flags are read and written in opposite orders by the two threads
/// (sequentially consistent), so either the writer sees the flush over or the flusher sees
/// the batch held and nudges the writer: a held batch is never forgotten.
struct Waiting {
    /// Batches handed over and not yet answered.
    batches: AtomicUsize,
    holding: AtomicBool,
    /// Wakes the writer (a message in its queue).
    nudge: Box<dyn Fn() + Send + Sync>,
}

impl Flusher {
    /// `nudge` wakes the writer when a flush it holds a batch for has ended.
    pub fn spawn(
        wal_path: PathBuf,
        nudge: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let mut wal = None;
        Self::spawn_with(move |expected| flush(&mut wal, &wal_path, expected), nudge)
    }

    /// With another way to reach the disk (tests hold it to see what waits for it).
    pub(super) fn spawn_with(
        sync: impl FnMut(Option<Identity>) -> Result<(), String> + Send + 'static,
        nudge: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let (queue, committed) = mpsc::channel();
        let failure = Arc::new(Mutex::new(None));
        let failed = failure.clone();
        let waiting = Arc::new(Waiting {
            batches: AtomicUsize::new(0),
            holding: AtomicBool::new(false),
            nudge: Box::new(nudge),
        });
        let answered = waiting.clone();
        std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || run(&committed, sync, &failed, &answered))?;
        Ok(Self {
            queue,
            failure,
            waiting,
        })
    }

    /// Whether a flush is running (or about to), so what the writer commits now would wait
    /// for the next one anyway; if so the writer may hold its batch open, and is nudged
    /// once the flusher has nothing left to flush.
    pub fn hold_until_flushed(&self) -> bool {
        self.waiting.holding.store(true, Ordering::SeqCst);
        if self.waiting.batches.load(Ordering::SeqCst) > 0 {
            return true;
        }
        self.waiting.holding.store(false, Ordering::SeqCst);
        false
    }

    /// Answers these after a flush that covers what is committed now.
    pub fn after_flush(&self, replies: Vec<Reply>, wal: Option<Identity>) {
        if replies.is_empty() {
            return;
        }
        self.waiting.batches.fetch_add(1, Ordering::SeqCst);
        if let Err(mpsc::SendError(committed)) = self.queue.send(Committed { replies, wal }) {
            self.waiting.batches.fetch_sub(1, Ordering::SeqCst);
            for reply in committed.replies {
                reply(Some("the store's flush thread has stopped"));
            }
        }
    }

    /// Set once a flush failed: what the page cache held may never reach the disk, and a
    /// later flush that succeeds proves nothing about it, so nothing is acknowledged again
    /// until a restart reads the files back.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

fn run(
    committed: &mpsc::Receiver<Committed>,
    mut sync: impl FnMut(Option<Identity>) -> Result<(), String>,
    failure: &Mutex<Option<String>>,
    answered: &Waiting,
) {
    while let Ok(first) = committed.recv() {
        let mut waiting = vec![first];
        waiting.extend(committed.try_iter());
        let taken = waiting.len();
        // The writer checked the WAL before its latest batch; that is the file to sync.
        let expected = waiting.iter().rev().find_map(|batch| batch.wal);
        let known = failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let problem = match known {
            Some(problem) => Some(problem),
            None => {
                let started = std::time::Instant::now();
                let result = sync(expected);
                crate::telemetry::get()
                    .flush_seconds
                    .observe(started.elapsed().as_secs_f64());
                result.err().inspect(|problem| {
                    tracing::error!(%problem, "the store's WAL could not be flushed; refusing writes until a restart");
                    *failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                        Some(problem.clone());
                })
            }
        };
        for reply in waiting.into_iter().flat_map(|batch| batch.replies) {
            reply(problem.as_deref());
        }
        let left = answered.batches.fetch_sub(taken, Ordering::SeqCst) - taken;
        if left == 0 && answered.holding.swap(false, Ordering::SeqCst) {
            (answered.nudge)();
        }
    }
}

/// One `fdatasync` of the WAL file the writer writes. The file is opened once (SQLite keeps
/// it for as long as the store is open, see `persist_wal`) and checked to be the one the
/// writer checked, so a file replaced under the server is never the one synced.
fn flush(
    wal: &mut Option<(File, Identity)>,
    wal_path: &Path,
    expected: Option<Identity>,
) -> Result<(), String> {
    if wal
        .as_ref()
        .is_none_or(|(_, id)| expected.is_some_and(|e| e != *id))
    {
        let file = File::open(wal_path)
            .map_err(|err| format!("cannot open {} to flush it: {err}", wal_path.display()))?;
        let meta = file.metadata().map_err(|err| err.to_string())?;
        let id = (meta.dev(), meta.ino());
        if expected.is_some_and(|e| e != id) {
            return Err(format!(
                "{} was replaced while in use; restart hookrelay to open the store again",
                wal_path.display()
            ));
        }
        // A WAL created since the last directory sync is not found after a power cut
        // unless its directory entry is on disk too.
        let dir = match wal_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| format!("cannot sync {}: {err}", dir.display()))?;
        *wal = Some((file, id));
    }
    let (file, _) = wal.as_ref().expect("opened above");
    file.sync_data()
        .map_err(|err| format!("fdatasync of {} failed: {err}", wal_path.display()))
}
