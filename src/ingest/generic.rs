//! Any JSON poster: configurable HMAC, static token header, basic auth, bearer or query token.

use crate::ingest::Credentials;
use base64::Engine as _;
use serde_json::Value;

use super::{
    Classification, Inbound, Provider, Rejection, first_text, header_text, matches_any_secret,
    standard_dedup_key,
};
use crate::signing::{Algorithm, decode_base64, decode_hex, matches_any_hmac};

/// How a generic source authenticates; the secrets themselves are the source's `secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GenericAuth {
    /// `Authorization: Bearer <secret>` (the default when secrets are set).
    #[default]
    Bearer,
    Hmac(HmacScheme),
    /// A header whose whole value is the secret.
    Token {
        header: String,
    },
    /// HTTP basic auth; the secret is the password.
    Basic {
        username: String,
    },
    /// A query parameter (leaks into access logs: `config check` warns).
    Query {
        param: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacScheme {
    pub header: String,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    /// Text before the digest in the header, such as `sha256=`.
    pub prefix: String,
    /// When set, the signed text is `<timestamp header value>.<body>`.
    pub timestamp_header: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

pub struct Generic;

impl Provider for Generic {
    fn verify(&self, inbound: &Inbound<'_>, source: &Credentials) -> Result<(), Rejection> {
        let secrets = &source.secrets;
        if secrets.is_empty() {
            return Ok(());
        }
        let headers = inbound.headers;
        let presented_matches = |presented: &[u8]| {
            if matches_any_secret(presented, secrets) {
                Ok(())
            } else {
                Err(Rejection::Invalid("credentials do not match"))
            }
        };
        match &source.generic_auth {
            GenericAuth::Bearer => {
                let header = headers
                    .get("authorization")
                    .ok_or(Rejection::Missing("Authorization header is absent"))?;
                let token = super::auth_credentials(header.as_bytes(), "bearer")
                    .ok_or(Rejection::Invalid("Authorization is not a Bearer token"))?;
                presented_matches(token)
            }
            GenericAuth::Token { header } => {
                let value = headers
                    .get(header.as_str())
                    .ok_or(Rejection::Missing("token header is absent"))?;
                presented_matches(value.as_bytes())
            }
            GenericAuth::Basic { username } => {
                let header = header_text(headers, "authorization")
                    .ok_or(Rejection::Missing("Authorization header is absent"))?;
                let decoded = super::auth_credentials(header.as_bytes(), "basic")
                    .and_then(|b| {
                        base64::engine::general_purpose::STANDARD
                            .decode(b.trim_ascii())
                            .ok()
                    })
                    .ok_or(Rejection::Invalid("Authorization is not Basic credentials"))?;
                let (user, password) = decoded.split_at(
                    decoded
                        .iter()
                        .position(|&b| b == b':')
                        .unwrap_or(decoded.len()),
                );
                let password = password.strip_prefix(b":").unwrap_or(b"");
                // Both checks always run, so timing does not tell which one failed.
                let user_ok = matches_any_secret(
                    user,
                    &[crate::domain::Secret::from_bytes(username.as_bytes())],
                );
                let password_ok = matches_any_secret(password, secrets);
                if user_ok & password_ok {
                    Ok(())
                } else {
                    Err(Rejection::Invalid("credentials do not match"))
                }
            }
            GenericAuth::Query { param } => {
                let token = inbound
                    .query
                    .and_then(|q| {
                        form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == param.as_str())
                    })
                    .map(|(_, v)| v.into_owned())
                    .ok_or(Rejection::Missing("token query parameter is absent"))?;
                presented_matches(token.as_bytes())
            }
            GenericAuth::Hmac(scheme) => verify_hmac(inbound, scheme, source),
        }
    }

    fn verify_headers(
        &self,
        inbound: &Inbound<'_>,
        source: &Credentials,
    ) -> Result<bool, Rejection> {
        match source.generic_auth {
            // An HMAC covers the body: it can only be checked once the body is here.
            GenericAuth::Hmac(_) => Ok(false),
            _ => self
                .verify(inbound, source)
                .map(|()| !source.secrets.is_empty()),
        }
    }

    fn classify(&self, inbound: &Inbound<'_>, payload: Option<&Value>) -> Classification {
        let mut facts = Classification {
            event_type: header_text(inbound.headers, "x-event-type").map(str::to_owned),
            dedup_key: standard_dedup_key(inbound.headers),
            action: first_text(payload, &["/action"]),
            project: first_text(
                payload,
                &["/repository/full_name", "/project/path_with_namespace"],
            ),
            ..Classification::default()
        };
        facts.set_ref(first_text(payload, &["/ref"]));
        facts
    }

    fn forwarded_headers(&self) -> &'static [&'static str] {
        &["x-event-type", "idempotency-key", "user-agent"]
    }
}

fn verify_hmac(
    inbound: &Inbound<'_>,
    scheme: &HmacScheme,
    source: &Credentials,
) -> Result<(), Rejection> {
    let secrets = &source.secrets;
    let value = header_text(inbound.headers, &scheme.header)
        .ok_or(Rejection::Missing("signature header is absent"))?;
    let encoded = value
        .strip_prefix(scheme.prefix.as_str())
        .ok_or(Rejection::Invalid("signature header is malformed"))?;
    let digest = match scheme.encoding {
        Encoding::Hex => decode_hex(encoded),
        Encoding::Base64 => decode_base64(encoded),
    }
    .ok_or(Rejection::Invalid("signature header is malformed"))?;
    let matches = match &scheme.timestamp_header {
        None => matches_any_hmac(scheme.algorithm, secrets, &[inbound.body], &digest),
        Some(header) => {
            let timestamp = header_text(inbound.headers, header)
                .ok_or(Rejection::Missing("timestamp header is absent"))?;
            let sent: i64 = timestamp
                .parse()
                .map_err(|_| Rejection::Invalid("timestamp is not a number"))?;
            let tolerance = source.timestamp_tolerance.as_secs() as i64;
            if !crate::signing::within_tolerance(inbound.now_secs, sent, tolerance) {
                return Err(Rejection::Invalid("timestamp is outside the tolerance"));
            }
            let parts: [&[u8]; 3] = [timestamp.as_bytes(), b".", inbound.body];
            matches_any_hmac(scheme.algorithm, secrets, &parts, &digest)
        }
    };
    if matches {
        Ok(())
    } else {
        Err(Rejection::Invalid("signature does not match"))
    }
}
