//! Request rate limits (token buckets) per client address and per source: past the rate,
//! ingest answers 429 with `Retry-After` before reading the body.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Rate;

/// Buckets kept before full (idle) ones are forgotten.
const TRIM_ABOVE: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Takes one token if there is one; otherwise says how long until there is.
fn take(bucket: &mut Bucket, rate: Rate, now: Instant) -> Result<(), Duration> {
    let per_second = f64::from(rate.count) / rate.period.as_secs_f64();
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * per_second).min(f64::from(rate.count));
    bucket.updated = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        Ok(())
    } else {
        Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
    }
}

pub struct RateLimiter<K> {
    buckets: Mutex<Buckets<K>>,
}

struct Buckets<K> {
    map: HashMap<K, Bucket>,
    /// Inserts since the last trim: trimming is amortised, never a scan per request.
    since_trim: usize,
}

impl<K: Hash + Eq + Clone> Default for RateLimiter<K> {
    fn default() -> Self {
        Self {
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                since_trim: 0,
            }),
        }
    }
}

/// The key a client address is limited by: IPv6 clients by their /64, since one host
/// usually holds a whole /64 and could otherwise rotate through it.
pub fn client_key(address: std::net::IpAddr) -> std::net::IpAddr {
    match address.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0).into()
        }
        v4 => v4,
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `Err(retry_after)` when `key` is over `rate`.
    pub fn check(&self, key: &K, rate: Rate, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.map.len() > TRIM_ABOVE && buckets.since_trim > TRIM_ABOVE / 2 {
            buckets.since_trim = 0;
            // A bucket idle for a whole period is full again: forgetting it changes nothing.
            buckets
                .map
                .retain(|_, bucket| now.saturating_duration_since(bucket.updated) < rate.period);
            if buckets.map.len() > 4 * TRIM_ABOVE {
                // Past a hard cap, start over (more lenient, never unbounded).
                buckets.map.clear();
            }
        }
        if !buckets.map.contains_key(key) {
            buckets.since_trim += 1;
        }
        let bucket = buckets.map.entry(key.clone()).or_insert(Bucket {
            tokens: f64::from(rate.count),
            updated: now,
        });
        take(bucket, rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_up_to_the_count_then_refills_at_the_rate() {
        let rate = Rate {
            count: 3,
            period: Duration::from_secs(1),
        };
        let limiter = RateLimiter::default();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // (time, expected): three at once, the fourth waits a third of a second.
        let table: &[(u64, bool)] = &[
            (0, true),
            (0, true),
            (0, true),
            (0, false),
            (200, false),
            (340, true),
            (340, false),
            (5000, true),
            (5000, true),
            (5000, true),
            (5000, false),
        ];
        for (i, &(ms, allowed)) in table.iter().enumerate() {
            let got = limiter.check(&"k", rate, at(ms));
            assert_eq!(got.is_ok(), allowed, "row {i}: {ms} ms");
            if let Err(wait) = got {
                assert!(wait <= Duration::from_millis(334), "row {i}: {wait:?}");
            }
        }
        assert!(
            limiter.check(&"other", rate, at(0)).is_ok(),
            "keys are separate"
        );
    }
}
