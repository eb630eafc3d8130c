//! MQTT destinations against the real local Mosquitto (127.0.0.1:1883, MQTT v5): a body
//! arrives byte-identical with its ids as user properties on a topic whose field values
//! cannot add levels, an outage is retried until the broker is back, and `kill -9` during a
//! burst loses nothing acknowledged. Each test subscribes to its own topic prefix.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;

use crate::harness::*;
use crate::proxy::Proxy;

const BROKER: &str = "127.0.0.1:1883";

/// One message as a subscriber got it.
#[derive(Debug, Clone)]
struct Message {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    content_type: Option<String>,
    user_properties: Vec<(String, String)>,
}

impl Message {
    fn property(&self, name: &str) -> Option<&str> {
        self.user_properties
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A QoS 1 subscription on the local broker, collecting what it receives.
struct Subscriber {
    received: Arc<Mutex<Vec<Message>>>,
    _client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscriber {
    /// Subscribed to `filter` (the SUBACK received), or `None` (skipped) when Mosquitto is not
    /// running; under CI a missing broker fails the test.
    async fn start(filter: &str) -> Option<Subscriber> {
        let mut options = MqttOptions::new(unique("sub"), "127.0.0.1", 1883);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let subscribed = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(err) => return Err(err.to_string()),
                }
            }
        };
        let failed = match tokio::time::timeout(Duration::from_secs(10), subscribed).await {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err),
            Err(_) => Some("no SUBACK within 10 s".to_owned()),
        };
        if let Some(err) = failed {
            let message =
                format!("Mosquitto is not reachable on {BROKER} ({err}); .ci/run starts it");
            assert!(std::env::var_os("CI").is_none(), "{message}");
            eprintln!("skipped: {message}");
            return None;
        }
        let received = Arc::new(Mutex::new(Vec::new()));
        let into = received.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let properties = publish.properties.unwrap_or_default();
                        into.lock().unwrap().push(Message {
                            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                            payload: publish.payload.to_vec(),
                            retain: publish.retain,
                            content_type: properties.content_type,
                            user_properties: properties.user_properties,
                        });
                    }
                    Ok(_) => {}
                    Err(err) => panic!("the test's subscriber lost the broker: {err}"),
                }
            }
        });
        Some(Subscriber {
            received,
            _client: client,
            task,
        })
    }

    fn messages(&self) -> Vec<Message> {
        self.received.lock().unwrap().clone()
    }

    async fn wait_until(&self, what: &str, done: impl Fn(&[Message]) -> bool) -> Vec<Message> {
        eventually(what, || async {
            let messages = self.messages();
            done(&messages).then_some(messages)
        })
        .await
    }
}

fn unique(what: &str) -> String {
    format!(
        "hookrelay-test-{what}-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )
}

/// A generic source (any bytes, from 127.0.0.1) and a GitLab one, both routed to the mqtt
/// destination `broker` with these settings.
pub(crate) fn mqtt_config(dir: &std::path::Path, destination: &str) -> String {
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

[destinations.broker]
kind = "mqtt"
timeout = "5s"
retry = {{ initial_delay = "100ms", max_delay = "500ms" }}
{destination}

[[routes]]
source = "anything"
destinations = ["broker"]

[[routes]]
source = "gitlab"
destinations = ["broker"]
"#,
        db = dir.join("hookrelay.db").display()
    )
}

pub(crate) fn deliveries(relay: &Relay) -> Vec<Value> {
    let output = relay.cli(&["deliveries", "list", "--json"]);
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_arrives_byte_identical_with_its_ids_on_a_topic_values_cannot_split() {
    let prefix = unique("bytes");
    let Some(subscriber) = Subscriber::start(&format!("{prefix}/#")).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let destination = format!(
        "url = \"mqtt://127.0.0.1:1883\"\ntopic = \"{prefix}/{{source}}/{{project}}\"\n\
         forward_headers = [\"x-trace\"]"
    );
    let relay = Relay::start(dir.path(), &mqtt_config(dir.path(), &destination));

    let body: Vec<u8> = vec![0xff, 0x00, 0xfe, b'\r', b'\n', 0x80, b'+', b'#', b'/'];
    let answer = reqwest::Client::new()
        .post(relay.hook_url("anything"))
        .header("content-type", "application/x-odd")
        .header("x-trace", "t-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let answer: Value = answer.json().await.unwrap();
    let event_id = answer["event_id"].as_str().unwrap().to_owned();
    // A project `group/app` is one topic level, not two.
    let pushed = post_push(&reqwest::Client::new(), &relay, push_body(7), None).await;
    assert_eq!(pushed.status(), 202);

    let messages = subscriber
        .wait_until("both messages", |m| m.len() == 2)
        .await;
    let odd = messages
        .iter()
        .find(|m| m.payload == body)
        .expect("the odd body, unchanged");
    assert_eq!(odd.topic, format!("{prefix}/anything/_"));
    assert!(!odd.retain);
    assert_eq!(odd.content_type.as_deref(), Some("application/x-odd"));
    assert_eq!(
        odd.property("x-hookrelay-event-id"),
        Some(event_id.as_str())
    );
    assert_eq!(odd.property("x-hookrelay-source"), Some("anything"));
    assert_eq!(odd.property("x-trace"), Some("t-1"));
    let push = messages.iter().find(|m| m.payload != body).unwrap();
    assert_eq!(push.topic, format!("{prefix}/gitlab/group_app"));
    assert_eq!(push.payload, push_body(7).as_bytes());

    let delivered = wait_for_state(&relay, "succeeded", 2).await;
    let ids: Vec<String> = delivered
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let webhook_ids: BTreeSet<String> = messages
        .iter()
        .map(|m| m.property("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(
        webhook_ids,
        ids.iter().cloned().collect(),
        "webhook-id is the delivery id"
    );
    let shown = relay.cli(&["deliveries", "show", &ids[0]]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("PUBACK"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_wait_out_a_broker_outage_and_all_arrive_after_it() {
    let prefix = unique("outage");
    let Some(subscriber) = Subscriber::start(&format!("{prefix}/#")).await else {
        return;
    };
    let proxy = Proxy::start(BROKER.parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let destination = format!(
        "url = \"mqtt://bot:secret-pw@{}\"\ntopic = \"{prefix}/x\"\nconcurrency = 4",
        proxy.addr
    );
    let relay = Relay::child(dir.path(), &mqtt_config(dir.path(), &destination));
    let client = reqwest::Client::new();
    let post = |n: u8| client.post(relay.hook_url("anything")).body(vec![n]).send();
    assert_eq!(post(0).await.unwrap().status(), 202);
    subscriber
        .wait_until("the first message", |m| m.len() == 1)
        .await;

    proxy.down();
    for n in 1..=20 {
        assert_eq!(post(n).await.unwrap().status(), 202);
    }
    relay
        .wait_for_metric(
            "hookrelay_delivery_attempts_total{destination=\"broker\",verdict=\"retryable\",outcome=\"connect_error\"}",
        )
        .await;
    let stuck = deliveries(&relay)
        .iter()
        .filter(|d| d["state"] != "succeeded")
        .count();
    assert_eq!(stuck, 20, "nothing delivered while the broker was away");

    proxy.up();
    subscriber
        .wait_until("every message after the outage", |m| {
            m.iter()
                .map(|m| m.payload.clone())
                .collect::<BTreeSet<_>>()
                .len()
                == 21
        })
        .await;
    wait_for_state(&relay, "succeeded", 21).await;
    assert!(
        !relay.log().contains("secret-pw"),
        "the password is never logged"
    );
}

use crate::broker_common::{BURST as REQUESTS, n_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_nothing_acknowledged() {
    let prefix = unique("burst");
    let Some(subscriber) = Subscriber::start(&format!("{prefix}/#")).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let destination = format!(
        "url = \"mqtt://127.0.0.1:1883\"\ntopic = \"{prefix}/{{source}}\"\nconcurrency = 32"
    );
    let text = mqtt_config(dir.path(), &destination);
    let mut relay = Relay::child(dir.path(), &text);

    let acknowledged = crate::broker_common::burst_cut_by_kill(&mut relay).await;

    let _relay = Relay::child(dir.path(), &text);
    let messages = subscriber
        .wait_until("every acknowledged event published", |messages| {
            let seen: BTreeSet<usize> = messages.iter().map(|m| n_of(&m.payload)).collect();
            acknowledged.is_subset(&seen)
        })
        .await;
    let mut per_event: HashMap<usize, usize> = HashMap::new();
    for message in &messages {
        *per_event.entry(n_of(&message.payload)).or_default() += 1;
    }
    let duplicates = per_event.values().filter(|&&c| c > 1).count();
    println!(
        "mqtt crash test: {} acknowledged of {REQUESTS}, {} messages, {duplicates} duplicated \
         (MQTT has no deduplication: the webhook-id user property lets consumers drop them)",
        acknowledged.len(),
        messages.len()
    );
    assert!(duplicates <= 64, "{duplicates} duplicates");
}
