//! What broker destinations share: the pause between connect attempts, so a dead broker is
//! not hammered by every delivery, and the outcome of an attempt that reached no broker.

use std::time::{Duration, Instant};

use crate::delivery::AttemptOutcome;
use crate::domain::{AttemptDetail, Verdict};

const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// When the next connect may be tried: doubling from 100 ms to 5 s after each failure, back
/// to none after a success.
#[derive(Debug, Default)]
pub struct Backoff {
    pause: Option<Duration>,
    not_before: Option<Instant>,
    /// Why the last connect failed, for the attempts refused while waiting.
    last_error: String,
}

impl Backoff {
    /// `Err(why)` while the pause after the last failure lasts.
    pub fn ready(&self, now: Instant) -> Result<(), String> {
        match self.not_before {
            Some(when) if now < when => Err(format!(
                "not connected; next connect in {} ms (last: {})",
                (when - now).as_millis().max(1),
                self.last_error
            )),
            _ => Ok(()),
        }
    }

    pub fn failed(&mut self, now: Instant, error: &str) {
        let pause = self
            .pause
            .map_or(FIRST_PAUSE, |p| (p * 2).min(LONGEST_PAUSE));
        self.pause = Some(pause);
        self.not_before = Some(now + pause);
        self.last_error = error.to_owned();
    }

    pub fn succeeded(&mut self) {
        self.pause = None;
        self.not_before = None;
    }
}

/// An attempt that reached no broker (connect failed, connection lost, timed out): another
/// try may work, and the broker counts as down for the circuit breaker.
pub fn unreachable(summary: &str, class: &'static str, error: String) -> AttemptOutcome {
    AttemptOutcome {
        verdict: Verdict::Retryable,
        retry_after: None,
        class,
        detail: AttemptDetail::failed(summary, super::message::detail_text(&error)),
        destination_down: true,
    }
}

/// An answer from the broker about this one message (not the broker being down).
pub fn refused(
    verdict: Verdict,
    summary: &str,
    class: &'static str,
    error: String,
) -> AttemptOutcome {
    AttemptOutcome {
        verdict,
        retry_after: None,
        class,
        detail: AttemptDetail::failed(summary, super::message::detail_text(&error)),
        destination_down: false,
    }
}

/// Runs one attempt within the destination's timeout; past it, the broker counts as down.
pub async fn within(
    timeout: Duration,
    attempt: impl std::future::Future<Output = AttemptOutcome>,
) -> AttemptOutcome {
    match tokio::time::timeout(timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => unreachable(
            "timeout",
            "timeout",
            format!("no acknowledgement from the broker within {timeout:?}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_five_seconds_and_reset_on_success() {
        let mut backoff = Backoff::default();
        let now = Instant::now();
        assert!(backoff.ready(now).is_ok());
        let mut pauses = Vec::new();
        for _ in 0..8 {
            backoff.failed(now, "refused");
            pauses.push(backoff.not_before.unwrap() - now);
        }
        assert_eq!(pauses[0], FIRST_PAUSE);
        assert_eq!(pauses[1], FIRST_PAUSE * 2);
        assert_eq!(*pauses.last().unwrap(), LONGEST_PAUSE);
        let waiting = backoff.ready(now).unwrap_err();
        assert!(waiting.contains("refused"), "{waiting}");
        assert!(backoff.ready(now + LONGEST_PAUSE).is_ok());
        backoff.succeeded();
        assert!(backoff.ready(now).is_ok());
    }
}
