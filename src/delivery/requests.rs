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

    /// The requests of a claim's events, in the order asked: the copies already held, the
    /// rest loaded in one read while their bodies fit in the budget. `None` for those that
    /// did not fit (from the first on, the rest do not wait in line): the budget is spent,
    /// and they go back until memory is freed.
    pub async fn get_many(
        &self,
        wanted: &[(EventId, u64)],
    ) -> Result<Vec<Option<Arc<Loaded>>>, StoreError> {
        let mut found: Vec<Option<Arc<Loaded>>> = Vec::with_capacity(wanted.len());
        let mut reserved: HashMap<EventId, OwnedSemaphorePermit> = HashMap::new();
        let mut spent = false;
        for (event, body_len) in wanted {
            let held = self.shared(event);
            if held.is_none() && !spent && !reserved.contains_key(event) {
                match self.reserve(*body_len).await {
                    Some(memory) => drop(reserved.insert(event.clone(), memory)),
                    None => spent = true,
                }
            }
            found.push(held);
        }
        if reserved.is_empty() {
            return Ok(found);
        }
        let events: Vec<EventId> = reserved.keys().cloned().collect();
        let requests = self.store.load_requests(&events).await?;
        let mut fresh = HashMap::with_capacity(requests.len());
        for request in requests {
            if let Some(memory) = reserved.remove(&request.event_id) {
                let id = request.event_id.clone();
                fresh.insert(id, self.keep(request, memory));
            }
        }
        for (slot, (event, _)) in found.iter_mut().zip(wanted) {
            if slot.is_none() {
                *slot = fresh.get(event).cloned();
            }
        }
        Ok(found)
    }

    /// Memory for a body of `body_len` bytes, waiting briefly in line; `None`: spent.
    async fn reserve(&self, body_len: u64) -> Option<OwnedSemaphorePermit> {
        // A body larger than the whole budget still goes, alone.
        let kib = u32::try_from(body_len.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.memory_kib);
        // Waiting briefly in the semaphore's queue (it is fair) rather than trying once: a
        // large body queued first is served before smaller ones that come later, so it cannot
        // be starved by them.
        let waited =
            tokio::time::timeout(MEMORY_WAIT, self.memory.clone().acquire_many_owned(kib)).await;
        waited.ok().and_then(Result::ok)
    }

    /// Shares a freshly loaded request, unless another worker loaded it meanwhile: one copy.
    fn keep(&self, request: StoredRequest, memory: OwnedSemaphorePermit) -> Arc<Loaded> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = loaded.get(&request.event_id).and_then(Weak::upgrade) {
            return held;
        }
        self.held
            .fetch_add(request.body.len() as u64, Ordering::Relaxed);
        let event = request.event_id.clone();
        let held = Arc::new(Loaded {
            request,
            memory: Some(memory),
            held: self.held.clone(),
            freed: self.freed.clone(),
        });
        if loaded.len() >= SWEEP_ABOVE {
            loaded.retain(|_, weak| weak.strong_count() > 0);
        }
        loaded.insert(event, Arc::downgrade(&held));
        held
    }
}
