//! An ingest batch as columns for one multi-row statement: senders' ids repeated inside the
//! batch are answered from their first occurrence (a statement may not claim one key twice),
//! and each event learns whether it was inserted or names its original.

use std::collections::{HashMap, HashSet};

use tokio_postgres::types::ToSql;

use crate::domain::{DEDUP_WINDOW_MS, DeliveryId, EventId};
use crate::store::{Accepted, NewEvent, StoreError};

/// The batch's events (each key once), their dedup keys claimed or taken over once their
/// window ended, the events whose key was new (or that have none) inserted in order, and
/// their deliveries; the ids of the inserted events come back.
pub const INSERT_BATCH: &str = "
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::bytea[], $9::bytea[], $10::text[],
                         $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                         $16::text[], $17::text[])
        WITH ORDINALITY AS r (id, source, received_at, remote_addr, event_type, dedup_key,
                              content_type, headers, body, action, git_ref, branch, tag,
                              project, sender, commit_before, commit_after, ord)
    -- Nothing unless this transaction holds the ingest order lock (ingest.rs).
    WHERE current_setting('hookrelay.ordered', true) = 'true'),
key AS (
    INSERT INTO dedup_keys (source, key, event_id, received_at)
    SELECT source, dedup_key, id, received_at FROM input WHERE dedup_key IS NOT NULL
    ON CONFLICT (source, key) DO UPDATE
        SET event_id = excluded.event_id, received_at = excluded.received_at
        WHERE dedup_keys.received_at < excluded.received_at - $18
    RETURNING event_id),
ev AS (
    INSERT INTO events (id, source, received_at, remote_addr, event_type, dedup_key,
                        content_type, headers, body, action, git_ref, branch, tag, project,
                        sender, commit_before, commit_after)
    SELECT id, source, received_at, remote_addr, event_type, dedup_key, content_type,
           headers, body, action, git_ref, branch, tag, project, sender, commit_before,
           commit_after
    FROM input r WHERE r.dedup_key IS NULL OR r.id IN (SELECT event_id FROM key)
    ORDER BY r.ord
    RETURNING seq, id, received_at),
made AS (
    INSERT INTO deliveries (id, event_seq, destination, state, due_at, window_start,
                            created_at, updated_at, coalesce_key)
    SELECT d.id, ev.seq, d.destination, 'pending', t.now, t.now, t.now, t.now, d.key
    FROM unnest($19::text[], $20::text[], $21::text[], $22::text[])
             WITH ORDINALITY AS d (id, event_id, destination, key, ord)
         JOIN ev ON ev.id = d.event_id
         CROSS JOIN LATERAL (SELECT hookrelay_now(ev.received_at) AS now) t
    ORDER BY ev.seq, d.ord
    RETURNING 1)
SELECT id FROM ev, (SELECT count(*) FROM made) m";

/// The columns of the events sent (first occurrences only), and where the rest point.
pub struct Batch {
    id: Vec<String>,
    source: Vec<String>,
    received_at: Vec<i64>,
    remote_addr: Vec<Option<String>>,
    event_type: Vec<Option<String>>,
    dedup_key: Vec<Option<String>>,
    content_type: Vec<Option<String>>,
    headers: Vec<Vec<u8>>,
    body: Vec<Vec<u8>>,
    action: Vec<Option<String>>,
    git_ref: Vec<Option<String>>,
    branch: Vec<Option<String>>,
    tag: Vec<Option<String>>,
    project: Vec<Option<String>>,
    sender: Vec<Option<String>>,
    commit_before: Vec<Option<String>>,
    commit_after: Vec<Option<String>>,
    window: i64,
    delivery_id: Vec<String>,
    delivery_event: Vec<String>,
    destination: Vec<String>,
    coalesce_key: Vec<Option<String>>,
    /// For each event of the batch, the index of the event sent in its place (itself, or
    /// the first with the same sender id).
    sent_as: Vec<usize>,
}

impl Batch {
    pub fn of(events: &[NewEvent]) -> Self {
        let mut batch = Batch {
            id: Vec::new(),
            source: Vec::new(),
            received_at: Vec::new(),
            remote_addr: Vec::new(),
            event_type: Vec::new(),
            dedup_key: Vec::new(),
            content_type: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
            action: Vec::new(),
            git_ref: Vec::new(),
            branch: Vec::new(),
            tag: Vec::new(),
            project: Vec::new(),
            sender: Vec::new(),
            commit_before: Vec::new(),
            commit_after: Vec::new(),
            window: DEDUP_WINDOW_MS,
            delivery_id: Vec::new(),
            delivery_event: Vec::new(),
            destination: Vec::new(),
            coalesce_key: Vec::new(),
            sent_as: Vec::with_capacity(events.len()),
        };
        let mut first_of: HashMap<(&str, &str), usize> = HashMap::new();
        for (index, event) in events.iter().enumerate() {
            if let Some(key) = event.classification.dedup_key.as_deref() {
                match first_of.get(&(event.source.as_str(), key)) {
                    Some(&first) => {
                        batch.sent_as.push(first);
                        continue;
                    }
                    None => {
                        first_of.insert((event.source.as_str(), key), index);
                    }
                }
            }
            batch.sent_as.push(index);
            batch.push(event);
        }
        batch
    }

    fn push(&mut self, event: &NewEvent) {
        let class = &event.classification;
        self.id.push(event.id.as_str().to_owned());
        self.source.push(event.source.as_str().to_owned());
        self.received_at.push(event.received_at);
        self.remote_addr.push(event.remote_addr.clone());
        self.event_type.push(class.event_type.clone());
        self.dedup_key.push(class.dedup_key.clone());
        self.content_type.push(event.content_type.clone());
        self.headers
            .push(crate::store::encode_headers(&event.headers));
        self.body.push(event.body.to_vec());
        self.action.push(class.action.clone());
        self.git_ref.push(class.git_ref.clone());
        self.branch.push(class.branch.clone());
        self.tag.push(class.tag.clone());
        self.project.push(class.project.clone());
        self.sender.push(class.sender.clone());
        self.commit_before.push(class.commit_before.clone());
        self.commit_after.push(class.commit_after.clone());
        for routed in &event.destinations {
            self.delivery_id
                .push(DeliveryId::generate().as_str().to_owned());
            self.delivery_event.push(event.id.as_str().to_owned());
            self.destination
                .push(routed.destination.as_str().to_owned());
            self.coalesce_key.push(routed.coalesce_key.clone());
        }
    }

    /// Every destination the batch adds deliveries to, sorted, once.
    pub fn destinations(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.destination.iter().map(String::as_str).collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.id,
            &self.source,
            &self.received_at,
            &self.remote_addr,
            &self.event_type,
            &self.dedup_key,
            &self.content_type,
            &self.headers,
            &self.body,
            &self.action,
            &self.git_ref,
            &self.branch,
            &self.tag,
            &self.project,
            &self.sender,
            &self.commit_before,
            &self.commit_after,
            &self.window,
            &self.delivery_id,
            &self.delivery_event,
            &self.destination,
            &self.coalesce_key,
        ]
    }

    /// The (source, key) of the sent events that were not inserted: repeats of stored ones.
    pub fn keys_not_in(&self, inserted: &HashSet<String>) -> (Vec<&str>, Vec<&str>) {
        (0..self.id.len())
            .filter(|&i| !inserted.contains(&self.id[i]))
            .filter_map(|i| Some((self.source[i].as_str(), self.dedup_key[i].as_deref()?)))
            .unzip()
    }

    /// Each event's answer, in the batch's order.
    pub fn answers(
        &self,
        events: &[NewEvent],
        inserted: &HashSet<String>,
        originals: &HashMap<(String, String), String>,
    ) -> Result<Vec<Accepted>, StoreError> {
        events
            .iter()
            .enumerate()
            .map(|(index, event)| {
                let sent = &events[self.sent_as[index]];
                if index == self.sent_as[index] && inserted.contains(sent.id.as_str()) {
                    return Ok(Accepted {
                        event_id: event.id.clone(),
                        deliveries: event.destinations.len(),
                        duplicate: false,
                    });
                }
                let original = match inserted.contains(sent.id.as_str()) {
                    // A repeat inside the batch of an event inserted by it.
                    true => sent.id.clone(),
                    false => {
                        let key = (
                            sent.source.as_str().to_owned(),
                            sent.classification.dedup_key.clone().unwrap_or_default(),
                        );
                        let id = originals.get(&key).ok_or_else(|| {
                            StoreError::Backend(format!(
                                "event {} neither inserted nor a repeat",
                                sent.id.as_str()
                            ))
                        })?;
                        EventId::from_stored(id.clone())
                    }
                };
                Ok(Accepted {
                    event_id: original,
                    deliveries: 0,
                    duplicate: true,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::event;

    #[test]
    fn a_sender_id_repeated_inside_a_batch_is_sent_once_and_answered_from_its_first() {
        let events = vec![
            event(Some("k1"), &["a"], 1),
            event(None, &["a", "b"], 2),
            event(Some("k1"), &["a"], 3),
            event(Some("k2"), &["a"], 4),
            event(Some("k2"), &["a"], 5),
        ];
        let batch = Batch::of(&events);
        assert_eq!(batch.sent_as, [0, 1, 0, 3, 3]);
        assert_eq!(batch.id.len(), 3, "each key sent once");
        assert_eq!(batch.destination, ["a", "a", "b", "a"]);
        assert_eq!(batch.destinations(), ["a", "b"]);
        // k1's event was inserted; k2 was a repeat of a stored event.
        let inserted: HashSet<String> = [&events[0], &events[1]]
            .iter()
            .map(|e| e.id.as_str().to_owned())
            .collect();
        assert_eq!(batch.keys_not_in(&inserted), (vec!["gitlab"], vec!["k2"]));
        let originals = HashMap::from([(("gitlab".into(), "k2".into()), "evt_old".into())]);
        let answers = batch.answers(&events, &inserted, &originals).unwrap();
        let shown: Vec<(&str, bool, usize)> = answers
            .iter()
            .map(|a| (a.event_id.as_str(), a.duplicate, a.deliveries))
            .collect();
        assert_eq!(
            shown,
            [
                (events[0].id.as_str(), false, 1),
                (events[1].id.as_str(), false, 2),
                (events[0].id.as_str(), true, 0),
                ("evt_old", true, 0),
                ("evt_old", true, 0),
            ]
        );
    }
}
