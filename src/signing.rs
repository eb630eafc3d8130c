//! Signature arithmetic shared by inbound verification and outbound signing: HMACs, lenient
//! digest decoding, constant-time comparison against every key, Standard Webhooks keys and
//! signatures (v1 HMAC, v1a Ed25519). Knows nothing of requests or rejections.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;

use crate::domain::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl std::str::FromStr for Algorithm {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.to_ascii_lowercase().as_str() {
            "sha1" => Ok(Self::Sha1),
            "sha256" => Ok(Self::Sha256),
            "sha512" => Ok(Self::Sha512),
            other => Err(format!(
                "unknown algorithm {other:?}; use sha1, sha256 or sha512"
            )),
        }
    }
}

/// HMAC of the concatenation of `parts` (so `id.timestamp.body` needs no copy of the body).
pub fn hmac(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }
    match algorithm {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
    }
}

/// True when `presented` equals the HMAC under any key; every key is always tried.
pub fn matches_any_hmac(
    algorithm: Algorithm,
    keys: &[Secret],
    parts: &[&[u8]],
    presented: &[u8],
) -> bool {
    keys.iter().fold(false, |found, key| {
        let expected = hmac(algorithm, key.expose(), parts);
        found | bool::from(expected.as_slice().ct_eq(presented))
    })
}

pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text.trim()).ok()
}

pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .ok()
}

/// A Standard Webhooks symmetric key: `whsec_<base64>` (the prefix is optional).
pub fn standard_secret(raw: &[u8]) -> Result<Secret, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "secret is not UTF-8".to_owned())?;
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    decode_base64(encoded)
        .filter(|key| !key.is_empty())
        .map(Secret::from_bytes)
        .ok_or_else(|| "expected whsec_ followed by base64".to_owned())
}

/// A Standard Webhooks v1a public key: `whpk_<base64 of 32 bytes>`.
pub fn standard_public_key(raw: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let encoded = raw.strip_prefix("whpk_").unwrap_or(raw);
    let bytes: [u8; 32] = decode_base64(encoded)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "expected whpk_ followed by the base64 of a 32-byte key".to_owned())?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|err| format!("invalid key: {err}"))
}

/// `|now - sent| <= tolerance` without overflow for any input.
pub fn within_tolerance(now: i64, sent: i64, tolerance_secs: i64) -> bool {
    now.abs_diff(sent) <= tolerance_secs.max(0) as u64
}

pub fn verify_ed25519(
    keys: &[ed25519_dalek::VerifyingKey],
    message: &[u8],
    signature: &[u8],
) -> bool {
    let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    keys.iter()
        .any(|key| key.verify_strict(message, &signature).is_ok())
}

/// Standard Webhooks v1 signature header value for a key (used by `send` and forwarding).
pub fn standard_v1_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let digest = hmac(
        Algorithm::Sha256,
        key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}
