//! A broker connection made on first use and kept: after a failed connect the next one waits
//! a doubling delay (100 ms up to 5 s) so a dead broker is not hammered by every attempt.

use std::fmt::Display;
use std::time::{Duration, Instant};

const FIRST_DELAY: Duration = Duration::from_millis(100);
const LONGEST_DELAY: Duration = Duration::from_secs(5);

/// How long to wait after the `failures`-th failed connect in a row.
pub fn delay_after(failures: u32) -> Duration {
    FIRST_DELAY
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(LONGEST_DELAY)
}

struct Slot<C> {
    client: Option<C>,
    failures: u32,
    not_before: Option<Instant>,
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
                failures: 0,
                not_before: None,
            }),
        }
    }
}

impl<C: Clone> Reconnecting<C> {
    /// The kept client, or a new one from `connect`. Attempts that arrive while one connects
    /// wait for it rather than connect again. The error says why there is no client.
    pub async fn get<E: Display>(
        &self,
        connect: impl AsyncFnOnce() -> Result<C, E>,
    ) -> Result<C, String> {
        let mut slot = self.slot.lock().await;
        if let Some(client) = &slot.client {
            return Ok(client.clone());
        }
        if let Some(when) = slot.not_before
            && let Some(left) = when.checked_duration_since(Instant::now())
        {
            return Err(format!(
                "backing off: {} failed connect(s) in a row, the next in {} ms",
                slot.failures,
                left.as_millis()
            ));
        }
        match connect().await {
            Ok(client) => {
                slot.client = Some(client.clone());
                slot.failures = 0;
                slot.not_before = None;
                Ok(client)
            }
            Err(err) => {
                slot.failures = slot.failures.saturating_add(1);
                slot.not_before = Some(Instant::now() + delay_after(slot.failures));
                Err(err.to_string())
            }
        }
    }

    /// Forgets the kept client after a connection error: a later attempt connects anew.
    /// (A NATS client is kept: it reconnects by itself, and a forgotten one would go on
    /// reconnecting in the background.)
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub async fn forget(&self) {
        self.slot.lock().await.client = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_five_seconds() {
        let delays: Vec<u128> = (1..=8).map(|n| delay_after(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(delay_after(u32::MAX), LONGEST_DELAY);
    }

    #[tokio::test]
    async fn a_failed_connect_waits_before_the_next() {
        let kept = Reconnecting::<u32>::default();
        let failed = kept.get(async || Err::<u32, _>("refused")).await;
        assert_eq!(failed, Err("refused".to_owned()));
        // Within the delay the broker is not asked again.
        let waiting = kept.get(async || Ok::<_, String>(1)).await.unwrap_err();
        assert!(
            waiting.starts_with("backing off: 1 failed connect(s) in a row"),
            "{waiting}"
        );
        tokio::time::sleep(delay_after(1)).await;
        assert_eq!(kept.get(async || Ok::<_, String>(7)).await, Ok(7));
        assert_eq!(kept.get(async || Ok::<_, String>(9)).await, Ok(7));
        kept.forget().await;
        assert_eq!(kept.get(async || Ok::<_, String>(9)).await, Ok(9));
    }
}
