//! Bulk replay and cancel by filter: a dry run counts, the real run records a job in the
//! store that the job runner (`crate::jobs`) carries out in small steps and that can be polled.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::params::{self, FilterParams};
use super::{ApiError, ApiResult, ApiState, ErrorBody};
use crate::domain::{EventId, UnixMillis, now_millis};
use crate::store::{BulkAction, BulkScope, Cursor, DeliverySummary, JobCancel, JobView};

const EXAMPLES: usize = 5;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    #[serde(default)]
    pub filter: FilterParams,
    /// Count (and show a few) without changing anything.
    #[serde(default)]
    pub dry_run: bool,
    /// The `snapshot` a dry run answered: the real run then covers the deliveries that
    /// existed at the dry run (those created since are left alone). Without it, everything
    /// that exists when the call arrives.
    pub snapshot: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DryRun {
    pub count: u64,
    /// When the snapshot was taken.
    pub as_of: UnixMillis,
    /// Pass back with the real call to cover exactly the deliveries counted here.
    pub snapshot: String,
    #[schema(value_type = Vec<Object>)]
    pub examples: Vec<DeliverySummary>,
}

/// A dry run's count, or the job a real run started (`GET /api/v1/jobs/{id}` polls it).
#[derive(Serialize)]
#[serde(untagged)]
pub enum BulkAnswer {
    DryRun(DryRun),
    Job(Box<JobView>),
}

/// Replays every delivery matching the filter (all but those in flight).
#[utoipa::path(post, path = "/api/v1/bulk/replay", tag = "bulk", request_body = BulkRequest,
    responses((status = 200, body = DryRun, description = "dry run"),
              (status = 202, body = Object, description = "job started: the job, as /api/v1/jobs/{id} shows it"),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn bulk_replay(
    State(state): State<ApiState>,
    Json(request): Json<BulkRequest>,
) -> Result<(StatusCode, Json<BulkAnswer>), ApiError> {
    bulk(state, BulkAction::Replay, request).await
}

/// Cancels every waiting delivery matching the filter.
#[utoipa::path(post, path = "/api/v1/bulk/cancel", tag = "bulk", request_body = BulkRequest,
    responses((status = 200, body = DryRun, description = "dry run"),
              (status = 202, body = Object, description = "job started: the job, as /api/v1/jobs/{id} shows it"),
              (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn bulk_cancel(
    State(state): State<ApiState>,
    Json(request): Json<BulkRequest>,
) -> Result<(StatusCode, Json<BulkAnswer>), ApiError> {
    bulk(state, BulkAction::Cancel, request).await
}

/// A bulk job's progress: matched, changed so far, and the outcomes of what it changed.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "bulk",
    params(("id" = String, Path, description = "job_...")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
pub async fn show_job(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<JobView> {
    let job = state
        .store
        .job(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    Ok(Json(job))
}

/// Stops a running bulk job: no further batch runs; what it changed stays changed.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "bulk",
    params(("id" = String, Path, description = "job_...")),
    responses((status = 200, body = Object, description = "the job, now cancelled"),
              (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "already finished, failed or cancelled"),
              (status = 403, body = ErrorBody)))]
pub async fn cancel_job(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<JobView> {
    match state.store.cancel_job(&id, now_millis()).await? {
        JobCancel::Cancelled => tracing::info!(job = %id, "bulk job cancelled"),
        JobCancel::NotFound => return Err(ApiError::not_found("job")),
        JobCancel::Finished => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the job has already ended: nothing to cancel",
            ));
        }
    }
    show_job(State(state), Path(id)).await
}

/// Bulk jobs, newest first (the last 100), each with its progress.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "bulk",
    responses((status = 200, body = Vec<Object>), (status = 401, body = ErrorBody)))]
pub async fn list_jobs(State(state): State<ApiState>) -> ApiResult<Vec<JobView>> {
    Ok(Json(state.store.list_jobs(100).await?))
}

async fn bulk(
    state: ApiState,
    action: BulkAction,
    request: BulkRequest,
) -> Result<(StatusCode, Json<BulkAnswer>), ApiError> {
    let now = now_millis();
    let filter = params::filter(request.filter, now)?;
    params::no_body_search(&filter)?;
    if filter == Default::default() {
        return Err(ApiError::bad_filter(
            "an empty filter would touch every delivery: give at least one filter",
        ));
    }
    let mut scope = BulkScope {
        action,
        filter,
        as_of: now,
        snapshot: request.snapshot.map(Cursor),
    };
    let (count, examples, snapshot) = state.store.bulk_count(scope.clone(), EXAMPLES).await?;
    scope.snapshot = Some(snapshot.clone());
    if request.dry_run {
        let answer = DryRun {
            count,
            as_of: scope.as_of,
            snapshot: snapshot.0,
            examples,
        };
        return Ok((StatusCode::OK, Json(BulkAnswer::DryRun(answer))));
    }
    let id = format!(
        "job_{}",
        EventId::generate().as_str().trim_start_matches("evt_")
    );
    state
        .store
        .create_job(id.clone(), scope.clone(), count, now)
        .await?;
    // The job is a row: a runner (in any process on the store) takes it now, told by the
    // change feed, or after a restart at the next start.
    let job = state
        .store
        .job(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    Ok((StatusCode::ACCEPTED, Json(BulkAnswer::Job(Box::new(job)))))
}
