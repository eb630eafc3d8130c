//! `POST /hooks/{source}`: limit the body, verify, classify, dedup, route, commit, then answer.

use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use super::AppState;
use super::listener::PeerAddr;
use crate::domain::{EventId, now_millis};
use crate::ingest::{Inbound, Rejection, ip, parse_payload};
use crate::routing::{EventFacts, destinations_for};
use crate::store::{NewEvent, StoreError};

/// Headers that carry the sender's credential: kept by name, never by value.
const CREDENTIAL_HEADERS: [&str; 2] = ["x-gitlab-token", "authorization"];

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
    #[error("temporarily unable to store the event; retry later")]
    Unavailable,
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
            Self::Rejected(crate::ingest::Rejection::AddressNotAllowed) => StatusCode::FORBIDDEN,
            Self::Rejected(_) => StatusCode::UNAUTHORIZED,
            Self::Unavailable | Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Store => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if matches!(self, Self::Unavailable | Self::Store | Self::Busy) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        if matches!(self, Self::TooLarge(_)) {
            // The rest of the body is never read; the connection cannot be reused.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

pub async fn receive(
    State(state): State<AppState>,
    Path(source): Path<String>,
    ConnectInfo(PeerAddr(remote)): ConnectInfo<PeerAddr>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    let metrics = &state.metrics;
    // Looked up by the raw path segment: only configured names (already validated) match.
    let Some(runtime) = state.sources.get(source.as_str()) else {
        return Err(IngestError::UnknownSource);
    };
    let source = &runtime.config.name;
    // Checked before the body is read: a refused address costs us nothing.
    let forwarded: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let client = ip::client_ip(remote.ip(), &forwarded, &runtime.config.trusted_proxies);
    let allowed = match (client, runtime.config.allow_ips.as_deref()) {
        (_, None) => true,
        (Some(address), Some(allow)) => ip::allowed(address, Some(allow)),
        (None, Some(_)) => false,
    };
    let client = client.unwrap_or(remote.ip());
    if !allowed {
        let rejection = Rejection::AddressNotAllowed;
        metrics.count_rejection(rejection.reason());
        tracing::warn!(%source, %client, "webhook from an address not on the allow-list");
        return Err(IngestError::Rejected(rejection));
    }
    let limit = runtime.config.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        metrics.too_large.fetch_add(1, Relaxed);
        return Err(IngestError::TooLarge(limit));
    }
    // Memory for the body is reserved before reading it (the declared length, or the whole
    // limit when none is declared) and held until the event is committed.
    let need_kib = declared.unwrap_or(limit).min(limit).div_ceil(1024).max(1) as u32;
    let Ok(_reserved) = state.body_budget.clone().try_acquire_many_owned(need_kib) else {
        metrics.over_budget.fetch_add(1, Relaxed);
        tracing::warn!(%source, "body budget exhausted; answering 503");
        return Err(IngestError::Busy);
    };
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let body = match tokio::time::timeout(state.body_read_timeout, limited.collect()).await {
        Err(_) => return Err(IngestError::SlowBody),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            metrics.too_large.fetch_add(1, Relaxed);
            return Err(IngestError::TooLarge(limit));
        }
        Ok(Err(_)) => return Err(IngestError::BadBody),
        Ok(Ok(collected)) => collected.to_bytes(),
    };

    let received_at = now_millis();
    let inbound = Inbound {
        headers: &headers,
        body: &body,
        query: uri.query(),
        now_secs: received_at / 1000,
    };
    if let Err(rejection) = runtime.provider.verify(&inbound, &runtime.config) {
        metrics.count_rejection(rejection.reason());
        tracing::warn!(%source, %client, reason = %rejection, "webhook rejected");
        return Err(IngestError::Rejected(rejection));
    }
    // Parsing costs CPU on every request, so only when a filter or the provider needs it.
    let payload = runtime
        .needs_payload
        .then(|| parse_payload(&headers, &body))
        .flatten();
    let classification = runtime.provider.classify(&inbound, payload.as_ref());
    let facts = EventFacts {
        classification: &classification,
        payload: payload.as_ref(),
    };
    let destinations = destinations_for(&state.routes, source, &facts);
    let event = NewEvent {
        id: EventId::generate(),
        source: source.clone(),
        received_at,
        remote_addr: Some(client.to_string()),
        event_type: classification.event_type,
        dedup_key: classification.dedup_key,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        headers: stored_headers(&headers, runtime.token_header()),
        body,
        destinations: destinations.clone(),
    };
    let accepted = state.store.insert_event(event).await.map_err(|err| {
        metrics.store_errors.fetch_add(1, Relaxed);
        tracing::error!(%source, error = %err, "event not stored");
        match err {
            StoreError::Unavailable(_) => IngestError::Unavailable,
            _ => IngestError::Store,
        }
    })?;
    if accepted.duplicate {
        metrics.duplicates.fetch_add(1, Relaxed);
    } else {
        metrics.accepted.fetch_add(1, Relaxed);
        state.wakers.wake(&destinations);
    }
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

fn stored_headers(headers: &HeaderMap, token_header: Option<&str>) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(name, value)| {
            let secret =
                CREDENTIAL_HEADERS.contains(&name.as_str()) || token_header == Some(name.as_str());
            let value = if secret {
                b"[redacted]".to_vec()
            } else {
                value.as_bytes().to_vec()
            };
            (name.as_str().to_owned(), value)
        })
        .collect()
}
