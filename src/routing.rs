//! Which destinations an event goes to: a pure function of the routes, the source and the event.

use globset::{GlobSet, GlobSetBuilder};
use serde_json::Value;

use crate::domain::{KeyPart, Name};
use crate::ingest::Classification;

#[derive(Debug, Clone)]
pub struct Route {
    pub source: Name,
    /// Event types that match (compared ignoring case); `None` or `"*"` matches every event,
    /// including events whose type could not be determined.
    pub events: Option<Vec<String>>,
    /// Branch globs and tag globs: when either is set, the event's branch must match
    /// `branches` or its tag must match `tags`. Events without a ref then never match.
    pub branches: Option<GlobSet>,
    pub tags: Option<GlobSet>,
    /// Project path globs; events without a project never match when set.
    pub projects: Option<GlobSet>,
    pub when: Option<Condition>,
    pub destinations: Vec<Name>,
}

/// A test on the JSON payload.
#[derive(Debug, Clone)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Equals {
        pointer: String,
        value: Value,
    },
    In {
        pointer: String,
        values: Vec<Value>,
    },
    /// Matches strings, and numbers or booleans as their text.
    Regex {
        pointer: String,
        regex: regex::Regex,
    },
    Exists {
        pointer: String,
        exists: bool,
    },
}

impl Condition {
    /// Every JSON pointer this condition reads.
    pub fn pointers(&self) -> Vec<&str> {
        match self {
            Self::All(all) | Self::Any(all) => all.iter().flat_map(Self::pointers).collect(),
            Self::Not(inner) => inner.pointers(),
            Self::Equals { pointer, .. }
            | Self::In { pointer, .. }
            | Self::Regex { pointer, .. }
            | Self::Exists { pointer, .. } => vec![pointer.as_str()],
        }
    }

    pub fn holds(&self, payload: Option<&Value>) -> bool {
        let at = |pointer: &str| payload.and_then(|p| p.pointer(pointer));
        match self {
            Self::All(all) => all.iter().all(|c| c.holds(payload)),
            Self::Any(any) => any.iter().any(|c| c.holds(payload)),
            Self::Not(inner) => !inner.holds(payload),
            Self::Equals { pointer, value } => at(pointer) == Some(value),
            Self::In { pointer, values } => at(pointer).is_some_and(|v| values.contains(v)),
            Self::Regex { pointer, regex } => match at(pointer) {
                Some(Value::String(s)) => regex.is_match(s),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => regex.is_match(&v.to_string()),
                _ => false,
            },
            Self::Exists { pointer, exists } => at(pointer).is_some() == *exists,
        }
    }
}

/// Every JSON pointer the routes' conditions read.
pub fn condition_pointers(routes: &[Route]) -> Vec<&str> {
    routes
        .iter()
        .filter_map(|route| route.when.as_ref())
        .flat_map(Condition::pointers)
        .collect()
}

/// Compiles globs where `*` stays within one path segment and `**` crosses them.
pub fn glob_set(patterns: &[String]) -> Result<GlobSet, String> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|err| format!("{pattern:?}: {err}"))?;
        builder.add(glob);
    }
    builder.build().map_err(|err| err.to_string())
}

/// What routing looks at for one event.
pub struct EventFacts<'a> {
    pub classification: &'a Classification,
    pub payload: Option<&'a Value>,
}

/// Destinations for an event, each once, in the order routes name them.
pub fn destinations_for(routes: &[Route], source: &Name, facts: &EventFacts<'_>) -> Vec<Name> {
    let mut chosen: Vec<Name> = Vec::new();
    for route in routes.iter().filter(|r| &r.source == source) {
        if !matches(route, facts) {
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

/// The key under which a `latest` destination keeps only the newest waiting delivery: the
/// chosen parts of the event, joined (a missing part counts as empty).
pub fn coalescing_key(parts: &[KeyPart], source: &Name, class: &Classification) -> String {
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    parts
        .iter()
        .map(|part| match part {
            KeyPart::Source => source.as_str().to_owned(),
            KeyPart::Ref => text(&class.git_ref),
            KeyPart::Branch => text(&class.branch),
            KeyPart::Tag => text(&class.tag),
            KeyPart::Project => text(&class.project),
            KeyPart::EventType => text(&class.event_type),
        })
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

fn matches(route: &Route, facts: &EventFacts<'_>) -> bool {
    let class = facts.classification;
    let event_ok = route.events.as_deref().is_none_or(|wanted| {
        wanted.iter().any(|w| {
            w == "*"
                || class
                    .event_type
                    .as_deref()
                    .is_some_and(|actual| w.eq_ignore_ascii_case(actual))
        })
    });
    let ref_ok = if route.branches.is_none() && route.tags.is_none() {
        true
    } else {
        let branch = route
            .branches
            .as_ref()
            .zip(class.branch.as_deref())
            .is_some_and(|(g, b)| g.is_match(b));
        let tag = route
            .tags
            .as_ref()
            .zip(class.tag.as_deref())
            .is_some_and(|(g, t)| g.is_match(t));
        branch || tag
    };
    let project_ok = route
        .projects
        .as_ref()
        .is_none_or(|globs| class.project.as_deref().is_some_and(|p| globs.is_match(p)));
    let when_ok = route.when.as_ref().is_none_or(|c| c.holds(facts.payload));
    event_ok && ref_ok && project_ok && when_ok
}

#[cfg(test)]
mod tests;
