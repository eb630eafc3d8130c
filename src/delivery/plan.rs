//! The retry planner: a pure function from (policy, attempt, outcome, clock, jitter) to a decision.

use std::time::Duration;

use crate::domain::{UnixMillis, Verdict};

pub use crate::domain::RetryPolicy;

#[derive(Debug, Clone, PartialEq)]
pub struct PlanInput {
    /// Attempts made so far in this delivery's current window, this one included (1-based).
    pub attempt: u32,
    /// The destination's verdict on this attempt.
    pub verdict: Verdict,
    /// The destination asked for at least this long before the next try.
    pub retry_after: Option<Duration>,
    pub now: UnixMillis,
    /// When the delivery first became due (or was last replayed): `max_age` counts from here.
    pub window_start: UnixMillis,
    /// Uniform random number in [0, 1), passed in so the planner stays deterministic.
    pub jitter: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Succeeded,
    RetryAt(UnixMillis),
    GiveUp(GiveUpReason),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GiveUpReason {
    MaxAttempts,
    MaxAge,
    Permanent,
}

impl std::fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MaxAttempts => f.write_str("retry limit reached (max_attempts)"),
            Self::MaxAge => f.write_str("retry window exhausted (max_age)"),
            Self::Permanent => f.write_str("permanent failure (the destination's rules)"),
        }
    }
}

pub fn plan_next(policy: &RetryPolicy, input: &PlanInput) -> Decision {
    match input.verdict {
        Verdict::Delivered => return Decision::Succeeded,
        Verdict::Permanent => return Decision::GiveUp(GiveUpReason::Permanent),
        // Nobody knows what a cut-off attempt did: it is retried like a failure.
        Verdict::Retryable | Verdict::Interrupted => {}
    }
    let retry_after = input.retry_after;
    if input.attempt >= policy.max_attempts {
        return Decision::GiveUp(GiveUpReason::MaxAttempts);
    }
    let mut delay = backoff(policy, input.attempt, input.jitter);
    if let Some(asked) = retry_after {
        delay = delay.max(asked.min(policy.retry_after_cap));
    }
    let next = input.now.saturating_add(millis(delay));
    let deadline = input.window_start.saturating_add(millis(policy.max_age));
    if next > deadline {
        return Decision::GiveUp(GiveUpReason::MaxAge);
    }
    Decision::RetryAt(next)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Exponential backoff with "equal jitter": uniform in [d/2, d] where d doubles per attempt
/// up to `max_delay`. Half the delay is kept so a flapping receiver is never hammered at once.
pub fn backoff(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(40);
    let full = policy
        .initial_delay
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(policy.max_delay)
        .min(policy.max_delay);
    let jitter = jitter.clamp(0.0, 1.0);
    full.mul_f64(0.5 + 0.5 * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// A verdict with the delay the destination asked for.
    type Outcome = (Verdict, Option<Duration>);

    /// A failed attempt as the HTTP destination would report this status (None: no answer).
    fn failed(status: Option<u16>, retry_after_secs: Option<u64>) -> Outcome {
        failed_with(status, retry_after_secs, false)
    }

    fn failed_with(status: Option<u16>, retry_after_secs: Option<u64>, strict: bool) -> Outcome {
        let permanent =
            status.is_some_and(|s| super::super::destinations::http::is_permanent(s, strict));
        let verdict = match permanent {
            true => Verdict::Permanent,
            false => Verdict::Retryable,
        };
        (verdict, retry_after_secs.map(Duration::from_secs))
    }

    #[test]
    fn decisions_follow_the_table() {
        let policy = RetryPolicy::default();
        let strict = RetryPolicy {
            permanent_4xx: true,
            ..RetryPolicy::default()
        };
        let now = 1_000_000_000;
        // (policy, attempt, result, minutes since window start, jitter, expected)
        let table: Vec<(&RetryPolicy, u32, Outcome, i64, f64, Decision)> = vec![
            (
                &policy,
                1,
                (Verdict::Delivered, None),
                0,
                0.5,
                Decision::Succeeded,
            ),
            // An interrupted attempt is retried by the policy, like a failure.
            (
                &policy,
                2,
                (Verdict::Interrupted, None),
                0,
                1.0,
                Decision::RetryAt(now + 10_000),
            ),
            // First failure: 5 s, jitter 0 keeps half, jitter 1 keeps all.
            (
                &policy,
                1,
                failed(Some(500), None),
                0,
                0.0,
                Decision::RetryAt(now + 2_500),
            ),
            (
                &policy,
                1,
                failed(Some(500), None),
                0,
                1.0,
                Decision::RetryAt(now + 5_000),
            ),
            (
                &policy,
                3,
                failed(None, None),
                0,
                1.0,
                Decision::RetryAt(now + 20_000),
            ),
            // Doubling stops at max_delay (1 h).
            (
                &policy,
                20,
                failed(Some(503), None),
                0,
                1.0,
                Decision::RetryAt(now + 60 * MIN),
            ),
            // Retry-After longer than the backoff is honoured, within the cap.
            (
                &policy,
                1,
                failed(Some(429), Some(120)),
                0,
                1.0,
                Decision::RetryAt(now + 120_000),
            ),
            (
                &policy,
                1,
                failed(Some(503), Some(86_400)),
                0,
                1.0,
                Decision::RetryAt(now + 60 * MIN),
            ),
            // Retry-After shorter than the backoff does not shorten it.
            (
                &policy,
                3,
                failed(Some(503), Some(1)),
                0,
                1.0,
                Decision::RetryAt(now + 20_000),
            ),
            // Limits.
            (
                &policy,
                30,
                failed(Some(500), None),
                0,
                0.5,
                Decision::GiveUp(GiveUpReason::MaxAttempts),
            ),
            (
                &policy,
                5,
                failed(Some(500), None),
                3 * 24 * 60 - 1,
                1.0,
                Decision::GiveUp(GiveUpReason::MaxAge),
            ),
            (
                &policy,
                5,
                failed(Some(500), None),
                3 * 24 * 60 - 2,
                1.0,
                Decision::RetryAt(now + 80_000),
            ),
            // 4xx are retried unless the destination marks them permanent.
            (
                &policy,
                1,
                failed(Some(404), None),
                0,
                1.0,
                Decision::RetryAt(now + 5_000),
            ),
            (
                &strict,
                1,
                failed_with(Some(404), None, true),
                0,
                1.0,
                Decision::GiveUp(GiveUpReason::Permanent),
            ),
            (
                &strict,
                1,
                failed_with(Some(429), None, true),
                0,
                1.0,
                Decision::RetryAt(now + 5_000),
            ),
            (
                &strict,
                1,
                failed_with(Some(408), None, true),
                0,
                1.0,
                Decision::RetryAt(now + 5_000),
            ),
            (
                &strict,
                1,
                failed_with(Some(500), None, true),
                0,
                1.0,
                Decision::RetryAt(now + 5_000),
            ),
        ];
        for (i, (policy, attempt, (verdict, retry_after), minutes, jitter, expected)) in
            table.into_iter().enumerate()
        {
            let input = PlanInput {
                attempt,
                verdict,
                retry_after,
                now,
                window_start: now - minutes * MIN,
                jitter,
            };
            assert_eq!(plan_next(policy, &input), expected, "row {i}: {input:?}");
        }
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            max_age: Duration::from_secs(u64::MAX / 4),
            ..RetryPolicy::default()
        };
        let input = PlanInput {
            attempt: u32::MAX - 1,
            verdict: Verdict::Retryable,
            retry_after: None,
            now: 0,
            window_start: 0,
            jitter: 0.99,
        };
        assert!(matches!(plan_next(&policy, &input), Decision::RetryAt(_)));
    }
}
