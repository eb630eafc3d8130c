//! The HTTP destination: forwards the original body and selected headers, signs with Standard
//! Webhooks headers, reads back a bounded excerpt of the answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

mod format;
mod settings;

pub(super) use settings::validate;
pub use settings::{HttpTarget, RawHttp};

use super::DestinationConfig;
use crate::delivery::address::{GuardedResolver, literal_address, refusal};
use crate::delivery::{AttemptOutcome, Destination, Outbound};
use crate::domain::{AttemptDetail, HOPS_HEADER, Name, Secret, Verdict};
use crate::signing::{standard_secret, standard_v1_signature};

/// Bytes of a response body kept with the attempt: enough to see an error message.
const EXCERPT_BYTES: usize = 1024;

pub struct HttpDestination {
    client: reqwest::Client,
    url: reqwest::Url,
    timeout: Duration,
    signing_key: Option<Vec<u8>>,
    allow_internal: bool,
    /// `retry.permanent_4xx`: which statuses mean "never" is this destination's rule.
    permanent_4xx: bool,
    /// Original headers copied onto forwarded requests; `None`: the source provider's.
    forward: Option<Vec<String>>,
    defaults: Arc<HashMap<Name, Vec<String>>>,
    format: format::Format,
}

impl HttpDestination {
    /// `defaults`: per source, the original headers its provider's deliveries carry on when
    /// the destination names none.
    pub fn new(
        config: &DestinationConfig,
        target: &HttpTarget,
        defaults: Arc<HashMap<Name, Vec<String>>>,
    ) -> Result<Self, reqwest::Error> {
        let allow_internal = target.allow_private_network;
        // A forwarded webhook follows a redirect only when told to, and then only to
        // addresses the destination may reach.
        let redirects = if target.follow_redirects {
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    attempt.error("too many redirects")
                } else if let Some(why) = literal_refusal(attempt.url(), allow_internal) {
                    attempt.error(why)
                } else {
                    attempt.follow()
                }
            })
        } else {
            reqwest::redirect::Policy::none()
        };
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(config.concurrency)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("hookrelay/", env!("CARGO_PKG_VERSION")))
            .redirect(redirects)
            // A proxy from the environment would resolve and connect for us, out of reach of
            // the address policy.
            .no_proxy()
            // Names are resolved, then checked, at connect time (rebinding cannot slip by).
            .dns_resolver(std::sync::Arc::new(GuardedResolver { allow_internal }))
            .build()?;
        Ok(Self {
            client,
            url: target.url.clone(),
            timeout: config.timeout,
            signing_key: target.secret.as_ref().map(signing_key),
            forward: target.forward_headers.clone(),
            defaults,
            allow_internal,
            permanent_4xx: config.retry.permanent_4xx,
            format: target.format,
        })
    }
}

/// The hop count a stored request arrived with (0 from a real sender).
fn hops(headers: &[(String, Vec<u8>)]) -> u32 {
    headers
        .iter()
        .find(|(name, _)| name == HOPS_HEADER)
        .and_then(|(_, value)| std::str::from_utf8(value).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

/// The resolver never sees a URL that names an address literally: check those here (and
/// in `config check`, where `localhost` counts as loopback).
pub fn literal_refusal(url: &reqwest::Url, allow_internal: bool) -> Option<String> {
    let address = literal_address(url)?;
    refusal(address, allow_internal)
}

/// `whsec_<base64>` secrets are Standard Webhooks keys; anything else is used as raw bytes.
fn signing_key(secret: &Secret) -> Vec<u8> {
    let raw = secret.expose();
    if raw.starts_with(b"whsec_")
        && let Ok(key) = standard_secret(raw)
    {
        return key.expose().to_vec();
    }
    raw.to_vec()
}

#[async_trait::async_trait]
impl Destination for HttpDestination {
    async fn deliver(&self, outbound: &Outbound<'_>) -> AttemptOutcome {
        if let Some(why) = literal_refusal(&self.url, self.allow_internal) {
            return failure("refused", "refused", format!("refused: {why}"));
        }
        let request = outbound.request;
        let timestamp = crate::domain::now_millis() / 1000;
        let formatted = self.format.body(request);
        let body = formatted.clone().unwrap_or_else(|| request.body.clone());
        let mut builder = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .body(body.clone())
            .header("webhook-id", outbound.delivery_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("x-hookrelay-event-id", request.event_id.as_str())
            .header("x-hookrelay-attempt", outbound.attempt.to_string());
        match (&formatted, &request.content_type) {
            (Some(_), _) => builder = builder.header("content-type", "application/json"),
            (None, Some(content_type)) => {
                builder = builder.header("content-type", content_type.as_str())
            }
            (None, None) => {}
        }
        builder = builder.header(HOPS_HEADER, (hops(&request.headers) + 1).to_string());
        let forward = match &self.forward {
            Some(chosen) => chosen.as_slice(),
            None => self
                .defaults
                .get(&request.source)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        };
        for (name, value) in &request.headers {
            // The body is forwarded exactly as received, so its encoding (gzip) goes with it.
            if formatted.is_none() && name == "content-encoding"
                || forward.iter().any(|f| f.eq_ignore_ascii_case(name))
            {
                builder = builder.header(name.as_str(), value.as_slice());
            }
        }
        if let Some(key) = &self.signing_key {
            let signature = standard_v1_signature(key, outbound.delivery_id, timestamp, &body);
            builder = builder.header("webhook-signature", signature);
        }
        match builder.send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let headers = header_lines(response.headers());
                let excerpt = read_excerpt(response).await;
                let code = status.as_u16();
                let verdict = if status.is_success() {
                    Verdict::Delivered
                } else if is_permanent(code, self.permanent_4xx) {
                    Verdict::Permanent
                } else {
                    Verdict::Retryable
                };
                AttemptOutcome {
                    verdict,
                    retry_after,
                    class: status_class(code),
                    detail: AttemptDetail {
                        summary: format!("HTTP {code}"),
                        status: Some(code),
                        error: (!status.is_success()).then(|| format!("HTTP {status}")),
                        response_excerpt: excerpt,
                        response_headers: headers,
                    },
                    destination_down: destination_down(code),
                }
            }
            Err(err) => {
                let (kind, class) = error_kind(&err);
                failure(kind, class, describe(kind, err))
            }
        }
    }
}

/// An attempt that got no answer: worth another try, and the destination counts as down.
fn failure(summary: &str, class: &'static str, error: String) -> AttemptOutcome {
    AttemptOutcome {
        verdict: Verdict::Retryable,
        retry_after: None,
        class,
        detail: AttemptDetail::failed(summary, error),
        destination_down: true,
    }
}

/// The metric class of an answer: its status class.
fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// 4xx answers that say "not now" rather than "never": retried even when 4xx are permanent.
const TRANSIENT_4XX: [u16; 4] = [408, 409, 425, 429];

/// Whether a status means another try cannot help: a 4xx other than the transient ones,
/// when the destination's `retry.permanent_4xx` says so.
pub fn is_permanent(status: u16, permanent_4xx: bool) -> bool {
    permanent_4xx && (400..500).contains(&status) && !TRANSIENT_4XX.contains(&status)
}

/// A 4xx about this request proves the destination is up; 5xx, 408 and 429 count as down.
fn destination_down(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

/// What kind of failure an error is: the summary and the metric class.
fn error_kind(err: &reqwest::Error) -> (&'static str, &'static str) {
    if err.is_timeout() {
        ("timeout", "timeout")
    } else if err.is_connect() {
        ("connect error", "connect_error")
    } else {
        ("request error", "error")
    }
}

fn describe(kind: &str, err: reqwest::Error) -> String {
    // Without the URL: destination URLs often carry tokens in their path or query.
    let err = err.without_url();
    let mut text = format!("{kind}: {err}");
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// At most this much of an answer's headers is kept with the attempt.
const HEADER_BYTES: usize = 2048;

/// The answer's headers as `name: value` lines, up to `HEADER_BYTES` (a cookie a destination
/// sets is not kept).
fn header_lines(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let mut lines = String::new();
    for (name, value) in headers {
        if name == reqwest::header::SET_COOKIE {
            continue;
        }
        let line = format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes()));
        if lines.len() + line.len() > HEADER_BYTES {
            lines.push_str("…\n");
            break;
        }
        lines.push_str(&line);
    }
    (!lines.is_empty()).then_some(lines)
}

async fn read_excerpt(mut response: reqwest::Response) -> Option<String> {
    let mut kept = Vec::new();
    while kept.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = EXCERPT_BYTES - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned())
}

/// `Retry-After` as delay-seconds or an HTTP-date.
pub fn parse_retry_after(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    if let Ok(seconds) = raw.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(raw).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classed_by_status_and_judged_by_the_destination_rules() {
        // (status, permanent_4xx, class, permanent, counts as down)
        for (status, strict, class, permanent, down) in [
            (200, false, "2xx", false, false),
            (204, true, "2xx", false, false),
            (302, false, "3xx", false, false),
            (404, false, "4xx", false, false),
            (404, true, "4xx", true, false),
            (409, true, "4xx", false, false),
            (429, true, "4xx", false, true),
            (408, false, "4xx", false, true),
            (500, true, "5xx", false, true),
            (503, false, "5xx", false, true),
        ] {
            assert_eq!(
                (
                    status_class(status),
                    is_permanent(status, strict),
                    destination_down(status)
                ),
                (class, permanent, down),
                "{status} permanent_4xx = {strict}"
            );
        }
    }

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example from the Standard Webhooks specification.
        let secret = Secret::from_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        let got = standard_v1_signature(
            &signing_key(&secret),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
        );
        assert_eq!(got, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
