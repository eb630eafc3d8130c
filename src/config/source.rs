//! Validation of `[sources.NAME]`: provider, secrets per provider, address lists, generic auth.

use std::time::Duration;

use super::raw::{RawGenericAuth, RawSource, parse_duration, parse_size};
use super::{Checker, DEFAULT_MAX_BODY, MAX_BODY_LIMIT, Secret, SourceConfig};
use crate::domain::{DEDUP_WINDOW_MS, Name};
use crate::ingest::ProviderKind;
use crate::ingest::generic::{Encoding, GenericAuth, HmacScheme};
use crate::signing::{standard_public_key, standard_secret};

pub(super) fn validate_source(
    c: &mut Checker,
    location: &str,
    name: &str,
    raw: &RawSource,
) -> Option<SourceConfig> {
    let name = c.check(
        location,
        Name::parse(name).and_then(|name| match name.as_str() == crate::notify::SOURCE {
            true => Err(format!(
                "\"{}\" is the built-in source of hookrelay's own notifications; choose another name",
                crate::notify::SOURCE
            )),
            false => Ok(name),
        }),
    );
    let provider = c.check(
        format!("{location}.provider"),
        raw.provider.parse::<ProviderKind>(),
    );
    let mut secrets = Vec::new();
    if let Some(secret) = &raw.secret {
        secrets.extend(c.check(format!("{location}.secret"), Secret::resolve(secret)));
    }
    for (i, secret) in raw.secrets.iter().enumerate() {
        secrets.extend(c.check(format!("{location}.secrets[{i}]"), Secret::resolve(secret)));
    }
    let mut signing_secrets = Vec::new();
    for (i, secret) in raw.signing_secrets.iter().enumerate() {
        let key = Secret::resolve(secret).and_then(|s| standard_secret(s.expose()));
        signing_secrets.extend(c.check(format!("{location}.signing_secrets[{i}]"), key));
    }
    let mut public_keys = Vec::new();
    for (i, key) in raw.public_keys.iter().enumerate() {
        public_keys.extend(c.check(
            format!("{location}.public_keys[{i}]"),
            standard_public_key(key),
        ));
    }
    // A `standard` source's `secrets` are Standard Webhooks keys too.
    if provider == Some(ProviderKind::Standard) {
        for (i, secret) in std::mem::take(&mut secrets).iter().enumerate() {
            let key = standard_secret(secret.expose());
            signing_secrets.extend(c.check(format!("{location}.secrets[{i}]"), key));
        }
    }
    // A signed request is accepted from `tolerance` before its timestamp to `tolerance` after
    // it, so a replay can come 2 x tolerance after the original: the dedup window must still
    // remember the original then.
    let max_tolerance = Duration::from_millis(DEDUP_WINDOW_MS as u64 / 2);
    let timestamp_tolerance = match &raw.timestamp_tolerance {
        Some(text) => c.check(
            format!("{location}.timestamp_tolerance"),
            parse_duration(text).and_then(|tolerance| {
                if tolerance < max_tolerance {
                    Ok(tolerance)
                } else {
                    Err(format!(
                        "must be below {} (half the {} dedup window), or a replayed signed request could outlive the memory of the original",
                        humantime::format_duration(max_tolerance),
                        humantime::format_duration(max_tolerance * 2)
                    ))
                }
            }),
        ),
        None => Some(Duration::from_secs(300)),
    };
    let rate_limit = match &raw.rate_limit {
        None => Some(None),
        Some(text) => c
            .check(format!("{location}.rate_limit"), super::Rate::parse(text))
            .map(Some),
    };
    let max_body_bytes = match &raw.max_body {
        Some(size) => c.check(
            format!("{location}.max_body"),
            parse_size(size).and_then(|bytes| match bytes {
                1..=MAX_BODY_LIMIT => Ok(bytes),
                _ => Err(format!(
                    "must be between 1 byte and {MAX_BODY_LIMIT} bytes (1 GiB)"
                )),
            }),
        ),
        None => Some(DEFAULT_MAX_BODY),
    };
    let allow_ips = raw
        .allow_ips
        .as_ref()
        .map(|list| networks(c, &format!("{location}.allow_ips"), list));
    if raw.allow_ips.as_ref().is_some_and(Vec::is_empty) {
        c.error(
            format!("{location}.allow_ips"),
            "an empty list admits nobody; remove the key to admit every address",
        );
    }
    let trusted_proxies = networks(
        c,
        &format!("{location}.trusted_proxies"),
        &raw.trusted_proxies,
    );
    let generic_auth = match (&raw.auth, provider) {
        (None, _) => GenericAuth::default(),
        (Some(auth), Some(ProviderKind::Generic)) => {
            generic_auth(c, &format!("{location}.auth"), auth)?
        }
        (Some(_), _) => {
            c.error(
                format!("{location}.auth"),
                "`auth` applies to provider \"generic\" only",
            );
            GenericAuth::default()
        }
    };
    if raw.auth.is_some() && secrets.is_empty() {
        c.error(
            format!("{location}.auth"),
            "needs `secret` or `secrets`: without one every request would pass",
        );
    }
    if matches!(generic_auth, GenericAuth::Query { .. }) {
        c.warn(
            format!("{location}.auth"),
            "a token in the query string ends up in access logs and proxies; prefer a header",
        );
    }
    // Credentials a provider would silently ignore leave the source open: refuse them.
    let takes_signing = matches!(
        provider,
        Some(ProviderKind::Gitlab | ProviderKind::Standard)
    );
    if !raw.signing_secrets.is_empty() && !takes_signing && provider.is_some() {
        c.error(
            format!("{location}.signing_secrets"),
            "only gitlab and standard sources check signing secrets; use `secret`",
        );
    }
    if !raw.public_keys.is_empty() && provider.is_some() && provider != Some(ProviderKind::Standard)
    {
        c.error(
            format!("{location}.public_keys"),
            "only standard sources check public keys",
        );
    }
    if raw.require_signature.is_some()
        && provider.is_some()
        && provider != Some(ProviderKind::Gitlab)
    {
        c.error(
            format!("{location}.require_signature"),
            "applies to gitlab sources (other providers always require their signature)",
        );
    }
    // A GitLab source whose only credential is a signing secret must not accept unsigned
    // requests by default, or it would accept anything.
    let signing_only = secrets.is_empty() && !signing_secrets.is_empty();
    let require_signature = raw.require_signature.unwrap_or(signing_only);
    if signing_only && !require_signature {
        c.warn(
            format!("{location}.require_signature"),
            "false with no token: unsigned requests are accepted without any credential",
        );
    }
    let require_token = raw.require_token.unwrap_or(false);
    if raw.require_token.is_some() && provider.is_some() && provider != Some(ProviderKind::Gitlab) {
        c.error(
            format!("{location}.require_token"),
            "applies to gitlab sources only",
        );
    } else if require_token && secrets.is_empty() {
        c.error(
            format!("{location}.require_token"),
            "requires `secret` (the X-Gitlab-Token value) to compare with",
        );
    }
    if require_signature && signing_secrets.is_empty() {
        c.error(
            format!("{location}.require_signature"),
            "requires signing_secrets (whsec_...) to verify with",
        );
    }
    if secrets.is_empty() && signing_secrets.is_empty() && public_keys.is_empty() {
        c.warn(
            location,
            "no secret: anyone who finds the URL can post events",
        );
    }
    Some(SourceConfig {
        name: name?,
        provider: provider?,
        credentials: crate::ingest::Credentials {
            secrets,
            signing_secrets,
            public_keys,
            require_signature,
            require_token,
            timestamp_tolerance: timestamp_tolerance?,
            generic_auth,
        },
        max_body_bytes: max_body_bytes?,
        rate_limit: rate_limit?,
        allow_ips,
        trusted_proxies,
    })
}

fn networks(c: &mut Checker, location: &str, list: &[String]) -> Vec<ipnet::IpNet> {
    list.iter()
        .enumerate()
        .filter_map(|(i, raw)| {
            // A bare address means just that address.
            let parsed = raw
                .parse::<ipnet::IpNet>()
                .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{raw:?} is not an address or CIDR like 192.0.2.0/24"));
            c.check(format!("{location}[{i}]"), parsed)
        })
        .collect()
}

fn generic_auth(c: &mut Checker, location: &str, raw: &RawGenericAuth) -> Option<GenericAuth> {
    Some(match raw {
        RawGenericAuth::Bearer => GenericAuth::Bearer,
        RawGenericAuth::Token { header } => GenericAuth::Token {
            header: c.check(format!("{location}.header"), header_name(header))?,
        },
        RawGenericAuth::Basic { username } => GenericAuth::Basic {
            username: username.clone(),
        },
        RawGenericAuth::Query { param } => GenericAuth::Query {
            param: param.clone(),
        },
        RawGenericAuth::Hmac {
            header,
            algorithm,
            encoding,
            prefix,
            timestamp_header,
        } => {
            let header = c.check(format!("{location}.header"), header_name(header));
            let algorithm = c.check(
                format!("{location}.algorithm"),
                algorithm.as_deref().unwrap_or("sha256").parse(),
            );
            let encoding = c.check(
                format!("{location}.encoding"),
                match encoding.as_deref().unwrap_or("hex") {
                    "hex" => Ok(Encoding::Hex),
                    "base64" => Ok(Encoding::Base64),
                    other => Err(format!("unknown encoding {other:?}; use hex or base64")),
                },
            );
            let timestamp_header = match timestamp_header {
                Some(h) => Some(c.check(format!("{location}.timestamp_header"), header_name(h))?),
                None => None,
            };
            GenericAuth::Hmac(HmacScheme {
                header: header?,
                algorithm: algorithm?,
                encoding: encoding?,
                prefix: prefix.clone().unwrap_or_default(),
                timestamp_header,
            })
        }
    })
}

fn header_name(raw: &str) -> Result<String, String> {
    http::HeaderName::from_bytes(raw.as_bytes())
        .map(|name| name.as_str().to_owned())
        .map_err(|_| format!("{raw:?} is not a valid header name"))
}
