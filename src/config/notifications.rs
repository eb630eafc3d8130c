//! Validation of `[notifications]`: when hookrelay tells of its own happenings (thresholds,
//! windows, cooldown, budget); routes with `source = "hookrelay"` say where they go.

use std::time::Duration;

use serde::Deserialize;

use super::Checker;
use super::raw::parse_duration_in;
pub use crate::notify::Settings as Notifications;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotifications {
    /// One notification of a kind about one destination or source at most this often.
    pub min_interval: Option<String>,
    pub max_per_minute: Option<i64>,
    pub backlog_threshold: Option<i64>,
    pub backlog_age: Option<String>,
    /// A share between 0 and 1.
    pub rejecting_share: Option<f64>,
    pub rejecting_window: Option<String>,
    pub rejecting_min_requests: Option<i64>,
    pub check_interval: Option<String>,
    /// Dead deliveries told together once per this long (unset: one message each).
    pub dead_digest: Option<String>,
}

pub(super) fn validate_notifications(
    c: &mut Checker,
    raw: &RawNotifications,
) -> Option<Notifications> {
    let defaults = Notifications::default();
    let mut duration =
        |key: &str, text: &Option<String>, default: Duration, min: Duration| match text {
            Some(text) => c.check(
                format!("notifications.{key}"),
                parse_duration_in(text, min, Duration::from_secs(7 * 86_400)),
            ),
            None => Some(default),
        };
    let second = Duration::from_secs(1);
    let min_interval = duration(
        "min_interval",
        &raw.min_interval,
        defaults.min_interval,
        second,
    );
    let backlog_age = duration(
        "backlog_age",
        &raw.backlog_age,
        defaults.backlog_age,
        second,
    );
    let check_interval = duration(
        "check_interval",
        &raw.check_interval,
        defaults.check_interval,
        Duration::from_millis(100),
    );
    let dead_digest = match &raw.dead_digest {
        Some(_) => duration("dead_digest", &raw.dead_digest, Duration::ZERO, second).map(Some),
        None => Some(None),
    };
    let window = duration(
        "rejecting_window",
        &raw.rejecting_window,
        Duration::from_secs(60 * u64::from(defaults.rejecting_window_minutes)),
        Duration::from_secs(60),
    );
    let window_minutes = window.and_then(|w| {
        let minutes = w.as_secs() / 60;
        c.check(
            "notifications.rejecting_window",
            match (w.as_secs() % 60, minutes) {
                (0, 1..=60) => Ok(minutes as u32),
                _ => Err("must be whole minutes, from 1m to 60m".to_owned()),
            },
        )
    });
    let mut count = |key: &str, value: Option<i64>, default: u64, min: i64| {
        c.check(
            format!("notifications.{key}"),
            match value {
                None => Ok(default),
                Some(n) if n >= min && n <= 1_000_000_000 => Ok(n as u64),
                Some(n) => Err(format!("{n} is outside {min}..=1000000000")),
            },
        )
    };
    let max_per_minute = count(
        "max_per_minute",
        raw.max_per_minute,
        u64::from(defaults.max_per_minute),
        1,
    );
    let backlog_threshold = count(
        "backlog_threshold",
        raw.backlog_threshold,
        defaults.backlog_threshold,
        1,
    );
    let rejecting_min_requests = count(
        "rejecting_min_requests",
        raw.rejecting_min_requests,
        defaults.rejecting_min_requests,
        1,
    );
    let rejecting_share = c.check(
        "notifications.rejecting_share",
        match raw.rejecting_share {
            None => Ok(defaults.rejecting_share),
            Some(share) if share > 0.0 && share <= 1.0 => Ok(share),
            Some(share) => Err(format!("{share} is outside (0, 1]")),
        },
    );
    Some(Notifications {
        min_interval: min_interval?,
        max_per_minute: max_per_minute?.min(u64::from(u32::MAX)) as u32,
        backlog_threshold: backlog_threshold?,
        backlog_age: backlog_age?,
        rejecting_share: rejecting_share?,
        rejecting_window_minutes: window_minutes?,
        rejecting_min_requests: rejecting_min_requests?,
        check_interval: check_interval?,
        dead_digest: dead_digest?,
    })
}
