//! The `Store` trait: a domain-shaped interface to durable state. Knows nothing of HTTP.
//!
//! Two implementations, chosen once from the store URL by [`open`]: `sqlite` (embedded, the
//! default) and `postgres` (several replicas on one database).

pub mod look;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;
mod views;

pub use sqlite::schema::{decode_headers, encode_headers};
pub use views::*;

use std::sync::Arc;

use bytes::Bytes;

use crate::domain::{Classification, DeliveryId, EventId, Name, Ordering, Routed, UnixMillis};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take more right now (disk full, writer stopped): callers answer 503.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store failure: {0}")]
    Backend(String),
    /// The caller asked for something malformed (a bad cursor): a 400, not a failure.
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid store url: expected sqlite://PATH or postgres://USER@HOST/DATABASE")]
    BadUrl,
    #[error("invalid store url: {0}")]
    InvalidUrl(String),
    #[error("no store at {0}: check the path (CLI commands never create a store)")]
    Missing(String),
}

/// A request accepted by ingest, with the destinations routing chose for it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub source: Name,
    pub received_at: UnixMillis,
    pub remote_addr: Option<String>,
    /// What ingest found in the request (event type, ref, project, dedup key, ...), kept
    /// with the event for filters, coalescing and display.
    pub classification: Classification,
    pub content_type: Option<String>,
    /// Every header exactly as received, in order, duplicates kept.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    pub destinations: Vec<Routed>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The new event's id, or the original's when this was a duplicate.
    pub event_id: EventId,
    pub deliveries: usize,
    pub duplicate: bool,
}

#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub destination: Name,
    pub ordering: Ordering,
    pub limit: usize,
    pub now: UnixMillis,
    /// Claimed deliveries become claimable again after this, should their worker vanish.
    pub lease_until: UnixMillis,
    pub lease_owner: String,
    /// The claim must be on disk before it returns: a destination whose interrupted attempts
    /// go dead (`on_interrupt = "dead"`) must find the claim after a power cut, or it would
    /// run the attempt again. Other claims, like attempt records and releases, are
    /// delivery bookkeeping and may be flushed with the next durable commit (see the
    /// trait's `claim`).
    pub durable: bool,
}

/// The stored request a delivery forwards.
#[derive(Debug, Clone)]
pub struct StoredRequest {
    pub event_id: EventId,
    pub source: Name,
    pub received_at: UnixMillis,
    pub event_type: Option<String>,
    /// What ingest classified (commands take values from it).
    pub classification: Classification,
    pub content_type: Option<String>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

/// A claim on one delivery: proves, when the attempt is recorded or the delivery given back,
/// that no one else has claimed it since. Opaque outside the store (row ids stay in there).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    pub(in crate::store) row: i64,
    pub(in crate::store) token: i64,
}

#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub lease: Lease,
    pub id: DeliveryId,
    pub destination: Name,
    /// Attempts already made in the current retry window.
    pub attempts: u32,
    pub window_start: UnixMillis,
    /// The previous attempt was cut off (its worker went away): nothing recorded it.
    pub interrupted: bool,
    /// The event to forward; its request is loaded with [`Store::load_request`], outside
    /// the claim, so the single writer never reads bodies.
    pub event_id: EventId,
    pub body_len: u64,
}

#[derive(Debug, Default)]
pub struct Claimed {
    pub deliveries: Vec<ClaimedDelivery>,
    /// When the destination's next delivery becomes claimable, if any is waiting. A backend
    /// may leave it `None` when the claim got as many as it asked for: the caller claims
    /// again at once then.
    pub next_due: Option<UnixMillis>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NextState {
    Succeeded,
    RetryAt(UnixMillis),
    /// Given up, with why (kept with the delivery: attempts exhausted, max age, permanent).
    Dead(String),
}

/// One attempt to record, with what follows it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub lease: Lease,
    pub attempt: crate::domain::Attempt,
    pub next: NextState,
}

/// What a commit changed, announced to every subscriber after it committed (see
/// [`Store::changes`]): the feed delivery wake-ups, pauses and the job runner follow, so a
/// change made through any process reaches every process on the same store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Deliveries of these destinations became due (new events, a replay, a job's step).
    Due(Vec<Name>),
    /// Deliveries may have become due for any destination (a bulk step across several).
    AnyDue,
    /// An operator paused (true) or resumed (false) this destination.
    Paused(String, bool),
    /// A bulk job was created: a runner may take it.
    JobCreated,
    /// Another replica's circuit breaker for this destination opened (true) or closed.
    Breaker(String, bool),
}

impl Change {
    /// What a bulk job's step announces: a replay that changed deliveries made them due.
    pub fn after_job_step(scope: &BulkScope, progress: &JobProgress) -> Option<Change> {
        let changed = match progress {
            JobProgress::Continues { changed } | JobProgress::Finished { changed } => *changed,
            JobProgress::Failed(_) | JobProgress::Lost => 0,
        };
        if changed == 0 || scope.action != BulkAction::Replay {
            return None;
        }
        Some(match scope.filter.destination.as_deref().map(Name::parse) {
            Some(Ok(name)) => Change::Due(vec![name]),
            _ => Change::AnyDue,
        })
    }
}

/// Subscribers' buffer of changes; one that falls further behind gets `Lagged` and must act
/// as if everything changed (wake every destination, read the pauses again).
pub const CHANGE_BUFFER: usize = 1024;

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// The change feed: every commit's changes, after the commit, at most one `Due` per
    /// commit (a batch of events for one destination wakes it once). Nothing is announced for
    /// delivery bookkeeping (claims, records, releases) or for a commit that failed.
    fn changes(&self) -> tokio::sync::broadcast::Receiver<Change>;
    /// Durably commits the event and one pending delivery per destination in one transaction,
    /// or finds the original when the source already has an event with this dedup key.
    async fn insert_event(&self, event: NewEvent) -> Result<Accepted, StoreError>;
    /// Claims due deliveries under a lease. Claims (unless `durable`), `complete` and
    /// `release` are delivery bookkeeping: they are committed (every later read sees them)
    /// but may reach the disk only with the next durable commit, shortly after. A power cut
    /// in between loses the last few bookkeeping changes, and those attempts are made again
    /// with the same `webhook-id` (at-least-once); an acknowledged event is never affected.
    async fn claim(&self, request: ClaimRequest) -> Result<Claimed, StoreError>;
    /// Records one attempt and moves the delivery on, if the lease is still ours.
    async fn complete(&self, record: AttemptRecord) -> Result<(), StoreError>;
    /// Gives leased deliveries back, due now, without counting an attempt (shutdown).
    async fn release(&self, leases: Vec<Lease>, now: UnixMillis) -> Result<(), StoreError>;
    /// Events matching `filter`, newest first, starting below `after`.
    async fn list_events(
        &self,
        filter: Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<EventSummary>, StoreError>;
    async fn event(&self, id: &EventId) -> Result<Option<EventDetail>, StoreError>;
    /// Deliveries matching `filter`, newest first, starting below `after`.
    async fn list_deliveries(
        &self,
        filter: Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<DeliverySummary>, StoreError>;
    async fn delivery(
        &self,
        id: &DeliveryId,
    ) -> Result<Option<(DeliverySummary, Vec<AttemptView>)>, StoreError>;
    async fn replay(&self, id: &DeliveryId, now: UnixMillis) -> Result<ReplayOutcome, StoreError>;
    async fn cancel(&self, id: &DeliveryId, now: UnixMillis) -> Result<CancelOutcome, StoreError>;
    /// How many deliveries a bulk change would touch, with up to `examples` of them, and
    /// the snapshot counted (a new one when the scope has none).
    async fn bulk_count(
        &self,
        scope: BulkScope,
        examples: usize,
    ) -> Result<(u64, Vec<DeliverySummary>, Cursor), StoreError>;
    /// Records a bulk job; a job runner takes it from there (see [`Store::claim_job`]).
    async fn create_job(
        &self,
        id: String,
        scope: BulkScope,
        matched: u64,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// Takes the oldest unfinished job no one holds (never leased, or its lease expired),
    /// leased to `owner` until `lease_until`. A job whose stored scope cannot be read is
    /// marked failed on the way.
    async fn claim_job(
        &self,
        owner: &str,
        now: UnixMillis,
        lease_until: UnixMillis,
    ) -> Result<Option<JobClaim>, StoreError>;
    /// One step of a claimed job, from the position the store recorded: changes up to
    /// `limit` matching deliveries, records the new position and renews the lease, in one
    /// transaction (so a step is never done twice), and finishes the job when nothing is left.
    async fn job_step(
        &self,
        job: &JobClaim,
        limit: usize,
        now: UnixMillis,
        lease_until: UnixMillis,
    ) -> Result<JobProgress, StoreError>;
    /// Takes or renews the lease called `name` (one sweeper at a time across processes):
    /// true when `owner` holds it until `until`, false when someone else does.
    async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        now: UnixMillis,
        until: UnixMillis,
    ) -> Result<bool, StoreError>;
    async fn job(&self, id: &str) -> Result<Option<JobView>, StoreError>;
    /// Stops an unfinished job: no step runs after this commits (a step is one transaction,
    /// so it lands whole or not at all), and what it changed before stays changed.
    async fn cancel_job(&self, id: &str, now: UnixMillis) -> Result<JobCancel, StoreError>;
    /// Records a console session, and forgets the ones that ended before `now`.
    async fn create_session(
        &self,
        session: ConsoleSession,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// The session with this key, unless it has ended by `now`.
    async fn session(
        &self,
        key: &str,
        now: UnixMillis,
    ) -> Result<Option<ConsoleSession>, StoreError>;
    /// Moves a session's idle end on (use), never past its absolute end.
    async fn touch_session(&self, key: &str, idle_until: UnixMillis) -> Result<(), StoreError>;
    /// Ends a session (sign-out).
    async fn end_session(&self, key: &str) -> Result<(), StoreError>;
    /// The newest `limit` jobs, newest first.
    async fn list_jobs(&self, limit: usize) -> Result<Vec<JobView>, StoreError>;
    /// Per destination named in the store: counts by state, oldest pending, last outcomes.
    async fn destination_stats(&self) -> Result<Vec<DestinationStats>, StoreError>;
    /// One bounded retention step (see [`PruneStep`]); call again with `next` until `None`.
    async fn prune_step(
        &self,
        policy: crate::domain::Retention,
        after: Option<Cursor>,
        now: UnixMillis,
    ) -> Result<PruneStep, StoreError>;
    /// Deliveries pending, in flight, dead and superseded, by destination (for every scrape).
    async fn delivery_gauges(&self) -> Result<Vec<DeliveryGauge>, StoreError>;
    /// Pauses and resumes operators set, by destination.
    async fn paused_destinations(&self) -> Result<Vec<(String, bool)>, StoreError>;
    /// Records an operator's pause or resume; it outlives restarts.
    async fn set_paused(
        &self,
        destination: &str,
        paused: bool,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// Whether an event could be committed now: a real write through the commit path, and
    /// the store's files still the ones it opened.
    async fn ready(&self) -> Result<(), StoreError>;
    /// Deliveries waiting or in flight, counted up to `cap` (enough to compare with a limit).
    async fn backlog(&self, cap: u64) -> Result<u64, StoreError>;
    /// The stored request of an event, for delivery.
    async fn load_request(&self, event: &EventId) -> Result<StoredRequest, StoreError>;
    /// The stored requests of several events in one read (a whole claim's bodies), in the
    /// order asked. A backend with nothing better loads them one by one.
    async fn load_requests(&self, events: &[EventId]) -> Result<Vec<StoredRequest>, StoreError> {
        let mut loaded = Vec::with_capacity(events.len());
        for event in events {
            loaded.push(self.load_request(event).await?);
        }
        Ok(loaded)
    }
    /// Destinations that have deliveries waiting or in flight, with how many.
    async fn waiting_by_destination(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Tells the other processes on this store that this one's breaker for `destination`
    /// opened or closed, so they probe (or deliver) too, and keeps the state for processes
    /// that start later ([`Store::open_breakers`]). A backend that serves one process does
    /// nothing.
    async fn share_breaker(&self, _destination: &str, _open: bool) {}
    /// The destinations whose breaker another process shared as open and no process has
    /// shared as closed since.
    async fn open_breakers(&self) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
}

/// Opens the store a server runs on, creating and migrating it if needed. Leases left by a
/// process that is gone are recovered by expiry (a claim takes an expired lease); a backend
/// that can prove their owner is dead (SQLite, holding the file's lock) may recover them at once.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    #[cfg(feature = "postgres")]
    if is_postgres(url) {
        return Ok(Arc::new(
            postgres::PgStore::open(url, postgres::OpenMode::Server).await?,
        ));
    }
    Ok(Arc::new(sqlite::SqliteStore::open(
        sqlite_path(url)?,
        sqlite::OpenMode::Server,
    )?))
}

/// Opens an existing store to look at it next to a running server: never creates, never
/// migrates, never takes the server's lock.
pub async fn open_existing(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    #[cfg(feature = "postgres")]
    if is_postgres(url) {
        return Ok(Arc::new(
            postgres::PgStore::open(url, postgres::OpenMode::Client).await?,
        ));
    }
    Ok(Arc::new(sqlite::SqliteStore::open(
        sqlite_path(url)?,
        sqlite::OpenMode::Client,
    )?))
}

/// Whether the URL names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn sqlite_path(url: &str) -> Result<&std::path::Path, StoreError> {
    url.strip_prefix("sqlite://")
        .filter(|p| !p.is_empty())
        .map(std::path::Path::new)
        .ok_or(StoreError::BadUrl)
}

/// The store URL as it may be printed: a password in it is replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod conformance;

#[cfg(test)]
mod url_tests {
    use super::redact_url;

    #[test]
    fn passwords_in_store_urls_are_never_printed() {
        for (url, shown) in [
            ("sqlite://data/hookrelay.db", "sqlite://data/hookrelay.db"),
            (
                "postgres://relay:s3cret@db:5432/hr",
                "postgres://relay:***@db:5432/hr",
            ),
            ("postgres://relay@db/hr", "postgres://relay:***@db/hr"),
            ("postgres://a:b@c@db/hr", "postgres://a:***@db/hr"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }
}
