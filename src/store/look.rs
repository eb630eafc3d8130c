//! How an event listing walks the store: ranges of event seqs, newest first, growing from
//! the first to the largest, until the page is full or the time is up. A filter matching
//! little then answers in bounded time with what it found and where to go on, instead of
//! reading every event. Both backends drive a [`Walk`] with their own queries.

use std::time::{Duration, Instant};

pub const FIRST_RANGE: i64 = 4_096;
pub const LARGEST_RANGE: i64 = 65_536;
pub const SMALLEST_RANGE: i64 = 256;
pub const BUDGET: Duration = Duration::from_millis(60);

/// Where a listing is in its walk: the next range to look at is below `upper`.
pub struct Walk {
    upper: i64,
    lowest: i64,
    range: i64,
    limit: usize,
    started: Instant,
    budget: Duration,
    /// When the range being looked at was handed out, and its size.
    current: Option<(Instant, i64)>,
    out_of_time: bool,
}

impl Walk {
    /// A walk over seqs `lowest..=highest`, from below `cursor` when there is one, for
    /// a page of `limit` (one more is looked for, to know whether a next page exists).
    pub fn new(
        lowest: i64,
        highest: i64,
        cursor: Option<i64>,
        limit: usize,
        budget: Duration,
    ) -> Self {
        Self {
            upper: cursor.unwrap_or(highest + 1),
            lowest,
            range: FIRST_RANGE,
            limit,
            started: Instant::now(),
            budget,
            current: None,
            out_of_time: false,
        }
    }

    /// The next range (`lower..upper`) and how many rows it may still add, or `None`
    /// once `found` rows fill the page, the store is walked, or the time is up.
    pub fn next_range(&mut self, found: usize) -> Option<(i64, i64, usize)> {
        if found > self.limit || self.upper <= self.lowest || self.out_of_time {
            return None;
        }
        let lower = (self.upper - self.range).max(self.lowest);
        let range = (lower, self.upper, self.limit + 1 - found);
        self.current = Some((Instant::now(), self.upper - lower));
        self.upper = lower;
        Some(range)
    }

    /// After a range was looked at: whether the time ran out with the page not full and
    /// events left; then [`Walk::resume_below`] is where the next page starts. Otherwise
    /// the next range is sized from how fast this one went, to fit half the time left.
    pub fn out_of_time(&mut self, found: usize) -> bool {
        let spent = self.started.elapsed();
        self.out_of_time = found <= self.limit && self.upper > self.lowest && spent >= self.budget;
        if let Some((handed_out, size)) = self.current.take() {
            let took = handed_out.elapsed().as_secs_f64().max(1e-6);
            let left = self.budget.saturating_sub(spent).as_secs_f64();
            let fits = (size as f64 / took * left / 2.0) as i64;
            self.range = fits.clamp(SMALLEST_RANGE, (self.range * 2).min(LARGEST_RANGE));
        }
        self.out_of_time
    }

    pub fn resume_below(&self) -> i64 {
        self.upper
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_grow_newest_first_and_stop_at_a_full_page_or_the_bottom() {
        let mut walk = Walk::new(1, 100_000, None, 10, Duration::from_secs(3600));
        assert_eq!(walk.next_range(0), Some((100_001 - 4_096, 100_001, 11)));
        assert!(!walk.out_of_time(3));
        // A range that went fast: the next one doubles, no more.
        assert_eq!(
            walk.next_range(3),
            Some((100_001 - 4_096 - 8_192, 100_001 - 4_096, 8))
        );
        assert!(!walk.out_of_time(11));
        assert_eq!(walk.next_range(11), None, "a full page stops the walk");
        // A range that took most of the time left: the next one is smaller.
        let mut slow = Walk::new(1, 100_000, None, 10, Duration::from_millis(40));
        slow.next_range(0);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!slow.out_of_time(0));
        let (lower, upper, _) = slow.next_range(0).unwrap();
        assert!(upper - lower < 4_096, "{}", upper - lower);
        let mut short = Walk::new(5, 20, Some(10), 10, BUDGET);
        assert_eq!(short.next_range(0), Some((5, 10, 11)));
        assert_eq!(short.next_range(0), None, "nothing below the lowest seq");
        let mut hurried = Walk::new(1, 100_000, None, 10, Duration::ZERO);
        let (lower, _, _) = hurried.next_range(0).unwrap();
        assert!(hurried.out_of_time(2));
        assert_eq!(
            (hurried.next_range(2), hurried.resume_below()),
            (None, lower)
        );
    }
}
