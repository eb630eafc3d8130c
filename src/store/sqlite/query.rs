//! Filters as SQL: one `WHERE` builder for event and delivery listings, counts and bulk
//! changes, so a dry run and the real run select exactly the same rows.

use rusqlite::types::Value;

use crate::store::{Cursor, Filter, FilterValue};

/// A `WHERE` clause with its parameters, built up condition by condition.
#[derive(Default)]
pub struct Clause {
    conditions: Vec<String>,
    pub params: Vec<Value>,
}

impl Clause {
    pub fn push(&mut self, condition: &str, value: impl Into<Value>) {
        self.params.push(value.into());
        let n = self.params.len();
        self.conditions
            .push(condition.replace('?', &format!("?{n}")));
    }

    pub fn push_fixed(&mut self, condition: &str) {
        self.conditions.push(condition.to_owned());
    }

    pub fn sql(&self) -> String {
        match self.conditions.is_empty() {
            true => "1".to_owned(),
            false => self.conditions.join(" AND "),
        }
    }

    /// The placeholder the next parameter will get (for `LIMIT`).
    pub fn next_param(&mut self, value: impl Into<Value>) -> String {
        self.params.push(value.into());
        format!("?{}", self.params.len())
    }
}

impl From<FilterValue> for Value {
    fn from(value: FilterValue) -> Self {
        match value {
            FilterValue::Text(text) => Value::Text(text),
            FilterValue::Millis(millis) => Value::Integer(millis),
        }
    }
}

/// Events (alias `e`) matching the filter; delivery state and destination are about any
/// of the event's deliveries (`few`: few deliveries match them, see
/// [`Filter::any_delivery_condition`]).
pub fn events(filter: &Filter, after: Option<&Cursor>, few: bool) -> Result<Clause, String> {
    let mut clause = Clause::default();
    for (condition, value) in filter.event_conditions() {
        clause.push(condition, value);
    }
    if let Some(text) = &filter.body_contains {
        clause.push(
            "instr(e.body, ?) > 0",
            Value::Blob(text.as_bytes().to_vec()),
        );
    }
    if let Some(condition) = filter.any_delivery_condition(|value| clause.next_param(value), few) {
        clause.push_fixed(&condition);
    }
    if let Some(cursor) = after {
        clause.push("e.seq < ?", decode(cursor)?);
    }
    Ok(clause)
}

/// Deliveries (alias `d`) matching the filter's delivery conditions only.
pub fn delivery_only(filter: &Filter) -> Clause {
    let mut clause = Clause::default();
    for (condition, value) in filter.delivery_conditions() {
        clause.push(condition, value);
    }
    clause
}

/// Deliveries (alias `d`, joined to their event `e`) matching the filter.
pub fn deliveries(filter: &Filter) -> Clause {
    let mut clause = Clause::default();
    for (condition, value) in filter
        .event_conditions()
        .into_iter()
        .chain(filter.delivery_conditions())
    {
        clause.push(condition, value);
    }
    clause
}

pub fn encode(seq: i64) -> Cursor {
    Cursor(format!("c{seq}"))
}

pub fn decode(cursor: &Cursor) -> Result<i64, String> {
    cursor
        .0
        .strip_prefix('c')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("invalid cursor {:?}", cursor.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeliveryState;

    #[test]
    fn each_condition_names_its_own_parameter() {
        let filter = Filter {
            source: Some("gitlab".into()),
            git_ref: Some("main".into()),
            project: Some("group/app".into()),
            state: Some(DeliveryState::Dead),
            destination: Some("ci".into()),
            ..Filter::default()
        };
        let clause = events(&filter, Some(&encode(42)), false).unwrap();
        assert_eq!(
            clause.sql(),
            "e.source = ?1 AND (e.git_ref = ?2 OR e.branch = ?2 OR e.tag = ?2) AND \
             e.project = ?3 AND EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq \
             AND d.state = ?4 AND d.destination = ?5) AND e.seq < ?6"
        );
        assert_eq!(clause.params.len(), 6);
        let listed = events(&filter, None, true).unwrap();
        assert!(
            listed.sql().ends_with(
                "e.seq IN (SELECT d.event_seq FROM deliveries d WHERE d.state = ?4 AND d.destination = ?5)"
            ),
            "{}",
            listed.sql()
        );
        assert_eq!(deliveries(&Filter::default()).sql(), "1");
        assert!(decode(&Cursor("x1".into())).is_err());
    }
}
