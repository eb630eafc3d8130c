//! Circuit breaker per destination (pure): after `failures` failed attempts in a row the
//! destination is only probed, one delivery every `probe_interval`, instead of every due
//! delivery being tried and failing. Deliveries not tried meanwhile spend no attempt.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failures: u32,
    pub probe_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Closed: claim as many as there are free slots.
    Any,
    /// Open and a probe is due: claim one.
    Probe,
    /// Open: claim nothing until then.
    WaitUntil(Instant),
}

#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    consecutive_failures: u32,
    /// Set while open: when the next probe may go.
    next_probe: Option<Instant>,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            consecutive_failures: 0,
            next_probe: None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.next_probe.is_some()
    }

    /// What may be claimed now. Granting a probe pushes the next one a full interval away,
    /// so only one probe is out at a time.
    pub fn allowance(&mut self, now: Instant) -> Allowance {
        match self.next_probe {
            None => Allowance::Any,
            Some(at) if now >= at => {
                self.next_probe = Some(now + self.policy.probe_interval);
                Allowance::Probe
            }
            Some(at) => Allowance::WaitUntil(at),
        }
    }

    /// Records an attempt's result; returns whether the breaker changed state (for logs).
    /// `destination_failed` is false for answers that prove the destination is up (a 4xx
    /// about this one request).
    pub fn record(&mut self, destination_failed: bool, now: Instant) -> bool {
        let was_open = self.is_open();
        if destination_failed {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if !was_open && self.consecutive_failures >= self.policy.failures {
                self.next_probe = Some(now + self.policy.probe_interval);
            }
        } else {
            self.consecutive_failures = 0;
            self.next_probe = None;
        }
        was_open != self.is_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_probes_slowly_and_closes_on_success() {
        let policy = BreakerPolicy {
            failures: 3,
            probe_interval: Duration::from_secs(10),
        };
        let mut breaker = Breaker::new(policy);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // (time, destination failed?) then what may be claimed right after.
        assert!(!breaker.record(true, at(0)));
        assert!(!breaker.record(false, at(0)), "a success resets the count");
        assert!(!breaker.record(true, at(1)));
        assert!(!breaker.record(true, at(1)));
        assert_eq!(breaker.allowance(at(1)), Allowance::Any);
        assert!(
            breaker.record(true, at(2)),
            "third failure in a row opens it"
        );
        assert_eq!(breaker.allowance(at(5)), Allowance::WaitUntil(at(12)));
        assert_eq!(breaker.allowance(at(12)), Allowance::Probe);
        assert_eq!(
            breaker.allowance(at(13)),
            Allowance::WaitUntil(at(22)),
            "one probe at a time"
        );
        assert!(
            !breaker.record(true, at(14)),
            "a failed probe keeps it open"
        );
        assert_eq!(breaker.allowance(at(22)), Allowance::Probe);
        assert!(breaker.record(false, at(23)), "a delivered probe closes it");
        assert_eq!(breaker.allowance(at(23)), Allowance::Any);
    }
}
