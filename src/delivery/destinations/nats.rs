//! The NATS JetStream destination: publishes the raw body to a subject made from the event's
//! fields with hookrelay's ids as headers and `Nats-Msg-Id` = the delivery id (the stream's
//! dedup id); delivered means the stream acknowledged storing it (or already had it).

use std::time::Duration;

use async_nats::HeaderName;
use async_nats::connection::State;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, ErrorCode, publish::PublishAck};

mod settings;

pub(super) use settings::validate;
pub use settings::{NatsAuth, NatsTarget, RawNats, subject_char_refused};

use super::reconnect::{Reconnecting, delay_after};
use super::{DestinationConfig, ForwardDefaults, message};
use crate::delivery::{AttemptOutcome, Destination, Outbound};
use crate::domain::{AttemptDetail, Verdict};

pub struct NatsDestination {
    target: NatsTarget,
    timeout: Duration,
    defaults: ForwardDefaults,
    jetstream: Reconnecting<jetstream::Context>,
    /// Since when (ms) the kept client has been seen not connected; 0 while it is.
    not_connected_since: std::sync::atomic::AtomicI64,
}

/// The kept client's own reconnects, at most: a client left behind (a reload while the
/// server is down, a password that no longer works) stops trying after about 2.5 minutes.
const CLIENT_RECONNECTS: usize = 30;
/// A client not connected for this long has given up: the next attempt connects anew.
const GIVE_UP_AFTER_MS: i64 = 180_000;

impl NatsDestination {
    /// Connects on the first attempt, not here.
    pub fn new(config: &DestinationConfig, target: &NatsTarget, defaults: ForwardDefaults) -> Self {
        Self {
            target: target.clone(),
            timeout: config.timeout,
            defaults,
            jetstream: Reconnecting::default(),
            not_connected_since: Default::default(),
        }
    }

    async fn connect(&self) -> Result<jetstream::Context, async_nats::ConnectError> {
        let mut options = async_nats::ConnectOptions::new()
            .name("hookrelay")
            .connection_timeout(self.timeout)
            // Once connected, the client reconnects by itself, with hookrelay's backoff.
            .max_reconnects(CLIENT_RECONNECTS)
            .reconnect_delay_callback(|tries| {
                delay_after(u32::try_from(tries).unwrap_or(u32::MAX))
            });
        let secret = |s: &crate::domain::Secret| String::from_utf8_lossy(s.expose()).into_owned();
        options = match &self.target.auth {
            Some(NatsAuth::UserPassword { user, password }) => {
                options.user_and_password(user.clone(), secret(password))
            }
            Some(NatsAuth::Token(token)) => options.token(secret(token)),
            None => options,
        };
        let client = options.connect(self.target.server.as_str()).await?;
        let mut context = jetstream::new(client);
        context.set_timeout(self.timeout);
        Ok(context)
    }

    async fn publish(&self, outbound: &Outbound<'_>) -> AttemptOutcome {
        let server = &self.target.server;
        let context = match self.jetstream.get(async || self.connect().await).await {
            Ok(context) => context,
            Err(why) => {
                let error = format!("cannot connect to NATS at {server}: {why}");
                return failure("connect error", "connect_error", error);
            }
        };
        // Publishing while the client reconnects would only queue the message and wait out
        // the attempt's time: say so at once instead.
        use std::sync::atomic::Ordering::Relaxed;
        if context.client().connection_state() != State::Connected {
            let now = crate::domain::now_millis();
            let since = match self.not_connected_since.load(Relaxed) {
                0 => {
                    self.not_connected_since.store(now, Relaxed);
                    now
                }
                since => since,
            };
            if now - since > GIVE_UP_AFTER_MS {
                self.not_connected_since.store(0, Relaxed);
                self.jetstream.forget().await;
            }
            let error = format!("not connected to NATS at {server} (reconnecting)");
            return failure("connect error", "connect_error", error);
        }
        self.not_connected_since.store(0, Relaxed);
        let subject = self
            .target
            .subject
            .render(outbound.request, outbound.delivery_id, |value| {
                message::replace_chars(value, subject_char_refused)
            });
        let mut publish = PublishMessage::build()
            .payload(outbound.request.body.clone())
            .message_id(outbound.delivery_id);
        if let Some(stream) = &self.target.stream {
            publish = publish.expected_stream(stream);
        }
        let forward = self.target.forward_headers.as_deref();
        for (name, value) in message::headers(outbound, forward, &self.defaults) {
            if let Ok(name) = name.parse::<HeaderName>() {
                publish = publish.header(name, value);
            }
        }
        let acked = match context.send_publish(subject.clone(), publish).await {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        match acked {
            Ok(ack) => delivered(&ack, &subject),
            Err(err) => self.refused(err, &subject),
        }
    }

    /// What a publish that got no ack means.
    fn refused(&self, err: PublishError, subject: &str) -> AttemptOutcome {
        let server = &self.target.server;
        let from_server = std::error::Error::source(&err)
            .and_then(|source| source.downcast_ref::<jetstream::Error>());
        match (err.kind(), from_server) {
            (PublishErrorKind::StreamNotFound, _) => permanent(
                "no stream",
                "no_stream",
                match &self.target.stream {
                    Some(stream) => format!(
                        "no stream captures subject {subject} (stream {stream} was expected to)"
                    ),
                    None => format!("no stream captures subject {subject}"),
                },
            ),
            (PublishErrorKind::MaxPayloadExceeded, _) => permanent(
                "too large",
                "too_large",
                message::detail_text(&format!("the message is too large for the server: {err}")),
            ),
            (PublishErrorKind::TimedOut, _) => failure(
                "timeout",
                "timeout",
                format!(
                    "no ack from JetStream at {server} within {:?}",
                    self.timeout
                ),
            ),
            (PublishErrorKind::BrokenPipe, _) => failure(
                "connection lost",
                "connect_error",
                format!("the connection to NATS at {server} was lost before the ack"),
            ),
            (_, Some(answer)) if answer.error_code() == ErrorCode::STREAM_NOT_MATCH => permanent(
                "wrong stream",
                "wrong_stream",
                format!(
                    "subject {subject} is not captured by stream {} (the server: {})",
                    self.target.stream.as_deref().unwrap_or("?"),
                    message::detail_text(&answer.to_string())
                ),
            ),
            // The stream answered: a 4xx-like refusal (wrong stream, too large for the
            // stream) stays a refusal; 5xx-like (no space, no quorum) may pass later.
            (_, Some(answer)) => {
                let text = message::detail_text(&answer.to_string());
                let (verdict, down) = match answer.code() {
                    400..=499 => (Verdict::Permanent, false),
                    _ => (Verdict::Retryable, true),
                };
                AttemptOutcome {
                    verdict,
                    retry_after: None,
                    class: "refused",
                    detail: AttemptDetail::failed(
                        format!("refused ({})", answer.error_code().0),
                        format!("JetStream refused the message on {subject}: {text}"),
                    ),
                    destination_down: down,
                }
            }
            (_, None) => failure(
                "publish error",
                "error",
                message::detail_text(&format!("publish to {subject} failed: {err}")),
            ),
        }
    }
}

fn delivered(ack: &PublishAck, subject: &str) -> AttemptOutcome {
    let (summary, class, what) = if ack.duplicate {
        (
            format!("duplicate, seq {}", ack.sequence),
            "duplicate",
            "already stored (duplicate Nats-Msg-Id within the stream's window)",
        )
    } else {
        (format!("acked, seq {}", ack.sequence), "acked", "stored")
    };
    AttemptOutcome {
        verdict: Verdict::Delivered,
        retry_after: None,
        class,
        detail: AttemptDetail {
            summary,
            status: None,
            error: None,
            response_excerpt: Some(message::detail_text(&format!(
                "{what}: stream {} seq {} subject {subject}",
                ack.stream, ack.sequence
            ))),
            response_headers: None,
        },
        destination_down: false,
    }
}

/// No ack, and the server (or the way to it) is the reason: another try may pass.
fn failure(summary: &str, class: &'static str, error: String) -> AttemptOutcome {
    AttemptOutcome {
        verdict: Verdict::Retryable,
        retry_after: None,
        class,
        detail: AttemptDetail::failed(summary, error),
        destination_down: true,
    }
}

/// The server answered that this message can never be stored as configured.
fn permanent(summary: &str, class: &'static str, error: String) -> AttemptOutcome {
    AttemptOutcome {
        verdict: Verdict::Permanent,
        retry_after: None,
        class,
        detail: AttemptDetail::failed(summary, error),
        destination_down: false,
    }
}

#[async_trait::async_trait]
impl Destination for NatsDestination {
    async fn deliver(&self, outbound: &Outbound<'_>) -> AttemptOutcome {
        match tokio::time::timeout(self.timeout, self.publish(outbound)).await {
            Ok(outcome) => outcome,
            Err(_) => failure(
                "timeout",
                "timeout",
                format!(
                    "no ack from NATS at {} within {:?}",
                    self.target.server, self.timeout
                ),
            ),
        }
    }
}
