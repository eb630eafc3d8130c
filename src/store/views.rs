//! What inspection and control read from and hand to the store: filters, pages, summaries,
//! bulk jobs. Backend-neutral; serialisable so the API can return them as they are.

use serde::{Deserialize, Serialize};

use crate::domain::{
    Attempt, Classification, DeliveryId, DeliveryState, EventId, UnixMillis, Verdict,
};

/// Which events or deliveries a listing, a count or a bulk change is about. Every field
/// narrows; an empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    pub source: Option<String>,
    pub event_type: Option<String>,
    /// Received at or after this time (milliseconds since the epoch).
    pub since: Option<UnixMillis>,
    /// Received at or before this time.
    pub until: Option<UnixMillis>,
    /// A branch, a tag or a full ref (`main`, `v1.2`, `refs/heads/main`).
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub project: Option<String>,
    /// Who caused the event, as the sender names them (`user_username`, `sender.login`).
    pub sender: Option<String>,
    /// Events whose body holds these bytes. Event listings only (each backend writes its own
    /// search, within the listing's time budget); counts and bulk changes refuse it.
    pub body_contains: Option<String>,
    pub state: Option<DeliveryState>,
    pub destination: Option<String>,
}

/// Where a page starts: opaque to callers, meaningful only to the store that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(pub String);

/// A page of a newest-first listing. Items that arrive while a caller pages never shift
/// later pages: `next` points below the last item returned.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
    /// Set when an event listing ran out of its time before the page was full: events
    /// received before this were not looked at yet (`next` goes on from there).
    pub looked_back_to: Option<UnixMillis>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub id: EventId,
    pub source: String,
    pub received_at: UnixMillis,
    pub remote_addr: Option<String>,
    pub content_type: Option<String>,
    pub body_bytes: u64,
    #[serde(flatten)]
    pub classification: Classification,
    /// Each delivery of the event: destination and state.
    pub deliveries: Vec<DeliveryBrief>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryBrief {
    pub id: DeliveryId,
    pub destination: String,
    pub state: DeliveryState,
}

/// An event with what was received, exactly (credential headers were masked at ingest).
#[derive(Debug, Clone)]
pub struct EventDetail {
    pub summary: EventSummary,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: bytes::Bytes,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliverySummary {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub source: String,
    pub event_type: Option<String>,
    pub destination: String,
    pub state: DeliveryState,
    pub attempts: u32,
    /// Next try for pending deliveries; lease expiry for in-flight ones.
    pub due_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    /// The last attempt's verdict and summary (`exit 0`, `HTTP 503`, `timeout`).
    pub last_verdict: Option<Verdict>,
    pub last_summary: Option<String>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// Why it went dead: attempts exhausted, max age, permanent failure.
    pub dead_reason: Option<String>,
}

/// An attempt of a delivery, numbered from 1.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub number: u32,
    #[serde(flatten)]
    pub attempt: Attempt,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReplayOutcome {
    /// The delivery is pending again and due now, with a fresh retry window.
    Scheduled,
    NotFound,
    /// A worker holds it right now; replaying would deliver twice at once.
    InFlight,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    Cancelled,
    NotFound,
    /// A worker holds it right now: the attempt cannot be called back.
    InFlight,
    /// Already finished (succeeded, dead, superseded or cancelled): nothing to cancel.
    Finished(DeliveryState),
}

/// A bulk change: replay makes matching deliveries due again (all but in-flight ones);
/// cancel stops matching pending ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    Replay,
    Cancel,
}

impl BulkAction {
    /// The states the action may change, as SQL on a delivery aliased `d`: replay anything
    /// not in flight; cancel what waits.
    pub fn eligible_sql(self) -> &'static str {
        match self {
            BulkAction::Replay => {
                "d.state IN ('pending', 'succeeded', 'dead', 'superseded', 'cancelled')"
            }
            BulkAction::Cancel => "d.state = 'pending'",
        }
    }
}

/// What a bulk change covers: deliveries matching the filter among those that existed at
/// `snapshot` (a mark the store hands out with a count), so a dry run and the real run that
/// follows it with the same snapshot cover the same deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkScope {
    pub action: BulkAction,
    pub filter: Filter,
    /// When the snapshot was taken (for people; the snapshot decides).
    pub as_of: UnixMillis,
    /// `None` asks the store for a new one (everything that exists now).
    pub snapshot: Option<Cursor>,
}

/// An unfinished job taken by one owner until its lease runs out: whoever holds it continues
/// it from the position the store recorded.
#[derive(Debug, Clone)]
pub struct JobClaim {
    pub id: String,
    pub scope: BulkScope,
    /// Who holds the lease (a process's owner id); each step checks it is still them.
    pub owner: String,
}

/// What one step of a job did.
#[derive(Debug, Clone, PartialEq)]
pub enum JobProgress {
    /// Changed this many; more steps to go.
    Continues { changed: u64 },
    /// Changed this many, and nothing is left: the job is finished.
    Finished { changed: u64 },
    /// The job cannot go on (its snapshot or position can no longer be honoured): it is
    /// recorded as failed with this reason.
    Failed(String),
    /// Another owner holds the job now (this one's lease ran out), or it already ended.
    Lost,
}

/// A bulk change recorded as a job, with its progress.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    /// `running`, `finished` or `failed` (then `error` says why).
    pub state: JobState,
    pub scope: BulkScope,
    pub created_at: UnixMillis,
    /// When a step last recorded progress.
    pub updated_at: Option<UnixMillis>,
    pub finished_at: Option<UnixMillis>,
    pub matched: u64,
    /// Deliveries the job changed so far.
    pub changed: u64,
    /// Of the changed deliveries: delivered since.
    pub succeeded: u64,
    /// Attempted and failed again (now dead, cancelled, or waiting for a retry).
    pub failed: u64,
    /// Not attempted yet.
    pub waiting: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Finished,
    Failed,
    /// Stopped by an operator; what it changed before stays changed.
    Cancelled,
}

impl JobState {
    /// The state a job's row records, on every backend.
    pub fn of_row(
        finished_at: Option<i64>,
        error: Option<&str>,
        cancelled_at: Option<i64>,
    ) -> Self {
        match (finished_at, error, cancelled_at) {
            (None, _, _) => JobState::Running,
            (Some(_), _, Some(_)) => JobState::Cancelled,
            (Some(_), None, None) => JobState::Finished,
            (Some(_), Some(_), None) => JobState::Failed,
        }
    }
}

/// A console session as the store keeps it, so every process on the store knows it (a load
/// balancer may send one browser to any replica). `key` is the SHA-256 of the cookie's
/// value, hex: the value itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub key: String,
    pub token_name: String,
    /// The SHA-256 of the API token it was made from, hex: a session whose token left the
    /// config ends.
    pub token_digest: String,
    /// `read` or `admin`.
    pub scope: String,
    pub form_token: String,
    pub created_at: UnixMillis,
    /// It ends unused at this time; use moves it on.
    pub idle_until: UnixMillis,
    /// It ends at this time regardless.
    pub expires_at: UnixMillis,
}

/// What cancelling a job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobCancel {
    Cancelled,
    NotFound,
    /// It had already finished, failed or been cancelled.
    Finished,
}

/// A destination's deliveries as the store sees them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DestinationStats {
    pub name: String,
    pub pending: u64,
    pub in_flight: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub oldest_pending_at: Option<UnixMillis>,
    /// When the last delivered attempt ended.
    pub last_success_at: Option<UnixMillis>,
    /// The last attempt that was not delivered.
    pub last_failure: Option<Attempt>,
    /// Set by an operator at runtime; `None` when never set (the config decides).
    pub paused: Option<bool>,
}

impl DestinationStats {
    /// Adds the pauses an operator stored to `stats`, with a row of its own for a paused
    /// destination that has no deliveries yet: both backends' figures end this way.
    pub fn with_pauses(
        mut stats: Vec<DestinationStats>,
        pauses: impl IntoIterator<Item = (String, bool)>,
    ) -> Vec<DestinationStats> {
        for (name, value) in pauses {
            match stats.iter_mut().find(|entry| entry.name == name) {
                Some(entry) => entry.paused = Some(value),
                None => stats.push(DestinationStats {
                    name,
                    paused: Some(value),
                    ..Default::default()
                }),
            }
        }
        stats
    }
}

/// One retention step: what it removed, and where the next starts (`None`: done for now).
#[derive(Debug, Clone, Default)]
pub struct PruneStep {
    pub events_pruned: u64,
    pub next: Option<Cursor>,
}

/// Deliveries of one destination in one unfinished or dead state, for gauges.
#[derive(Debug, Clone)]
pub struct DeliveryGauge {
    pub destination: String,
    pub state: DeliveryState,
    pub count: u64,
    /// When the oldest of them was created.
    pub oldest: Option<UnixMillis>,
}

/// A filter's value in SQL: text or milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterValue {
    Text(String),
    Millis(UnixMillis),
}

impl Filter {
    /// What the filter asks of an event (alias `e`), in SQL both backends speak: each
    /// condition has one value, and every `?` in it stands for that value.
    pub fn event_conditions(&self) -> Vec<(&'static str, FilterValue)> {
        let text = |value: &String| FilterValue::Text(value.clone());
        let mut conditions = Vec::new();
        if let Some(source) = &self.source {
            conditions.push(("e.source = ?", text(source)));
        }
        if let Some(kind) = &self.event_type {
            conditions.push(("e.event_type = ?", text(kind)));
        }
        if let Some(since) = self.since {
            conditions.push(("e.received_at >= ?", FilterValue::Millis(since)));
        }
        if let Some(until) = self.until {
            conditions.push(("e.received_at <= ?", FilterValue::Millis(until)));
        }
        if let Some(wanted) = &self.git_ref {
            conditions.push(("(e.git_ref = ? OR e.branch = ? OR e.tag = ?)", text(wanted)));
        }
        if let Some(project) = &self.project {
            conditions.push(("e.project = ?", text(project)));
        }
        if let Some(sender) = &self.sender {
            conditions.push(("e.sender = ?", text(sender)));
        }
        conditions
    }

    /// For an event listing: "one of the event's deliveries matches" as one condition, each
    /// value's placeholder made by `placeholder`; `None` when the filter asks nothing of them.
    /// `listed` names the matching events in a subquery (cheap when few deliveries match:
    /// an index gives them all) instead of checking each event in turn (cheap when many do:
    /// the newest events find their matches at once).
    pub fn any_delivery_condition(
        &self,
        mut placeholder: impl FnMut(FilterValue) -> String,
        listed: bool,
    ) -> Option<String> {
        let of_deliveries = self.delivery_conditions();
        if of_deliveries.is_empty() {
            return None;
        }
        let mut inner = Vec::new();
        if !listed {
            inner.push("d.event_seq = e.seq".to_owned());
        }
        for (condition, value) in of_deliveries {
            inner.push(condition.replace('?', &placeholder(value)));
        }
        Some(match listed {
            true => format!(
                "e.seq IN (SELECT d.event_seq FROM deliveries d WHERE {})",
                inner.join(" AND ")
            ),
            false => format!(
                "EXISTS (SELECT 1 FROM deliveries d WHERE {})",
                inner.join(" AND ")
            ),
        })
    }

    /// What the filter asks of a delivery (alias `d`), in the same form.
    pub fn delivery_conditions(&self) -> Vec<(&'static str, FilterValue)> {
        let mut conditions = Vec::new();
        if let Some(state) = self.state {
            conditions.push(("d.state = ?", FilterValue::Text(state.as_str().to_owned())));
        }
        if let Some(destination) = &self.destination {
            conditions.push(("d.destination = ?", FilterValue::Text(destination.clone())));
        }
        conditions
    }
}
