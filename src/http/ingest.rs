//! `POST /hooks/{source}`: admit (address, loop, rate, backlog, header credentials), read the
//! body under its limits, verify, classify, dedup, route, commit, then answer.

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::body::{BodyError, BodyLimits, read_body};
use super::server::PeerAddr;
use super::{AppState, SourceRuntime};
use crate::config::SourceConfig;
use crate::domain::{EventId, HOPS_HEADER, MAX_HOPS, now_millis};
use crate::ingest::{Inbound, Rejection, Routes, accept, ip, is_credential_header};
use crate::store::{NewEvent, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("unknown source")]
    UnknownSource,
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    #[error("request body was not received in time")]
    SlowBody,
    #[error("could not read request body")]
    BadBody,
    #[error("{0}")]
    Rejected(crate::ingest::Rejection),
    #[error("forwarding loop: this request has passed through hookrelay {0} times")]
    Loop(u32),
    #[error("too many requests; retry later")]
    RateLimited(Duration),
    #[error("temporarily unable to store the event; retry later")]
    Unavailable,
    #[error("too many deliveries waiting; retry later")]
    BacklogFull,
    #[error("too many request bodies in flight; retry later")]
    Busy,
    #[error("internal error storing the event")]
    Store,
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::UnknownSource => StatusCode::NOT_FOUND,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::SlowBody => StatusCode::REQUEST_TIMEOUT,
            Self::BadBody => StatusCode::BAD_REQUEST,
            Self::Rejected(Rejection::AddressNotAllowed) => StatusCode::FORBIDDEN,
            Self::Rejected(_) => StatusCode::UNAUTHORIZED,
            Self::Loop(_) => StatusCode::LOOP_DETECTED,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::Busy | Self::BacklogFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let retry_after = match &self {
            // Rounded up: a sender that waits exactly this long finds a token.
            Self::RateLimited(wait) => Some((wait.as_secs_f64().ceil() as u64).max(1)),
            Self::Unavailable | Self::Store | Self::Busy | Self::BacklogFull => Some(5),
            _ => None,
        };
        // The rest of an unread body would have to be drained: the connection is closed.
        let close = matches!(
            self,
            Self::TooLarge(_) | Self::SlowBody | Self::BadBody | Self::Busy
        );
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        if close {
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

impl IngestError {
    /// The outcome label this refusal is counted under, per source.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownSource => "unknown_source",
            Self::TooLarge(_) => "too_large",
            Self::SlowBody => "too_slow",
            Self::BadBody => "bad_body",
            Self::Rejected(rejection) => rejection.reason(),
            Self::Loop(_) => "forwarding_loop",
            Self::RateLimited(_) => "rate_limited",
            Self::Unavailable | Self::Store => "store_unavailable",
            Self::BacklogFull => "backlog_full",
            Self::Busy => "over_body_budget",
        }
    }
}

pub async fn receive(
    State(state): State<AppState>,
    Path(source): Path<String>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    let started = std::time::Instant::now();
    let counts = state.metrics.by_source.clone();
    let result = receive_counted(state, &source, peer, uri, headers, body).await;
    let known = !matches!(result, Err(IngestError::UnknownSource));
    let telemetry = crate::telemetry::get();
    // Unknown names are counted under one label, so strangers cannot grow the label set.
    let label = if known { source.as_str() } else { "(unknown)" };
    let outcome = match &result {
        Ok(response) if response.status() == StatusCode::OK => "duplicate",
        Ok(_) => "accepted",
        Err(err) => err.reason(),
    };
    telemetry.request(label, outcome);
    if known {
        counts.count(&source, outcome);
    }
    if result.is_ok() {
        telemetry
            .ingest_seconds
            .get_or_create(&crate::telemetry::SourceLabel {
                source: source.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
    result
}

async fn receive_counted(
    state: AppState,
    source: &str,
    PeerAddr(remote): PeerAddr,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    // Looked up by the raw path segment: only configured names (already validated) match.
    let routing = state.routing.current();
    let Some(runtime) = routing.sources.get(source) else {
        return Err(IngestError::UnknownSource);
    };
    let source = &runtime.config.name;
    let (client, proven) = admit(&state, runtime, remote.ip(), &headers, uri.query())?;
    let limit = runtime.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(IngestError::TooLarge(limit));
    }
    let mut reservation = state.body_budget.reservation(client, source, proven);
    let limits = BodyLimits {
        declared,
        max_bytes: limit,
        timeout: state.body_read_timeout,
        min_rate: state.min_body_rate,
    };
    let body = read_body(body, limits, &mut reservation)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge => IngestError::TooLarge(limit),
            BodyError::TooSlow => {
                tracing::info!(%source, %client, "body too slow; answering 408");
                IngestError::SlowBody
            }
            BodyError::OverBudget(share) => {
                tracing::warn!(%source, %client, ?share, "body budget spent; answering 503");
                IngestError::Busy
            }
            BodyError::Broken => IngestError::BadBody,
        })?;

    let received_at = now_millis();
    let inbound = Inbound {
        headers: &headers,
        body: &body,
        query: uri.query(),
        now_secs: received_at / 1000,
    };
    let routes = Routes {
        routes: &routing.routes,
        coalescing: &routing.coalescing,
        fields: &routing.fields,
    };
    let admitted = accept(
        runtime.provider,
        &runtime.config.credentials,
        source,
        &routes,
        &inbound,
    )
    .map_err(|rejection| {
        tracing::warn!(%source, %client, reason = %rejection, "webhook rejected");
        IngestError::Rejected(rejection)
    })?;
    // Only verified senders reach a source's rate limit: strangers cannot spend it.
    if let Some(rate) = runtime.config.rate_limit
        && let Err(wait) = state.source_rates.check(source, rate, Instant::now())
    {
        return Err(IngestError::RateLimited(wait));
    }
    let event = NewEvent {
        id: EventId::generate(),
        source: source.clone(),
        received_at,
        remote_addr: Some(client.to_string()),
        classification: admitted.classification,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        headers: stored_headers(&headers, &runtime.config),
        body,
        destinations: admitted.destinations,
    };
    // Counted before the commit and settled after it, so the backlog watcher knows when its
    // count may have raced this one (see `Backlog`).
    let routed = event.destinations.len() as u64;
    let adding = state.backlog.adding(routed);
    let stored = state.store.insert_event(event).await;
    match &stored {
        Ok(accepted) if !accepted.duplicate => adding.committed(),
        _ => adding.taken_back(),
    }
    let accepted = stored.map_err(|err| {
        tracing::error!(%source, error = %err, "event not stored");
        match err {
            StoreError::Unavailable(_) => IngestError::Unavailable,
            _ => IngestError::Store,
        }
    })?;
    drop(reservation);
    tracing::info!(
        %source,
        event = %accepted.event_id,
        deliveries = accepted.deliveries,
        duplicate = accepted.duplicate,
        "webhook accepted"
    );
    let status = if accepted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = json!({
        "event_id": accepted.event_id,
        "deliveries": accepted.deliveries,
        "duplicate": accepted.duplicate,
    });
    Ok((status, Json(body)).into_response())
}

/// Everything decided from the request head, before a byte of body is read or reserved:
/// the address (behind trusted proxies), forwarding loops, the client's rate, the backlog, and any
/// credential that lives in a header or the query. Returns the client address, and whether
/// the sender is proven already (a credential matched, or the source takes anyone).
fn admit(
    state: &AppState,
    runtime: &SourceRuntime,
    remote: std::net::IpAddr,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(std::net::IpAddr, bool), IngestError> {
    let source = &runtime.config.name;
    let forwarded: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let client = ip::client_ip(remote, &forwarded, &runtime.config.trusted_proxies);
    let allowed = match (client, runtime.config.allow_ips.as_deref()) {
        (_, None) => true,
        (Some(address), Some(allow)) => ip::allowed(address, Some(allow)),
        (None, Some(_)) => false,
    };
    let client = client.unwrap_or(remote);
    if !allowed {
        let rejection = Rejection::AddressNotAllowed;
        tracing::warn!(%source, %client, "webhook from an address not on the allow-list");
        return Err(IngestError::Rejected(rejection));
    }
    let hops = headers
        .get(HOPS_HEADER)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if hops >= MAX_HOPS {
        tracing::error!(%source, hops, "refusing a request that keeps coming back through hookrelay: a destination points at a hook");
        return Err(IngestError::Loop(hops));
    }
    // The client's own rate counts every request; the source's only verified ones (below),
    // so strangers cannot spend a real sender's allowance.
    if let Some(rate) = state.client_rate
        && let Err(wait) =
            state
                .client_rates
                .check(&super::rate::client_key(client), rate, Instant::now())
    {
        return Err(IngestError::RateLimited(wait));
    }
    if state.backlog.full() {
        return Err(IngestError::BacklogFull);
    }
    let head_only = Inbound {
        headers,
        body: &[],
        query,
        now_secs: now_millis() / 1000,
    };
    let proven = match runtime
        .provider
        .verify_headers(&head_only, &runtime.config.credentials)
    {
        Ok(proven) => proven,
        Err(rejection) => {
            tracing::warn!(%source, %client, reason = %rejection, "webhook rejected before its body");
            return Err(IngestError::Rejected(rejection));
        }
    };
    let config = &runtime.config;
    let open = config.credentials.is_open();
    Ok((client, proven || open))
}

fn stored_headers(headers: &HeaderMap, source: &SourceConfig) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = if is_credential_header(name.as_str(), &source.credentials) {
                b"[redacted]".to_vec()
            } else {
                value.as_bytes().to_vec()
            };
            (name.as_str().to_owned(), value)
        })
        .collect()
}
