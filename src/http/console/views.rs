//! The console's templates and the plain data they show: everything from outside arrives
//! here as a `String` that askama escapes where the template writes it.

use askama::Template;

use super::assets;
use super::render::{self, TreeNode, visible};
use super::session::Signed;
use crate::domain::{UnixMillis, format_millis};
use crate::store::{AttemptView, DeliverySummary, EventSummary};

pub struct Rendered(pub Result<String, askama::Error>);

pub fn rendered(template: &impl Template) -> Rendered {
    Rendered(template.render())
}

/// The frame around every signed-in page.
pub struct Chrome {
    pub nav: &'static str,
    pub who: String,
    pub admin: bool,
    pub form_token: String,
    pub css: String,
    pub js: String,
}

impl Chrome {
    pub fn new(signed: &Signed, nav: &'static str) -> Self {
        Self {
            nav,
            who: signed.token_name.clone(),
            admin: signed.admin(),
            form_token: signed.form_token.clone(),
            css: assets::path("app.css"),
            js: assets::path("app.js"),
        }
    }

    pub fn scope(&self) -> &'static str {
        if self.admin { "admin" } else { "read only" }
    }
}

pub struct Badge {
    pub destination: String,
    pub state: &'static str,
}

/// An event as one line of the events list.
pub struct Row {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub git_ref: String,
    pub project: String,
    pub sender: String,
    pub received_iso: String,
    pub received_ago: String,
    pub deliveries: Vec<Badge>,
}

fn or_dash(value: &Option<String>) -> String {
    value.as_deref().map(visible).unwrap_or_else(|| "–".into())
}

impl Row {
    pub fn new(event: &EventSummary, now: UnixMillis) -> Self {
        let class = &event.classification;
        let git_ref = class
            .branch
            .as_ref()
            .or(class.tag.as_ref())
            .or(class.git_ref.as_ref());
        Self {
            id: event.id.as_str().to_owned(),
            source: visible(&event.source),
            event_type: or_dash(&class.event_type),
            git_ref: or_dash(&git_ref.cloned()),
            project: or_dash(&class.project),
            sender: or_dash(&class.sender),
            received_iso: format_millis(event.received_at),
            received_ago: render::ago(event.received_at, now),
            deliveries: event
                .deliveries
                .iter()
                .map(|d| Badge {
                    destination: visible(&d.destination),
                    state: d.state.as_str(),
                })
                .collect(),
        }
    }
}

/// The filters as the form shows them (empty when unset).
#[derive(Default, serde::Deserialize)]
#[serde(default)]
pub struct FilterForm {
    pub source: String,
    pub event_type: String,
    pub state: String,
    pub destination: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub project: String,
    pub sender: String,
    pub contains: String,
    pub since: String,
    pub until: String,
    pub after: String,
}

impl FilterForm {
    /// The set filters as query pairs, in a stable order (paging excluded).
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("source", &self.source),
            ("event_type", &self.event_type),
            ("state", &self.state),
            ("destination", &self.destination),
            ("ref", &self.git_ref),
            ("project", &self.project),
            ("sender", &self.sender),
            ("contains", &self.contains),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .into_iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .map(|(key, value)| (key, value.trim()))
        .collect()
    }

    pub fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(self.pairs());
        query.finish()
    }
}

pub const STATES: [&str; 6] = [
    "pending",
    "in_flight",
    "succeeded",
    "dead",
    "superseded",
    "cancelled",
];
pub const PRESETS: [(&str, &str); 5] = [
    ("", "any time"),
    ("15m", "last 15 minutes"),
    ("1h", "last hour"),
    ("24h", "last 24 hours"),
    ("7d", "last 7 days"),
];

#[derive(Template)]
#[template(path = "console/events.html")]
pub struct EventsPage {
    pub chrome: Chrome,
    pub rows: Vec<Row>,
    pub filter: FilterForm,
    pub sources: Vec<String>,
    pub destinations: Vec<String>,
    pub older: Option<String>,
    pub live: Option<String>,
    pub paged: bool,
    pub query: String,
    /// The listing ran out of time: events received before this were not looked at yet.
    pub looked_back_to: Option<String>,
}

impl EventsPage {
    fn states(&self) -> &'static [&'static str] {
        &STATES
    }

    fn presets(&self) -> &'static [(&'static str, &'static str)] {
        &PRESETS
    }

    fn custom_since(&self) -> bool {
        !self.filter.since.is_empty() && !PRESETS.iter().any(|(v, _)| *v == self.filter.since)
    }
}

/// One row, wrapped so a browser parses it as table content (the live view's message).
#[derive(Template)]
#[template(path = "console/row_fragment.html")]
pub struct RowFragment {
    pub row: Row,
}

pub struct AttemptRow {
    pub number: u32,
    pub started_iso: String,
    pub started_ago: String,
    pub duration: String,
    pub verdict: &'static str,
    pub class: String,
    pub summary: String,
    pub error: String,
    pub headers: String,
    pub excerpt: String,
    /// An HTTP answer (its excerpt is a response body), not a command's output.
    pub answered_http: bool,
}

impl AttemptRow {
    pub fn new(view: &AttemptView, now: UnixMillis) -> Self {
        let attempt = &view.attempt;
        Self {
            number: view.number,
            started_iso: format_millis(attempt.started_at),
            started_ago: render::ago(attempt.started_at, now),
            duration: format!("{} ms", attempt.duration_ms),
            verdict: attempt.verdict.as_str(),
            class: visible(&attempt.class),
            summary: visible(&attempt.detail.summary),
            error: attempt
                .detail
                .error
                .as_deref()
                .map(visible)
                .unwrap_or_default(),
            answered_http: attempt.detail.status.is_some(),
            headers: attempt
                .detail
                .response_headers
                .as_deref()
                .map(visible)
                .unwrap_or_default(),
            excerpt: attempt
                .detail
                .response_excerpt
                .as_deref()
                .map(visible)
                .unwrap_or_default(),
        }
    }
}

pub struct DeliveryBlock {
    pub id: String,
    pub destination: String,
    pub state: &'static str,
    /// When the next attempt is due and after what.
    pub next: String,
    pub dead_reason: String,
    pub attempts: Vec<AttemptRow>,
    pub can_replay: bool,
    pub can_cancel: bool,
    /// Being attempted, or due within a minute: the page follows it.
    pub settling: bool,
}

impl DeliveryBlock {
    pub fn new(delivery: &DeliverySummary, attempts: &[AttemptView], now: UnixMillis) -> Self {
        use crate::domain::DeliveryState::*;
        let next = match (delivery.state, delivery.due_at) {
            (Pending, Some(due)) => match &delivery.last_summary {
                Some(last) => format!(
                    "next attempt {} (after {})",
                    render::ago(due, now),
                    visible(last)
                ),
                None => format!("first attempt {}", render::ago(due, now)),
            },
            (InFlight, _) => "being attempted now".to_owned(),
            _ => String::new(),
        };
        Self {
            id: delivery.id.as_str().to_owned(),
            destination: visible(&delivery.destination),
            state: delivery.state.as_str(),
            next,
            dead_reason: delivery
                .dead_reason
                .as_deref()
                .map(visible)
                .unwrap_or_default(),
            attempts: attempts
                .iter()
                .rev()
                .map(|a| AttemptRow::new(a, now))
                .collect(),
            can_replay: delivery.state != InFlight,
            can_cancel: delivery.state == Pending,
            settling: delivery.state == InFlight
                || (delivery.state == Pending
                    && delivery.due_at.is_some_and(|due| due - now < 60_000)),
        }
    }
}

#[derive(Template)]
#[template(path = "console/event.html")]
pub struct EventPage {
    pub chrome: Chrome,
    pub row: Row,
    pub remote_addr: String,
    pub content_type: String,
    pub body_bytes: u64,
    pub headers: Vec<(String, String)>,
    pub tree: Vec<TreeNode>,
    pub raw: Option<String>,
    pub hex: Option<String>,
    pub curl: String,
    pub deliveries: Vec<DeliveryBlock>,
}

impl EventPage {
    fn settling(&self) -> bool {
        self.deliveries.iter().any(|d| d.settling)
    }
}

#[derive(Template)]
#[template(path = "console/compare.html")]
pub struct ComparePage {
    pub chrome: Chrome,
    pub event_id: String,
    pub delivery_id: String,
    pub destination: String,
    pub left: u32,
    pub right: u32,
    pub numbers: Vec<u32>,
    pub rows: Vec<render::Compared>,
}

/// A last-hour chart and what it says in words.
pub struct Chart {
    pub bars: Vec<render::Bar>,
    pub words: String,
}

impl Chart {
    pub fn height(&self) -> f32 {
        render::CHART_HEIGHT
    }
}

pub struct DestinationRow {
    pub name: String,
    pub state: String,
    pub kind: String,
    pub ordering: String,
    pub backlog: u64,
    pub oldest: String,
    pub succeeded: u64,
    pub dead: u64,
    pub last_success: String,
    pub last_failure: String,
    pub paused: bool,
    pub configured: bool,
    pub chart: Chart,
}

#[derive(Template)]
#[template(path = "console/destinations.html")]
pub struct DestinationsPage {
    pub chrome: Chrome,
    pub rows: Vec<DestinationRow>,
}

pub struct SourceRow {
    pub name: String,
    pub provider: String,
    pub accepted: u64,
    pub duplicate: u64,
    /// Refused requests by reason.
    pub refused: Vec<(String, u64)>,
    pub chart: Chart,
}

#[derive(Template)]
#[template(path = "console/sources.html")]
pub struct SourcesPage {
    pub chrome: Chrome,
    pub rows: Vec<SourceRow>,
}

pub struct JobRow {
    pub id: String,
    pub action: String,
    pub state: String,
    pub filter: String,
    pub matched: u64,
    pub changed: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub waiting: u64,
    pub created_ago: String,
    pub error: String,
}

#[derive(Template)]
#[template(path = "console/jobs.html")]
pub struct JobsPage {
    pub chrome: Chrome,
    pub jobs: Vec<JobRow>,
}

#[derive(Template)]
#[template(path = "console/job.html")]
pub struct JobPage {
    pub chrome: Chrome,
    pub job: JobRow,
    pub running: bool,
}

pub struct ExampleRow {
    pub id: String,
    pub event_id: String,
    pub destination: String,
    pub state: &'static str,
    pub summary: String,
}

#[derive(Template)]
#[template(path = "console/bulk.html")]
pub struct BulkPage {
    pub chrome: Chrome,
    pub action: &'static str,
    pub count: u64,
    pub as_of: String,
    pub snapshot: String,
    pub filter: FilterForm,
    pub examples: Vec<ExampleRow>,
    pub back: String,
}

#[derive(Template)]
#[template(path = "console/login.html")]
pub struct LoginPage {
    pub error: Option<String>,
    pub css: String,
    pub js: String,
}
