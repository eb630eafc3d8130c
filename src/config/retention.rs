//! Validation of `[retention]`: how long finished events are kept.

use std::time::Duration;

use serde::Deserialize;

use super::Checker;
use super::raw::parse_duration_in;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// Events whose deliveries all succeeded (or were cancelled), and events no route took.
    pub succeeded: Option<String>,
    /// Events with a dead delivery: kept longer, to be inspected and replayed.
    pub dead: Option<String>,
    /// How often the sweep runs.
    pub interval: Option<String>,
}

pub use crate::domain::Retention;

const DAY: Duration = Duration::from_secs(86_400);
const YEARS: Duration = Duration::from_secs(20 * 365 * 86_400);

pub(super) fn validate_retention(c: &mut Checker, raw: &RawRetention) -> Option<Retention> {
    let mut duration =
        |key: &str, text: &Option<String>, default: Duration, min: Duration| match text {
            Some(text) => c.check(
                format!("retention.{key}"),
                parse_duration_in(text, min, YEARS),
            ),
            None => Some(default),
        };
    let succeeded = duration("succeeded", &raw.succeeded, 7 * DAY, Duration::from_secs(1));
    let dead = duration("dead", &raw.dead, 30 * DAY, Duration::from_secs(1));
    let interval = duration(
        "interval",
        &raw.interval,
        Duration::from_secs(60),
        Duration::from_millis(100),
    );
    Some(Retention {
        succeeded: succeeded?,
        dead: dead?,
        interval: interval?,
    })
}
