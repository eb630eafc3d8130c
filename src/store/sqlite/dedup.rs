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

#[derive(Default)]
pub struct DedupIndex {
    /// Committed keys: hash → event seq.
    committed: HashMap<i64, i64>,
    /// Committed hashes in commit order, for expiry: 8 bytes a key (a million keys, three
    /// days of a busy sender, must fit in a small process).
    order: VecDeque<i64>,
    /// One mark per second of arrivals in `order`: (second, how many keys, highest seq).
    marks: VecDeque<Mark>,
    /// Keys added by the transaction in progress; they count only once it commits.
    staged: Vec<(UnixMillis, i64, i64)>,
}

#[derive(Clone, Copy)]
struct Mark {
    second: i64,
    keys: usize,
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
        let mut index = Self::default();
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
            .or_else(|| self.committed.get(&hash).copied())
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
            for hash in self.order.drain(..mark.keys) {
                // A newer event with the same hash (a collision, or a key seen again after
                // its window) keeps its entry.
                if self
                    .committed
                    .get(&hash)
                    .is_some_and(|&seq| seq <= mark.highest_seq)
                {
                    self.committed.remove(&hash);
                }
            }
        }
    }

    fn remember(&mut self, received_at: UnixMillis, hash: i64, seq: i64) {
        self.committed.insert(hash, seq);
        self.order.push_back(hash);
        let second = received_at.div_euclid(1000);
        match self.marks.back_mut() {
            Some(mark) if mark.second == second => {
                mark.keys += 1;
                mark.highest_seq = mark.highest_seq.max(seq);
            }
            _ => self.marks.push_back(Mark {
                second,
                keys: 1,
                highest_seq: seq,
            }),
        }
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
    fn hashes_are_stable_and_separate_sources() {
        // Reference FNV-1a 64 values (computed independently): stored hashes must not change.
        assert_eq!(dedup_hash("", "") as u64, 0xaf63_bd4c_8601_b7df);
        assert_eq!(dedup_hash("gitlab", "push-1") as u64, 0x65f3_6f91_c90d_34b0);
        assert_ne!(dedup_hash("a", "bc"), dedup_hash("ab", "c"));
        assert_ne!(dedup_hash("gitlab", "k"), dedup_hash("github", "k"));
    }
}
