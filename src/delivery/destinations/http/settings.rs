//! `kind = "http"` settings: the URL (and the address policy's verdict on a literal one),
//! signing secret, forwarded headers, private networks, redirects.

use serde::Deserialize;

use crate::domain::Secret;
use crate::settings::Checker;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub url: Option<String>,
    pub secret: Option<String>,
    pub forward_headers: Option<Vec<String>>,
    /// Loopback, private and link-local addresses are refused unless this is true.
    pub allow_private_network: Option<bool>,
    /// 3xx answers are recorded as failures unless this is true.
    pub follow_redirects: Option<bool>,
    /// `"raw"` (default), `"slack"` or `"discord"`: a chat message instead of the body.
    pub format: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpTarget {
    pub url: reqwest::Url,
    /// Signs forwarded requests (`webhook-signature`) so the receiver can verify us.
    pub secret: Option<Secret>,
    /// Original headers copied onto forwarded requests; `None` means the provider's defaults.
    pub forward_headers: Option<Vec<String>>,
    /// Loopback, private and link-local addresses may be delivered to (metadata never).
    pub allow_private_network: bool,
    /// Follow 3xx answers (to allowed addresses) instead of recording them as failures.
    pub follow_redirects: bool,
    pub format: super::format::Format,
}

pub(in crate::delivery::destinations) fn validate(
    c: &mut Checker,
    location: &str,
    raw: &RawHttp,
) -> Option<HttpTarget> {
    let Some(text) = &raw.url else {
        c.error(format!("{location}.url"), "an http destination needs a url");
        return None;
    };
    let url = c.check(
        format!("{location}.url"),
        reqwest::Url::parse(text)
            // Never the URL itself: it may carry `user:password` or a token.
            .map_err(|err| format!("is not a URL: {err}"))
            .and_then(|url| match url.scheme() {
                "http" | "https" => Ok(url),
                other => Err(format!("scheme {other:?} is not http or https")),
            }),
    );
    let secret = match &raw.secret {
        Some(text) => Some(c.check(format!("{location}.secret"), Secret::resolve(text))?),
        None => None,
    };
    let forward_headers = crate::delivery::destinations::forward_headers(
        c,
        &format!("{location}.forward_headers"),
        &raw.forward_headers,
    );
    let allow_private_network = raw.allow_private_network.unwrap_or(false);
    let format = match &raw.format {
        Some(text) => c.check(
            format!("{location}.format"),
            super::format::Format::parse(text),
        ),
        None => Some(Default::default()),
    };
    if let Some(url) = &url
        && let Some(why) = super::literal_refusal(url, allow_private_network)
    {
        c.error(format!("{location}.url"), why);
    }
    Some(HttpTarget {
        url: url?,
        secret,
        forward_headers: forward_headers?,
        allow_private_network,
        follow_redirects: raw.follow_redirects.unwrap_or(false),
        format: format?,
    })
}
