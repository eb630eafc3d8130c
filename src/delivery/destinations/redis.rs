//! The Redis Streams destination: `XADD`s the raw body and the message headers as fields to
//! a stream named from the event's fields. A Lua script makes the append idempotent per
//! delivery id within a window; `durable = "aof"` also waits for the server's AOF fsync.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

mod settings;

pub(super) use settings::validate;
pub use settings::{Durable, RawRedis, RedisTarget};

use super::reconnect::Reconnecting;
use super::{DestinationConfig, ForwardDefaults, message};
use crate::delivery::{AttemptOutcome, Destination, Outbound};
use crate::domain::{AttemptDetail, Verdict};

/// KEYS[1] the stream, KEYS[2] the delivery's dedup key; ARGV[1] the window in seconds,
/// ARGV[2] the MAXLEN ('' for none), then field, value, ... One script, so the check, the
/// append and the mark are one step: a retry finds the mark and gets the first entry's id.
const APPEND_ONCE: &str = r"
local kept = redis.call('GET', KEYS[2])
if kept then return {kept, 1} end
local xadd = {'XADD', KEYS[1]}
if ARGV[2] ~= '' then
  xadd[#xadd + 1] = 'MAXLEN'; xadd[#xadd + 1] = '~'; xadd[#xadd + 1] = ARGV[2]
end
xadd[#xadd + 1] = '*'
for i = 3, #ARGV do xadd[#xadd + 1] = ARGV[i] end
local id = redis.call(unpack(xadd))
redis.call('SET', KEYS[2], id, 'EX', ARGV[1])
return {id, 0}
";

/// Server errors that mean "not now" (memory, loading, failover) rather than "never".
const TRANSIENT_CODES: &[&str] = &[
    "OOM",
    "LOADING",
    "BUSY",
    "TRYAGAIN",
    "MASTERDOWN",
    "READONLY",
    "CLUSTERDOWN",
    "NOREPLICAS",
];

pub struct RedisDestination {
    target: RedisTarget,
    timeout: Duration,
    defaults: ForwardDefaults,
    script: redis::Script,
    connection: Reconnecting<MultiplexedConnection>,
}

impl RedisDestination {
    /// Connects on the first attempt, not here.
    pub fn new(
        config: &DestinationConfig,
        target: &RedisTarget,
        defaults: ForwardDefaults,
    ) -> Self {
        Self {
            target: target.clone(),
            timeout: config.timeout,
            defaults,
            script: redis::Script::new(APPEND_ONCE),
            connection: Reconnecting::default(),
        }
    }

    async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        let url = String::from_utf8_lossy(self.target.url.expose()).into_owned();
        let client = redis::Client::open(url.as_str())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    async fn append(&self, outbound: &Outbound<'_>) -> AttemptOutcome {
        let address = &self.target.address;
        let mut connection = match self.connection.get(async || self.connect().await).await {
            Ok(connection) => connection,
            Err(why) => {
                let error =
                    message::detail_text(&format!("cannot connect to Redis at {address}: {why}"));
                return failure("connect error", "connect_error", error);
            }
        };
        let key = self
            .target
            .stream
            .render(outbound.request, outbound.delivery_id, |value| {
                message::replace_chars(value, |_| false)
            });
        let forward = self.target.forward_headers.as_deref();
        let mut fields: Vec<(String, Vec<u8>)> =
            vec![("body".to_owned(), outbound.request.body.to_vec())];
        for (name, value) in message::headers(outbound, forward, &self.defaults) {
            fields.push((name, value.into_bytes()));
        }
        let maxlen = self
            .target
            .maxlen
            .map(|n| n.to_string())
            .unwrap_or_default();
        let appended: redis::RedisResult<(String, bool)> = if self.target.dedup_window.is_zero() {
            let mut xadd = redis::cmd("XADD");
            xadd.arg(&key);
            if let Some(n) = self.target.maxlen {
                xadd.arg("MAXLEN").arg("~").arg(n);
            }
            xadd.arg("*");
            for (name, value) in &fields {
                xadd.arg(name).arg(value);
            }
            xadd.query_async::<String>(&mut connection)
                .await
                .map(|id| (id, false))
        } else {
            let mut call = self.script.prepare_invoke();
            call.key(&key)
                .key(format!("{key}:hookrelay-dedup:{}", outbound.delivery_id))
                .arg(self.target.dedup_window.as_secs().max(1))
                .arg(&maxlen);
            for (name, value) in &fields {
                call.arg(name).arg(value);
            }
            call.invoke_async::<(String, i64)>(&mut connection)
                .await
                .map(|(id, again)| (id, again == 1))
        };
        let (id, again) = match appended {
            Ok(reply) => reply,
            Err(err) => return self.refused("XADD", err, &key).await,
        };
        if self.target.durable == Durable::Aof {
            let waited = redis::cmd("WAITAOF")
                .arg(1)
                .arg(0)
                .arg(self.timeout.as_millis().max(1) as u64)
                .query_async::<(i64, i64)>(&mut connection)
                .await;
            match waited {
                Ok((local, _)) if local >= 1 => {}
                Ok(_) => {
                    let error = format!(
                        "appended to {key} as {id}, but WAITAOF saw no local fsync within {:?}",
                        self.timeout
                    );
                    return failure("not fsynced", "not_durable", error);
                }
                Err(err) => return self.not_durable(err, &key, &id).await,
            }
        }
        delivered(&key, &id, again, self.target.durable)
    }

    /// An error from the server or the connection, judged; a lost connection is dropped.
    async fn refused(&self, what: &str, err: redis::RedisError, key: &str) -> AttemptOutcome {
        let address = &self.target.address;
        let text = message::detail_text(&err.to_string());
        if err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || err.is_unrecoverable_error()
        {
            self.connection.forget().await;
            let (summary, class) = match err.is_timeout() {
                true => ("timeout", "timeout"),
                false => ("connection lost", "connect_error"),
            };
            return failure(
                summary,
                class,
                format!("{what} to {key} at {address} got no answer: {text}"),
            );
        }
        let code = err.code().unwrap_or("ERR").to_owned();
        // An error raised inside the append-once script comes back as `ERR Error running
        // script ... -READONLY ...` on older servers: the code that matters is in the text.
        let transient = TRANSIENT_CODES.contains(&code.as_str())
            || (code == "ERR"
                && TRANSIENT_CODES
                    .iter()
                    .any(|c| text.contains(&format!("-{c}"))));
        AttemptOutcome {
            verdict: if transient {
                Verdict::Retryable
            } else {
                Verdict::Permanent
            },
            retry_after: None,
            class: "refused",
            detail: AttemptDetail::failed(
                format!("refused ({code})"),
                format!("Redis refused {what} to {key}: {text}"),
            ),
            destination_down: transient,
        }
    }

    /// WAITAOF failed: the entry is in the stream, but this server cannot say it is on disk.
    async fn not_durable(&self, err: redis::RedisError, key: &str, id: &str) -> AttemptOutcome {
        let unknown = err.code() == Some("ERR")
            && err
                .detail()
                .is_some_and(|detail| detail.contains("unknown command"));
        if !unknown {
            let mut outcome = self.refused("WAITAOF", err, key).await;
            if let Some(error) = &mut outcome.detail.error {
                error.push_str(&format!(" (the entry was appended as {id})"));
            }
            return outcome;
        }
        AttemptOutcome {
            verdict: Verdict::Permanent,
            retry_after: None,
            class: "not_durable",
            detail: AttemptDetail::failed(
                "no WAITAOF",
                format!(
                    "appended to {key} as {id}, but durable = \"aof\" needs WAITAOF \
                     (Redis 7.2 or later) and this server does not know it; set durable = \
                     \"none\" or upgrade, then replay (the dedup window keeps it from \
                     appending twice)"
                ),
            ),
            destination_down: false,
        }
    }
}

fn delivered(key: &str, id: &str, again: bool, durable: Durable) -> AttemptOutcome {
    let kept = match durable {
        Durable::Reply => "in memory",
        Durable::Aof => "fsynced to the AOF",
    };
    let (summary, class, excerpt) = match again {
        true => (
            format!("duplicate, {id}"),
            "duplicate",
            format!("already appended to {key} as {id} (dedup window)"),
        ),
        false => (
            format!("appended {id}"),
            "appended",
            format!("appended to {key} as {id} ({kept})"),
        ),
    };
    AttemptOutcome {
        verdict: Verdict::Delivered,
        retry_after: None,
        class,
        detail: AttemptDetail {
            summary,
            status: None,
            error: None,
            response_excerpt: Some(message::detail_text(&excerpt)),
            response_headers: None,
        },
        destination_down: false,
    }
}

/// No answer, or the server cannot take it now: another try may pass.
fn failure(summary: &str, class: &'static str, error: String) -> AttemptOutcome {
    AttemptOutcome {
        verdict: Verdict::Retryable,
        retry_after: None,
        class,
        detail: AttemptDetail::failed(summary, error),
        destination_down: true,
    }
}

#[async_trait::async_trait]
impl Destination for RedisDestination {
    async fn deliver(&self, outbound: &Outbound<'_>) -> AttemptOutcome {
        match tokio::time::timeout(self.timeout, self.append(outbound)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // A connection that did not answer in time may be stuck: start afresh.
                self.connection.forget().await;
                failure(
                    "timeout",
                    "timeout",
                    format!(
                        "no answer from Redis at {} within {:?}",
                        self.target.address, self.timeout
                    ),
                )
            }
        }
    }
}
