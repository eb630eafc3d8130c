//! `/api/v1/destinations` (live state, backlog, pause and resume) and `/api/v1/sources`.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::{ApiError, ApiResult, ApiState, ErrorBody};
use crate::domain::{UnixMillis, now_millis};
use crate::store::DestinationStats;

/// A destination's live state beside what the store counts of it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DestinationView {
    /// `healthy`, `failing` (circuit breaker open), `paused`, or `not_configured` (deliveries
    /// wait for a destination the config no longer has).
    pub state: String,
    /// The destination's kind (`http`, `command`, `nats`, `amqp`, `redis`, `mqtt`); absent
    /// for one no longer configured.
    pub kind: Option<String>,
    pub ordering: Option<String>,
    pub concurrency: Option<usize>,
    /// Seconds the oldest waiting delivery has waited.
    pub oldest_pending_age_secs: Option<u64>,
    /// This process's attempts per minute over the last hour, oldest first: `delivered` and
    /// `failed` (every other verdict), 60 numbers each; absent kinds had none.
    pub last_hour: BTreeMap<String, Vec<u64>>,
    /// `name`, counts by state (`pending`, `in_flight`, `succeeded`, `dead`, `cancelled`:
    /// cancelled or superseded), `oldest_pending_at`, `last_success_at` (when the last
    /// delivered attempt ended), `last_failure` (the last attempt not delivered, with its
    /// verdict and summary), `paused` (set at runtime, else null).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub figures: DestinationStats,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SourceView {
    pub name: String,
    pub provider: String,
    /// Requests since the server started, by outcome: `accepted`, `duplicate`, or why
    /// they were refused (`invalid_credentials`, `rate_limited`, `too_large`, ...).
    pub requests: BTreeMap<String, u64>,
    /// The same outcomes per minute over the last hour, oldest first (60 numbers each).
    pub last_hour: BTreeMap<String, Vec<u64>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PauseState {
    pub name: String,
    pub paused: bool,
}

/// Every destination, configured or still holding deliveries, with its live state.
#[utoipa::path(get, path = "/api/v1/destinations", tag = "destinations",
    responses((status = 200, body = Vec<DestinationView>), (status = 401, body = ErrorBody)))]
pub async fn list_destinations(State(state): State<ApiState>) -> ApiResult<Vec<DestinationView>> {
    let mut stats: BTreeMap<String, DestinationStats> = state
        .store
        .destination_stats()
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let now = now_millis();
    let mut views = Vec::new();
    let catalog = state.catalog();
    // A process that does not deliver (`server.roles`) has no workers: the stored pauses say.
    let stored_pauses: HashMap<String, bool> = state
        .store
        .paused_destinations()
        .await?
        .into_iter()
        .collect();
    for info in catalog.destinations.iter() {
        let stat = stats.remove(info.name.as_str()).unwrap_or_default();
        let name = info.name.as_str();
        let live = match state.controls.get(name) {
            Some(control) if control.is_paused() => "paused",
            Some(control) if control.is_failing() => "failing",
            Some(_) => "healthy",
            None if stored_pauses.get(name).copied().unwrap_or(info.paused) => "paused",
            None => "healthy",
        };
        let mut view = view(info.name.as_str(), live, stat, now);
        view.ordering = Some(format!("{:?}", info.ordering).to_lowercase());
        view.concurrency = Some(info.concurrency);
        view.kind = Some(info.kind.to_owned());
        views.push(view);
    }
    for (name, stat) in stats {
        if stat.pending + stat.in_flight > 0 {
            views.push(view(&name, "not_configured", stat, now));
        }
    }
    Ok(Json(views))
}

fn view(name: &str, live: &str, mut stat: DestinationStats, now: UnixMillis) -> DestinationView {
    stat.name = name.to_owned();
    DestinationView {
        state: live.to_owned(),
        kind: None,
        ordering: None,
        concurrency: None,
        oldest_pending_age_secs: stat
            .oldest_pending_at
            .map(|at| ((now - at).max(0) / 1000) as u64),
        last_hour: crate::recent::attempts().last_hour(name),
        figures: stat,
    }
}

/// Holds the destination's deliveries (events are still accepted); survives restarts.
#[utoipa::path(post, path = "/api/v1/destinations/{name}/pause", tag = "destinations",
    params(("name" = String, Path)),
    responses((status = 200, body = PauseState), (status = 404, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn pause_destination(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<PauseState> {
    set_paused(state, name, true).await
}

/// Lets the destination's deliveries go again, in order where its mode is `fifo`.
#[utoipa::path(post, path = "/api/v1/destinations/{name}/resume", tag = "destinations",
    params(("name" = String, Path)),
    responses((status = 200, body = PauseState), (status = 404, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn resume_destination(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<PauseState> {
    set_paused(state, name, false).await
}

async fn set_paused(state: ApiState, name: String, paused: bool) -> ApiResult<PauseState> {
    if !state
        .catalog()
        .destinations
        .iter()
        .any(|info| info.name.as_str() == name)
    {
        return Err(ApiError::not_found("destination"));
    }
    // Stored first: once the answer says paused, a restart keeps it paused. The change feed
    // carries it to every process's workers; this one's are told at once.
    state.store.set_paused(&name, paused, now_millis()).await?;
    if let Some(control) = state.controls.get(&name) {
        control.set_paused(paused);
    }
    tracing::info!(destination = %name, paused, "destination {}", if paused { "paused" } else { "resumed" });
    Ok(Json(PauseState { name, paused }))
}

/// Every configured source with its request counts since start.
#[utoipa::path(get, path = "/api/v1/sources", tag = "sources",
    responses((status = 200, body = Vec<SourceView>), (status = 401, body = ErrorBody)))]
pub async fn list_sources(State(state): State<ApiState>) -> ApiResult<Vec<SourceView>> {
    Ok(Json(
        state
            .catalog()
            .sources
            .iter()
            .map(|(name, provider)| SourceView {
                name: name.as_str().to_owned(),
                provider: (*provider).to_owned(),
                requests: state
                    .counts
                    .of(name.as_str())
                    .into_iter()
                    .map(|(outcome, n)| (outcome.to_owned(), n))
                    .collect(),
                last_hour: crate::recent::requests().last_hour(name.as_str()),
            })
            .collect(),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    /// What changed, and settings that only a restart applies.
    pub notes: Vec<String>,
}

/// Re-reads the config file, as SIGHUP does: sources, routes and destinations change
/// without a restart; a config with errors is refused and the running one stays.
#[utoipa::path(post, path = "/api/v1/reload", tag = "server",
    responses((status = 200, body = Reloaded), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn reload(State(state): State<ApiState>) -> ApiResult<Reloaded> {
    let Some(reload) = &state.reload else {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "conflict",
            "this server was not started from a config file",
        ));
    };
    match reload.reload().await {
        Ok(notes) => Ok(Json(Reloaded { notes })),
        Err(errors) => Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_config",
            format!("config refused, the running one stays: {errors}"),
        )),
    }
}
