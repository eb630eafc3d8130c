//! `/api/v1/events`: what was received, newest first, and one event in full.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use base64::Engine as _;
use serde::Serialize;

use super::params::{self, FilterParams, PageParams};
use super::{ApiError, ApiResult, ApiState, ErrorBody};
use crate::domain::EventId;
use crate::store::{EventSummary, Page};

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventPage {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<EventSummary>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
    /// Present when the listing ran out of time before the page was full (a filter that
    /// matches little in a big store): events received before this time were not looked at
    /// yet; `next` goes on from there. Narrowing the filter (a time range) helps.
    pub looked_back_to: Option<i64>,
}

impl From<Page<EventSummary>> for EventPage {
    fn from(page: Page<EventSummary>) -> Self {
        Self {
            items: page.items,
            next: page.next.map(|cursor| cursor.0),
            looked_back_to: page.looked_back_to,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HeaderView {
    pub name: String,
    /// The value as text (bytes that are not UTF-8 are replaced); credentials show as
    /// `[redacted]`, as they were stored.
    pub value: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// Metadata, classification and the event's deliveries.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub event: EventSummary,
    pub headers: Vec<HeaderView>,
    /// The body as text when it is UTF-8.
    pub body: Option<String>,
    /// The exact body bytes, base64: always present, so nothing is lost to decoding.
    pub body_base64: String,
    /// The body parsed, when it is JSON.
    #[schema(value_type = Option<Object>)]
    pub body_json: Option<serde_json::Value>,
}

/// Events, newest first.
#[utoipa::path(get, path = "/api/v1/events", params(FilterParams, PageParams), tag = "events",
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn list_events(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> ApiResult<EventPage> {
    let (filter, after, limit) = params::list(query.as_deref())?;
    let page = state.store.list_events(filter, after, limit).await?;
    Ok(Json(page.into()))
}

/// One event: metadata, headers (credentials masked), body, deliveries.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events",
    params(("id" = String, Path, description = "evt_...")),
    responses((status = 200, body = EventView), (status = 404, body = ErrorBody)))]
pub async fn show_event(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<EventView> {
    let id = EventId::parse(&id).map_err(|_| ApiError::not_found("event"))?;
    let detail = state
        .store
        .event(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    let body_json = serde_json::from_slice(&detail.body).ok();
    Ok(Json(EventView {
        event: detail.summary,
        headers: detail
            .headers
            .into_iter()
            .map(|(name, value)| HeaderView {
                name,
                value: String::from_utf8_lossy(&value).into_owned(),
            })
            .collect(),
        body: std::str::from_utf8(&detail.body).ok().map(str::to_owned),
        body_base64: base64::engine::general_purpose::STANDARD.encode(&detail.body),
        body_json,
    }))
}
