//! Fair sharing of ingest memory: request bodies are counted as their bytes arrive, against
//! a global budget, a share per client address and a share per source, so slow or
//! unauthenticated clients cannot take it all from real senders.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::domain::Name;

/// The three limits a body's bytes count against.
#[derive(Debug, Clone, Copy)]
pub struct BudgetLimits {
    pub total: u64,
    pub per_client: u64,
    pub per_source: u64,
    /// Bodies whose sender is not yet proven (only a signature over the body can tell):
    /// together at most this, and not counted in their source's share, so strangers posting
    /// to a source cannot take the room its proven senders need.
    pub unverified: u64,
}

impl BudgetLimits {
    /// One client gets a quarter of the budget, one source half, each at least the largest
    /// body it may have to take whole.
    pub fn shares(total: u64, largest_body: u64) -> Self {
        Self {
            total,
            per_client: (total / 4).max(largest_body).min(total),
            per_source: (total / 2).max(largest_body).min(total),
            unverified: (total / 4).max(largest_body).min(total),
        }
    }
}

#[derive(Default)]
struct Usage {
    total: u64,
    unverified: u64,
    clients: HashMap<IpAddr, u64>,
    sources: HashMap<Name, u64>,
}

pub struct BodyBudget {
    limits: BudgetLimits,
    usage: Mutex<Usage>,
}

/// Bytes one request holds; given back when dropped.
pub struct Reservation {
    budget: Arc<BodyBudget>,
    client: IpAddr,
    source: Name,
    /// Counted in the unverified share instead of the source's.
    unverified: bool,
    bytes: u64,
}

/// Which share ran out, for the metric and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverBudget {
    Total,
    Unverified,
    Client,
    Source,
}

impl BodyBudget {
    pub fn new(limits: BudgetLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            usage: Mutex::default(),
        })
    }

    pub fn in_use(&self) -> u64 {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reservation for one request; `proven` when its sender's credential already matched.
    pub fn reservation(
        self: &Arc<Self>,
        client: IpAddr,
        source: &Name,
        proven: bool,
    ) -> Reservation {
        Reservation {
            budget: self.clone(),
            client: client.to_canonical(),
            source: source.clone(),
            unverified: !proven,
            bytes: 0,
        }
    }
}

impl Reservation {
    /// Counts `bytes` more, or refuses without counting anything.
    pub fn grow(&mut self, bytes: u64) -> Result<(), OverBudget> {
        let limits = self.budget.limits;
        let mut usage = self.budget.lock();
        let client = usage.clients.get(&self.client).copied().unwrap_or(0);
        let source = usage.sources.get(&self.source).copied().unwrap_or(0);
        if usage.total + bytes > limits.total {
            return Err(OverBudget::Total);
        }
        if client + bytes > limits.per_client {
            return Err(OverBudget::Client);
        }
        if self.unverified {
            if usage.unverified + bytes > limits.unverified {
                return Err(OverBudget::Unverified);
            }
        } else if source + bytes > limits.per_source {
            return Err(OverBudget::Source);
        }
        usage.total += bytes;
        usage.clients.insert(self.client, client + bytes);
        if self.unverified {
            usage.unverified += bytes;
        } else {
            usage.sources.insert(self.source.clone(), source + bytes);
        }
        self.bytes += bytes;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut usage = self.budget.lock();
        usage.total -= self.bytes;
        fn give_back<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, key: &K, bytes: u64) {
            if let Some(held) = map.get_mut(key) {
                *held -= bytes;
                if *held == 0 {
                    map.remove(key);
                }
            }
        }
        give_back(&mut usage.clients, &self.client, self.bytes);
        if self.unverified {
            usage.unverified -= self.bytes;
        } else {
            give_back(&mut usage.sources, &self.source, self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_client_or_one_source_cannot_take_the_whole_budget() {
        let budget = BodyBudget::new(BudgetLimits::shares(100, 10));
        let (a, b) = (Name::parse("a").unwrap(), Name::parse("b").unwrap());
        let mut greedy = budget.reservation(ip(1), &a, true);
        assert_eq!(greedy.grow(25), Ok(()));
        assert_eq!(greedy.grow(1), Err(OverBudget::Client));
        let mut second = budget.reservation(ip(2), &a, true);
        assert_eq!(second.grow(25), Ok(()));
        let mut third = budget.reservation(ip(3), &a, true);
        assert_eq!(third.grow(1), Err(OverBudget::Source));
        let mut other_source = budget.reservation(ip(3), &b, true);
        assert_eq!(other_source.grow(25), Ok(()));
        drop(greedy);
        assert_eq!(budget.in_use(), 50);
        let mut again = budget.reservation(ip(1), &a, true);
        assert_eq!(again.grow(25), Ok(()), "given back when dropped");
        let mut fourth = budget.reservation(ip(4), &b, true);
        assert_eq!(fourth.grow(25), Ok(()));
        let mut fifth = budget.reservation(ip(5), &b, true);
        assert_eq!(fifth.grow(1), Err(OverBudget::Total));
    }

    #[test]
    fn strangers_share_a_quarter_and_leave_their_source_room_for_proven_senders() {
        let budget = BodyBudget::new(BudgetLimits::shares(100, 10));
        let a = Name::parse("a").unwrap();
        let mut strangers = Vec::new();
        for i in 1..=3 {
            let mut stranger = budget.reservation(ip(i), &a, false);
            let fits = stranger.grow(10);
            strangers.push((stranger, fits));
        }
        let fits: Vec<_> = strangers.iter().map(|(_, fits)| *fits).collect();
        assert_eq!(fits, [Ok(()), Ok(()), Err(OverBudget::Unverified)]);
        let mut proven = budget.reservation(ip(9), &a, true);
        assert_eq!(proven.grow(25), Ok(()), "the source's share is untouched");
        drop(strangers);
        assert_eq!(budget.in_use(), 25);
    }

    #[test]
    fn shares_always_fit_the_largest_body() {
        let limits = BudgetLimits::shares(32, 25);
        assert_eq!((limits.per_client, limits.per_source), (25, 25));
        let limits = BudgetLimits::shares(256, 25);
        assert_eq!((limits.per_client, limits.per_source), (64, 128));
    }
}
