//! One MQTT connection: rumqttc's event loop polled in its own task, and the PUBACK of each
//! publish handed back to the attempt that sent it. rumqttc gives no per-publish handle, so
//! publishes are matched to packet ids in the order the event loop sends them (`queued`),
//! then to their PUBACK by packet id (`sent`). When the connection fails the session ends:
//! every attempt still waiting fails, and nothing is resent by this session (the next attempt
//! opens a new one), so no QoS 1 message is dropped without its attempt failing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::delivery::destinations::reconnect::Backoff;

/// What became of one publish.
#[derive(Debug)]
pub enum Ack {
    /// The broker's PUBACK: its reason code and reason string.
    Answered(PubAckReason, Option<String>),
    /// The connection ended before a PUBACK: why.
    Lost(String),
    /// The connection was never made: why.
    NotConnected(String),
    /// Not sent: the client's queue to the event loop was full (the broker is slow to ack).
    Busy(String),
    /// Not sent: larger than the broker's Maximum Packet Size (sending it would end the
    /// connection, and every attempt in flight with it).
    TooLarge(String),
}

#[derive(Default)]
struct Waiters {
    /// Handed to the event loop, not yet given a packet id (in the order sent).
    queued: VecDeque<oneshot::Sender<Ack>>,
    /// Sent with this packet id, awaiting its PUBACK.
    sent: HashMap<u16, oneshot::Sender<Ack>>,
    /// The publish held back because its packet id was still in use (a broker acking out of
    /// order): the event loop sends it when that id is acked, before any other request.
    collided: Option<oneshot::Sender<Ack>>,
    /// Why the session ended; set once, when it does.
    ended: Option<String>,
    /// Whether the broker ever accepted the connection (CONNACK).
    connected: bool,
    /// The largest packet the broker takes (its CONNACK's Maximum Packet Size), if it said.
    broker_max: Option<u32>,
}

impl Waiters {
    /// What an attempt that could not be answered is told, once the session has ended.
    fn failure(&self, why: String) -> Ack {
        match self.connected {
            true => Ack::Lost(why),
            false => Ack::NotConnected(why),
        }
    }
}

pub struct Session {
    client: AsyncClient,
    waiters: Arc<Mutex<Waiters>>,
    /// Stops the event loop task when the destination drops this session.
    _stop: DropGuard,
}

fn lock(waiters: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    waiters.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// Starts the event loop task; it connects on its first poll.
    pub fn start(options: MqttOptions, backoff: Arc<Mutex<Backoff>>) -> Session {
        let (client, eventloop) = AsyncClient::new(options, 64);
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let stop = CancellationToken::new();
        tokio::spawn(drive(eventloop, waiters.clone(), backoff, stop.clone()));
        Session {
            client,
            waiters,
            _stop: stop.drop_guard(),
        }
    }

    pub fn ended(&self) -> bool {
        lock(&self.waiters).ended.is_some()
    }

    /// Publishes with QoS 1 and waits for the PUBACK (or the end of the connection).
    pub async fn publish(
        &self,
        topic: String,
        retain: bool,
        payload: Bytes,
        properties: PublishProperties,
    ) -> Ack {
        // The waiter joins `queued` and the publish enters the client's channel under one
        // lock and without an await: nothing can cancel one without the other, so waiters
        // and packet ids stay paired in order.
        let answer = {
            let (waiter, answer) = oneshot::channel();
            let mut waiters = lock(&self.waiters);
            if let Some(why) = &waiters.ended {
                return waiters.failure(why.clone());
            }
            if let Some(max) = waiters.broker_max {
                let size = packet_size(&topic, &payload, &properties);
                if size > max as usize {
                    return Ack::TooLarge(format!(
                        "the message is about {size} bytes; the broker takes at most {max} (its Maximum Packet Size)"
                    ));
                }
            }
            waiters.queued.push_back(waiter);
            let sent = self.client.try_publish_with_properties(
                topic,
                QoS::AtLeastOnce,
                retain,
                payload,
                properties,
            );
            if let Err(err) = sent {
                // Never reached the event loop: take back this publish's place.
                waiters.queued.pop_back();
                return match &waiters.ended {
                    Some(why) => waiters.failure(why.clone()),
                    None => Ack::Busy(format!("the MQTT client's queue is full ({err})")),
                };
            }
            answer
        };
        answer
            .await
            .unwrap_or_else(|_| Ack::Lost("the connection ended".to_owned()))
    }
}

/// A PUBLISH packet's size, from above: fixed header, topic, packet id, properties, payload.
fn packet_size(topic: &str, payload: &Bytes, properties: &PublishProperties) -> usize {
    let strings = |pairs: &[(String, String)]| -> usize {
        pairs
            .iter()
            .map(|(k, v)| 1 + 2 + k.len() + 2 + v.len())
            .sum()
    };
    let content_type = properties
        .content_type
        .as_ref()
        .map_or(0, |c| 1 + 2 + c.len());
    5 + 2
        + topic.len()
        + 2
        + 4
        + strings(&properties.user_properties)
        + content_type
        + payload.len()
}

/// Polls the event loop until the connection fails or the session is dropped, matching
/// packet ids and PUBACKs to waiting attempts; then fails every attempt still waiting.
async fn drive(
    mut eventloop: EventLoop,
    waiters: Arc<Mutex<Waiters>>,
    backoff: Arc<Mutex<Backoff>>,
    stop: CancellationToken,
) {
    let why = loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break "the destination was stopped".to_owned(),
            event = eventloop.poll() => event,
        };
        let mut w = lock(&waiters);
        match event {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                w.connected = true;
                w.broker_max = connack.properties.and_then(|p| p.max_packet_size);
                backoff
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .succeeded();
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let waiter = w.collided.take().or_else(|| w.queued.pop_front());
                if let Some(waiter) = waiter {
                    w.sent.insert(pkid, waiter);
                }
            }
            Ok(Event::Outgoing(Outgoing::AwaitAck(_))) => {
                w.collided = w.queued.pop_front();
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(waiter) = w.sent.remove(&ack.pkid) {
                    let reason = ack.properties.and_then(|p| p.reason_string);
                    let _ = waiter.send(Ack::Answered(ack.reason, reason));
                }
            }
            Ok(Event::Incoming(Packet::Disconnect(disconnect))) => {
                break format!("the broker disconnected: {:?}", disconnect.reason_code);
            }
            Ok(_) => {}
            Err(err) => break format!("connection failed: {err}"),
        }
    };
    if !stop.is_cancelled() {
        backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failed(Instant::now(), &why);
    }
    let mut w = lock(&waiters);
    w.ended = Some(why.clone());
    let connected = w.connected;
    let w = &mut *w;
    let waiting = w
        .queued
        .drain(..)
        .chain(w.sent.drain().map(|(_, waiter)| waiter))
        .chain(w.collided.take());
    for waiter in waiting {
        let _ = waiter.send(match connected {
            true => Ack::Lost(why.clone()),
            false => Ack::NotConnected(why.clone()),
        });
    }
}
