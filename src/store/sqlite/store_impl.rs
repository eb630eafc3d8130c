//! The `Store` trait on SQLite: each operation sent to the writer, or run on the reader
//! for delivery or the inspector for the API.

use super::{SqliteStore, admin, browse, jobs, read, retention, sessions, writer::Command};
use crate::domain::{DeliveryId, EventId, Name, UnixMillis, now_millis};
use crate::store::Change;
use crate::store::{
    Accepted, AttemptRecord, AttemptView, BulkScope, CancelOutcome, ClaimRequest, Claimed,
    ConsoleSession, Cursor, DeliverySummary, DestinationStats, EventDetail, EventSummary, Filter,
    JobCancel, JobClaim, JobProgress, JobView, Lease, NewEvent, Page, ReplayOutcome, Store,
    StoreError, StoredRequest,
};

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn changes(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

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
        self.inspect(move |conn| browse::list_events(conn, &filter, after.as_ref(), limit))
            .await
    }

    async fn event(&self, id: &EventId) -> Result<Option<EventDetail>, StoreError> {
        let id = id.clone();
        self.inspect(move |conn| browse::event(conn, &id)).await
    }

    async fn list_deliveries(
        &self,
        filter: Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<DeliverySummary>, StoreError> {
        self.inspect(move |conn| read::list_deliveries(conn, &filter, after.as_ref(), limit))
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
        self.inspect(move |conn| browse::bulk_count(conn, &scope, examples))
            .await
    }

    async fn create_job(
        &self,
        id: String,
        scope: BulkScope,
        matched: u64,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.write(move |conn| jobs::create_job(conn, &id, &scope, matched, now))
            .await?;
        self.announce(Change::JobCreated);
        Ok(())
    }

    async fn claim_job(
        &self,
        owner: &str,
        now: UnixMillis,
        lease_until: UnixMillis,
    ) -> Result<Option<JobClaim>, StoreError> {
        let owner = owner.to_owned();
        self.write(move |conn| jobs::claim_job(conn, &owner, now, lease_until))
            .await
    }

    async fn job_step(
        &self,
        job: &JobClaim,
        limit: usize,
        now: UnixMillis,
        lease_until: UnixMillis,
    ) -> Result<JobProgress, StoreError> {
        let scope = job.scope.clone();
        let job = job.clone();
        let progress = self
            .write(move |conn| jobs::job_step(conn, &job, limit, now, lease_until))
            .await?;
        if let Some(change) = Change::after_job_step(&scope, &progress) {
            self.announce(change);
        }
        Ok(progress)
    }

    async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        now: UnixMillis,
        until: UnixMillis,
    ) -> Result<bool, StoreError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.write(move |conn| jobs::take_lease(conn, &name, &owner, now, until))
            .await
    }

    async fn job(&self, id: &str) -> Result<Option<JobView>, StoreError> {
        let id = id.to_owned();
        self.inspect(move |conn| browse::job(conn, &id)).await
    }

    async fn cancel_job(&self, id: &str, now: UnixMillis) -> Result<JobCancel, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| jobs::cancel_job(conn, &id, now))
            .await
    }

    async fn create_session(
        &self,
        session: ConsoleSession,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.write(move |conn| sessions::create(conn, &session, now))
            .await
    }

    async fn session(
        &self,
        key: &str,
        now: UnixMillis,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        let key = key.to_owned();
        self.inspect(move |conn| sessions::find(conn, &key, now))
            .await
    }

    async fn touch_session(&self, key: &str, idle_until: UnixMillis) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(move |conn| sessions::touch(conn, &key, idle_until))
            .await
    }

    async fn end_session(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(move |conn| sessions::end(conn, &key)).await
    }

    async fn list_jobs(&self, limit: usize) -> Result<Vec<JobView>, StoreError> {
        self.inspect(move |conn| browse::list_jobs(conn, limit))
            .await
    }

    async fn destination_stats(&self) -> Result<Vec<DestinationStats>, StoreError> {
        self.inspect(browse::destination_stats).await
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
        self.inspect(|conn| {
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
        let name = destination.to_owned();
        self.write(move |conn| admin::set_paused(conn, &name, paused, now))
            .await?;
        self.announce(Change::Paused(destination.to_owned(), paused));
        Ok(())
    }

    async fn delivery(
        &self,
        id: &DeliveryId,
    ) -> Result<Option<(DeliverySummary, Vec<AttemptView>)>, StoreError> {
        let id = id.clone();
        self.inspect(move |conn| read::delivery(conn, &id)).await
    }

    async fn replay(&self, id: &DeliveryId, now: UnixMillis) -> Result<ReplayOutcome, StoreError> {
        let id = id.clone();
        let (outcome, destination) = self.call(|reply| Command::Replay(id, now, reply)).await?;
        if let Some(name) = destination.as_deref().and_then(|d| Name::parse(d).ok()) {
            self.announce(Change::Due(vec![name]));
        }
        Ok(outcome)
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

    async fn load_requests(&self, events: &[EventId]) -> Result<Vec<StoredRequest>, StoreError> {
        let events = events.to_vec();
        self.read(move |conn| {
            events
                .iter()
                .map(|event| read::load_request(conn, event))
                .collect()
        })
        .await
    }

    async fn waiting_by_destination(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inspect(read::waiting_by_destination).await
    }
}
