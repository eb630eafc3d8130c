//! The web console, `/ui`: server-rendered pages (askama, auto-escaped) over the management
//! API's own handlers and scope checks, a session cookie from a posted API token, a strict
//! CSP, and a live events view over server-sent events.
//!
//! Every page and action calls an API handler (`ACTIONS` maps each console route to the
//! API operation it uses); the console adds no way into the store of its own.

mod actions;
mod assets;
mod live;
mod pages;
pub mod render;
pub mod session;
mod views;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::api::{ApiError, ApiState};
use crate::config::api::ApiToken;
use session::{Sessions, Signed};

/// What every console request can reach.
#[derive(Clone)]
pub struct ConsoleState {
    pub api: ApiState,
    pub sessions: Sessions,
    pub tokens: Arc<Vec<ApiToken>>,
    /// The listener speaks HTTPS: the cookie is `Secure` with a `__Host-` name.
    pub secure: bool,
}

/// Each console route and the API operation (its OpenAPI `operationId`) it calls. Sign-in,
/// sign-out and the CSP report touch sessions only, never the store.
pub const ACTIONS: &[(&str, &str, &str)] = &[
    ("GET", "/ui/events", "list_events"),
    ("GET", "/ui/stream", "stream"),
    ("GET", "/ui/events/{id}", "show_event"),
    ("GET", "/ui/events/{id}/body", "show_event"),
    ("GET", "/ui/deliveries/{id}/compare", "show_delivery"),
    ("POST", "/ui/deliveries/{id}/replay", "replay_delivery"),
    ("POST", "/ui/deliveries/{id}/cancel", "cancel_delivery"),
    ("GET", "/ui/bulk", "bulk_replay"),
    ("POST", "/ui/bulk", "bulk_replay"),
    ("GET", "/ui/jobs", "list_jobs"),
    ("GET", "/ui/jobs/{id}", "show_job"),
    ("POST", "/ui/jobs/{id}/cancel", "cancel_job"),
    ("GET", "/ui/destinations", "list_destinations"),
    ("POST", "/ui/destinations/{name}/pause", "pause_destination"),
    (
        "POST",
        "/ui/destinations/{name}/resume",
        "resume_destination",
    ),
    ("GET", "/ui/sources", "list_sources"),
];

pub fn router(state: ConsoleState) -> Router {
    let signed_in = Router::new()
        .route("/ui/events", get(pages::events))
        .route("/ui/stream", get(live::rows))
        .route("/ui/events/{id}", get(pages::event))
        .route("/ui/events/{id}/body", get(pages::body))
        .route("/ui/deliveries/{id}/compare", get(pages::compare))
        .route("/ui/deliveries/{id}/{action}", post(actions::delivery))
        .route(
            "/ui/bulk",
            get(actions::bulk_preview).post(actions::bulk_start),
        )
        .route("/ui/jobs", get(pages::jobs))
        .route("/ui/jobs/{id}", get(pages::job))
        .route("/ui/jobs/{id}/cancel", post(actions::cancel_job))
        .route("/ui/destinations", get(pages::destinations))
        .route(
            "/ui/destinations/{name}/{action}",
            post(actions::destination),
        )
        .route("/ui/sources", get(pages::sources))
        .route("/ui/logout", post(actions::sign_out))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), signed));
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/events") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/events") }))
        .route("/ui/login", get(actions::login_form).post(actions::sign_in))
        .route("/ui/static/{version}/{file}", get(assets::serve))
        .route("/ui/csp-report", post(actions::csp_report))
        .merge(signed_in)
        .layer(axum::middleware::from_fn(guard))
        .with_state(state)
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
    object-src 'none'; report-uri /ui/csp-report";

/// Security headers on every console answer, and the same-origin check on every state
/// change (sign-in included) before any handler runs.
async fn guard(request: Request, next: Next) -> Response {
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    let refused = match changes {
        true => {
            request.uri().path() != "/ui/csp-report" && !session::same_origin(request.headers())
        }
        false => !session::may_read(request.headers()),
    };
    let mut response = if refused {
        failure(
            StatusCode::FORBIDDEN,
            "This request did not come from the console's own pages, so it was refused.",
        )
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("x-frame-options", "DENY"),
        // Another port of this host is the same site: its pages may not embed ours.
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        // A download sets its own, stricter policy.
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Finds the session; without one a page goes to sign-in and anything else is refused.
async fn signed(State(state): State<ConsoleState>, mut request: Request, next: Next) -> Response {
    let found = state
        .sessions
        .find(request.headers(), &state.tokens, state.secure)
        .await;
    match found {
        Ok(Some(signed)) => {
            request.extensions_mut().insert(signed);
            next.run(request).await
        }
        Ok(None) if request.method() == Method::GET && request.uri().path() != "/ui/stream" => {
            Redirect::to("/ui/login").into_response()
        }
        Ok(None) => failure(
            StatusCode::UNAUTHORIZED,
            "Your session has ended: sign in again.",
        ),
        Err(err) => PageError::from(ApiError::from(err)).into_response(),
    }
}

/// The API's own scope rule, applied to a console action before its handler is called.
fn allowed(signed: &Signed, method: &Method) -> Result<(), ApiError> {
    super::api::may(signed.scope, method)
}

#[derive(Template)]
#[template(path = "console/failure.html")]
struct Failure<'a> {
    status: u16,
    message: &'a str,
}

/// A page saying what went wrong, with the status the API gave.
pub fn failure(status: StatusCode, message: &str) -> Response {
    let page = Failure {
        status: status.as_u16(),
        message,
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, message.to_owned()).into_response(),
    }
}

impl IntoResponse for views::Rendered {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(html) => Html(html).into_response(),
            Err(err) => {
                tracing::error!(error = %err, "console: a page did not render");
                failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "This page failed to render.",
                )
            }
        }
    }
}

/// An API error as a console page.
pub struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(err: ApiError) -> Self {
        Self(err)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        failure(self.0.status, &self.0.message)
    }
}

pub type PageResult = Result<Response, PageError>;
