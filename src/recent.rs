//! The last hour of this process's own figures, a minute at a time (attempts by destination,
//! requests by source): what the API's `last_hour` fields and the console's charts show.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use crate::domain::{UnixMillis, now_millis};

pub const MINUTES: usize = 60;

/// Counts for the last `MINUTES` minutes, each slot stamped with its minute so a slot from
/// an hour ago reads as zero.
#[derive(Clone)]
struct Ring {
    slots: [(i64, u64); MINUTES],
}

impl Default for Ring {
    fn default() -> Self {
        Self {
            slots: [(i64::MIN, 0); MINUTES],
        }
    }
}

impl Ring {
    fn add(&mut self, minute: i64) {
        let slot = &mut self.slots[minute.rem_euclid(MINUTES as i64) as usize];
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        slot.1 += 1;
    }

    /// Oldest first, the current minute last.
    fn last_hour(&self, now_minute: i64) -> Vec<u64> {
        (0..MINUTES as i64)
            .rev()
            .map(|ago| {
                let minute = now_minute - ago;
                let slot = self.slots[minute.rem_euclid(MINUTES as i64) as usize];
                if slot.0 == minute { slot.1 } else { 0 }
            })
            .collect()
    }
}

/// Counts by (name, kind): a destination and `delivered`/`failed`, a source and its outcome.
#[derive(Default)]
pub struct Recent {
    rings: Mutex<HashMap<String, BTreeMap<&'static str, Ring>>>,
}

fn minute(at: UnixMillis) -> i64 {
    at.div_euclid(60_000)
}

impl Recent {
    pub fn count(&self, name: &str, kind: &'static str) {
        self.count_at(name, kind, now_millis());
    }

    fn count_at(&self, name: &str, kind: &'static str, at: UnixMillis) {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        match rings.get_mut(name) {
            Some(kinds) => kinds.entry(kind).or_default().add(minute(at)),
            None => {
                let mut ring = Ring::default();
                ring.add(minute(at));
                rings.insert(name.to_owned(), [(kind, ring)].into());
            }
        }
    }

    /// Every name counted in the last hour.
    pub fn names(&self) -> Vec<String> {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        rings.keys().cloned().collect()
    }

    /// Each kind's counts per minute over the last hour, oldest first.
    pub fn last_hour(&self, name: &str) -> BTreeMap<String, Vec<u64>> {
        self.last_hour_at(name, now_millis())
    }

    fn last_hour_at(&self, name: &str, at: UnixMillis) -> BTreeMap<String, Vec<u64>> {
        let rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        rings
            .get(name)
            .into_iter()
            .flatten()
            .map(|(kind, ring)| ((*kind).to_owned(), ring.last_hour(minute(at))))
            .collect()
    }
}

/// Attempts by destination: `delivered` or `failed` (any other verdict).
pub fn attempts() -> &'static Recent {
    static RECENT: OnceLock<Recent> = OnceLock::new();
    RECENT.get_or_init(Recent::default)
}

/// Requests by source and outcome (`accepted`, `duplicate`, `invalid_credentials`, ...).
pub fn requests() -> &'static Recent {
    static RECENT: OnceLock<Recent> = OnceLock::new();
    RECENT.get_or_init(Recent::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_minute_and_an_hour_later_they_are_gone() {
        let recent = Recent::default();
        let start = 1_000 * 60_000;
        recent.count_at("ci", "delivered", start);
        recent.count_at("ci", "delivered", start + 30_000);
        recent.count_at("ci", "failed", start + 60_000);
        let hour = recent.last_hour_at("ci", start + 60_000);
        assert_eq!(hour["delivered"][MINUTES - 2..], [2, 0]);
        assert_eq!(hour["failed"][MINUTES - 1], 1);
        assert_eq!(hour["delivered"].len(), MINUTES);
        let later = recent.last_hour_at("ci", start + 60 * 60_000);
        assert_eq!(
            later["delivered"].iter().sum::<u64>(),
            0,
            "an hour on, the first minute is gone"
        );
        assert_eq!(later["failed"].iter().sum::<u64>(), 1);
        // The same slot, an hour later, starts again from zero.
        recent.count_at("ci", "delivered", start + 60 * 60_000);
        let again = recent.last_hour_at("ci", start + 60 * 60_000);
        assert_eq!(again["delivered"][MINUTES - 1], 1);
        assert!(recent.last_hour("elsewhere").is_empty());
    }
}
