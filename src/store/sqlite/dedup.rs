//! Recent dedup keys, kept in memory by the writer thread.
//!
//! Senders' delivery ids are random (UUIDs), so a B-tree index on them gets one random page
//! write per event, which multiplied WAL volume and checkpoint work (measured: ~30% of ingest
//! throughput). Instead each keyed event appends a narrow row to `dedup_keys` (sequential, one
//! page per batch) and the writer keeps a hash → event map of the last `DEDUP_WINDOW`, loaded
//! from that table at start. A hit is confirmed against the event row itself, so a hash
//! collision can never make two different events look the same.

use std::collections::{HashMap, VecDeque};

use rusqlite::{Connection, params};

use crate::domain::UnixMillis;

/// How long a sender's delivery id is remembered. GitLab resends by hand for 2 days and
/// retries automatically within minutes; this covers both with room to spare.
pub use crate::domain::DEDUP_WINDOW_MS;

/// Stable 64-bit FNV-1a of `source \0 key`. Stored, so it must never change.
pub fn dedup_hash(source: &str, key: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in source.bytes().chain([0]).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

/// A dedup hash as two halves, so an entry (key and seq offset) packs into 12 bytes: with
/// `(i64, i64)` entries a million keys took 36 MB of table, more than half the process.
type Key = (u32, u32);

fn key(hash: i64) -> Key {
    ((hash as u64 >> 32) as u32, hash as u32)
}

/// How often keys that left the window are swept out of the table (a pass over all of it):
/// until then `find` ignores them, so a key is never remembered longer than the window.
const SWEEP_EVERY_SECONDS: i64 = 600;

/// Seqs are kept as offsets from `base` in 32 bits; the window is also bounded to this many
/// events (2 billion: three days at over 8,000 keyed events a second, without a pause).
const SEQ_SPAN: i64 = 1 << 31;

pub struct DedupIndex {
    /// Committed keys: hash → event seq − `base`. Expired ones stay until the next sweep.
    committed: HashMap<Key, u32>,
    /// Every seq in `committed` is at least this, and under `base + 2^32`.
    base: i64,
    /// Seqs at or below this left the window: `find` ignores them, the sweep removes them.
    expired_through: i64,
    /// One mark per second of arrivals: (second, highest seq), for expiry.
    marks: VecDeque<Mark>,
    /// The arrival second at or after which the next sweep may run.
    next_sweep: i64,
    /// Keys added by the transaction in progress; they count only once it commits.
    staged: Vec<(UnixMillis, i64, i64)>,
    /// The next event's seq. The writer numbers events itself: SQLite's max(rowid) + 1 would
    /// hand numbers out again once every event is pruned, and this window's offsets and
    /// expiry count on seqs only growing.
    next_event_seq: i64,
}

impl Default for DedupIndex {
    fn default() -> Self {
        DedupIndex {
            committed: HashMap::new(),
            base: 0,
            expired_through: 0,
            marks: VecDeque::new(),
            next_sweep: i64::MIN,
            staged: Vec::new(),
            next_event_seq: 1,
        }
    }
}

#[derive(Clone, Copy)]
struct Mark {
    second: i64,
    highest_seq: i64,
}

impl DedupIndex {
    /// Loads the keys of the last window and forgets older ones on disk.
    pub fn load(conn: &Connection, now: UnixMillis) -> rusqlite::Result<Self> {
        let cutoff = now - DEDUP_WINDOW_MS;
        // Only housekeeping: on a full disk the old keys wait for the next start.
        if let Err(err) = conn.execute(
            "DELETE FROM dedup_keys WHERE received_at < ?1",
            params![cutoff],
        ) {
            tracing::warn!(error = %err, "old dedup keys not pruned now");
        }
        // Above every seq an event, a pruned event's trace or a remembered key has.
        let highest: Option<i64> = conn.query_row(
            "SELECT max(m) FROM (SELECT max(seq) AS m FROM events
                                 UNION ALL SELECT max(seq) FROM pruned_events
                                 UNION ALL SELECT max(event_seq) FROM dedup_keys)",
            [],
            |row| row.get(0),
        )?;
        let mut index = Self {
            next_event_seq: highest.unwrap_or(0) + 1,
            ..Self::default()
        };
        let mut stmt =
            conn.prepare("SELECT received_at, hash, event_seq FROM dedup_keys ORDER BY seq")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        for row in rows {
            let (received_at, hash, seq) = row?;
            if received_at < cutoff {
                continue;
            }
            index.remember(received_at, hash, seq);
        }
        Ok(index)
    }

    /// The event seq last recorded for this hash, staged or committed.
    pub fn find(&self, hash: i64) -> Option<i64> {
        self.staged
            .iter()
            .rev()
            .find(|(_, h, _)| *h == hash)
            .map(|(_, _, seq)| *seq)
            .or_else(|| {
                let seq = self.base + i64::from(*self.committed.get(&key(hash))?);
                (seq > self.expired_through).then_some(seq)
            })
    }

    /// A seq for the event about to be inserted; one a rolled-back insert took is not used
    /// again (numbers may have gaps, never repeats).
    pub fn take_event_seq(&mut self) -> i64 {
        let seq = self.next_event_seq;
        self.next_event_seq += 1;
        seq
    }

    pub fn stage(&mut self, received_at: UnixMillis, hash: i64, seq: i64) {
        self.staged.push((received_at, hash, seq));
    }

    /// The transaction committed: staged keys become real, and keys past the window go.
    pub fn commit(&mut self) {
        let mut staged = std::mem::take(&mut self.staged);
        for (received_at, hash, seq) in staged.drain(..) {
            self.remember(received_at, hash, seq);
        }
        self.staged = staged;
        let Some(newest) = self.marks.back().map(|mark| mark.second) else {
            return;
        };
        let cutoff = newest - DEDUP_WINDOW_MS / 1000;
        while let Some(mark) = self.marks.front().copied() {
            // Whole seconds go: a key is remembered up to a second longer, never shorter.
            if mark.second >= cutoff {
                break;
            }
            self.marks.pop_front();
            self.expired_through = self.expired_through.max(mark.highest_seq);
        }
        if self.expired_through >= self.base && newest >= self.next_sweep {
            self.next_sweep = newest + SWEEP_EVERY_SECONDS;
            self.rebase(self.expired_through + 1);
        }
    }

    fn remember(&mut self, received_at: UnixMillis, hash: i64, seq: i64) {
        if seq < self.base {
            // Older than every key kept: seqs only grow (`take_event_seq`), so only a store
            // whose numbers an earlier hookrelay handed out again gets here.
            return;
        }
        if seq - self.base >= 2 * SEQ_SPAN {
            // The offsets would overflow: keep only the last `SEQ_SPAN` events' keys.
            self.expired_through = self.expired_through.max(seq - SEQ_SPAN);
            self.rebase(seq - SEQ_SPAN + 1);
        }
        // A newer event with the same hash (a collision, or a key seen again after its
        // window) replaces the entry.
        self.committed.insert(key(hash), (seq - self.base) as u32);
        let second = received_at.div_euclid(1000);
        match self.marks.back_mut() {
            Some(mark) if mark.second == second => {
                mark.highest_seq = mark.highest_seq.max(seq);
            }
            _ => self.marks.push_back(Mark {
                second,
                highest_seq: seq,
            }),
        }
    }

    /// Drops the keys below `base` and stores the rest as offsets from it. A pass over the
    /// whole table (a few ms for a million keys), so it runs at most every ten minutes.
    fn rebase(&mut self, base: i64) {
        let old = self.base;
        self.committed.retain(|_, offset| {
            let seq = old + i64::from(*offset);
            if seq < base {
                return false;
            }
            // Below `base + 2^32`: the kept seqs are under the old base + 2^32.
            *offset = (seq - base) as u32;
            true
        });
        self.base = base;
    }

    pub fn staged_len(&self) -> usize {
        self.staged.len()
    }

    /// A command's savepoint rolled back: forget what it staged.
    pub fn truncate_staged(&mut self, len: usize) {
        self.staged.truncate(len);
    }

    /// The transaction rolled back: staged keys never existed.
    pub fn discard(&mut self) {
        self.staged.clear();
    }

    pub fn len(&self) -> usize {
        self.committed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_keys_count_only_after_commit_and_expire_after_the_window() {
        let mut index = DedupIndex::default();
        let a = dedup_hash("gitlab", "a");
        index.stage(0, a, 1);
        assert_eq!(
            index.find(a),
            Some(1),
            "visible to later commands of the same batch"
        );
        index.discard();
        assert_eq!(index.find(a), None);
        index.stage(0, a, 1);
        index.commit();
        assert_eq!(index.find(a), Some(1));
        let b = dedup_hash("gitlab", "b");
        index.stage(DEDUP_WINDOW_MS - 1000, b, 2);
        index.commit();
        assert_eq!(index.find(a), Some(1), "still inside the window");
        index.stage(DEDUP_WINDOW_MS + 1000, b, 2);
        index.commit();
        assert_eq!(index.find(a), None, "older than the window");
        assert_eq!(index.find(b), Some(2));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_key_leaves_with_its_window_though_the_table_is_swept_later() {
        let mut index = DedupIndex::default();
        let [x, y, z, w, v] = ["x", "y", "z", "w", "v"].map(|k| dedup_hash("gitlab", k));
        let window = DEDUP_WINDOW_MS;
        index.stage(0, x, 1);
        index.stage(100_000, y, 2);
        index.commit();
        // x leaves: the first expiry sweeps at once, the next waits ten minutes.
        index.stage(window + 50_000, z, 3);
        index.commit();
        assert_eq!((index.find(x), index.len()), (None, 2));
        // y leaves its window but stays in the table until the next sweep.
        index.stage(window + 150_000, w, 4);
        index.commit();
        assert_eq!(index.find(y), None, "past its window");
        assert_eq!((index.find(z), index.find(w)), (Some(3), Some(4)));
        assert_eq!(
            index.len(),
            3,
            "not swept: the last sweep was under ten minutes ago"
        );
        index.stage(window + 50_000 + SWEEP_EVERY_SECONDS * 1000, v, 5);
        index.commit();
        assert_eq!(index.len(), 3, "swept: z, w and v remain");
        assert_eq!(
            (index.find(y), index.find(z), index.find(v)),
            (None, Some(3), Some(5))
        );
    }

    #[test]
    fn seqs_far_apart_are_kept_exactly_and_the_window_is_bounded_by_count() {
        let mut index = DedupIndex::default();
        let [a, b, c] = ["a", "b", "c"].map(|k| dedup_hash("gitlab", k));
        let far = 5_000_000_000;
        index.stage(0, a, far);
        index.stage(0, b, far + SEQ_SPAN - 10);
        index.commit();
        assert_eq!(
            (index.find(a), index.find(b)),
            (Some(far), Some(far + SEQ_SPAN - 10))
        );
        index.stage(0, c, far + 2 * SEQ_SPAN - 20);
        index.commit();
        assert_eq!(index.find(a), None, "more than SEQ_SPAN events ago");
        assert_eq!(index.find(b), Some(far + SEQ_SPAN - 10));
        assert_eq!(index.find(c), Some(far + 2 * SEQ_SPAN - 20));
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn an_entry_packs_into_twelve_bytes() {
        assert_eq!(std::mem::size_of::<(Key, u32)>(), 12);
    }

    #[test]
    fn hashes_are_stable_and_separate_sources() {
        // Reference FNV-1a 64 values (computed independently): stored hashes must not change.
        assert_eq!(dedup_hash("", "") as u64, 0xaf63_bd4c_8601_b7df);
        assert_eq!(dedup_hash("gitlab", "push-1") as u64, 0x65f3_6f91_c90d_34b0);
        assert_ne!(dedup_hash("a", "bc"), dedup_hash("ab", "c"));
        assert_ne!(dedup_hash("gitlab", "k"), dedup_hash("github", "k"));
    }
}
