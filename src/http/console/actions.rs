//! What the console changes: sign-in and sign-out, and each operator action as a form post
//! that calls the API handler of the same name under the API's scope rule, then redirects.

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form, Json};
use serde::Deserialize;

use super::pages::job_row;
use super::session::{self, Signed};
use super::views::*;
use super::{ConsoleState, PageError, PageResult, allowed, failure};
use crate::domain::{format_millis, now_millis};
use crate::http::api::bulk::{self, BulkAnswer, BulkRequest};
use crate::http::api::params::{self, FilterParams};
use crate::http::api::{ApiError, deliveries, destinations};

pub async fn login_form(
    State(state): State<ConsoleState>,
    headers: axum::http::HeaderMap,
) -> Response {
    let found = state
        .sessions
        .find(&headers, &state.tokens, state.secure)
        .await;
    if let Ok(Some(_)) = found {
        return Redirect::to("/ui/events").into_response();
    }
    login_page(StatusCode::OK, None)
}

fn login_page(status: StatusCode, error: Option<String>) -> Response {
    let page = LoginPage {
        error,
        css: super::assets::path("app.css"),
        js: super::assets::path("app.js"),
    };
    (status, rendered(&page)).into_response()
}

#[derive(Deserialize)]
pub struct SignIn {
    token: String,
}

pub async fn sign_in(State(state): State<ConsoleState>, Form(form): Form<SignIn>) -> Response {
    match state.sessions.sign_in(&state.tokens, &form.token).await {
        Ok(Some(id)) => {
            tracing::info!("console: signed in");
            (
                [(header::SET_COOKIE, session::set_cookie(&id, state.secure))],
                Redirect::to("/ui/events"),
            )
                .into_response()
        }
        Ok(None) => {
            tracing::warn!("console: sign-in refused (not a configured API token)");
            login_page(
                StatusCode::UNAUTHORIZED,
                Some("That is not one of this server's API tokens ([api] tokens).".into()),
            )
        }
        Err(err) => PageError::from(ApiError::from(err)).into_response(),
    }
}

#[derive(Deserialize)]
pub struct Posted {
    #[serde(default)]
    form_token: String,
    /// The console page to return to.
    #[serde(default)]
    back: String,
}

/// The session's form token and the API's scope rule, before any change.
fn permitted(signed: &Signed, form_token: &str) -> Result<(), PageError> {
    if !session::form_token_matches(signed, form_token) {
        return Err(PageError::from(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "This form is out of date or did not come from this session: reload the page and try again.",
        )));
    }
    allowed(signed, &Method::POST).map_err(PageError::from)
}

/// Back to a console page, never anywhere else.
fn back_to(back: &str, otherwise: &str) -> Response {
    let local = back.starts_with("/ui/") && !back.starts_with("//") && !back.contains('\\');
    Redirect::to(if local { back } else { otherwise }).into_response()
}

pub async fn sign_out(
    State(state): State<ConsoleState>,
    Extension(signed): Extension<Signed>,
    Form(form): Form<Posted>,
) -> PageResult {
    if !session::form_token_matches(&signed, &form.form_token) {
        return Err(PageError::from(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Reload the page and sign out again.",
        )));
    }
    state
        .sessions
        .sign_out(&signed)
        .await
        .map_err(|err| PageError::from(ApiError::from(err)))?;
    Ok((
        [(header::SET_COOKIE, session::clear_cookie(state.secure))],
        Redirect::to("/ui/login"),
    )
        .into_response())
}

/// Replay or cancel one delivery (`/ui/deliveries/{id}/replay|cancel`).
pub async fn delivery(
    State(state): State<ConsoleState>,
    Extension(signed): Extension<Signed>,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<Posted>,
) -> PageResult {
    permitted(&signed, &form.form_token)?;
    let api = State(state.api.clone());
    match action.as_str() {
        "replay" => deliveries::replay_delivery(api, Path(id)).await.map(drop)?,
        "cancel" => deliveries::cancel_delivery(api, Path(id)).await.map(drop)?,
        _ => return Err(ApiError::not_found("console action").into()),
    }
    Ok(back_to(&form.back, "/ui/events"))
}

/// Pause or resume a destination (`/ui/destinations/{name}/pause|resume`).
pub async fn destination(
    State(state): State<ConsoleState>,
    Extension(signed): Extension<Signed>,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<Posted>,
) -> PageResult {
    permitted(&signed, &form.form_token)?;
    let api = State(state.api.clone());
    match action.as_str() {
        "pause" => destinations::pause_destination(api, Path(name))
            .await
            .map(drop)?,
        "resume" => destinations::resume_destination(api, Path(name))
            .await
            .map(drop)?,
        _ => return Err(ApiError::not_found("console action").into()),
    }
    Ok(back_to(&form.back, "/ui/destinations"))
}

/// Stops a running bulk job (`/ui/jobs/{id}/cancel`).
pub async fn cancel_job(
    State(state): State<ConsoleState>,
    Extension(signed): Extension<Signed>,
    Path(id): Path<String>,
    Form(form): Form<Posted>,
) -> PageResult {
    permitted(&signed, &form.form_token)?;
    let job = bulk::cancel_job(State(state.api.clone()), Path(id))
        .await?
        .0;
    Ok(Redirect::to(&format!("/ui/jobs/{}", job_row(&job).id)).into_response())
}

/// The API's filter from the console's form, with ages (`1h`) turned into times now, so
/// the confirmed run covers the window that was counted.
fn api_filter(form: &FilterForm) -> Result<FilterParams, ApiError> {
    let now = now_millis();
    let text = |value: &str| (!value.trim().is_empty()).then(|| value.trim().to_owned());
    let at = |name: &str, value: &str| -> Result<Option<String>, ApiError> {
        Ok(params::time(name, text(value).as_deref(), now)?.map(|ms| ms.to_string()))
    };
    Ok(FilterParams {
        source: text(&form.source),
        event_type: text(&form.event_type),
        since: at("since", &form.since)?,
        until: at("until", &form.until)?,
        git_ref: text(&form.git_ref),
        project: text(&form.project),
        sender: text(&form.sender),
        contains: text(&form.contains),
        state: text(&form.state),
        destination: text(&form.destination),
    })
}

fn bulk_action(name: &str) -> Result<&'static str, ApiError> {
    match name {
        "replay" => Ok("replay"),
        "cancel" => Ok("cancel"),
        other => Err(ApiError::bad_filter(format!(
            "no bulk action {other:?}: replay or cancel"
        ))),
    }
}

async fn call_bulk(
    state: &ConsoleState,
    action: &str,
    request: BulkRequest,
) -> Result<BulkAnswer, ApiError> {
    let api = State(state.api.clone());
    let (_, Json(answer)) = match action {
        "replay" => bulk::bulk_replay(api, Json(request)).await?,
        _ => bulk::bulk_cancel(api, Json(request)).await?,
    };
    Ok(answer)
}

#[derive(Deserialize)]
pub struct BulkQuery {
    #[serde(default)]
    action: String,
    #[serde(flatten)]
    filter: FilterForm,
}

/// The count (a dry run bound to a snapshot) and a few examples, with the form to go on.
pub async fn bulk_preview(
    State(state): State<ConsoleState>,
    Extension(signed): Extension<Signed>,
    Query(query): Query<BulkQuery>,
) -> PageResult {
    allowed(&signed, &Method::POST)?;
    let action = bulk_action(&query.action)?;
    let filter = api_filter(&query.filter)?;
    let mut fixed = FilterForm {
        since: filter.since.clone().unwrap_or_default(),
        until: filter.until.clone().unwrap_or_default(),
        ..query.filter
    };
    fixed.after.clear();
    let request = BulkRequest {
        filter,
        dry_run: true,
        snapshot: None,
    };
    let BulkAnswer::DryRun(dry) = call_bulk(&state, action, request).await? else {
        return Ok(failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The dry run started a job.",
        ));
    };
    let page = BulkPage {
        chrome: Chrome::new(&signed, "events"),
        action,
        count: dry.count,
        as_of: format_millis(dry.as_of),
        snapshot: dry.snapshot,
        back: format!("/ui/events?{}", fixed.query()),
        filter: fixed,
        examples: dry
            .examples
            .iter()
            .map(|d| ExampleRow {
                id: d.id.as_str().to_owned(),
                event_id: d.event_id.as_str().to_owned(),
                destination: super::render::visible(&d.destination),
                state: d.state.as_str(),
                summary: d
                    .last_summary
                    .as_deref()
                    .map(super::render::visible)
                    .unwrap_or_default(),
            })
            .collect(),
    };
    Ok(rendered(&page).into_response())
}

#[derive(Deserialize)]
pub struct BulkConfirm {
    form_token: String,
    action: String,
    snapshot: String,
    #[serde(flatten)]
    filter: FilterForm,
}

/// Starts the job over exactly what the preview counted, then shows its progress.
pub async fn bulk_start(
    State(state): State<ConsoleState>,
    Extension(signed): Extension<Signed>,
    Form(form): Form<BulkConfirm>,
) -> PageResult {
    permitted(&signed, &form.form_token)?;
    let action = bulk_action(&form.action)?;
    let request = BulkRequest {
        filter: api_filter(&form.filter)?,
        dry_run: false,
        snapshot: Some(form.snapshot),
    };
    let BulkAnswer::Job(job) = call_bulk(&state, action, request).await? else {
        return Ok(failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The job did not start.",
        ));
    };
    Ok(Redirect::to(&format!("/ui/jobs/{}", job_row(&job).id)).into_response())
}

/// Counts what the browser reports as blocked by the CSP: it should always stay zero. Anyone
/// may post here, so what is logged is short and escaped (no line of its own in the log).
pub async fn csp_report(body: axum::body::Bytes) -> StatusCode {
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned();
    tracing::warn!(report = ?excerpt, "console: the browser reported a CSP violation");
    crate::telemetry::get().csp_reports.inc();
    StatusCode::NO_CONTENT
}
