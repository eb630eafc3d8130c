//! The store contract (`store::conformance`) on the local PostgreSQL, each case in a schema
//! of its own with two handles (two replicas), and what only this backend does.
//!
//! The database comes from `HOOKRELAY_TEST_POSTGRES` (default: the local service,
//! `postgres://postgres@127.0.0.1:5432/test`). Without it the cases are skipped with a
//! printed reason, unless `CI` is set: then they fail and say why.

use std::sync::Arc;

use super::*;
use crate::store::Store;
use crate::store::conformance::{Backend, store_conformance};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema dropped when the case ends (on a thread of its own: drop cannot wait).
pub struct Schema {
    config: tokio_postgres::Config,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (config, name) = (self.config.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                if let Ok((client, connection)) = config.connect(tokio_postgres::NoTls).await {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A fresh schema on the test database, and settings whose connections use it; `None`
/// (with the reason printed) when there is no database and `CI` is not set.
pub async fn fresh_schema(caller_clock: bool) -> Option<(Settings, Schema)> {
    let url = std::env::var("HOOKRELAY_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.into());
    let base = Settings::parse(&url).expect("HOOKRELAY_TEST_POSTGRES is a postgres:// URL");
    let connected = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        base.connection.connect(tokio_postgres::NoTls),
    )
    .await;
    let (client, connection) = match connected {
        Ok(Ok(pair)) => pair,
        failed => {
            let why = match failed {
                Ok(Err(err)) => err.to_string(),
                _ => "no answer in 5 s".into(),
            };
            let message = format!(
                "PostgreSQL at {} unreachable ({why}); set HOOKRELAY_TEST_POSTGRES or start it",
                crate::store::redact_url(&url)
            );
            if std::env::var_os("CI").is_some() {
                panic!("{message}");
            }
            eprintln!("skipped: {message}");
            return None;
        }
    };
    tokio::spawn(connection);
    let name = format!("hr_test_{}", uuid::Uuid::now_v7().simple());
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .expect("create a test schema");
    let mut settings = base.clone();
    let clock = match caller_clock {
        true => " -c hookrelay.clock=caller",
        false => "",
    };
    settings
        .connection
        .options(format!("-c search_path={name}{clock}"));
    settings.pool_size = 8;
    settings.poll_interval = std::time::Duration::from_millis(200);
    let schema = Schema {
        config: base.connection,
        name,
    };
    Some((settings, schema))
}

/// Two handles on one fresh schema, as two replicas hold it; the cases drive time.
pub async fn two_replicas() -> Option<(PgStore, PgStore, Schema)> {
    let (settings, schema) = fresh_schema(true).await?;
    let first = PgStore::open_with(settings.clone(), OpenMode::Server)
        .await
        .expect("open the first handle");
    let second = PgStore::open_with(settings, OpenMode::Server)
        .await
        .expect("open the second handle");
    Some((first, second, schema))
}

async fn empty_backend() -> Option<Backend> {
    let (first, second, schema) = two_replicas().await?;
    let first: Arc<dyn Store> = Arc::new(first);
    let second: Arc<dyn Store> = Arc::new(second);
    Some(Backend::new(first, second, schema))
}

mod conformance {
    use super::*;
    store_conformance!(empty_backend());
}

/// Two replicas whose clocks disagree by an hour agree on what is due, since the database's
/// clock decides: a delivery stored through the fast one is claimable through the slow one
/// at once, and the lease the slow one took is not expired for the fast one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_skewed_clocks_agree_on_what_is_due() {
    let Some((settings, _schema)) = fresh_schema(false).await else {
        return;
    };
    let fast = PgStore::open_with(settings.clone(), OpenMode::Server)
        .await
        .unwrap();
    let slow = PgStore::open_with(settings, OpenMode::Server)
        .await
        .unwrap();
    let now = crate::domain::now_millis();
    let hour = 3_600_000;
    fast.insert_event(crate::store::conformance::event(None, &["a"], now + hour))
        .await
        .unwrap();
    let mut request = crate::store::conformance::claim_request(
        "a",
        crate::domain::Ordering::Parallel,
        5,
        now - hour,
    );
    request.lease_until = now - hour + 60_000;
    let claimed = slow.claim(request).await.unwrap();
    assert_eq!(
        claimed.deliveries.len(),
        1,
        "the slow replica saw nothing due"
    );
    let again = fast
        .claim(crate::store::conformance::claim_request(
            "a",
            crate::domain::Ordering::Parallel,
            5,
            now + hour,
        ))
        .await
        .unwrap();
    assert!(
        again.deliveries.is_empty(),
        "the fast replica took a delivery whose lease has 60 s to run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_this_hookrelay_is_refused() {
    let Some((settings, _schema)) = fresh_schema(true).await else {
        return;
    };
    drop(
        PgStore::open_with(settings.clone(), OpenMode::Server)
            .await
            .unwrap(),
    );
    let client = plain_client(&settings).await;
    client
        .batch_execute("UPDATE hookrelay_schema SET version = 99")
        .await
        .unwrap();
    let err = PgStore::open_with(settings, OpenMode::Server)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("newer than this hookrelay"), "{err}");
}

/// A parallel claim reads only the rows it takes, in index order, whatever the statistics
/// say: with a backlog, a plan that reads every due delivery and sorts them, or every row
/// of the destination to find the ones it takes, costs milliseconds a claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_reads_the_due_index_in_order_without_sorting_the_backlog() {
    let Some((settings, _schema)) = fresh_schema(false).await else {
        return;
    };
    let store = Arc::new(
        PgStore::open_with(settings.clone(), OpenMode::Server)
            .await
            .unwrap(),
    );
    let client = plain_client(&settings).await;
    // Statistics from when the table was empty, as a new deployment has for its first
    // minutes: the planner then expects one row wherever it looks.
    client
        .batch_execute("ANALYZE deliveries; ANALYZE events")
        .await
        .unwrap();
    let mut inserts = tokio::task::JoinSet::new();
    for at in 0..2_000 {
        let store = store.clone();
        inserts.spawn(async move {
            let event = crate::store::conformance::event(None, &["a"], at);
            store.insert_event(event).await.unwrap();
        });
    }
    inserts.join_all().await;
    // Planned as the store plans its claims: on a bookkeeping connection.
    let bookkeeping = store.bookkeeping().await.unwrap();
    bookkeeping
        .batch_execute(&format!(
            "PREPARE claim (text, bigint, bigint, bigint, text) AS {}",
            claims::CLAIM_PARALLEL
        ))
        .await
        .unwrap();
    // Before the statistics know the backlog, and after.
    for analyze in ["", "ANALYZE deliveries"] {
        client.batch_execute(analyze).await.unwrap();
        let plan: Vec<String> = bookkeeping
            .query("EXPLAIN EXECUTE claim ('a', 0, 48, 1000, 'test')", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Sort"),
            "{analyze:?}: the claim sorts:\n{plan}"
        );
        // The rows taken are found by their key, not among all the destination's rows.
        assert!(
            !plan.contains("deliveries_by_destination") && !plan.contains("Seq Scan"),
            "{analyze:?}: the claim reads every row of the destination:\n{plan}"
        );
    }
}

/// A connection of its own on the case's schema, for what the store does not offer.
async fn plain_client(settings: &Settings) -> tokio_postgres::Client {
    let (client, connection) = settings
        .connection
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// A breaker one replica shares as open is read as open by a replica that starts later,
/// until one shares it as closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_breaker_is_kept_for_replicas_that_start_later() {
    let Some((settings, _schema)) = fresh_schema(false).await else {
        return;
    };
    let first = PgStore::open_with(settings.clone(), OpenMode::Server)
        .await
        .unwrap();
    first.share_breaker("sink", true).await;
    first.share_breaker("other", true).await;
    first.share_breaker("other", false).await;
    let later = PgStore::open_with(settings, OpenMode::Server)
        .await
        .unwrap();
    assert_eq!(
        later.open_breakers().await.unwrap(),
        vec!["sink".to_owned()]
    );
    later.share_breaker("sink", false).await;
    assert!(first.open_breakers().await.unwrap().is_empty());
}

/// A record that arrives after its delivery is gone (its lease taken over, the delivery
/// finished and pruned meanwhile) stores no attempt: no foreign key refuses one any more,
/// and an orphan attempt would never be pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_for_a_removed_delivery_leaves_no_attempt() {
    use crate::store::NextState;
    use crate::store::conformance::{claim_request, done_with, event};
    let Some((settings, _schema)) = fresh_schema(true).await else {
        return;
    };
    let store = PgStore::open_with(settings.clone(), OpenMode::Server)
        .await
        .unwrap();
    store.insert_event(event(None, &["a"], 0)).await.unwrap();
    let claimed = store
        .claim(claim_request("a", crate::domain::Ordering::Parallel, 10, 1))
        .await
        .unwrap();
    let delivery = &claimed.deliveries[0];
    let client = plain_client(&settings).await;
    // What retention does once the delivery finished through another lease.
    client
        .batch_execute("DELETE FROM deliveries")
        .await
        .unwrap();
    store
        .complete(done_with(delivery, NextState::Succeeded, 2))
        .await
        .unwrap();
    let attempts: i64 = client
        .query_one("SELECT count(*) FROM attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        attempts, 0,
        "an attempt was stored for a delivery that is gone"
    );
}
