//! `/api/v1/stream`: new events and delivery state changes as server-sent events, with the
//! listings' filters; `follow` is the one watcher the console's live view reads too.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::mpsc;

use super::params::{self, FilterParams};
use super::{ApiError, ApiState, ErrorBody};
use crate::domain::{DeliveryId, DeliveryState, EventId};
use crate::store::{DeliveryBrief, EventSummary, Filter, Store};

/// The newest events looked at on each wake: more arriving between two wakes than this is
/// told as a `gap`.
const WINDOW: usize = 100;
/// Attempts' outcomes are not on the change feed, so the window is also looked at this often.
const BACKSTOP: Duration = Duration::from_millis(500);
/// Wakes closer together than this share one look.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// One thing the stream tells.
#[derive(Debug, Clone)]
pub enum Live {
    /// An event not told before (with its deliveries as they are now).
    Event(EventSummary),
    /// A delivery of a recent event changed state; the event as it is now.
    Delivery {
        event: EventSummary,
        delivery: DeliveryBrief,
    },
    /// More events arrived than one look covers: some were not told (list them instead).
    Gap,
}

#[derive(Serialize)]
struct DeliveryChange<'a> {
    event_id: &'a EventId,
    #[serde(flatten)]
    delivery: &'a DeliveryBrief,
}

/// Follows the store from now on: each new event matching `filter`, then each state change
/// of the deliveries of the newest events. Ends when the receiver is dropped.
pub fn follow(store: Arc<dyn Store>, filter: Filter) -> mpsc::Receiver<Live> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut feed = store.changes();
        let mut known = match store.list_events(filter.clone(), None, WINDOW).await {
            Ok(page) => states(&page.items),
            Err(err) => {
                tracing::debug!(error = %err, "stream: first look failed");
                HashMap::new()
            }
        };
        loop {
            tokio::select! {
                _ = feed.recv() => tokio::time::sleep(DEBOUNCE).await,
                _ = tokio::time::sleep(BACKSTOP) => {}
                _ = tx.closed() => return,
            }
            let page = match store.list_events(filter.clone(), None, WINDOW).await {
                Ok(page) => page.items,
                Err(err) => {
                    tracing::debug!(error = %err, "stream: look failed");
                    continue;
                }
            };
            for live in changes(&known, &page) {
                if tx.send(live).await.is_err() {
                    return;
                }
            }
            known = states(&page);
        }
    });
    rx
}

type Known = HashMap<EventId, Vec<(DeliveryId, DeliveryState)>>;

fn states(events: &[EventSummary]) -> Known {
    events
        .iter()
        .map(|event| {
            let deliveries = event
                .deliveries
                .iter()
                .map(|d| (d.id.clone(), d.state))
                .collect();
            (event.id.clone(), deliveries)
        })
        .collect()
}

/// What `page` (newest first) tells beyond `known`, oldest first.
fn changes(known: &Known, page: &[EventSummary]) -> Vec<Live> {
    let mut told = Vec::new();
    let overlaps = page.iter().any(|event| known.contains_key(&event.id));
    if !known.is_empty() && !overlaps && page.len() == WINDOW {
        told.push(Live::Gap);
    }
    for event in page.iter().rev() {
        let Some(before) = known.get(&event.id) else {
            told.push(Live::Event(event.clone()));
            continue;
        };
        for delivery in &event.deliveries {
            let was = before.iter().find(|(id, _)| *id == delivery.id);
            if was.is_none_or(|(_, state)| *state != delivery.state) {
                told.push(Live::Delivery {
                    event: event.clone(),
                    delivery: delivery.clone(),
                });
            }
        }
    }
    told
}

/// New events and delivery state changes as they happen (server-sent events). Each message
/// is `event: event` (data: the event as `/api/v1/events` lists it), `event: delivery`
/// (data: `event_id`, `id`, `destination`, `state`) or `event: gap` (more arrived than the
/// stream looks at once; list to catch up).
#[utoipa::path(get, path = "/api/v1/stream", params(FilterParams), tag = "events",
    responses((status = 200, content_type = "text/event-stream", description = "server-sent events"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn stream(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (filter, _, _) = params::list(query.as_deref())?;
    let rx = follow(state.store.clone(), filter);
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let live = rx.recv().await?;
        Some((Ok(message(&live)), rx))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

fn message(live: &Live) -> Event {
    match live {
        Live::Event(event) => Event::default()
            .event("event")
            .id(event.id.as_str())
            .data(json(event)),
        Live::Delivery { event, delivery } => {
            Event::default()
                .event("delivery")
                .data(json(&DeliveryChange {
                    event_id: &event.id,
                    delivery,
                }))
        }
        Live::Gap => Event::default().event("gap").data("{}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &EventId, states: &[DeliveryState]) -> EventSummary {
        EventSummary {
            id: id.clone(),
            source: "gitlab".into(),
            received_at: 0,
            remote_addr: None,
            content_type: None,
            body_bytes: 0,
            classification: Default::default(),
            deliveries: states
                .iter()
                .enumerate()
                .map(|(n, state)| DeliveryBrief {
                    id: DeliveryId::from_stored(format!("dlv_{n}_{}", id.as_str())),
                    destination: format!("d{n}"),
                    state: *state,
                })
                .collect(),
        }
    }

    fn kinds(told: &[Live]) -> Vec<String> {
        told.iter()
            .map(|live| match live {
                Live::Event(e) => format!("event {}", &e.id.as_str()[..6]),
                Live::Delivery { delivery, .. } => {
                    format!("{} {}", delivery.destination, delivery.state.as_str())
                }
                Live::Gap => "gap".into(),
            })
            .collect()
    }

    #[test]
    fn a_look_tells_new_events_oldest_first_and_changed_deliveries() {
        use DeliveryState::*;
        let a = EventId::generate();
        let b = EventId::generate();
        let before = [event(&a, &[Pending, Pending])];
        let after = [event(&b, &[Pending]), event(&a, &[Succeeded, Pending])];
        let told = changes(&states(&before), &after);
        assert_eq!(
            kinds(&told),
            ["d0 succeeded".to_owned(), "event evt_01".into()]
        );
        assert!(changes(&states(&after), &after).is_empty());
    }
}
