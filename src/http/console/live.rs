//! `/ui/stream`: the live events view, fed by the API's `follow`, each new or changed event
//! sent as its rendered, escaped table row.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};

use super::views::{FilterForm, Row, RowFragment, rendered};
use super::{ConsoleState, PageResult};
use crate::domain::now_millis;
use crate::http::api::params;
use crate::http::api::stream::{Live, follow};

pub async fn rows(
    State(state): State<ConsoleState>,
    Query(filter): Query<FilterForm>,
) -> PageResult {
    let (filter, _, _) = params::list(Some(&filter.query()))?;
    let rx = follow(state.api.store.clone(), filter);
    let messages = futures_util::stream::unfold(rx, |mut rx| async move {
        let live = rx.recv().await?;
        let event = match live {
            Live::Event(event) | Live::Delivery { event, .. } => event,
            Live::Gap => {
                return Some((
                    Ok::<_, Infallible>(Event::default().event("gap").data("")),
                    rx,
                ));
            }
        };
        let fragment = RowFragment {
            row: Row::new(&event, now_millis()),
        };
        let message = match rendered(&fragment).0 {
            Ok(html) => Event::default().event("row").data(html),
            Err(_) => Event::default().event("gap").data(""),
        };
        Some((Ok(message), rx))
    });
    Ok(Sse::new(messages)
        .keep_alive(KeepAlive::default())
        .into_response())
}
