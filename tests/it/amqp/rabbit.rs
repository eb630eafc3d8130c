//! The test side of RabbitMQ: a channel to the local broker (or a skip), queues made for
//! one test, and the messages taken off them.

use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::{BROKER, URL};
use crate::harness::eventually;

/// A channel to the local RabbitMQ, or `None` (skipped) when it is not running; under CI
/// a missing broker fails the test.
pub async fn broker() -> Option<Channel> {
    let connected = async {
        let connection = Connection::connect(URL, ConnectionProperties::default()).await?;
        connection.create_channel().await
    };
    match connected.await {
        Ok(channel) => Some(channel),
        Err(err) => {
            let message =
                format!("RabbitMQ is not reachable on {BROKER} ({err}); .ci/run starts it");
            assert!(std::env::var_os("CI").is_none(), "{message}");
            eprintln!("skipped: {message}");
            None
        }
    }
}

/// A name no other test (or run) uses.
pub fn unique(what: &str) -> String {
    format!(
        "hookrelay-test-{what}-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )
}

/// A durable queue of this name, emptied and deleted when the test ends.
pub struct TestQueue {
    channel: Channel,
    pub name: String,
}

impl TestQueue {
    pub async fn declare(channel: &Channel, name: &str) -> TestQueue {
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        // A test that fails never deletes its queue: the broker does, ten minutes unused.
        let mut arguments = FieldTable::default();
        arguments.insert("x-expires".into(), AMQPValue::LongUInt(600_000));
        channel
            .queue_declare(name.into(), options, arguments)
            .await
            .unwrap();
        TestQueue {
            channel: channel.clone(),
            name: name.to_owned(),
        }
    }

    /// Every message waiting in the queue now (taken off it).
    pub async fn take_all(&self) -> Vec<(Vec<u8>, BasicProperties)> {
        let mut taken = Vec::new();
        let options = BasicGetOptions { no_ack: true };
        while let Some(got) = self
            .channel
            .basic_get(self.name.as_str().into(), options)
            .await
            .unwrap()
        {
            taken.push((got.delivery.data, got.delivery.properties));
        }
        taken
    }

    pub async fn delete(self) {
        let _ = self
            .channel
            .queue_delete(self.name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

pub fn header(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(value) => Some(String::from_utf8_lossy(value.as_bytes()).into()),
        other => Some(format!("{other:?}")),
    }
}

/// The bodies taken off a queue so far, across polls.
#[derive(Default)]
pub struct Collected(std::sync::Mutex<Vec<Vec<u8>>>);

impl Collected {
    pub async fn wait_for(&self, queue: &TestQueue, what: &str, done: impl Fn(&[Vec<u8>]) -> bool) {
        let done = &done;
        eventually(what, move || async move {
            let taken = queue.take_all().await;
            let mut bodies = self.0.lock().unwrap();
            bodies.extend(taken.into_iter().map(|(data, _)| data));
            done(&bodies).then_some(())
        })
        .await
    }

    pub fn bodies(&self) -> Vec<Vec<u8>> {
        let mut bodies = self.0.lock().unwrap().clone();
        bodies.sort();
        bodies
    }
}
