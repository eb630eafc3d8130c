//! The `Store` trait on PostgreSQL: ingest through the group commit, bookkeeping and
//! operator writes as short transactions on pooled connections, reads on the pool.

use super::{PgStore, browse, claims, figures, jobs, load, pg_error, sessions};
use crate::domain::{DeliveryId, EventId, Name, UnixMillis, now_millis};
use crate::store::{
    Accepted, AttemptRecord, AttemptView, BulkScope, CancelOutcome, Change, ClaimRequest, Claimed,
    ConsoleSession, Cursor, DeliveryGauge, DeliverySummary, DestinationStats, EventDetail,
    EventSummary, Filter, JobCancel, JobClaim, JobProgress, JobView, Lease, NewEvent, Page,
    PruneStep, ReplayOutcome, Store, StoreError, StoredRequest,
};

/// Runs `$body` with `$tx` a transaction on a pooled connection, committed if it succeeds.
macro_rules! in_transaction {
    ($self:ident, |$tx:ident| $body:expr) => {{
        let mut client = $self.client().await?;
        let $tx = client.transaction().await.map_err(pg_error)?;
        let value = $body;
        $tx.commit().await.map_err(pg_error)?;
        value
    }};
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn changes(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn insert_event(&self, event: NewEvent) -> Result<Accepted, StoreError> {
        self.inserts.insert(event).await
    }

    async fn claim(&self, request: ClaimRequest) -> Result<Claimed, StoreError> {
        let mut client = match request.durable {
            true => self.client().await?,
            false => self.bookkeeping().await?,
        };
        claims::claim(&mut client, &request).await
    }

    async fn complete(&self, record: AttemptRecord) -> Result<(), StoreError> {
        self.records.record(record).await
    }

    async fn release(&self, leases: Vec<Lease>, now: UnixMillis) -> Result<(), StoreError> {
        if leases.is_empty() {
            return Ok(());
        }
        claims::release(&self.bookkeeping().await?, &leases, now).await
    }

    async fn list_events(
        &self,
        filter: Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<EventSummary>, StoreError> {
        browse::list_events(&**self.client().await?, &filter, after.as_ref(), limit).await
    }

    async fn event(&self, id: &EventId) -> Result<Option<EventDetail>, StoreError> {
        browse::event(&**self.client().await?, id).await
    }

    async fn list_deliveries(
        &self,
        filter: Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Page<DeliverySummary>, StoreError> {
        browse::list_deliveries(&**self.client().await?, &filter, after.as_ref(), limit).await
    }

    async fn delivery(
        &self,
        id: &DeliveryId,
    ) -> Result<Option<(DeliverySummary, Vec<AttemptView>)>, StoreError> {
        browse::delivery(&**self.client().await?, id).await
    }

    async fn replay(&self, id: &DeliveryId, now: UnixMillis) -> Result<ReplayOutcome, StoreError> {
        let (outcome, destination) = claims::replay(&**self.client().await?, id, now).await?;
        if let Some(name) = destination.as_deref().and_then(|d| Name::parse(d).ok()) {
            self.announce(Change::Due(vec![name])).await;
        }
        Ok(outcome)
    }

    async fn cancel(&self, id: &DeliveryId, now: UnixMillis) -> Result<CancelOutcome, StoreError> {
        claims::cancel(&**self.client().await?, id, now).await
    }

    async fn bulk_count(
        &self,
        scope: BulkScope,
        examples: usize,
    ) -> Result<(u64, Vec<DeliverySummary>, Cursor), StoreError> {
        browse::bulk_count(&**self.client().await?, &scope, examples).await
    }

    async fn create_job(
        &self,
        id: String,
        scope: BulkScope,
        matched: u64,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        jobs::create_job(&**self.client().await?, &id, &scope, matched, now).await?;
        self.announce(Change::JobCreated).await;
        Ok(())
    }

    async fn claim_job(
        &self,
        owner: &str,
        now: UnixMillis,
        lease_until: UnixMillis,
    ) -> Result<Option<JobClaim>, StoreError> {
        jobs::claim_job(&**self.client().await?, owner, now, lease_until).await
    }

    async fn job_step(
        &self,
        job: &JobClaim,
        limit: usize,
        now: UnixMillis,
        lease_until: UnixMillis,
    ) -> Result<JobProgress, StoreError> {
        let progress =
            in_transaction!(self, |tx| jobs::job_step(&tx, job, limit, now, lease_until)
                .await?);
        if let Some(change) = Change::after_job_step(&job.scope, &progress) {
            self.announce(change).await;
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
        jobs::take_lease(&**self.client().await?, name, owner, now, until).await
    }

    async fn job(&self, id: &str) -> Result<Option<JobView>, StoreError> {
        figures::job(&**self.client().await?, id).await
    }

    async fn cancel_job(&self, id: &str, now: UnixMillis) -> Result<JobCancel, StoreError> {
        jobs::cancel_job(&**self.client().await?, id, now).await
    }

    async fn create_session(
        &self,
        session: ConsoleSession,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        sessions::create(&**self.client().await?, &session, now).await
    }

    async fn session(
        &self,
        key: &str,
        now: UnixMillis,
    ) -> Result<Option<ConsoleSession>, StoreError> {
        sessions::find(&**self.client().await?, key, now).await
    }

    async fn touch_session(&self, key: &str, idle_until: UnixMillis) -> Result<(), StoreError> {
        sessions::touch(&**self.client().await?, key, idle_until).await
    }

    async fn end_session(&self, key: &str) -> Result<(), StoreError> {
        sessions::end(&**self.client().await?, key).await
    }

    async fn list_jobs(&self, limit: usize) -> Result<Vec<JobView>, StoreError> {
        figures::list_jobs(&**self.client().await?, limit).await
    }

    async fn destination_stats(&self) -> Result<Vec<DestinationStats>, StoreError> {
        figures::destination_stats(&**self.client().await?).await
    }

    async fn prune_step(
        &self,
        policy: crate::domain::Retention,
        after: Option<Cursor>,
        now: UnixMillis,
    ) -> Result<PruneStep, StoreError> {
        Ok(in_transaction!(self, |tx| jobs::prune_step(
            &tx,
            &policy,
            after.as_ref(),
            now
        )
        .await?))
    }

    async fn delivery_gauges(&self) -> Result<Vec<DeliveryGauge>, StoreError> {
        figures::delivery_gauges(&**self.client().await?).await
    }

    async fn paused_destinations(&self) -> Result<Vec<(String, bool)>, StoreError> {
        figures::paused_destinations(&**self.client().await?).await
    }

    async fn set_paused(
        &self,
        destination: &str,
        paused: bool,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        claims::set_paused(&**self.client().await?, destination, paused, now).await?;
        self.announce(Change::Paused(destination.to_owned(), paused))
            .await;
        Ok(())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        claims::heartbeat(&**self.client().await?, now_millis()).await
    }

    async fn backlog(&self, cap: u64) -> Result<u64, StoreError> {
        figures::backlog(&**self.client().await?, cap).await
    }

    // On the bookkeeping pool: delivery's reads by key, where sequential scans are ruled out.
    async fn load_request(&self, event: &EventId) -> Result<StoredRequest, StoreError> {
        load::load_request(&self.bookkeeping().await?, event).await
    }

    async fn load_requests(&self, events: &[EventId]) -> Result<Vec<StoredRequest>, StoreError> {
        load::load_requests(&self.bookkeeping().await?, events).await
    }

    async fn waiting_by_destination(&self) -> Result<Vec<(String, u64)>, StoreError> {
        figures::waiting_by_destination(&**self.client().await?).await
    }

    async fn share_breaker(&self, destination: &str, open: bool) {
        // Kept first, so a replica starting meanwhile reads it or hears it.
        let kept = match self.bookkeeping().await {
            Ok(client) => figures::keep_breaker(&**client, destination, open).await,
            Err(err) => Err(err),
        };
        if let Err(err) = kept {
            tracing::warn!(destination, error = %err, "breaker state not stored");
        }
        self.notifier
            .notify_others(&Change::Breaker(destination.to_owned(), open))
            .await;
    }

    async fn open_breakers(&self) -> Result<Vec<String>, StoreError> {
        figures::open_breakers(&**self.client().await?).await
    }
}
