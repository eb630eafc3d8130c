//! Which destinations an event goes to: a pure function of the routes, the source and the event.

use crate::domain::Name;

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub source: Name,
    /// Event types that match (compared ignoring case); `None` or `"*"` matches every event,
    /// including events whose type could not be determined.
    pub events: Option<Vec<String>>,
    pub destinations: Vec<Name>,
}

/// Destinations for an event, each once, in the order routes name them.
pub fn destinations_for(routes: &[Route], source: &Name, event_type: Option<&str>) -> Vec<Name> {
    let mut chosen: Vec<Name> = Vec::new();
    for route in routes.iter().filter(|r| &r.source == source) {
        if !matches_event(route.events.as_deref(), event_type) {
            continue;
        }
        for destination in &route.destinations {
            if !chosen.contains(destination) {
                chosen.push(destination.clone());
            }
        }
    }
    chosen
}

fn matches_event(wanted: Option<&[String]>, event_type: Option<&str>) -> bool {
    let Some(wanted) = wanted else {
        return true;
    };
    wanted
        .iter()
        .any(|w| w == "*" || event_type.is_some_and(|actual| w.eq_ignore_ascii_case(actual)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> Name {
        Name::parse(raw).unwrap()
    }

    fn route(source: &str, events: Option<&[&str]>, destinations: &[&str]) -> Route {
        Route {
            source: name(source),
            events: events.map(|e| e.iter().map(|s| s.to_string()).collect()),
            destinations: destinations.iter().map(|d| name(d)).collect(),
        }
    }

    #[test]
    fn routes_select_destinations_by_source_and_event() {
        let routes = vec![
            route(
                "gitlab",
                Some(&["Push Hook", "Tag Push Hook"]),
                &["ci", "audit"],
            ),
            route("gitlab", Some(&["merge request hook"]), &["review"]),
            route("gitlab", None, &["audit"]),
            route("other", Some(&["*"]), &["catchall"]),
        ];
        let table: &[(&str, Option<&str>, &[&str])] = &[
            ("gitlab", Some("Push Hook"), &["ci", "audit"]),
            ("gitlab", Some("push hook"), &["ci", "audit"]),
            ("gitlab", Some("Merge Request Hook"), &["review", "audit"]),
            ("gitlab", Some("Pipeline Hook"), &["audit"]),
            ("gitlab", None, &["audit"]),
            ("other", None, &["catchall"]),
            ("unrouted", Some("Push Hook"), &[]),
        ];
        for (source, event, expected) in table {
            let got = destinations_for(&routes, &name(source), *event);
            let got: Vec<&str> = got.iter().map(Name::as_str).collect();
            assert_eq!(&got, expected, "{source} {event:?}");
        }
    }
}
