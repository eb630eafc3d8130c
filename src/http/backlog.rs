//! The backlog limit: deliveries waiting, as the store last counted them plus what this
//! process has added since, so a burst cannot overshoot by a second's worth.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use crate::store::Store;

/// How often a count raced by an ingest is tried again before the watcher settles for an
/// upper bound.
const QUIET_TRIES: u32 = 20;
const QUIET_WAIT: Duration = Duration::from_millis(5);

/// Deliveries waiting against the configured limit.
///
/// A count is only exact when no ingest was between [`Backlog::adding`] and its commit when
/// the count began, and none began during it: an ingest added before the count and committed
/// after its snapshot would be lost by a plain overwrite (a late 202 past the limit), and one
/// committed before the snapshot but counted again would refuse early (a 503 under the limit).
pub struct Backlog {
    limit: Option<u64>,
    current: AtomicU64,
    /// Deliveries added and not yet committed or taken back.
    in_flight: AtomicU64,
    /// Every delivery ever added: a change across a count means an ingest raced it.
    added_total: AtomicU64,
}

impl Backlog {
    pub fn new(limit: Option<u64>) -> Self {
        Self {
            limit,
            current: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            added_total: AtomicU64::new(0),
        }
    }

    pub fn full(&self) -> bool {
        self.limit
            .is_some_and(|limit| self.current.load(SeqCst) >= limit)
    }

    /// Deliveries an ingest is about to commit, settled by [`Adding::committed`] or
    /// [`Adding::taken_back`]. Dropped unsettled (the client hung up during the commit), the
    /// figure stays counted until the next count, which is then exact again.
    pub fn adding(&self, deliveries: u64) -> Adding<'_> {
        self.added_total.fetch_add(deliveries, SeqCst);
        self.in_flight.fetch_add(deliveries, SeqCst);
        self.current.fetch_add(deliveries, SeqCst);
        Adding {
            backlog: self,
            deliveries,
        }
    }

    /// Counts the store's backlog every second until `stop`.
    pub async fn watch(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let Some(limit) = self.limit else { return };
        loop {
            for attempt in 1..=QUIET_TRIES {
                let added_before = self.added_total.load(SeqCst);
                let in_flight = self.in_flight.load(SeqCst);
                let count = match store.backlog(limit.saturating_add(1)).await {
                    Ok(count) => count,
                    Err(err) => {
                        tracing::debug!(error = %err, "backlog count failed");
                        break;
                    }
                };
                let added_during = self.added_total.load(SeqCst) - added_before;
                if in_flight == 0 && added_during == 0 {
                    self.current.store(count, SeqCst);
                    break;
                }
                if attempt == QUIET_TRIES {
                    // Ingest never paused: whatever raced may be in the count already, so
                    // this can only be high, by at most what was in flight.
                    self.current.store(count + in_flight + added_during, SeqCst);
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(QUIET_WAIT) => {}
                    _ = stop.cancelled() => return,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// An ingest's deliveries between [`Backlog::adding`] and the end of its commit.
pub struct Adding<'a> {
    backlog: &'a Backlog,
    deliveries: u64,
}

impl Adding<'_> {
    pub fn committed(self) {}

    /// Nothing was added (a duplicate, an error). The watcher may have replaced the figure
    /// meanwhile, so it never goes below zero.
    pub fn taken_back(self) {
        let deliveries = self.deliveries;
        let _ = self
            .backlog
            .current
            .fetch_update(SeqCst, SeqCst, |n| Some(n.saturating_sub(deliveries)));
    }
}

impl Drop for Adding<'_> {
    fn drop(&mut self) {
        self.backlog.in_flight.fetch_sub(self.deliveries, SeqCst);
    }
}
