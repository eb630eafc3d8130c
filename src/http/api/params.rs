//! Query parameters of listings and bulk changes: parsed strictly, every mistake a 400 that
//! says what was wrong.

use serde::Deserialize;

use super::ApiError;
use crate::domain::{DeliveryState, UnixMillis, now_millis};
use crate::store::{Cursor, Filter};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;

/// Filters shared by event and delivery listings.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FilterParams {
    pub source: Option<String>,
    pub event_type: Option<String>,
    /// Received at or after: RFC 3339 (`2026-11-29T08:00:00Z`), milliseconds since the
    /// epoch, or an age such as `12h` or `30m` (that long ago).
    pub since: Option<String>,
    /// Received at or before; same forms as `since`.
    pub until: Option<String>,
    /// Branch, tag or full ref.
    #[serde(rename = "ref")]
    #[param(rename = "ref")]
    pub git_ref: Option<String>,
    pub project: Option<String>,
    /// Who caused the event (GitLab's `user_username`, GitHub's `sender.login`).
    pub sender: Option<String>,
    /// Events whose body contains this text (event listings and the stream only). A listing
    /// that runs out of time before its page is full says how far back it looked.
    pub contains: Option<String>,
    /// pending, in_flight, succeeded, dead, superseded or cancelled.
    pub state: Option<String>,
    pub destination: Option<String>,
}

/// Paging of a listing (documented here; read from the query beside the filters).
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    /// Items per page, 1 to 1000 (default 50).
    pub limit: Option<String>,
}

/// Parses a raw query string; unknown keys and malformed values are refused.
pub fn list(query: Option<&str>) -> Result<(Filter, Option<Cursor>, usize), ApiError> {
    let mut pairs: serde_json::Map<String, serde_json::Value> =
        form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned().into()))
            .collect();
    let mut take = |key: &str| match pairs.remove(key) {
        Some(serde_json::Value::String(text)) => Some(text),
        _ => None,
    };
    let (after, limit) = (take("after"), take("limit"));
    let filters: FilterParams = serde_json::from_value(pairs.into())
        .map_err(|err| ApiError::bad_filter(format!("bad query: {err}")))?;
    let limit = match limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_filter(format!("limit must be 1 to {MAX_LIMIT}, not {text:?}"))
            })?,
    };
    Ok((filter(filters, now_millis())?, after.map(Cursor), limit))
}

pub fn filter(params: FilterParams, now: UnixMillis) -> Result<Filter, ApiError> {
    let state = params
        .state
        .as_deref()
        .map(str::parse::<DeliveryState>)
        .transpose()
        .map_err(ApiError::bad_filter)?;
    Ok(Filter {
        source: params.source,
        event_type: params.event_type,
        since: time("since", params.since.as_deref(), now)?,
        until: time("until", params.until.as_deref(), now)?,
        git_ref: params.git_ref,
        project: params.project,
        sender: params.sender,
        body_contains: params.contains.filter(|text| !text.is_empty()),
        state,
        destination: params.destination,
    })
}

/// Refuses a body search where only event listings can do one.
pub fn no_body_search(filter: &Filter) -> Result<(), ApiError> {
    match filter.body_contains {
        Some(_) => Err(ApiError::bad_filter(
            "contains: only the events listing searches bodies; list the events first",
        )),
        None => Ok(()),
    }
}

/// A point in time: RFC 3339, epoch milliseconds, or an age counted back from `now`.
pub fn time(
    name: &str,
    raw: Option<&str>,
    now: UnixMillis,
) -> Result<Option<UnixMillis>, ApiError> {
    let Some(text) = raw.map(str::trim) else {
        return Ok(None);
    };
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(Some(ms));
    }
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        return Ok(Some(ms));
    }
    if let Ok(age) = humantime::parse_duration(text) {
        return Ok(Some(now - age.as_millis().min(i64::MAX as u128) as i64));
    }
    Err(ApiError::bad_filter(format!(
        "{name}: expected RFC 3339 time, epoch milliseconds or an age like 12h, not {text:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_or_say_what_is_wrong() {
        let table: &[(&str, Result<&str, &str>)] = &[
            ("", Ok("")),
            ("state=dead&destination=ci", Ok("dead ci")),
            ("since=12h&limit=10", Ok("since")),
            ("since=2026-11-29T08:00:00Z", Ok("since")),
            ("state=exploded", Err("unknown state")),
            ("since=yesterday", Err("since: expected")),
            ("limit=0", Err("limit must be")),
            ("limit=5000", Err("limit must be")),
            ("colour=red", Err("unknown field")),
        ];
        for (query, expected) in table {
            match (list(Some(query)), expected) {
                (Ok((filter, _, _)), Ok(shape)) => {
                    if shape.contains("dead") {
                        assert_eq!(filter.state, Some(DeliveryState::Dead));
                        assert_eq!(filter.destination.as_deref(), Some("ci"));
                    }
                    if shape.contains("since") {
                        assert!(filter.since.is_some(), "{query}");
                    }
                }
                (Err(err), Err(needle)) => {
                    assert_eq!(err.code, "bad_filter");
                    assert!(err.message.contains(needle), "{query}: {}", err.message);
                }
                (got, _) => panic!("{query}: unexpected {:?}", got.map(|_| ())),
            }
        }
        let now = 10 * 3_600_000;
        assert_eq!(time("since", Some("2h"), now).unwrap(), Some(8 * 3_600_000));
    }
}
