//! Reading a request body under limits: its size, an overall deadline, a minimum average
//! rate once the first seconds have passed, and memory counted as the bytes arrive.

use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::budget::{OverBudget, Reservation};

/// A body may start slowly (TCP slow start, a busy sender); its rate is judged after this.
const RATE_GRACE: Duration = Duration::from_secs(2);
/// How often a stalled body is looked at.
const TICK: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// `Content-Length`, when given: a body complete at that length is never too slow.
    pub declared: Option<u64>,
    pub max_bytes: u64,
    pub timeout: Duration,
    /// Bytes per second, averaged since the request started; 0 disables the check.
    pub min_rate: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    /// Slower than the minimum rate, or not finished within the timeout.
    TooSlow,
    OverBudget(OverBudget),
    Broken,
}

pub async fn read_body(
    body: Body,
    limits: BodyLimits,
    reservation: &mut Reservation,
) -> Result<Bytes, BodyError> {
    let started = Instant::now();
    let deadline = started + limits.timeout;
    let mut body = body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received: u64 = 0;
    loop {
        let tick = (Instant::now() + TICK).min(deadline);
        match tokio::time::timeout_at(tick, body.frame()).await {
            Err(_) => {}
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    received += data.len() as u64;
                    if received > limits.max_bytes {
                        return Err(BodyError::TooLarge);
                    }
                    reservation
                        .grow(data.len() as u64)
                        .map_err(BodyError::OverBudget)?;
                    chunks.push(data);
                }
            }
        }
        if limits.declared == Some(received) && received > 0 {
            continue; // complete: the next frame is the end
        }
        let now = Instant::now();
        if now >= deadline || too_slow(received, now - started, limits.min_rate) {
            return Err(BodyError::TooSlow);
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => {
            let mut whole = BytesMut::with_capacity(received as usize);
            for chunk in chunks {
                whole.extend_from_slice(&chunk);
            }
            whole.freeze()
        }
    })
}

/// Whether `received` bytes after `elapsed` is below the minimum average rate.
fn too_slow(received: u64, elapsed: Duration, min_rate: u64) -> bool {
    elapsed > RATE_GRACE && (received as f64) < min_rate as f64 * elapsed.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_judged_only_after_the_grace() {
        let s = Duration::from_secs;
        let table = [
            (0, s(1), 1024, false),
            (0, s(3), 1024, true),
            (3 * 1024, s(3), 1024, false),
            (3 * 1024 - 1, s(3), 1024, true),
            (0, s(30), 0, false),
        ];
        for (received, elapsed, rate, slow) in table {
            assert_eq!(
                too_slow(received, elapsed, rate),
                slow,
                "{received} bytes in {elapsed:?} at {rate}/s"
            );
        }
    }
}
