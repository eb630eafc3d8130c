//! Filters as SQL for PostgreSQL: one `WHERE` builder for event and delivery listings,
//! counts and bulk changes, so a dry run and the real run select exactly the same rows; the
//! cursors that page them, the snapshots that fix a bulk change's scope, and the driver's
//! calls with the store's errors.

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, ToStatement};

use super::pg_error;
use crate::store::{Cursor, Filter, FilterValue, StoreError};

/// A parameter value, owned by the clause until the statement has run.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// A `WHERE` clause with its parameters, built up condition by condition.
#[derive(Default)]
pub struct Clause {
    conditions: Vec<String>,
    pub params: Vec<Param>,
}

impl Clause {
    /// Adds a condition on one new parameter; every `?` in it names that parameter.
    pub fn push(&mut self, condition: &str, value: impl ToSql + Sync + Send + 'static) {
        let placeholder = self.next_param(value);
        self.conditions.push(condition.replace('?', &placeholder));
    }

    pub fn push_fixed(&mut self, condition: &str) {
        self.conditions.push(condition.to_owned());
    }

    pub fn sql(&self) -> String {
        match self.conditions.is_empty() {
            true => "TRUE".to_owned(),
            false => self.conditions.join(" AND "),
        }
    }

    /// The placeholder the next parameter gets (for `LIMIT`, or a condition built by hand).
    pub fn next_param(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// The parameters as the driver takes them.
    pub fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

impl Clause {
    /// The placeholder of a filter's value (see [`Filter::event_conditions`]).
    fn filter_param(&mut self, value: FilterValue) -> String {
        match value {
            FilterValue::Text(text) => self.next_param(text),
            FilterValue::Millis(millis) => self.next_param(millis),
        }
    }

    /// Adds a filter's condition; every `?` in it names its one value.
    fn push_filter(&mut self, condition: &str, value: FilterValue) {
        let placeholder = self.filter_param(value);
        self.conditions.push(condition.replace('?', &placeholder));
    }
}

/// Events (alias `e`) matching the filter; delivery state and destination are about any
/// of the event's deliveries.
pub fn events(filter: &Filter, after: Option<&Cursor>) -> Result<Clause, StoreError> {
    let mut clause = Clause::default();
    for (condition, value) in filter.event_conditions() {
        clause.push_filter(condition, value);
    }
    if let Some(text) = &filter.body_contains {
        clause.push("position(? in e.body) > 0", text.as_bytes().to_vec());
    }
    if let Some(condition) =
        filter.any_delivery_condition(|value| clause.filter_param(value), false)
    {
        clause.push_fixed(&condition);
    }
    if let Some(cursor) = after {
        clause.push("e.seq < ?", decode(cursor)?);
    }
    Ok(clause)
}

/// Deliveries (alias `d`, joined to their event `e`) matching the filter.
pub fn deliveries(filter: &Filter) -> Clause {
    let mut clause = Clause::default();
    for (condition, value) in filter
        .event_conditions()
        .into_iter()
        .chain(filter.delivery_conditions())
    {
        clause.push_filter(condition, value);
    }
    clause
}

/// The rows of a statement, with the driver's error as the store's.
pub async fn all<S: ?Sized + ToStatement + Sync + Send>(
    client: &impl GenericClient,
    statement: &S,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    client.query(statement, params).await.map_err(pg_error)
}

/// The row of a statement that returns at most one.
pub async fn opt<S: ?Sized + ToStatement + Sync + Send>(
    client: &impl GenericClient,
    statement: &S,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, StoreError> {
    client.query_opt(statement, params).await.map_err(pg_error)
}

/// The row of a statement that always returns one (an aggregate).
pub async fn one<S: ?Sized + ToStatement + Sync + Send>(
    client: &impl GenericClient,
    statement: &S,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, StoreError> {
    client.query_one(statement, params).await.map_err(pg_error)
}

/// Cuts a page's look-ahead row off and says where the next page starts, if there is one.
pub fn page_end<T>(rows: &mut Vec<(T, i64)>, limit: usize) -> Option<Cursor> {
    if rows.len() <= limit {
        return None;
    }
    rows.truncate(limit);
    rows.last().map(|(_, seq)| encode(*seq))
}

pub fn encode(seq: i64) -> Cursor {
    Cursor(format!("c{seq}"))
}

pub fn decode(cursor: &Cursor) -> Result<i64, StoreError> {
    cursor
        .0
        .strip_prefix('c')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| StoreError::BadRequest(format!("invalid cursor {:?}", cursor.0)))
}

/// A bulk scope's snapshot: the text of `pg_current_snapshot()` (`xmin:xmax:xip,...`).
pub fn encode_snapshot(snapshot: &str) -> Cursor {
    Cursor(format!("s{snapshot}"))
}

/// The snapshot text of a cursor, checked as strictly as `pg_snapshot` input checks it: a
/// snapshot the database refused would abort the transaction of the job step reading it,
/// before the job could be recorded as failed.
pub fn decode_snapshot(cursor: &Cursor) -> Result<String, StoreError> {
    let bad = || StoreError::BadRequest(format!("invalid snapshot {:?}", cursor.0));
    let text = cursor.0.strip_prefix('s').ok_or_else(bad)?;
    if !text
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b':' || b == b',')
    {
        return Err(bad());
    }
    let mut parts = text.splitn(3, ':');
    let (Some(xmin), Some(xmax), Some(running)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let (xmin, xmax) = match (xmin.parse::<u64>(), xmax.parse::<u64>()) {
        (Ok(xmin), Ok(xmax)) if (1..=xmax).contains(&xmin) => (xmin, xmax),
        _ => return Err(bad()),
    };
    if !running.is_empty() {
        let mut last = xmin;
        for xid in running.split(',') {
            let xid: u64 = xid.parse().map_err(|_| bad())?;
            if !(last..xmax).contains(&xid) {
                return Err(bad());
            }
            last = xid;
        }
    }
    Ok(text.to_owned())
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
        let clause = events(&filter, Some(&encode(42))).unwrap();
        assert_eq!(
            clause.sql(),
            "e.source = $1 AND (e.git_ref = $2 OR e.branch = $2 OR e.tag = $2) AND \
             e.project = $3 AND EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq \
             AND d.state = $4 AND d.destination = $5) AND e.seq < $6"
        );
        assert_eq!(clause.params.len(), 6);
        assert_eq!(clause.refs().len(), 6);
        let mut empty = deliveries(&Filter::default());
        assert_eq!(empty.sql(), "TRUE");
        assert_eq!(empty.next_param(10_i64), "$1");
        assert_eq!(decode(&encode(42)).unwrap(), 42);
        assert!(matches!(
            decode(&Cursor("x1".into())),
            Err(StoreError::BadRequest(_))
        ));
    }

    #[test]
    fn snapshots_round_trip_and_malformed_ones_are_refused() {
        for text in ["100:104:100,102", "7:7:", "1:2:1"] {
            assert_eq!(decode_snapshot(&encode_snapshot(text)).unwrap(), text);
        }
        for bad in [
            "100:104:100", // no prefix
            "c42",
            "s",
            "s1:2",
            "s0:2:",
            "s5:4:",
            "s1:4:4",
            "s1:9:5,3",
            "s1:9:2,",
            "s1:9:2;drop",
            "s1:2:3:4",
            "s99999999999999999999:1:",
        ] {
            assert!(
                matches!(
                    decode_snapshot(&Cursor(bad.into())),
                    Err(StoreError::BadRequest(_))
                ),
                "{bad}"
            );
        }
    }
}
