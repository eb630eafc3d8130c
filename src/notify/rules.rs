//! Which notifications go out: the per-subject cooldown, the failing/recovered pairing, the
//! level conditions that re-arm only after they cleared, and the budget per minute. Pure, so
//! the rules are tested by table; the notifier feeds it happenings and the clock.

use std::collections::{HashMap, HashSet};

use crate::domain::UnixMillis;

/// What a notification is about, as its event type names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    DeliveryDead,
    DestinationFailing,
    DestinationRecovered,
    BacklogHigh,
    SourceRejecting,
}

impl Kind {
    pub fn event_type(self) -> &'static str {
        match self {
            Kind::DeliveryDead => "delivery.dead",
            Kind::DestinationFailing => "destination.failing",
            Kind::DestinationRecovered => "destination.recovered",
            Kind::BacklogHigh => "backlog.high",
            Kind::SourceRejecting => "source.rejecting",
        }
    }

    pub const ALL: [Kind; 5] = [
        Kind::DeliveryDead,
        Kind::DestinationFailing,
        Kind::DestinationRecovered,
        Kind::BacklogHigh,
        Kind::SourceRejecting,
    ];
}

/// The gate's answer for one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it; `held_back` notifications were held by the budget since the last one sent.
    Send {
        held_back: u64,
    },
    Hold(Held),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The same kind about the same subject went out less than `min_interval` ago.
    Cooldown,
    /// `destination.failing` was already sent and no recovery since.
    AlreadyFailing,
    /// A recovery of a failure nobody was told about.
    NothingToRecover,
    /// A level (backlog, rejections) still high since it was told: it is told again only
    /// after it cleared.
    StillHigh,
    /// More than `max_per_minute` this minute.
    Budget,
}

impl Held {
    pub fn label(self) -> &'static str {
        match self {
            Held::Cooldown => "cooldown",
            Held::AlreadyFailing => "already_failing",
            Held::NothingToRecover => "nothing_to_recover",
            Held::StillHigh => "still_high",
            Held::Budget => "budget",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub min_interval_ms: i64,
    pub max_per_minute: u32,
}

#[derive(Debug, Default)]
pub struct Gate {
    last_sent: HashMap<(Kind, String), UnixMillis>,
    /// Destinations told failing and not yet recovered, with when that was told.
    failing: HashMap<String, UnixMillis>,
    high: HashSet<(Kind, String)>,
    minute: i64,
    sent_this_minute: u32,
    held_back: u64,
}

impl Gate {
    /// A happening (dead, failing, recovered): decides and, when it is sent, remembers it.
    pub fn happening(
        &mut self,
        kind: Kind,
        subject: &str,
        now: UnixMillis,
        limits: Limits,
    ) -> Decision {
        match kind {
            Kind::DestinationFailing if self.failing.contains_key(subject) => {
                Decision::Hold(Held::AlreadyFailing)
            }
            Kind::DestinationFailing => {
                let decision = self.cooled_and_budgeted(kind, subject, now, limits);
                if let Decision::Send { .. } = decision {
                    self.failing.insert(subject.to_owned(), now);
                }
                decision
            }
            // The pair's second half is never held by the budget or a cooldown: whoever was
            // told of the failure hears of the recovery.
            Kind::DestinationRecovered if self.failing.remove(subject).is_some() => {
                Decision::Send {
                    held_back: std::mem::take(&mut self.held_back),
                }
            }
            Kind::DestinationRecovered => Decision::Hold(Held::NothingToRecover),
            // Each delivery is its own subject: only the budget holds one.
            _ => self.budgeted(now, limits),
        }
    }

    /// When `destination` was told failing, if it was and has not recovered since.
    pub fn failing_since(&self, destination: &str) -> Option<UnixMillis> {
        self.failing.get(destination).copied()
    }

    /// Destinations told failing and not recovered.
    pub fn failing(&self) -> Vec<String> {
        self.failing.keys().cloned().collect()
    }

    /// A destination that is gone: nothing to recover from any more.
    pub fn forget(&mut self, destination: &str) {
        self.failing.remove(destination);
    }

    /// A level condition read now (backlog, rejections): told when it becomes high, then
    /// not again until it was seen cleared.
    pub fn level(
        &mut self,
        kind: Kind,
        subject: &str,
        high: bool,
        now: UnixMillis,
        limits: Limits,
    ) -> Option<Decision> {
        let key = (kind, subject.to_owned());
        if !high {
            self.high.remove(&key);
            return None;
        }
        if self.high.contains(&key) {
            return Some(Decision::Hold(Held::StillHigh));
        }
        let decision = self.cooled_and_budgeted(kind, subject, now, limits);
        if let Decision::Send { .. } = decision {
            self.high.insert(key);
        }
        Some(decision)
    }

    fn cooled_and_budgeted(
        &mut self,
        kind: Kind,
        subject: &str,
        now: UnixMillis,
        limits: Limits,
    ) -> Decision {
        let key = (kind, subject.to_owned());
        if let Some(last) = self.last_sent.get(&key)
            && now - last < limits.min_interval_ms
        {
            return Decision::Hold(Held::Cooldown);
        }
        let decision = self.budgeted(now, limits);
        if let Decision::Send { .. } = decision {
            self.last_sent.insert(key, now);
        }
        decision
    }

    fn budgeted(&mut self, now: UnixMillis, limits: Limits) -> Decision {
        let minute = now.div_euclid(60_000);
        if minute != self.minute {
            self.minute = minute;
            self.sent_this_minute = 0;
        }
        if self.sent_this_minute >= limits.max_per_minute {
            self.held_back += 1;
            return Decision::Hold(Held::Budget);
        }
        self.sent_this_minute += 1;
        Decision::Send {
            held_back: std::mem::take(&mut self.held_back),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        min_interval_ms: 600_000,
        max_per_minute: 3,
    };

    enum Step {
        Happening(Kind, &'static str),
        Level(Kind, &'static str, bool),
    }
    use Kind::*;
    use Step::*;

    /// (the clock in ms, the step, what the gate answers)
    type Row = (i64, Step, Option<Decision>);

    fn send(held_back: u64) -> Option<Decision> {
        Some(Decision::Send { held_back })
    }
    fn hold(why: Held) -> Option<Decision> {
        Some(Decision::Hold(why))
    }

    #[test]
    fn the_rules_by_table() {
        // (minute offset in ms, step, expected)
        let table: Vec<(&str, Vec<Row>)> = vec![
            (
                "a flapping destination: one failing, one recovered, then quiet for min_interval",
                vec![
                    (0, Happening(DestinationFailing, "d"), send(0)),
                    (
                        1,
                        Happening(DestinationFailing, "d"),
                        hold(Held::AlreadyFailing),
                    ),
                    (2, Happening(DestinationRecovered, "d"), send(0)),
                    (3, Happening(DestinationFailing, "d"), hold(Held::Cooldown)),
                    (
                        4,
                        Happening(DestinationRecovered, "d"),
                        hold(Held::NothingToRecover),
                    ),
                    (600_000, Happening(DestinationFailing, "d"), send(0)),
                    (600_001, Happening(DestinationRecovered, "d"), send(0)),
                ],
            ),
            (
                "dead deliveries: each one, until the budget; the next one says how many were held",
                vec![
                    (0, Happening(DeliveryDead, "dlv_1"), send(0)),
                    (1, Happening(DeliveryDead, "dlv_2"), send(0)),
                    (2, Happening(DeliveryDead, "dlv_3"), send(0)),
                    (3, Happening(DeliveryDead, "dlv_4"), hold(Held::Budget)),
                    (4, Happening(DeliveryDead, "dlv_5"), hold(Held::Budget)),
                    (60_000, Happening(DeliveryDead, "dlv_6"), send(2)),
                ],
            ),
            (
                "a recovery is never held by the budget",
                vec![
                    (0, Happening(DestinationFailing, "d"), send(0)),
                    (1, Happening(DeliveryDead, "a"), send(0)),
                    (2, Happening(DeliveryDead, "b"), send(0)),
                    (3, Happening(DeliveryDead, "c"), hold(Held::Budget)),
                    (4, Happening(DestinationRecovered, "d"), send(1)),
                ],
            ),
            (
                "a level: told once while high, again only after it cleared and the cooldown",
                vec![
                    (0, Level(BacklogHigh, "d", true), send(0)),
                    (1, Level(BacklogHigh, "d", true), hold(Held::StillHigh)),
                    (2, Level(BacklogHigh, "d", false), None),
                    (3, Level(BacklogHigh, "d", true), hold(Held::Cooldown)),
                    (4, Level(BacklogHigh, "other", true), send(0)),
                    (700_000, Level(BacklogHigh, "d", true), send(0)),
                    (700_001, Level(SourceRejecting, "d", true), send(0)),
                ],
            ),
        ];
        for (name, steps) in table {
            let mut gate = Gate::default();
            for (i, (at, step, expected)) in steps.into_iter().enumerate() {
                let got = match step {
                    Happening(kind, subject) => Some(gate.happening(kind, subject, at, LIMITS)),
                    Level(kind, subject, high) => gate.level(kind, subject, high, at, LIMITS),
                };
                assert_eq!(got, expected, "{name}: step {i}");
            }
        }
    }
}
