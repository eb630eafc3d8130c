//! The RabbitMQ destination (AMQP 0.9.1): publishes the body as a persistent message with
//! publisher confirms and `mandatory`, so "delivered" means the broker confirmed it and a
//! message no queue took comes back as a failure instead of vanishing.

mod settings;

use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

pub(super) use settings::validate;
pub use settings::{AmqpTarget, RawAmqp};

use super::reconnect::{Backoff, refused, unreachable, within};
use super::{DestinationConfig, ForwardDefaults, message};
use crate::delivery::{AttemptOutcome, Destination, Outbound};
use crate::domain::{AttemptDetail, Secret, Verdict};

pub struct AmqpDestination {
    name: String,
    url: Secret,
    exchange: String,
    target: AmqpTarget,
    defaults: ForwardDefaults,
    timeout: Duration,
    /// The connection and its confirm-mode channel, shared by concurrent attempts; made by
    /// the first attempt that needs it (one at a time: the others wait for it).
    link: tokio::sync::Mutex<Link>,
}

#[derive(Default)]
struct Link {
    connection: Option<Connection>,
    channel: Option<Channel>,
    backoff: Backoff,
}

/// Why an attempt could not get a channel to publish on.
struct NoChannel(String);

impl AmqpDestination {
    pub fn new(config: &DestinationConfig, target: &AmqpTarget, defaults: ForwardDefaults) -> Self {
        Self {
            name: config.name.as_str().to_owned(),
            url: target.url.clone(),
            exchange: target.exchange.clone(),
            target: target.clone(),
            defaults,
            timeout: config.timeout,
            link: tokio::sync::Mutex::new(Link::default()),
        }
    }

    /// The open channel, or a new one (on a new connection if the old one is gone).
    async fn channel(&self) -> Result<Channel, NoChannel> {
        let mut link = self.link.lock().await;
        if let Some(channel) = &link.channel
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        link.channel = None;
        let alive = link
            .connection
            .as_ref()
            .is_some_and(|c| c.status().connected());
        if !alive {
            link.connection = None;
            link.backoff.ready(Instant::now()).map_err(NoChannel)?;
            let url = String::from_utf8_lossy(self.url.expose()).into_owned();
            let properties = ConnectionProperties::default()
                .with_connection_name(format!("hookrelay-{}", self.name).into());
            match Connection::connect(&url, properties).await {
                Ok(connection) => link.connection = Some(connection),
                Err(err) => {
                    let error = format!("connect failed: {err}");
                    link.backoff.failed(Instant::now(), &error);
                    return Err(NoChannel(error));
                }
            }
        }
        let connection = link.connection.as_ref().expect("connected above");
        let opened = async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            lapin::Result::Ok(channel)
        };
        match opened.await {
            Ok(channel) => {
                link.backoff.succeeded();
                link.channel = Some(channel.clone());
                Ok(channel)
            }
            Err(err) => {
                let error = format!("opening a channel failed: {err}");
                link.backoff.failed(Instant::now(), &error);
                link.connection = None;
                Err(NoChannel(error))
            }
        }
    }

    fn properties(&self, outbound: &Outbound<'_>) -> BasicProperties {
        let forward = self.target.forward_headers.as_deref();
        let mut headers = FieldTable::default();
        for (name, value) in message::headers(outbound, forward, &self.defaults) {
            // The content type travels as the message's own property.
            if name != "content-type" {
                headers.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
            }
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(outbound.delivery_id.into())
            .with_timestamp((crate::domain::now_millis() / 1000) as u64)
            .with_app_id("hookrelay".into())
            .with_headers(headers);
        if let Some(content_type) = &outbound.request.content_type
            && content_type.len() <= settings::MAX_NAME_BYTES
        {
            properties = properties.with_content_type(content_type.as_str().into());
        }
        properties
    }

    async fn publish(&self, outbound: &Outbound<'_>) -> AttemptOutcome {
        let routing_key = self.target.routing_key.render(
            outbound.request,
            outbound.delivery_id,
            settings::clean_word,
        );
        if routing_key.len() > settings::MAX_NAME_BYTES {
            return refused(
                Verdict::Permanent,
                "routing key too long",
                "invalid",
                format!(
                    "the routing key is {} bytes; AMQP allows 255",
                    routing_key.len()
                ),
            );
        }
        let channel = match self.channel().await {
            Ok(channel) => channel,
            Err(NoChannel(error)) => return unreachable("connect error", "connect_error", error),
        };
        let published = async {
            channel
                .basic_publish(
                    ShortString::from(self.exchange.as_str()),
                    ShortString::from(routing_key.as_str()),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &outbound.request.body,
                    self.properties(outbound),
                )
                .await?
                .await
        };
        match published.await {
            Ok(Confirmation::Ack(None)) => AttemptOutcome {
                verdict: Verdict::Delivered,
                retry_after: None,
                class: "confirmed",
                detail: AttemptDetail {
                    summary: "confirmed".to_owned(),
                    status: None,
                    error: None,
                    response_excerpt: Some(format!(
                        "confirmed by the broker: exchange {}, routing key {routing_key:?}",
                        self.exchange_label()
                    )),
                    response_headers: None,
                },
                destination_down: false,
            },
            Ok(Confirmation::Ack(Some(returned))) => refused(
                Verdict::Retryable,
                "unroutable",
                "unroutable",
                format!(
                    "no queue bound for routing key {routing_key:?} on exchange {} \
                     (returned: {} {})",
                    self.exchange_label(),
                    returned.reply_code,
                    message::detail_text(returned.reply_text.as_str())
                ),
            ),
            Ok(Confirmation::Nack(_)) => refused(
                Verdict::Retryable,
                "nack",
                "nack",
                "the broker refused the message (nack): it could not store it".to_owned(),
            ),
            Ok(Confirmation::NotRequested) => refused(
                Verdict::Retryable,
                "unconfirmed",
                "error",
                "the channel was not in confirm mode".to_owned(),
            ),
            Err(err) => self.failed(err).await,
        }
    }

    /// A publish that ended in an error: a channel error is about this destination's
    /// settings (the broker is up; the channel is gone and reopened next time), anything
    /// else lost the connection.
    async fn failed(&self, err: lapin::Error) -> AttemptOutcome {
        let mut link = self.link.lock().await;
        link.channel = None;
        if let lapin::ErrorKind::ProtocolError(amqp) = err.kind()
            && let AMQPErrorKind::Soft(soft) = amqp.kind()
        {
            let reply = message::detail_text(amqp.get_message().as_str());
            return match soft {
                AMQPSoftError::NOTFOUND => refused(
                    Verdict::Permanent,
                    "exchange not found",
                    "not_found",
                    format!(
                        "exchange {} does not exist (404 NOT_FOUND: {reply})",
                        self.exchange_label()
                    ),
                ),
                AMQPSoftError::ACCESSREFUSED => refused(
                    Verdict::Permanent,
                    "access refused",
                    "refused",
                    format!("the broker refused this publish (403 ACCESS_REFUSED: {reply})"),
                ),
                other => refused(
                    Verdict::Retryable,
                    "channel error",
                    "error",
                    format!(
                        "channel closed by the broker ({} {other}: {reply})",
                        amqp.get_id()
                    ),
                ),
            };
        }
        // Another attempt's channel error closed the shared channel under this one: the
        // broker is up, the next attempt opens a channel again.
        if let lapin::ErrorKind::InvalidChannelState(..) = err.kind() {
            return refused(
                Verdict::Retryable,
                "channel closed",
                "channel_closed",
                format!("the channel closed during the publish: {err}"),
            );
        }
        link.connection = None;
        unreachable(
            "connection lost",
            "connection_lost",
            format!("publish failed: {err}"),
        )
    }

    fn exchange_label(&self) -> String {
        match self.exchange.as_str() {
            "" => "\"\" (the default exchange)".to_owned(),
            name => format!("{name:?}"),
        }
    }
}

#[async_trait::async_trait]
impl Destination for AmqpDestination {
    async fn deliver(&self, outbound: &Outbound<'_>) -> AttemptOutcome {
        within(self.timeout, self.publish(outbound)).await
    }
}
