//! `/api/v1/deliveries`: listing, one delivery with its attempts, replay and cancel.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::params::{self, FilterParams, PageParams};
use super::{ApiError, ApiResult, ApiState, ErrorBody};
use crate::domain::{DeliveryId, now_millis};
use crate::store::{AttemptView, CancelOutcome, DeliverySummary, Page, ReplayOutcome};

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<DeliverySummary>,
    pub next: Option<String>,
}

impl From<Page<DeliverySummary>> for DeliveryPage {
    fn from(page: Page<DeliverySummary>) -> Self {
        Self {
            items: page.items,
            next: page.next.map(|cursor| cursor.0),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    #[schema(value_type = Object)]
    pub delivery: DeliverySummary,
    #[schema(value_type = Vec<Object>)]
    pub attempts: Vec<AttemptView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StateChange {
    pub id: String,
    /// The delivery's state after the call.
    pub state: String,
}

fn delivery_id(raw: &str) -> Result<DeliveryId, ApiError> {
    DeliveryId::parse(raw).map_err(|_| ApiError::not_found("delivery"))
}

/// Deliveries, newest first.
#[utoipa::path(get, path = "/api/v1/deliveries", params(FilterParams, PageParams), tag = "deliveries",
    responses((status = 200, body = DeliveryPage), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> ApiResult<DeliveryPage> {
    let (filter, after, limit) = params::list(query.as_deref())?;
    params::no_body_search(&filter)?;
    let page = state.store.list_deliveries(filter, after, limit).await?;
    Ok(Json(page.into()))
}

/// One delivery with every attempt.
#[utoipa::path(get, path = "/api/v1/deliveries/{id}", tag = "deliveries",
    params(("id" = String, Path, description = "dlv_...")),
    responses((status = 200, body = DeliveryView), (status = 404, body = ErrorBody)))]
pub async fn show_delivery(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<DeliveryView> {
    let (delivery, attempts) = state
        .store
        .delivery(&delivery_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    Ok(Json(DeliveryView { delivery, attempts }))
}

/// Makes the delivery due now with a fresh retry window.
#[utoipa::path(post, path = "/api/v1/deliveries/{id}/replay", tag = "deliveries",
    params(("id" = String, Path, description = "dlv_...")),
    responses((status = 200, body = StateChange), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "in flight right now"),
              (status = 403, body = ErrorBody)))]
pub async fn replay_delivery(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StateChange> {
    let id = delivery_id(&id)?;
    match state.store.replay(&id, now_millis()).await? {
        // The store's change feed wakes the destination's worker.
        ReplayOutcome::Scheduled => Ok(Json(StateChange {
            id: id.as_str().to_owned(),
            state: "pending".into(),
        })),
        ReplayOutcome::NotFound => Err(ApiError::not_found("delivery")),
        ReplayOutcome::InFlight => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the delivery is being attempted right now; replay it once the attempt ends",
        )),
    }
}

/// Stops a waiting delivery: it will not be attempted again (replay undoes this).
#[utoipa::path(post, path = "/api/v1/deliveries/{id}/cancel", tag = "deliveries",
    params(("id" = String, Path, description = "dlv_...")),
    responses((status = 200, body = StateChange), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "in flight or already finished"),
              (status = 403, body = ErrorBody)))]
pub async fn cancel_delivery(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<StateChange> {
    let id = delivery_id(&id)?;
    match state.store.cancel(&id, now_millis()).await? {
        CancelOutcome::Cancelled => Ok(Json(StateChange {
            id: id.as_str().to_owned(),
            state: "cancelled".into(),
        })),
        CancelOutcome::NotFound => Err(ApiError::not_found("delivery")),
        CancelOutcome::InFlight => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the delivery is being attempted right now and cannot be called back",
        )),
        CancelOutcome::Finished(state) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("the delivery is already {state}: nothing to cancel"),
        )),
    }
}
