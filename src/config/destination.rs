//! Validation of `[destinations.NAME]`: what every kind shares (timeout, concurrency,
//! ordering, breaker, retry policy), each error located; the kind's own settings are checked
//! by its home in `delivery::destinations`.

use std::time::Duration;

use super::raw::{RawDestination, RawRetry, parse_duration_in};
use super::{Checker, DestinationConfig, HOUR};
use crate::domain::RetryPolicy;
use crate::domain::{KeyPart, Name, OnInterrupt, Ordering};

pub(super) fn validate_destination(
    c: &mut Checker,
    location: &str,
    name: &str,
    raw: &RawDestination,
) -> Option<DestinationConfig> {
    let name = c.check(location, Name::parse(name));
    let target = crate::delivery::destinations::validate(c, location, &raw.kind, &raw.settings);
    let is_command = raw.kind == "command";
    let timeout = match &raw.timeout {
        Some(text) => c.check(
            format!("{location}.timeout"),
            parse_duration_in(text, Duration::from_millis(100), HOUR),
        ),
        None => Some(Duration::from_secs(30)),
    };
    let concurrency = c.check(
        format!("{location}.concurrency"),
        match raw.concurrency {
            // Commands (deploys) run one at a time unless told otherwise.
            None if is_command => Ok(1),
            None => Ok(16),
            Some(n) if (1..=1024).contains(&n) => Ok(n as usize),
            Some(n) => Err(format!("{n} is outside 1..=1024")),
        },
    );
    let ordering = c.check(
        format!("{location}.ordering"),
        match raw.ordering.as_deref() {
            None | Some("parallel") => Ok(Ordering::Parallel),
            Some("fifo") => Ok(Ordering::Fifo),
            Some("latest") => Ok(Ordering::Latest),
            Some(other) => Err(format!(
                "unknown ordering {other:?}; use \"parallel\", \"fifo\" or \"latest\""
            )),
        },
    );
    let coalesce_by = match &raw.coalesce_by {
        None => Some(vec![KeyPart::Source, KeyPart::Ref]),
        Some(parts) if parts.is_empty() => {
            c.error(format!("{location}.coalesce_by"), "needs at least one part");
            None
        }
        Some(parts) => parts
            .iter()
            .enumerate()
            .map(|(i, part)| c.check(format!("{location}.coalesce_by[{i}]"), part.parse()))
            .collect::<Vec<_>>()
            .into_iter()
            .collect::<Option<Vec<KeyPart>>>(),
    };
    let retry = validate_retry(c, &format!("{location}.retry"), &raw.retry);
    let on_interrupt = c.check(
        format!("{location}.on_interrupt"),
        match raw.on_interrupt.as_deref() {
            None | Some("retry") => Ok(OnInterrupt::Retry),
            Some("dead") => Ok(OnInterrupt::Dead),
            Some(other) => Err(format!("{other:?}: use \"retry\" or \"dead\"")),
        },
    );
    let breaker = &raw.circuit_breaker;
    let breaker_failures = c.check(
        format!("{location}.circuit_breaker.failures"),
        match breaker.failures {
            None => Ok(5),
            Some(n) if (1..=1_000_000).contains(&n) => Ok(n as u32),
            Some(n) => Err(format!("{n} is outside 1..=1000000")),
        },
    );
    let probe_interval = match &breaker.probe_interval {
        Some(text) => c.check(
            format!("{location}.circuit_breaker.probe_interval"),
            parse_duration_in(text, Duration::from_millis(100), HOUR),
        ),
        None => Some(Duration::from_secs(30)),
    };
    let min_probe_interval = match &breaker.min_probe_interval {
        Some(text) => c.check(
            format!("{location}.circuit_breaker.min_probe_interval"),
            parse_duration_in(text, Duration::from_millis(10), HOUR),
        ),
        None => Some(Duration::ZERO),
    };
    let retry = retry?;
    let probe_interval = probe_interval?;
    // Unset: the retry policy's first delay, so recovery is found as fast as retries would.
    let min_probe_interval = match min_probe_interval? {
        Duration::ZERO => retry.initial_delay,
        chosen => chosen,
    }
    .clamp(Duration::from_millis(10), probe_interval);
    Some(DestinationConfig {
        name: name?,
        target: target?,
        timeout: timeout?,
        concurrency: concurrency?,
        ordering: ordering?,
        coalesce_by: coalesce_by?,
        paused: raw.paused.unwrap_or(false),
        breaker: crate::delivery::breaker::BreakerPolicy {
            failures: breaker_failures?,
            probe_interval,
            min_probe_interval,
        },
        retry,
        on_interrupt: on_interrupt?,
    })
}

fn validate_retry(c: &mut Checker, location: &str, raw: &RawRetry) -> Option<RetryPolicy> {
    let defaults = RetryPolicy::default();
    let mut duration =
        |key: &str, value: &Option<String>, default: Duration, min: Duration, max: Duration| {
            match value {
                Some(text) => c.check(
                    format!("{location}.{key}"),
                    parse_duration_in(text, min, max),
                ),
                None => Some(default),
            }
        };
    let ms = Duration::from_millis;
    let days = |n: u64| Duration::from_secs(n * 24 * 3600);
    let initial_delay = duration(
        "initial_delay",
        &raw.initial_delay,
        defaults.initial_delay,
        ms(10),
        days(1),
    );
    let max_delay = duration(
        "max_delay",
        &raw.max_delay,
        defaults.max_delay,
        ms(10),
        days(7),
    );
    let max_age = duration(
        "max_age",
        &raw.max_age,
        defaults.max_age,
        ms(1000),
        days(365),
    );
    let retry_after_cap = duration(
        "retry_after_cap",
        &raw.retry_after_cap,
        defaults.retry_after_cap,
        Duration::ZERO,
        days(7),
    );
    if let (Some(initial), Some(max)) = (initial_delay, max_delay)
        && max < initial
    {
        c.error(
            format!("{location}.max_delay"),
            "is shorter than initial_delay",
        );
    }
    let max_attempts = c.check(
        format!("{location}.max_attempts"),
        match raw.max_attempts {
            None => Ok(defaults.max_attempts),
            Some(n) if (1..=10_000).contains(&n) => Ok(n as u32),
            Some(n) => Err(format!("{n} is outside 1..=10000")),
        },
    );
    Some(RetryPolicy {
        initial_delay: initial_delay?,
        max_delay: max_delay?,
        max_attempts: max_attempts?,
        max_age: max_age?,
        retry_after_cap: retry_after_cap?,
        permanent_4xx: raw.permanent_4xx.unwrap_or(defaults.permanent_4xx),
    })
}
