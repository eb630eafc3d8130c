//! Bulk replay and cancel by filter: a dry run counts, the real run is a server-side job that
//! changes deliveries in small batches (ingest keeps flowing) and can be polled.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::params::{self, FilterParams};
use super::{ApiError, ApiResult, ApiState, ErrorBody};
use crate::domain::{EventId, Name, UnixMillis, now_millis};
use crate::store::{BulkAction, BulkScope, Cursor, DeliverySummary, JobView};

/// Deliveries one step changes: one short write transaction each.
const STEP: usize = 200;
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

async fn bulk(
    state: ApiState,
    action: BulkAction,
    request: BulkRequest,
) -> Result<(StatusCode, Json<BulkAnswer>), ApiError> {
    let now = now_millis();
    let filter = params::filter(request.filter, now)?;
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
    tokio::spawn(run_job(state.clone(), id.clone(), scope));
    let job = state
        .store
        .job(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))?;
    Ok((StatusCode::ACCEPTED, Json(BulkAnswer::Job(Box::new(job)))))
}

/// Walks the matching deliveries in steps; each step is its own short transaction, queued
/// behind ingest's commits like any other write.
async fn run_job(state: ApiState, id: String, scope: BulkScope) {
    let mut after = None;
    let error = loop {
        let step = state
            .store
            .bulk_step(id.clone(), scope.clone(), after, STEP, now_millis())
            .await;
        match step {
            Ok(step) => {
                if step.changed > 0 {
                    wake(&state, &scope);
                }
                match step.next {
                    Some(next) => after = Some(next),
                    None => break None,
                }
            }
            Err(err) => break Some(err.to_string()),
        }
        tokio::task::yield_now().await;
    };
    if let Some(error) = &error {
        tracing::error!(job = %id, %error, "bulk job stopped");
    }
    if let Err(err) = state
        .store
        .finish_job(id.clone(), error, now_millis())
        .await
    {
        tracing::error!(job = %id, error = %err, "could not record the end of a bulk job");
    }
}

fn wake(state: &ApiState, scope: &BulkScope) {
    let names: Vec<Name> = match &scope.filter.destination {
        Some(name) => Name::parse(name).into_iter().collect(),
        None => state
            .catalog()
            .destinations
            .iter()
            .map(|d| d.name.clone())
            .collect(),
    };
    state.wakers.wake(&names);
}
