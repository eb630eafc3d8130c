//! Group-commit isolation, with batches formed for certain: the commands are handed to the
//! writer's batch function together, instead of hoping the writer thread batches them.

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::dedup::DedupIndex;
use super::tests::event;
use super::writer::{Command, apply_batch};
use super::*;
use crate::store::{Accepted, NewEvent};

struct Writer {
    _dir: tempfile::TempDir,
    conn: Connection,
    dedup: DedupIndex,
}

impl Writer {
    fn new() -> Self {
        let (dir, _, conn, dedup) = super::tests::writer_connection();
        Self {
            _dir: dir,
            conn,
            dedup,
        }
    }

    /// Inserts `events` as exactly one batch; the answers in order.
    fn batch(&mut self, events: Vec<NewEvent>) -> Vec<Result<Accepted, StoreError>> {
        let mut commands = Vec::new();
        let mut answers = Vec::new();
        for event in events {
            let (reply, answer) = oneshot::channel();
            commands.push(Command::Insert(Box::new(event), reply));
            answers.push(answer);
        }
        for durable in apply_batch(&mut self.conn, &mut commands, &mut self.dedup).durable {
            durable(None);
        }
        answers
            .into_iter()
            .map(|mut answer| answer.try_recv().expect("answered"))
            .collect()
    }

    fn deliveries(&self) -> i64 {
        self.conn
            .query_row("SELECT COUNT(*) FROM deliveries", [], |row| row.get(0))
            .unwrap()
    }
}

#[test]
fn a_failing_command_spoils_no_other_in_its_batch() {
    let mut writer = Writer::new();
    let first = event(None, &["a"], 0);
    let mut clash = event(None, &["a"], 2);
    clash.id = first.id.clone();
    assert!(writer.batch(vec![first])[0].is_ok());
    let answers = writer.batch(vec![event(None, &["a"], 1), clash, event(None, &["a"], 3)]);
    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    assert!(
        answers[1].is_err(),
        "a second event with the same id must be refused"
    );
    assert!(answers[2].is_ok(), "{:?}", answers[2]);
    assert_eq!(writer.deliveries(), 3);
}

#[test]
fn a_failed_command_keeps_no_dedup_key_and_its_batch_mates_keep_theirs() {
    let mut writer = Writer::new();
    let first = event(None, &["a"], 0);
    let mut clash = event(Some("failed-key"), &["a"], 1);
    clash.id = first.id.clone();
    assert!(writer.batch(vec![first])[0].is_ok());
    let answers = writer.batch(vec![event(Some("good-key"), &["a"], 1), clash]);
    let good = answers[0].as_ref().unwrap().clone();
    assert!(answers[1].is_err());
    let again = writer
        .batch(vec![event(Some("good-key"), &["a"], 2)])
        .remove(0)
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.event_id, good.event_id);
    let retry = writer
        .batch(vec![event(Some("failed-key"), &["a"], 2)])
        .remove(0)
        .unwrap();
    assert!(
        !retry.duplicate,
        "a key from a failed insert made a real event a duplicate"
    );
}

#[test]
fn the_same_key_twice_in_one_batch_makes_one_event() {
    let mut writer = Writer::new();
    let answers = writer.batch(vec![
        event(Some("k"), &["a"], 1),
        event(Some("k"), &["a"], 1),
    ]);
    let (x, y) = (answers[0].as_ref().unwrap(), answers[1].as_ref().unwrap());
    assert!(!x.duplicate && y.duplicate, "{x:?} {y:?}");
    assert_eq!(x.event_id, y.event_id);
    assert_eq!(writer.deliveries(), 1);
}
