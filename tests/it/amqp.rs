//! RabbitMQ destinations against the real local broker (127.0.0.1:5672, guest/guest): a body
//! arrives byte-identical with its ids, unroutable and missing-exchange publishes fail as they
//! should, an outage is retried until the broker is back, and `kill -9` during a burst loses
//! nothing acknowledged. Each test uses its own queue and exchange names.

use std::collections::{BTreeSet, HashMap};

use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions};
use lapin::types::FieldTable;
use serde_json::Value;

use self::rabbit::{Collected, TestQueue, broker, header, unique};
use crate::harness::*;
use crate::proxy::Proxy;

mod rabbit;

const BROKER: &str = "127.0.0.1:5672";
const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A generic source (any bytes, no signature, from 127.0.0.1) and a GitLab one, both routed
/// to the amqp destination `rabbit` with these settings (retried quickly unless they say).
fn amqp_config(dir: &std::path::Path, destination: &str) -> String {
    format!(
        r#"
[server]
store = "sqlite://{db}"
shutdown_grace = "5s"
max_connections = 4096
max_connections_per_client = 4096

[sources.anything]
provider = "generic"
allow_ips = ["127.0.0.1/32"]

[sources.gitlab]
provider = "gitlab"
secret = "{TOKEN}"

[destinations.rabbit]
kind = "amqp"
timeout = "5s"
{destination}

[[routes]]
source = "anything"
destinations = ["rabbit"]

[[routes]]
source = "gitlab"
destinations = ["rabbit"]
"#,
        db = dir.join("hookrelay.db").display()
    )
}

const QUICK_RETRY: &str = "retry = { initial_delay = \"100ms\", max_delay = \"500ms\" }";

/// Every delivery as `deliveries list --json` shows it.
fn deliveries(relay: &Relay) -> Vec<Value> {
    let output = relay.cli(&["deliveries", "list", "--json"]);
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_arrives_byte_identical_as_a_persistent_message_with_its_ids() {
    let Some(channel) = broker().await else {
        return;
    };
    let queue = TestQueue::declare(&channel, &unique("bytes")).await;
    let dir = tempfile::tempdir().unwrap();
    let destination = format!(
        "url = \"{URL}\"\nrouting_key = \"{}\"\n{QUICK_RETRY}",
        queue.name
    );
    let relay = Relay::start(dir.path(), &amqp_config(dir.path(), &destination));

    // Not UTF-8, NUL, CR LF: forwarded as the bytes they are.
    let body: Vec<u8> = vec![0xff, 0x00, 0xfe, b'\r', b'\n', 0x80, b'{', 0xc3, 0x28];
    let answer = reqwest::Client::new()
        .post(relay.hook_url("anything"))
        .header("content-type", "application/x-odd")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let answer: Value = answer.json().await.unwrap();
    let event_id = answer["event_id"].as_str().unwrap().to_owned();

    let (data, properties) = eventually("the message in the queue", || async {
        queue.take_all().await.into_iter().next()
    })
    .await;
    assert_eq!(data, body);
    let delivery = eventually("the delivery to be recorded as delivered", || async {
        deliveries(&relay)
            .into_iter()
            .find(|d| d["state"] == "succeeded")
    })
    .await;
    let delivery_id = delivery["id"].as_str().unwrap();
    assert_eq!(
        properties.message_id().as_ref().map(|id| id.as_str()),
        Some(delivery_id)
    );
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        properties.app_id().as_ref().map(|id| id.as_str()),
        Some("hookrelay")
    );
    assert_eq!(
        properties.content_type().as_ref().map(|t| t.as_str()),
        Some("application/x-odd")
    );
    assert!(properties.timestamp().is_some());
    assert_eq!(
        header(&properties, "webhook-id").as_deref(),
        Some(delivery_id)
    );
    assert_eq!(
        header(&properties, "x-hookrelay-event-id").as_deref(),
        Some(event_id.as_str())
    );
    assert_eq!(
        header(&properties, "x-hookrelay-source").as_deref(),
        Some("anything")
    );
    assert_eq!(
        header(&properties, "x-hookrelay-attempt").as_deref(),
        Some("1")
    );
    let shown = relay.cli(&["deliveries", "show", delivery_id]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("confirmed"), "{shown}");
    assert!(!shown.contains("guest:guest"), "{shown}");
    queue.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_is_retried_and_a_missing_exchange_is_permanent_until_it_exists() {
    let Some(channel) = broker().await else {
        return;
    };
    let (exchange, queue_name) = (unique("exchange"), unique("bound"));
    let dir = tempfile::tempdir().unwrap();
    let destination = format!(
        "url = \"{URL}\"\nexchange = \"{exchange}\"\nrouting_key = \"orders.{{source}}\"\n\
         retry = {{ initial_delay = \"100ms\", max_delay = \"200ms\", max_attempts = 50 }}"
    );
    let relay = Relay::start(dir.path(), &amqp_config(dir.path(), &destination));
    let client = reqwest::Client::new();
    let post = |n: u8| client.post(relay.hook_url("anything")).body(vec![n]).send();

    // No such exchange: the broker closes the channel (404); never retried.
    assert_eq!(post(1).await.unwrap().status(), 202);
    let dead = wait_for_state(&relay, "dead", 1).await;
    let dead: Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(dead["attempts"], 1, "{dead}");
    let shown = relay.cli(&["deliveries", "show", dead["id"].as_str().unwrap()]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!("exchange \"{exchange}\" does not exist")),
        "{shown}"
    );

    // The exchange now exists but nothing is bound: returned, so retried, not "delivered".
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(post(2).await.unwrap().status(), 202);
    let shown = eventually("an unroutable attempt on record", || async {
        let pending = deliveries(&relay)
            .into_iter()
            .find(|d| d["state"] != "dead" && d["attempts"].as_u64() >= Some(1))?;
        let shown = relay.cli(&["deliveries", "show", pending["id"].as_str().unwrap()]);
        let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
        shown.contains("no queue bound").then_some(shown)
    })
    .await;
    assert!(
        shown.contains(&format!(
            "routing key \"orders.anything\" on exchange \"{exchange}\""
        )),
        "{shown}"
    );

    // Bound: the retried message arrives (on a reopened channel after the 404).
    let queue = TestQueue::declare(&channel, &queue_name).await;
    channel
        .queue_bind(
            queue_name.as_str().into(),
            exchange.as_str().into(),
            "orders.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let replayed = relay.cli(&["replay", dead["id"].as_str().unwrap()]);
    assert!(replayed.status.success(), "{replayed:?}");
    let collected = Collected::default();
    collected
        .wait_for(&queue, "both messages in the bound queue", |bodies| {
            bodies.len() == 2
        })
        .await;
    assert_eq!(collected.bodies(), vec![vec![1], vec![2]]);
    queue.delete().await;
    let _ = channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_wait_out_a_broker_outage_and_all_arrive_after_it() {
    let Some(channel) = broker().await else {
        return;
    };
    let queue = TestQueue::declare(&channel, &unique("outage")).await;
    let proxy = Proxy::start(BROKER.parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let destination = format!(
        "url = \"amqp://guest:guest@{}/%2f\"\nrouting_key = \"{}\"\nconcurrency = 4\n{QUICK_RETRY}",
        proxy.addr, queue.name
    );
    let relay = Relay::child(dir.path(), &amqp_config(dir.path(), &destination));
    let client = reqwest::Client::new();
    let post = |n: u8| client.post(relay.hook_url("anything")).body(vec![n]).send();
    assert_eq!(post(0).await.unwrap().status(), 202);
    let collected = Collected::default();
    collected
        .wait_for(&queue, "the first message", |b| b.len() == 1)
        .await;

    // The broker goes away with the connection open: attempts fail and are retried.
    proxy.down();
    for n in 1..=20 {
        assert_eq!(post(n).await.unwrap().status(), 202);
    }
    relay
        .wait_for_metric("hookrelay_delivery_attempts_total{destination=\"rabbit\",verdict=\"retryable\",outcome=\"connect_error\"}")
        .await;
    let stuck = deliveries(&relay)
        .iter()
        .filter(|d| d["state"] != "succeeded")
        .count();
    assert_eq!(stuck, 20, "nothing delivered while the broker was away");

    proxy.up();
    collected
        .wait_for(&queue, "every message after the outage", |b| {
            b.iter().collect::<BTreeSet<_>>().len() == 21
        })
        .await;
    wait_for_state(&relay, "succeeded", 21).await;
    assert!(
        !relay.log().contains("guest:guest"),
        "the password is never logged"
    );
    queue.delete().await;
}

use crate::broker_common::{BURST as REQUESTS, n_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_nothing_acknowledged() {
    let Some(channel) = broker().await else {
        return;
    };
    let queue = TestQueue::declare(&channel, &unique("burst")).await;
    let dir = tempfile::tempdir().unwrap();
    let destination = format!(
        "url = \"{URL}\"\nrouting_key = \"{}\"\nconcurrency = 32\n{QUICK_RETRY}",
        queue.name
    );
    let text = amqp_config(dir.path(), &destination);
    let mut relay = Relay::child(dir.path(), &text);

    let acknowledged = crate::broker_common::burst_cut_by_kill(&mut relay).await;

    let _relay = Relay::child(dir.path(), &text);
    let collected = Collected::default();
    collected
        .wait_for(&queue, "every acknowledged event in the queue", |bodies| {
            let seen: BTreeSet<usize> = bodies.iter().map(|b| n_of(b)).collect();
            acknowledged.is_subset(&seen)
        })
        .await;
    let mut per_event: HashMap<usize, usize> = HashMap::new();
    for body in collected.bodies() {
        *per_event.entry(n_of(&body)).or_default() += 1;
    }
    let duplicates = per_event.values().filter(|&&c| c > 1).count();
    println!(
        "amqp crash test: {} acknowledged of {REQUESTS}, {} messages, {duplicates} duplicated \
         (RabbitMQ has no deduplication: message_id = delivery id lets consumers drop them)",
        acknowledged.len(),
        collected.bodies().len()
    );
    // Only publishes in flight at the kill (at most `concurrency`) or confirmed but not yet
    // recorded (as many again) may come twice.
    assert!(duplicates <= 64, "{duplicates} duplicates");
    queue.delete().await;
}
