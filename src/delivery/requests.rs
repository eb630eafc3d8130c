//! Stored requests in memory for delivery: one shared copy per event, whatever number of
//! destinations forward it, all counted against one memory budget. When the budget is
//! spent, workers give claimed deliveries back and wait instead of loading more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::domain::EventId;
use crate::store::{Store, StoreError, StoredRequest};

/// Dead entries are swept once the map holds this many.
const SWEEP_ABOVE: usize = 1024;
/// How long a worker waits in line for memory before giving a delivery back.
const MEMORY_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// A request held for delivery; its memory is given back when the last holder drops it.
pub struct Loaded {
    pub request: StoredRequest,
    memory: Option<OwnedSemaphorePermit>,
    held: Arc<AtomicU64>,
    freed: Arc<Notify>,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        self.held
            .fetch_sub(self.request.body.len() as u64, Ordering::Relaxed);
        // The memory goes back first, so whoever is woken finds it free.
        drop(self.memory.take());
        self.freed.notify_waiters();
    }
}

pub struct Requests {
    store: Arc<dyn Store>,
    /// KiB of bodies that may be held at once.
    memory: Arc<Semaphore>,
    memory_kib: u32,
    loaded: Mutex<HashMap<EventId, Weak<Loaded>>>,
    /// Bytes of bodies actually held (the semaphore also counts permits handed to a waiter
    /// still queued for the rest).
    held: Arc<AtomicU64>,
    freed: Arc<Notify>,
}

impl Requests {
    pub fn new(store: Arc<dyn Store>, budget_bytes: u64) -> Self {
        let memory_kib = u32::try_from(budget_bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        Self {
            store,
            memory: Arc::new(Semaphore::new(memory_kib as usize)),
            memory_kib,
            loaded: Mutex::default(),
            held: Arc::default(),
            freed: Arc::default(),
        }
    }

    /// Bytes of bodies held now.
    pub fn in_use(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Resolves when some held request is released (memory may be free again).
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    fn shared(&self, event: &EventId) -> Option<Arc<Loaded>> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(event)
            .and_then(Weak::upgrade)
    }

    /// The event's request: the copy already held if any, else loaded if its body fits in
    /// the budget now. `Ok(None)`: the budget is spent; try again once memory is freed.
    pub async fn get(
        &self,
        event: &EventId,
        body_len: u64,
    ) -> Result<Option<Arc<Loaded>>, StoreError> {
        if let Some(held) = self.shared(event) {
            return Ok(Some(held));
        }
        // A body larger than the whole budget still goes, alone.
        let kib = u32::try_from(body_len.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.memory_kib);
        // Waiting briefly in the semaphore's queue (it is fair) rather than trying once: a
        // large body queued first is served before smaller ones that come later, so it cannot
        // be starved by them.
        let waited =
            tokio::time::timeout(MEMORY_WAIT, self.memory.clone().acquire_many_owned(kib)).await;
        let Ok(Ok(memory)) = waited else {
            return Ok(None);
        };
        let request = self.store.load_request(event).await?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        // Another worker may have loaded it meanwhile: keep one copy.
        if let Some(held) = loaded.get(event).and_then(Weak::upgrade) {
            return Ok(Some(held));
        }
        self.held
            .fetch_add(request.body.len() as u64, Ordering::Relaxed);
        let held = Arc::new(Loaded {
            request,
            memory: Some(memory),
            held: self.held.clone(),
            freed: self.freed.clone(),
        });
        if loaded.len() >= SWEEP_ABOVE {
            loaded.retain(|_, weak| weak.strong_count() > 0);
        }
        loaded.insert(event.clone(), Arc::downgrade(&held));
        Ok(Some(held))
    }
}
