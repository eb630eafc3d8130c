//! Validation of `[[routes]]`: sources, destinations, globs and JSON conditions, all located.

use super::Checker;
use super::raw::{RawConfig, RawRoute};
use crate::domain::Name;
use crate::routing::{Condition, Route};

pub(super) fn validate_route(
    c: &mut Checker,
    location: &str,
    route: &RawRoute,
    raw: &RawConfig,
) -> Option<Route> {
    let source = c.check(format!("{location}.source"), Name::parse(&route.source));
    if let Some(source) = &source
        && !raw.sources.contains_key(source.as_str())
        && source.as_str() != crate::notify::SOURCE
    {
        c.error(
            format!("{location}.source"),
            format!(
                "unknown source {:?} (\"{}\" is hookrelay's own notifications)",
                source.as_str(),
                crate::notify::SOURCE
            ),
        );
    }
    if route.destinations.is_empty() {
        c.error(
            format!("{location}.destinations"),
            "a route needs at least one destination",
        );
    }
    let mut targets = Vec::new();
    for (i, target) in route.destinations.iter().enumerate() {
        if !raw.destinations.contains_key(target) {
            c.error(
                format!("{location}.destinations[{i}]"),
                format!("unknown destination {target:?}"),
            );
        } else if let Ok(name) = Name::parse(target) {
            targets.push(name);
        }
    }
    let mut globs = |key: &str, list: &Option<Vec<String>>| match list {
        None => Some(None),
        Some(patterns) => c
            .check(
                format!("{location}.{key}"),
                crate::routing::glob_set(patterns),
            )
            .map(Some),
    };
    let branches = globs("branches", &route.branches);
    let tags = globs("tags", &route.tags);
    let projects = globs("projects", &route.projects);
    let when = match &route.when {
        None => Some(None),
        Some(value) => condition(c, &format!("{location}.when"), value).map(Some),
    };
    Some(Route {
        source: source?,
        events: route.events.clone(),
        branches: branches?,
        tags: tags?,
        projects: projects?,
        when: when?,
        destinations: targets,
    })
}

/// Parses `{ pointer, equals | in | regex | exists }`, `{ all = [..] }`, `{ any = [..] }`,
/// `{ not = .. }` recursively, naming the exact place of any error.
fn condition(c: &mut Checker, location: &str, value: &toml::Value) -> Option<Condition> {
    let Some(table) = value.as_table() else {
        c.error(
            location,
            "a condition is a table such as { pointer = \"/ref\", equals = \"refs/heads/main\" }",
        );
        return None;
    };
    let list = |c: &mut Checker, key: &str| -> Option<Vec<Condition>> {
        let Some(items) = table[key].as_array() else {
            c.error(format!("{location}.{key}"), "expected a list of conditions");
            return None;
        };
        let parsed: Vec<Option<Condition>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| condition(c, &format!("{location}.{key}[{i}]"), item))
            .collect();
        parsed.into_iter().collect()
    };
    if table.len() == 1 && table.contains_key("all") {
        return list(c, "all").map(Condition::All);
    }
    if table.len() == 1 && table.contains_key("any") {
        return list(c, "any").map(Condition::Any);
    }
    if table.len() == 1 && table.contains_key("not") {
        return condition(c, &format!("{location}.not"), &table["not"])
            .map(|inner| Condition::Not(Box::new(inner)));
    }
    let Some(pointer) = table.get("pointer").and_then(toml::Value::as_str) else {
        c.error(
            location,
            "expected `pointer` with one of equals/in/regex/exists, or all/any/not",
        );
        return None;
    };
    if !pointer.is_empty() && !pointer.starts_with('/') {
        c.error(
            format!("{location}.pointer"),
            format!("{pointer:?} is not a JSON pointer (it starts with /)"),
        );
        return None;
    }
    let tests: Vec<&String> = table.keys().filter(|k| *k != "pointer").collect();
    if tests.len() != 1 {
        c.error(
            location,
            "a condition has exactly one of equals, in, regex, exists",
        );
        return None;
    }
    let pointer = pointer.to_owned();
    let json = |v: &toml::Value| serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
    match tests[0].as_str() {
        "equals" => Some(Condition::Equals {
            pointer,
            value: json(&table["equals"]),
        }),
        "in" => match table["in"].as_array() {
            Some(values) => Some(Condition::In {
                pointer,
                values: values.iter().map(json).collect(),
            }),
            None => {
                c.error(format!("{location}.in"), "expected a list of values");
                None
            }
        },
        "regex" => {
            let Some(pattern) = table["regex"].as_str() else {
                c.error(
                    format!("{location}.regex"),
                    "expected a regular expression string",
                );
                return None;
            };
            let regex = regex::Regex::new(pattern).map_err(|err| err.to_string());
            c.check(format!("{location}.regex"), regex)
                .map(|regex| Condition::Regex { pointer, regex })
        }
        "exists" => match table["exists"].as_bool() {
            Some(exists) => Some(Condition::Exists { pointer, exists }),
            None => {
                c.error(format!("{location}.exists"), "expected true or false");
                None
            }
        },
        other => {
            c.error(
                format!("{location}.{other}"),
                "unknown test; use equals, in, regex or exists",
            );
            None
        }
    }
}
