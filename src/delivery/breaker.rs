//! Circuit breaker per destination (pure): after `failures` failed attempts in a row the
//! destination is only probed, one delivery at a time, instead of every due delivery being
//! tried and failing. Deliveries not tried meanwhile spend no attempt.
//!
//! The probe interval starts at `min_probe_interval` (by default the retry policy's
//! `initial_delay`) and doubles with each failed probe up to `probe_interval`: a destination
//! back after a short outage is found within about one short interval, one down for an hour
//! is probed at most once per `probe_interval` after the first minutes.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failures: u32,
    /// The longest wait between two probes.
    pub probe_interval: Duration,
    /// The first wait after the breaker opens; at most `probe_interval`.
    pub min_probe_interval: Duration,
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
    /// The wait after the next failed probe's predecessor: doubles per failed probe.
    interval: Duration,
    /// A probe was granted and has not reported yet.
    probe_out: bool,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            consecutive_failures: 0,
            next_probe: None,
            interval: policy.min_probe_interval,
            probe_out: false,
        }
    }

    pub fn is_open(&self) -> bool {
        self.next_probe.is_some()
    }

    /// What may be claimed now. Granting a probe pushes the next one an interval away, so
    /// only one probe is out at a time (and a probe that never reports does not stall it).
    pub fn allowance(&mut self, now: Instant) -> Allowance {
        match self.next_probe {
            None => Allowance::Any,
            Some(at) if now >= at => {
                self.next_probe = Some(now + self.interval);
                self.probe_out = true;
                Allowance::Probe
            }
            Some(at) => Allowance::WaitUntil(at),
        }
    }

    /// Records an attempt's result; returns whether the breaker changed state (for logs).
    /// `destination_failed` is false for answers that prove the destination is up (a 4xx
    /// about this one request). While open, only a probe's failure lengthens the interval:
    /// attempts that were already under way when it opened do not.
    pub fn record(&mut self, destination_failed: bool, now: Instant) -> bool {
        let was_open = self.is_open();
        if !destination_failed {
            self.consecutive_failures = 0;
            self.next_probe = None;
            self.probe_out = false;
            self.interval = self.policy.min_probe_interval;
            return was_open;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if !was_open {
            if self.consecutive_failures >= self.policy.failures {
                self.interval = self.policy.min_probe_interval;
                self.next_probe = Some(now + self.interval);
            }
        } else if self.probe_out {
            self.probe_out = false;
            self.interval = (self.interval * 2).min(self.policy.probe_interval);
            self.next_probe = Some(now + self.interval);
        }
        was_open != self.is_open()
    }
}

impl Breaker {
    /// Another replica's breaker for this destination opened: probe from now on, as if it
    /// had opened here (a closed one opens with the shortest interval; an open one stays).
    pub fn opened_elsewhere(&mut self, now: Instant) {
        if !self.is_open() {
            self.interval = self.policy.min_probe_interval;
            self.next_probe = Some(now + self.interval);
        }
    }

    /// Another replica's probe got through: deliver again.
    pub fn closed_elsewhere(&mut self) {
        self.record(false, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (seconds since start, what happens, what may be claimed right after)
    enum Step {
        Failed,
        Succeeded,
        Ask,
    }

    fn check(policy: BreakerPolicy, table: &[(f64, Step, Allowance)], t0: Instant) {
        let mut breaker = Breaker::new(policy);
        for (i, (at, step, expected)) in table.iter().enumerate() {
            let now = t0 + Duration::from_secs_f64(*at);
            match step {
                Step::Failed => {
                    breaker.record(true, now);
                }
                Step::Succeeded => {
                    breaker.record(false, now);
                }
                Step::Ask => {}
            }
            assert_eq!(breaker.allowance(now), *expected, "row {i} (t = {at})");
        }
    }

    #[test]
    fn another_replicas_breaker_opens_and_closes_this_one() {
        let policy = BreakerPolicy {
            failures: 1000,
            probe_interval: Duration::from_secs(10),
            min_probe_interval: Duration::from_secs(1),
        };
        let t0 = Instant::now();
        let mut breaker = Breaker::new(policy);
        breaker.opened_elsewhere(t0);
        assert_eq!(
            breaker.allowance(t0),
            Allowance::WaitUntil(t0 + Duration::from_secs(1))
        );
        // Already open: a second word from elsewhere does not push the probe further out.
        breaker.opened_elsewhere(t0 + Duration::from_millis(500));
        assert_eq!(
            breaker.allowance(t0 + Duration::from_secs(1)),
            Allowance::Probe
        );
        breaker.closed_elsewhere();
        assert!(!breaker.is_open());
        assert_eq!(breaker.allowance(t0), Allowance::Any);
    }

    #[test]
    fn opens_after_consecutive_failures_probes_sooner_first_and_closes_on_success() {
        use Allowance::*;
        use Step::*;
        let policy = BreakerPolicy {
            failures: 3,
            probe_interval: Duration::from_secs(10),
            min_probe_interval: Duration::from_secs(1),
        };
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        check(
            policy,
            &[
                (0.0, Failed, Any),
                (0.0, Succeeded, Any), // a success resets the count
                (1.0, Failed, Any),
                (1.0, Failed, Any),
                (2.0, Failed, WaitUntil(at(3.0))), // the third in a row opens it
                (2.5, Ask, WaitUntil(at(3.0))),
                (3.0, Ask, Probe),
                (3.1, Ask, WaitUntil(at(4.0))), // one probe at a time
                (3.2, Failed, WaitUntil(at(5.2))), // a failed probe doubles the wait
                (5.2, Ask, Probe),
                (5.3, Failed, WaitUntil(at(9.3))),
                (9.3, Ask, Probe),
                (9.4, Failed, WaitUntil(at(17.4))),
                (17.4, Ask, Probe),
                (17.5, Failed, WaitUntil(at(27.5))), // capped at probe_interval
                (27.5, Ask, Probe),
                (27.6, Failed, WaitUntil(at(37.6))),
                (37.6, Ask, Probe),
                (37.7, Succeeded, Any), // a delivered probe closes it
                (38.0, Failed, Any),
                (38.0, Failed, Any),
                (38.0, Failed, WaitUntil(at(39.0))), // and it starts short again
            ],
            t0,
        );
    }

    #[test]
    fn failures_of_attempts_under_way_when_it_opened_do_not_lengthen_the_wait() {
        use Allowance::*;
        use Step::*;
        let policy = BreakerPolicy {
            failures: 2,
            probe_interval: Duration::from_secs(30),
            min_probe_interval: Duration::from_millis(100),
        };
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        check(
            policy,
            &[
                (0.0, Failed, Any),
                (0.0, Failed, WaitUntil(at(0.1))),
                (0.05, Failed, WaitUntil(at(0.1))), // no probe out: nothing changes
                (0.06, Failed, WaitUntil(at(0.1))),
                (0.1, Ask, Probe),
                (0.15, Failed, WaitUntil(at(0.35))),
            ],
            t0,
        );
    }
}
