//! What broker destinations share: a connection made on first use and kept, the pause
//! between connect attempts (doubling from 100 ms to 5 s, so a dead broker is not hammered by
//! every delivery), and the outcomes of an attempt that reached no broker or was refused.

use std::fmt::Display;
use std::time::{Duration, Instant};

use crate::delivery::AttemptOutcome;
use crate::domain::{AttemptDetail, Verdict};

const FIRST_DELAY: Duration = Duration::from_millis(100);
const LONGEST_DELAY: Duration = Duration::from_secs(5);

/// How long to wait after the `failures`-th failed connect in a row.
pub fn delay_after(failures: u32) -> Duration {
    FIRST_DELAY
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(LONGEST_DELAY)
}

/// When the next connect may be tried: [`delay_after`] the failures in a row, none after a
/// success.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
    not_before: Option<Instant>,
    /// Why the last connect failed, for the attempts refused while waiting.
    last_error: String,
}

impl Backoff {
    /// `Err(why)` while the pause after the last failure lasts.
    pub fn ready(&self, now: Instant) -> Result<(), String> {
        match self.not_before {
            Some(when) if now < when => Err(format!(
                "not connected; {} failed connect(s) in a row, the next in {} ms (last: {})",
                self.failures,
                (when - now).as_millis().max(1),
                self.last_error
            )),
            _ => Ok(()),
        }
    }

    pub fn failed(&mut self, now: Instant, error: &str) {
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(now + delay_after(self.failures));
        self.last_error = error.to_owned();
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.not_before = None;
    }
}

struct Slot<C> {
    client: Option<C>,
    backoff: Backoff,
}

/// One kept client (cheap to clone, shared by concurrent attempts).
pub struct Reconnecting<C> {
    slot: tokio::sync::Mutex<Slot<C>>,
}

impl<C: Clone> Default for Reconnecting<C> {
    fn default() -> Self {
        Self {
            slot: tokio::sync::Mutex::new(Slot {
                client: None,
                backoff: Backoff::default(),
            }),
        }
    }
}

impl<C: Clone> Reconnecting<C> {
    /// The kept client, or a new one from `connect`. Attempts that arrive while one connects
    /// wait for it rather than connect again. The error says why there is no client.
    #[cfg_attr(not(any(feature = "nats", feature = "redis")), allow(dead_code))]
    pub async fn get<E: Display>(
        &self,
        connect: impl AsyncFnOnce() -> Result<C, E>,
    ) -> Result<C, String> {
        let mut slot = self.slot.lock().await;
        if let Some(client) = &slot.client {
            return Ok(client.clone());
        }
        slot.backoff.ready(Instant::now())?;
        match connect().await {
            Ok(client) => {
                slot.client = Some(client.clone());
                slot.backoff.succeeded();
                Ok(client)
            }
            Err(err) => {
                let error = err.to_string();
                slot.backoff.failed(Instant::now(), &error);
                Err(error)
            }
        }
    }

    /// Forgets the kept client after a connection error: a later attempt connects anew.
    /// (A NATS client reconnects by itself: it is forgotten only once it has given up.)
    #[cfg_attr(not(any(feature = "redis", feature = "nats")), allow(dead_code))]
    pub async fn forget(&self) {
        self.slot.lock().await.client = None;
    }
}

/// An attempt that reached no broker (connect failed, connection lost, timed out): another
/// try may work, and the broker counts as down for the circuit breaker.
#[cfg_attr(not(any(feature = "amqp", feature = "mqtt")), allow(dead_code))]
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
#[cfg_attr(not(any(feature = "amqp", feature = "mqtt")), allow(dead_code))]
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
#[cfg_attr(not(any(feature = "amqp", feature = "mqtt")), allow(dead_code))]
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
    fn the_delay_doubles_up_to_five_seconds_and_resets_on_success() {
        let delays: Vec<u128> = (1..=8).map(|n| delay_after(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(delay_after(u32::MAX), LONGEST_DELAY);
        let mut backoff = Backoff::default();
        let now = Instant::now();
        assert!(backoff.ready(now).is_ok());
        backoff.failed(now, "refused");
        let waiting = backoff.ready(now).unwrap_err();
        assert!(waiting.contains("refused"), "{waiting}");
        assert!(backoff.ready(now + FIRST_DELAY).is_ok());
        backoff.succeeded();
        assert!(backoff.ready(now).is_ok());
    }

    #[tokio::test]
    async fn a_failed_connect_waits_before_the_next() {
        let kept = Reconnecting::<u32>::default();
        let failed = kept.get(async || Err::<u32, _>("refused")).await;
        assert_eq!(failed, Err("refused".to_owned()));
        // Within the delay the broker is not asked again.
        let waiting = kept.get(async || Ok::<_, String>(1)).await.unwrap_err();
        assert!(
            waiting.starts_with("not connected; 1 failed connect(s) in a row"),
            "{waiting}"
        );
        tokio::time::sleep(delay_after(1)).await;
        assert_eq!(kept.get(async || Ok::<_, String>(7)).await, Ok(7));
        assert_eq!(kept.get(async || Ok::<_, String>(9)).await, Ok(7));
        kept.forget().await;
        assert_eq!(kept.get(async || Ok::<_, String>(9)).await, Ok(9));
    }
}
