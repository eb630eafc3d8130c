//! Signature checks of requests: a `<prefix><hex>` header, and Standard Webhooks (one valid
//! entry among several is enough), on top of the primitives in `signing`.

use subtle::ConstantTimeEq;

use super::{Rejection, header_text};
use crate::domain::Secret;
use crate::signing::{
    Algorithm, decode_base64, decode_hex, hmac, matches_any_hmac, verify_ed25519, within_tolerance,
};

/// Verifies a `<prefix><hex>` header (GitHub `sha256=`, Bitbucket, Gitea with no prefix).
pub fn verify_hex_header(
    headers: &http::HeaderMap,
    header: &'static str,
    prefix: &str,
    algorithm: Algorithm,
    keys: &[Secret],
    signed: &[&[u8]],
) -> Result<(), Rejection> {
    let value = header_text(headers, header).ok_or(Rejection::Missing(header))?;
    let digest = value
        .strip_prefix(prefix)
        .and_then(decode_hex)
        .ok_or(Rejection::Invalid("signature header is malformed"))?;
    if matches_any_hmac(algorithm, keys, signed, &digest) {
        Ok(())
    } else {
        Err(Rejection::Invalid("signature does not match"))
    }
}

/// What a Standard Webhooks check needs besides the request.
pub struct StandardKeys<'a> {
    pub secrets: &'a [Secret],
    pub public_keys: &'a [ed25519_dalek::VerifyingKey],
    pub tolerance_secs: i64,
    pub now_secs: i64,
}

/// Standard Webhooks: `webhook-signature` holds space-separated `v1,<base64 HMAC>` and/or
/// `v1a,<base64 Ed25519>` over `id.timestamp.body`; one valid entry is enough.
pub fn verify_standard(
    headers: &http::HeaderMap,
    body: &[u8],
    keys: &StandardKeys<'_>,
) -> Result<(), Rejection> {
    let id = header_text(headers, "webhook-id").ok_or(Rejection::Missing("webhook-id"))?;
    let timestamp =
        header_text(headers, "webhook-timestamp").ok_or(Rejection::Missing("webhook-timestamp"))?;
    let signatures =
        header_text(headers, "webhook-signature").ok_or(Rejection::Missing("webhook-signature"))?;
    let sent: i64 = timestamp
        .parse()
        .map_err(|_| Rejection::Invalid("webhook-timestamp is not a number"))?;
    if !within_tolerance(keys.now_secs, sent, keys.tolerance_secs) {
        return Err(Rejection::Invalid(
            "webhook-timestamp is outside the tolerance",
        ));
    }
    // Work per request is bounded whatever the header holds: each key's HMAC and the Ed25519
    // message are computed once; comparing a `v1` entry is cheap, so every one is looked at
    // (a valid one may follow many others), while at most a few costly `v1a` entries are.
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
    let mut expected_v1: Option<Vec<Vec<u8>>> = None;
    let mut message_v1a: Option<Vec<u8>> = None;
    let mut valid = false;
    let mut ed25519_checks = 0;
    let entries = signatures
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','));
    for (version, encoded) in entries {
        let Some(signature) = decode_base64(encoded) else {
            continue;
        };
        valid |= match version {
            "v1" if signature.len() == 32 && !keys.secrets.is_empty() => {
                let expected = expected_v1.get_or_insert_with(|| {
                    keys.secrets
                        .iter()
                        .map(|key| hmac(Algorithm::Sha256, key.expose(), &parts))
                        .collect()
                });
                expected.iter().fold(false, |found, mac| {
                    found | bool::from(mac.as_slice().ct_eq(&signature))
                })
            }
            "v1a"
                if signature.len() == 64
                    && !keys.public_keys.is_empty()
                    && ed25519_checks < MAX_ED25519_ENTRIES =>
            {
                ed25519_checks += 1;
                let message = message_v1a.get_or_insert_with(|| parts.concat());
                verify_ed25519(keys.public_keys, message, &signature)
            }
            _ => false,
        };
    }
    if valid {
        Ok(())
    } else {
        Err(Rejection::Invalid("webhook-signature does not match"))
    }
}

/// Ed25519 signatures checked per request (one per key during rotation); each costs far
/// more than an HMAC comparison.
const MAX_ED25519_ENTRIES: usize = 8;
