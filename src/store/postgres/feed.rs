//! The change feed across replicas: each commit's change is announced here at once and sent
//! to the others with `pg_notify` after the commit (never inside a busy transaction, which
//! would serialise commits); a listener connection turns other replicas' notifications into
//! changes, and a slow poll stands behind it (or alone, where `LISTEN` cannot work).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;

use super::Settings;
use crate::domain::Name;
use crate::store::Change;

/// The notification channel of the store's schema: deployments (and tests) in other
/// schemas of the same database never hear each other.
pub fn channel_of(schema: &str) -> String {
    let mut name = format!("hookrelay.{schema}");
    name.truncate(63);
    name
}

/// The channel as an identifier for `LISTEN`.
fn quoted(channel: &str) -> String {
    format!("\"{}\"", channel.replace('"', "\"\""))
}
/// A notification's payload must stay under PostgreSQL's 8000 bytes.
const MAX_PAYLOAD: usize = 7000;

#[derive(Clone)]
pub struct Notifier {
    pool: deadpool_postgres::Pool,
    changes: broadcast::Sender<Change>,
    origin: Arc<str>,
    channel: Arc<str>,
}

impl Notifier {
    pub fn new(
        pool: deadpool_postgres::Pool,
        changes: broadcast::Sender<Change>,
        origin: Arc<str>,
        channel: Arc<str>,
    ) -> Self {
        Self {
            pool,
            changes,
            origin,
            channel,
        }
    }

    /// Announces a committed change: to this process now, to the others by notification.
    /// A notification that cannot be sent is left to the other replicas' poll.
    pub async fn announce(&self, change: Change) {
        let _ = self.changes.send(change.clone());
        self.notify_others(&change).await;
    }

    /// Tells the other replicas only (this process knows already).
    pub async fn notify_others(&self, change: &Change) {
        let payload = encode(&self.origin, change);
        let sent = match self.pool.get().await {
            Ok(client) => match client.prepare_cached("SELECT pg_notify($1, $2)").await {
                Ok(statement) => client
                    .execute(&statement, &[&&*self.channel, &payload])
                    .await
                    .map(|_| ()),
                Err(err) => Err(err),
            },
            Err(err) => {
                tracing::debug!(error = %err, "change not sent to other replicas; they poll");
                return;
            }
        };
        if let Err(err) = sent {
            tracing::debug!(error = %err, "change not sent to other replicas; they poll");
        }
    }
}

fn encode(origin: &str, change: &Change) -> String {
    let body = match change {
        Change::Due(names) => {
            let list: Vec<&str> = names.iter().map(Name::as_str).collect();
            format!("due\t{}", list.join("\t"))
        }
        Change::AnyDue => "any".to_owned(),
        Change::Paused(name, paused) => format!("paused\t{name}\t{}", u8::from(*paused)),
        Change::JobCreated => "job".to_owned(),
        Change::Breaker(name, open) => format!("breaker\t{name}\t{}", u8::from(*open)),
    };
    match body.len() > MAX_PAYLOAD {
        true => format!("{origin}\tany"),
        false => format!("{origin}\t{body}"),
    }
}

/// Another replica's change, or `None` for this process's own (announced already) or a
/// payload this version cannot read (treated as "anything may be due" by the caller).
fn decode(own: &str, payload: &str) -> Option<Option<Change>> {
    let mut parts = payload.split('\t');
    if parts.next()? == own {
        return None;
    }
    let change = match parts.next() {
        Some("due") => Change::Due(parts.filter_map(|p| Name::parse(p).ok()).collect()),
        Some("paused") => {
            let name = parts.next().unwrap_or_default().to_owned();
            Change::Paused(name, parts.next() == Some("1"))
        }
        Some("job") => Change::JobCreated,
        Some("breaker") => {
            let name = parts.next().unwrap_or_default().to_owned();
            Change::Breaker(name, parts.next() == Some("1"))
        }
        Some("any") => Change::AnyDue,
        _ => return Some(None),
    };
    Some(Some(change))
}

/// The listener and poller tasks; they stop when this is dropped.
pub struct Feed {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Feed {
    /// Starts the feed; `listening` is told once `LISTEN` is in place (never, in poll-only
    /// mode), so a replica that says it is open hears every change committed after.
    pub fn start(
        settings: &Settings,
        notifier: &Notifier,
        listening: tokio::sync::oneshot::Sender<()>,
    ) -> Self {
        let (pool, changes) = (notifier.pool.clone(), notifier.changes.clone());
        let mut tasks = vec![tokio::spawn(poll(
            pool,
            changes.clone(),
            settings.poll_interval,
        ))];
        if !settings.poll_only {
            tasks.push(tokio::spawn(listen(
                settings.connection.clone(),
                settings.tls.clone(),
                changes,
                notifier.origin.clone(),
                notifier.channel.clone(),
                listening,
            )));
        }
        Self { tasks }
    }
}

/// Follows other replicas' notifications; reconnects after a pause when the connection
/// goes, and then says that anything may have changed (notifications were missed).
async fn listen(
    config: tokio_postgres::Config,
    tls: Option<super::tls::MakeRustls>,
    changes: broadcast::Sender<Change>,
    origin: Arc<str>,
    channel: Arc<str>,
    listening: tokio::sync::oneshot::Sender<()>,
) {
    let mut listening = Some(listening);
    let mut delay = Duration::from_millis(100);
    loop {
        let ended = match &tls {
            Some(tls) => {
                follow(
                    &config,
                    tls.clone(),
                    &changes,
                    &origin,
                    &channel,
                    &mut listening,
                )
                .await
            }
            None => {
                follow(
                    &config,
                    tokio_postgres::NoTls,
                    &changes,
                    &origin,
                    &channel,
                    &mut listening,
                )
                .await
            }
        };
        if ended {
            delay = Duration::from_millis(100);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// One `LISTEN` connection until it goes; true once it listened (the retry delay resets).
async fn follow<T>(
    config: &tokio_postgres::Config,
    tls: T,
    changes: &broadcast::Sender<Change>,
    origin: &str,
    channel: &str,
    listening: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> bool
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let mut listened = false;
    match config.connect(tls).await {
        Ok((client, mut connection)) => {
            let (sender, mut notes) = tokio::sync::mpsc::unbounded_channel();
            let driver = tokio::spawn(async move {
                while let Some(message) =
                    std::future::poll_fn(|cx| connection.poll_message(cx)).await
                {
                    match message {
                        Ok(AsyncMessage::Notification(note)) => {
                            let _ = sender.send(note.payload().to_owned());
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(error = %err, "change feed connection lost");
                            return;
                        }
                    }
                }
            });
            match client
                .batch_execute(&format!("LISTEN {}", quoted(channel)))
                .await
            {
                Ok(()) => {
                    listened = true;
                    if let Some(listening) = listening.take() {
                        let _ = listening.send(());
                    }
                    // Whatever was announced while no one listened may be due.
                    let _ = changes.send(Change::AnyDue);
                    while let Some(payload) = notes.recv().await {
                        match decode(origin, &payload) {
                            None => {}
                            Some(Some(change)) => {
                                let _ = changes.send(change);
                            }
                            Some(None) => {
                                let _ = changes.send(Change::AnyDue);
                            }
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot LISTEN for changes"),
            }
            driver.abort();
        }
        Err(err) => tracing::debug!(error = %err, "change feed cannot connect yet"),
    }
    listened
}

/// The backstop: every interval, anything may be due (a retry time came, a notification
/// was lost), pauses are read again and announced where they changed, and an unfinished
/// job no one holds is announced.
async fn poll(
    pool: deadpool_postgres::Pool,
    changes: broadcast::Sender<Change>,
    interval: Duration,
) {
    // What the feed said last about each pause, from any source: the poll announces only
    // what the feed has not said yet.
    let mut said = changes.subscribe();
    let mut known: HashMap<String, bool> = HashMap::new();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        loop {
            match said.try_recv() {
                Ok(Change::Paused(name, paused)) => {
                    known.insert(name, paused);
                }
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        let Ok(client) = pool.get().await else {
            continue;
        };
        if let Ok(rows) = client
            .query("SELECT name, paused FROM destination_state", &[])
            .await
        {
            for row in rows {
                let (name, paused): (String, bool) = (row.get(0), row.get(1));
                if known.insert(name.clone(), paused) != Some(paused) {
                    let _ = changes.send(Change::Paused(name, paused));
                }
            }
        }
        let free_job = client
            .query_opt(
                "SELECT 1 FROM jobs WHERE finished_at IS NULL
                 AND (lease_until IS NULL OR lease_until < hookrelay_now($1)) LIMIT 1",
                &[&crate::domain::now_millis()],
            )
            .await;
        if let Ok(Some(_)) = free_job {
            let _ = changes.send(Change::JobCreated);
        }
        let _ = changes.send(Change::AnyDue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_own_changes_are_skipped() {
        let due = Change::Due(vec![
            Name::parse("ci").unwrap(),
            Name::parse("deploy").unwrap(),
        ]);
        for change in [
            due,
            Change::AnyDue,
            Change::Paused("ci".into(), true),
            Change::Paused("ci".into(), false),
            Change::JobCreated,
            Change::Breaker("ci".into(), true),
            Change::Breaker("ci".into(), false),
        ] {
            let payload = encode("a", &change);
            assert_eq!(decode("b", &payload), Some(Some(change.clone())));
            assert_eq!(decode("a", &payload), None);
        }
        assert_eq!(decode("b", "a\tsomething-new"), Some(None));
        let many: Vec<Name> = (0..2000)
            .map(|i| Name::parse(&format!("destination-{i}")).unwrap())
            .collect();
        assert_eq!(
            decode("b", &encode("a", &Change::Due(many))),
            Some(Some(Change::AnyDue))
        );
    }
}
