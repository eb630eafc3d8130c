//! The console's pages: each reads through an API handler and renders a template.

use axum::Extension;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use base64::Engine as _;

use super::render::{self, visible};
use super::session::Signed;
use super::views::*;
use super::{ConsoleState, PageResult};
use crate::domain::{format_millis, now_millis};
use crate::http::api::{bulk, deliveries, destinations, events};
use crate::store::JobView;

pub async fn events(
    State(state): State<ConsoleState>,
    Extension(signed): Extension<Signed>,
    Query(filter): Query<FilterForm>,
) -> PageResult {
    let query = filter.query();
    let mut api_query = query.clone();
    if !filter.after.is_empty() {
        let after = form_urlencoded::Serializer::new(String::new())
            .append_pair("after", &filter.after)
            .finish();
        api_query = [api_query, after].join("&");
    }
    let page = events::list_events(State(state.api.clone()), RawQuery(Some(api_query)))
        .await?
        .0;
    let now = now_millis();
    let catalog = state.api.catalog();
    let joined = |more: &str| match query.is_empty() {
        true => more.to_owned(),
        false => format!("{query}&{more}"),
    };
    let older = page.next.map(|next| {
        let after = form_urlencoded::Serializer::new(String::new())
            .append_pair("after", &next)
            .finish();
        format!("/ui/events?{}", joined(&after))
    });
    let paged = !filter.after.is_empty();
    let looked_back_to = page.looked_back_to.map(format_millis);
    let view = EventsPage {
        looked_back_to,
        chrome: Chrome::new(&signed, "events"),
        rows: page.items.iter().map(|e| Row::new(e, now)).collect(),
        live: (!paged).then(|| format!("/ui/stream?{query}")),
        older,
        paged,
        sources: catalog
            .sources
            .iter()
            .map(|(n, _)| n.as_str().to_owned())
            .collect(),
        destinations: catalog
            .destinations
            .iter()
            .map(|d| d.name.as_str().to_owned())
            .collect(),
        filter,
        query,
    };
    Ok(rendered(&view).into_response())
}

pub async fn event(
    State(state): State<ConsoleState>,
    Extension(signed): Extension<Signed>,
    Path(id): Path<String>,
) -> PageResult {
    let view = events::show_event(State(state.api.clone()), Path(id))
        .await?
        .0;
    let body = base64::engine::general_purpose::STANDARD
        .decode(&view.body_base64)
        .unwrap_or_default();
    let now = now_millis();
    let mut blocks = Vec::new();
    for brief in &view.event.deliveries {
        let path = Path(brief.id.as_str().to_owned());
        let detail = deliveries::show_delivery(State(state.api.clone()), path)
            .await?
            .0;
        blocks.push(DeliveryBlock::new(&detail.delivery, &detail.attempts, now));
    }
    let headers: Vec<(String, String)> = view
        .headers
        .iter()
        .map(|h| (visible(&h.name), visible(&h.value)))
        .collect();
    let raw_headers: Vec<(String, String)> = view
        .headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let page = EventPage {
        chrome: Chrome::new(&signed, "events"),
        row: Row::new(&view.event, now),
        remote_addr: view
            .event
            .remote_addr
            .as_deref()
            .map(visible)
            .unwrap_or_default(),
        content_type: view
            .event
            .content_type
            .as_deref()
            .map(visible)
            .unwrap_or_default(),
        body_bytes: view.event.body_bytes,
        tree: view
            .body_json
            .as_ref()
            .map(render::json_tree)
            .unwrap_or_default(),
        raw: view.body.as_deref().map(visible),
        hex: view
            .body
            .is_none()
            .then(|| render::hex_dump(&body, 64 * 1024)),
        curl: render::curl(&view.event.source, &raw_headers, &body),
        headers,
        deliveries: blocks,
    };
    Ok(rendered(&page).into_response())
}

/// The body exactly as received, as a download that no browser renders on this origin.
pub async fn body(State(state): State<ConsoleState>, Path(id): Path<String>) -> PageResult {
    let view = events::show_event(State(state.api.clone()), Path(id))
        .await?
        .0;
    let body = base64::engine::general_purpose::STANDARD
        .decode(&view.body_base64)
        .unwrap_or_default();
    let mut response = body.into_response();
    let headers = response.headers_mut();
    let disposition = format!("attachment; filename=\"{}.body\"", view.event.id.as_str());
    for (name, value) in [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::CONTENT_DISPOSITION, disposition),
        (
            header::CONTENT_SECURITY_POLICY,
            "sandbox; default-src 'none'".to_owned(),
        ),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    Ok(response)
}

#[derive(serde::Deserialize)]
pub struct Pair {
    a: Option<u32>,
    b: Option<u32>,
}

/// Two attempts of a delivery side by side.
pub async fn compare(
    State(state): State<ConsoleState>,
    Extension(signed): Extension<Signed>,
    Path(id): Path<String>,
    Query(pair): Query<Pair>,
) -> PageResult {
    let detail = deliveries::show_delivery(State(state.api.clone()), Path(id))
        .await?
        .0;
    let numbers: Vec<u32> = detail.attempts.iter().map(|a| a.number).collect();
    let last = numbers.last().copied().unwrap_or(0);
    let right = pair.b.unwrap_or(last);
    let left = pair.a.unwrap_or(right.saturating_sub(1).max(1));
    let pick = |n: u32| detail.attempts.iter().find(|a| a.number == n);
    let fields = |n: u32| -> Vec<String> {
        match pick(n) {
            None => vec!["(no such attempt)".into(); 8],
            Some(view) => {
                let a = &view.attempt;
                vec![
                    format_millis(a.started_at),
                    format!("{} ms", a.duration_ms),
                    a.verdict.as_str().to_owned(),
                    a.detail.summary.clone(),
                    a.detail.status.map(|s| s.to_string()).unwrap_or_default(),
                    a.detail.error.clone().unwrap_or_default(),
                    a.detail.response_headers.clone().unwrap_or_default(),
                    a.detail.response_excerpt.clone().unwrap_or_default(),
                ]
            }
        }
    };
    let labels = [
        "Started", "Duration", "Verdict", "Summary", "Status", "Error", "Headers", "Response",
    ];
    let rows = labels
        .into_iter()
        .zip(fields(left).into_iter().zip(fields(right)))
        .map(|(label, (l, r))| (label, l, r))
        .collect();
    let page = ComparePage {
        chrome: Chrome::new(&signed, "events"),
        event_id: detail.delivery.event_id.as_str().to_owned(),
        delivery_id: detail.delivery.id.as_str().to_owned(),
        destination: visible(&detail.delivery.destination),
        left,
        right,
        numbers,
        rows: render::compare(rows),
    };
    Ok(rendered(&page).into_response())
}

pub async fn destinations(
    State(state): State<ConsoleState>,
    Extension(signed): Extension<Signed>,
) -> PageResult {
    let views = destinations::list_destinations(State(state.api.clone()))
        .await?
        .0;
    let now = now_millis();
    let rows = views
        .into_iter()
        .map(|view| {
            let f = &view.figures;
            DestinationRow {
                name: visible(&f.name),
                paused: view.state == "paused",
                configured: view.state != "not_configured",
                state: view.state.replace('_', " "),
                ordering: view.ordering.clone().unwrap_or_default(),
                kind: view.kind.clone().unwrap_or_default(),
                backlog: f.pending + f.in_flight,
                oldest: f
                    .oldest_pending_at
                    .map(|at| render::ago(at, now))
                    .unwrap_or_default(),
                succeeded: f.succeeded,
                dead: f.dead,
                last_success: f
                    .last_success_at
                    .map(|at| render::ago(at, now))
                    .unwrap_or_default(),
                last_failure: f
                    .last_failure
                    .as_ref()
                    .map(|a| {
                        let when = render::ago(a.finished_at(), now);
                        format!("{} ({when})", visible(&a.detail.summary))
                    })
                    .unwrap_or_default(),
                chart: attempts_chart(&view.last_hour),
            }
        })
        .collect();
    let page = DestinationsPage {
        chrome: Chrome::new(&signed, "destinations"),
        rows,
    };
    Ok(rendered(&page).into_response())
}

pub async fn sources(
    State(state): State<ConsoleState>,
    Extension(signed): Extension<Signed>,
) -> PageResult {
    let views = destinations::list_sources(State(state.api.clone()))
        .await?
        .0;
    let rows = views
        .into_iter()
        .map(|view| {
            let count = |key: &str| view.requests.get(key).copied().unwrap_or(0);
            SourceRow {
                name: visible(&view.name),
                provider: view.provider.clone(),
                accepted: count("accepted"),
                duplicate: count("duplicate"),
                refused: view
                    .requests
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "accepted" | "duplicate"))
                    .map(|(k, n)| (k.replace('_', " "), *n))
                    .collect(),
                chart: requests_chart(&view.last_hour),
            }
        })
        .collect();
    let page = SourcesPage {
        chrome: Chrome::new(&signed, "sources"),
        rows,
    };
    Ok(rendered(&page).into_response())
}

type LastHour = std::collections::BTreeMap<String, Vec<u64>>;

fn sum(hour: &LastHour, kind: &str) -> u64 {
    hour.get(kind)
        .map(|counts| counts.iter().sum())
        .unwrap_or(0)
}

fn attempts_chart(hour: &LastHour) -> Chart {
    let series = |kind: &str| hour.get(kind).cloned().unwrap_or_default();
    let (delivered, failed) = (sum(hour, "delivered"), sum(hour, "failed"));
    let words = match delivered + failed {
        0 => "no attempts in the last hour".to_owned(),
        all => format!(
            "last hour: {delivered} delivered, {failed} failed ({:.0} % delivered)",
            delivered as f64 * 100.0 / all as f64
        ),
    };
    Chart {
        bars: render::bars(&[("ok", series("delivered")), ("bad", series("failed"))]),
        words,
    }
}

fn requests_chart(hour: &LastHour) -> Chart {
    let mut refused = vec![0u64; crate::recent::MINUTES];
    let refusals = hour
        .iter()
        .filter(|(kind, _)| !matches!(kind.as_str(), "accepted" | "duplicate"));
    for (_, counts) in refusals {
        for (slot, n) in refused.iter_mut().zip(counts) {
            *slot += n;
        }
    }
    let series = |kind: &str| hour.get(kind).cloned().unwrap_or_default();
    let refused_total: u64 = refused.iter().sum();
    let words = format!(
        "last hour: {} accepted, {} duplicate, {refused_total} refused",
        sum(hour, "accepted"),
        sum(hour, "duplicate")
    );
    Chart {
        bars: render::bars(&[
            ("ok", series("accepted")),
            ("off", series("duplicate")),
            ("bad", refused),
        ]),
        words,
    }
}

pub fn job_row(job: &JobView) -> JobRow {
    let filter = serde_json::to_value(&job.scope.filter)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .map(|map| {
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str().map(str::to_owned).unwrap_or(v.to_string())
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    JobRow {
        id: job.id.clone(),
        action: format!("{:?}", job.scope.action).to_lowercase(),
        state: format!("{:?}", job.state).to_lowercase(),
        filter: visible(&filter),
        matched: job.matched,
        changed: job.changed,
        succeeded: job.succeeded,
        failed: job.failed,
        waiting: job.waiting,
        created_ago: render::ago(job.created_at, now_millis()),
        error: job.error.as_deref().map(visible).unwrap_or_default(),
    }
}

pub async fn jobs(
    State(state): State<ConsoleState>,
    Extension(signed): Extension<Signed>,
) -> PageResult {
    let jobs = bulk::list_jobs(State(state.api.clone())).await?.0;
    let page = JobsPage {
        chrome: Chrome::new(&signed, "jobs"),
        jobs: jobs.iter().map(job_row).collect(),
    };
    Ok(rendered(&page).into_response())
}

pub async fn job(
    State(state): State<ConsoleState>,
    Extension(signed): Extension<Signed>,
    Path(id): Path<String>,
) -> PageResult {
    let job = bulk::show_job(State(state.api.clone()), Path(id)).await?.0;
    let page = JobPage {
        chrome: Chrome::new(&signed, "jobs"),
        running: job.state == crate::store::JobState::Running,
        job: job_row(&job),
    };
    Ok(rendered(&page).into_response())
}
