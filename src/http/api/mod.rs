//! The management API, `/api/v1`: JSON over HTTP for the CLI, scripts and the console.
//!
//! Who may call it: a unix socket guarded by its file permissions (local users the
//! operator admits; every caller there is admin), and TCP listeners where every request needs
//! a bearer token from `[api] tokens` (`read` may list and show; writes need `admin`).

pub(crate) mod bulk;
pub(crate) mod deliveries;
pub(crate) mod destinations;
pub(crate) mod events;
pub(crate) mod params;
pub mod socket;
pub mod stream;

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::metrics::SourceCounts;
use crate::config::api::{ApiToken, Scope};
use crate::delivery::Controls;
use crate::domain::{Name, Ordering};
use crate::store::{Store, StoreError};

/// What the API knows of the running service.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    /// Configured sources and destinations; a reload replaces them.
    pub catalog: Arc<std::sync::RwLock<Arc<Catalog>>>,
    pub controls: Controls,
    pub counts: Arc<SourceCounts>,
    /// Re-reads the config file (`POST /api/v1/reload`), when the server has one.
    pub reload: Option<Arc<dyn Reload>>,
}

impl ApiState {
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Applies the config file again; `Err` carries every validation error, one per line.
#[async_trait::async_trait]
pub trait Reload: Send + Sync {
    async fn reload(&self) -> Result<Vec<String>, String>;
}

#[derive(Default)]
pub struct Catalog {
    pub destinations: Vec<DestinationInfo>,
    pub sources: Vec<(Name, &'static str)>,
}

impl Catalog {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            destinations: config
                .destinations
                .values()
                .map(|d| DestinationInfo {
                    name: d.name.clone(),
                    paused: d.paused,
                    ordering: d.ordering,
                    concurrency: d.concurrency,
                    kind: d.target.kind(),
                })
                .collect(),
            sources: config
                .sources
                .values()
                .map(|s| (s.name.clone(), s.provider.name()))
                .collect(),
        }
    }
}

/// A configured destination as the API describes it.
#[derive(Clone)]
pub struct DestinationInfo {
    pub name: Name,
    /// The config's `paused`, which a pause stored by an operator overrides.
    pub paused: bool,
    pub ordering: Ordering,
    pub concurrency: usize,
    /// `http`, `command`, `nats`, ...
    pub kind: &'static str,
}

/// Who is calling, decided once per request by the listener's guard.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub scope: Scope,
}

/// An API error: a stable `code` for scripts and a `message` for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable: `unauthorized`, `forbidden`, `not_found`, `bad_filter`, `conflict`,
    /// `store_unavailable`, `internal`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_filter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_filter", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::BadRequest(message) => Self::bad_filter(message),
            StoreError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store cannot answer right now; retry later",
            ),
            other => {
                tracing::error!(error = %other, "api: store failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "store failure (see the server log)",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_owned(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<Json<T>, ApiError>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookrelay management API",
        description = "Inspect, replay and cancel deliveries; pause destinations."
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every API route with its OpenAPI description, generated from the handlers themselves.
fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(events::list_events))
        .routes(routes!(events::show_event))
        .routes(routes!(stream::stream))
        .routes(routes!(deliveries::list_deliveries))
        .routes(routes!(deliveries::show_delivery))
        .routes(routes!(deliveries::replay_delivery))
        .routes(routes!(deliveries::cancel_delivery))
        .routes(routes!(bulk::bulk_replay))
        .routes(routes!(bulk::bulk_cancel))
        .routes(routes!(bulk::show_job))
        .routes(routes!(bulk::list_jobs))
        .routes(routes!(bulk::cancel_job))
        .routes(routes!(destinations::list_destinations))
        .routes(routes!(destinations::pause_destination))
        .routes(routes!(destinations::resume_destination))
        .routes(routes!(destinations::list_sources))
        .routes(routes!(destinations::reload))
}

/// The OpenAPI document (also served at `/api/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The API for a listener: `tokens` guard TCP listeners; `None` marks the local socket,
/// whose callers are admin.
pub fn router(state: ApiState, tokens: Option<Arc<Vec<ApiToken>>>) -> axum::Router {
    let (api, doc) = routes().split_for_parts();
    let doc = Arc::new(doc);
    let guard = axum::middleware::from_fn_with_state(tokens, guard);
    api.with_state(state)
        .layer(guard)
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || async move { Json(doc.as_ref().clone()) }),
        )
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route")
        })
}

/// Decides who the caller is: a token's scope on TCP, admin on the local socket; and refuses
/// a write to a read-only caller.
async fn guard(
    State(tokens): State<Option<Arc<Vec<ApiToken>>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let scope = match &tokens {
        None => Scope::Admin,
        Some(tokens) => match bearer(&request).and_then(|presented| find(tokens, presented)) {
            Some(scope) => scope,
            None => {
                let mut response = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a valid API token is required (Authorization: Bearer TOKEN)",
                )
                .into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return response;
            }
        },
    };
    if let Err(refused) = may(scope, request.method()) {
        return refused.into_response();
    }
    request.extensions_mut().insert(Caller { scope });
    next.run(request).await
}

/// Reads need a token; writes need an admin one. The console applies the same rule.
pub fn may(scope: Scope, method: &Method) -> Result<(), ApiError> {
    let reads = matches!(*method, Method::GET | Method::HEAD);
    if !reads && scope < Scope::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token may only read; replay, cancel and pause need an admin token",
        ));
    }
    Ok(())
}

fn bearer(request: &Request) -> Option<&[u8]> {
    let value = request.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

/// The scope of the token presented, comparing digests in constant time against every token.
fn find(tokens: &[ApiToken], presented: &[u8]) -> Option<Scope> {
    let digest = Sha256::digest(presented);
    tokens.iter().fold(None, |found, token| {
        let equal = bool::from(digest.as_slice().ct_eq(token.secret.digest()));
        if equal { Some(token.scope) } else { found }
    })
}
