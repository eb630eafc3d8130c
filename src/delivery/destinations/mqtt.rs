//! The MQTT destination (v5): publishes the body with QoS 1 to a topic made from the event's
//! fields; "delivered" means the broker's PUBACK with a success reason code. Headers and
//! hookrelay's ids travel as user properties, the content type as the v5 property.

mod session;
mod settings;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::v5::MqttOptions;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, PublishProperties};

pub(super) use settings::validate;
pub use settings::{MqttTarget, RawMqtt};

use self::session::{Ack, Session};
use super::reconnect::{Backoff, refused, unreachable, within};
use super::{DestinationConfig, ForwardDefaults, message};
use crate::delivery::{AttemptOutcome, Destination, Outbound};
use crate::domain::{AttemptDetail, Verdict};

pub struct MqttDestination {
    name: String,
    target: MqttTarget,
    defaults: ForwardDefaults,
    timeout: Duration,
    /// The connection shared by concurrent attempts, replaced once it has ended.
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    /// Shared with the session's task, which knows when a connect failed or worked.
    backoff: Arc<Mutex<Backoff>>,
}

impl MqttDestination {
    pub fn new(config: &DestinationConfig, target: &MqttTarget, defaults: ForwardDefaults) -> Self {
        Self {
            name: config.name.as_str().to_owned(),
            target: target.clone(),
            defaults,
            timeout: config.timeout,
            session: tokio::sync::Mutex::new(None),
            backoff: Arc::default(),
        }
    }

    /// The live session, or a new one (which connects in its task) once the pause after a
    /// failed connection is over.
    async fn session(&self) -> Result<Arc<Session>, String> {
        let mut current = self.session.lock().await;
        if let Some(session) = current.as_ref()
            && !session.ended()
        {
            return Ok(session.clone());
        }
        *current = None;
        self.backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ready(Instant::now())?;
        let broker = settings::broker(&self.target.url)?;
        let client_id = self.target.client_id.clone().unwrap_or_else(|| {
            // A fixed id would make two hookrelay processes throw each other off the broker.
            format!("hookrelay-{}-{:08x}", self.name, fastrand::u32(..))
        });
        let mut options = MqttOptions::new(client_id, broker.host, broker.port);
        options
            .set_keep_alive(self.target.keep_alive)
            .set_clean_start(true)
            .set_connection_timeout(self.timeout.as_secs().clamp(1, 10));
        if let Some((user, password)) = broker.credentials {
            options.set_credentials(user, password);
        }
        let session = Arc::new(Session::start(options, self.backoff.clone()));
        *current = Some(session.clone());
        Ok(session)
    }

    fn properties(&self, outbound: &Outbound<'_>) -> PublishProperties {
        let forward = self.target.forward_headers.as_deref();
        let user_properties = message::headers(outbound, forward, &self.defaults)
            .into_iter()
            // The content type travels as the v5 property of its own.
            .filter(|(name, _)| name != "content-type")
            .collect();
        PublishProperties {
            user_properties,
            content_type: outbound.request.content_type.clone(),
            ..PublishProperties::default()
        }
    }

    async fn publish(&self, outbound: &Outbound<'_>) -> AttemptOutcome {
        let topic = self.target.topic.render(
            outbound.request,
            outbound.delivery_id,
            settings::clean_level,
        );
        let session = match self.session().await {
            Ok(session) => session,
            Err(why) => return unreachable("connect error", "connect_error", why),
        };
        let ack = session
            .publish(
                topic.clone(),
                self.target.retain,
                outbound.request.body.clone(),
                self.properties(outbound),
            )
            .await;
        match ack {
            Ack::Answered(reason, text) => judge(reason, text, &topic),
            Ack::Lost(why) => unreachable("connection lost", "connection_lost", why),
            Ack::NotConnected(why) => unreachable("connect error", "connect_error", why),
            Ack::Busy(why) => refused(Verdict::Retryable, "client busy", "busy", why),
            Ack::TooLarge(why) => refused(Verdict::Permanent, "too large", "too_large", why),
        }
    }
}

/// What a PUBACK means: success codes (below 0x80) deliver; a refusal that another try
/// cannot change (not authorized, invalid topic) is permanent; others are retried.
fn judge(reason: PubAckReason, text: Option<String>, topic: &str) -> AttemptOutcome {
    let code = reason_code(&reason);
    let said = text
        .map(|t| format!(": {}", message::detail_text(&t)))
        .unwrap_or_default();
    let (verdict, class) = match reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
            let note = match reason {
                PubAckReason::NoMatchingSubscribers => " (0x10: no subscriber matched it)",
                _ => "",
            };
            return AttemptOutcome {
                verdict: Verdict::Delivered,
                retry_after: None,
                class: "puback",
                detail: AttemptDetail {
                    summary: "PUBACK".to_owned(),
                    status: None,
                    error: None,
                    response_excerpt: Some(format!("PUBACK for topic {topic:?}{note}")),
                    response_headers: None,
                },
                destination_down: false,
            };
        }
        PubAckReason::NotAuthorized | PubAckReason::TopicNameInvalid => {
            (Verdict::Permanent, "refused")
        }
        _ => (Verdict::Retryable, "refused"),
    };
    refused(
        verdict,
        &format!("PUBACK 0x{code:02x}"),
        class,
        format!("the broker refused the publish to topic {topic:?}: 0x{code:02x} {reason:?}{said}"),
    )
}

fn reason_code(reason: &PubAckReason) -> u8 {
    match reason {
        PubAckReason::Success => 0x00,
        PubAckReason::NoMatchingSubscribers => 0x10,
        PubAckReason::UnspecifiedError => 0x80,
        PubAckReason::ImplementationSpecificError => 0x83,
        PubAckReason::NotAuthorized => 0x87,
        PubAckReason::TopicNameInvalid => 0x90,
        PubAckReason::PacketIdentifierInUse => 0x91,
        PubAckReason::QuotaExceeded => 0x97,
        PubAckReason::PayloadFormatInvalid => 0x99,
    }
}

#[async_trait::async_trait]
impl Destination for MqttDestination {
    async fn deliver(&self, outbound: &Outbound<'_>) -> AttemptOutcome {
        within(self.timeout, self.publish(outbound)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubacks_are_judged_by_reason_code() {
        for (reason, verdict) in [
            (PubAckReason::Success, Verdict::Delivered),
            (PubAckReason::NoMatchingSubscribers, Verdict::Delivered),
            (PubAckReason::NotAuthorized, Verdict::Permanent),
            (PubAckReason::TopicNameInvalid, Verdict::Permanent),
            (PubAckReason::QuotaExceeded, Verdict::Retryable),
            (PubAckReason::UnspecifiedError, Verdict::Retryable),
        ] {
            let outcome = judge(reason, Some("why".to_owned()), "t");
            assert_eq!(outcome.verdict, verdict, "{reason:?}");
            assert!(!outcome.destination_down);
        }
        let refused = judge(PubAckReason::NotAuthorized, None, "a/b");
        assert_eq!(refused.detail.summary, "PUBACK 0x87");
    }
}
