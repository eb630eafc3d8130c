//! `kind = "nats"` settings: the server URL (credentials in it or as their own secrets), the
//! subject template, the stream expected to capture it, forwarded headers.

use serde::Deserialize;

use crate::delivery::destinations::message::{FIELDS, Template};
use crate::domain::Secret;
use crate::settings::Checker;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNats {
    /// `nats://[user:password@|token@]host[:port]` or `tls://...`; `env:NAME`/`file:PATH` too.
    pub url: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// `gitlab.{project}.{event_type}`: field values are cleaned of `.`, `*`, `>` and spaces.
    pub subject: Option<String>,
    /// When set, the server refuses a publish that this stream does not capture.
    pub stream: Option<String>,
    pub forward_headers: Option<Vec<String>>,
}

/// How hookrelay proves who it is to the server.
#[derive(Debug, Clone, PartialEq)]
pub enum NatsAuth {
    UserPassword { user: String, password: Secret },
    Token(Secret),
}

#[derive(Debug, Clone, PartialEq)]
pub struct NatsTarget {
    /// `nats://host:port` without credentials: safe to print.
    pub server: String,
    pub auth: Option<NatsAuth>,
    pub subject: Template,
    pub stream: Option<String>,
    /// Original headers sent as message headers; `None` means the provider's defaults.
    pub forward_headers: Option<Vec<String>>,
}

/// Characters a field's value may not bring into a subject: token separators, wildcards and
/// whitespace (control characters are replaced too).
pub fn subject_char_refused(c: char) -> bool {
    matches!(c, '.' | '*' | '>') || c.is_whitespace()
}

/// Why a subject template can never give a subject a message can be published to.
fn subject_problem(text: &str) -> Option<String> {
    let mut sample = text.to_owned();
    for field in FIELDS {
        sample = sample.replace(&format!("{{{field}}}"), "x");
    }
    if sample.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("a subject has no spaces or control characters".to_owned());
    }
    for token in sample.split('.') {
        if token.is_empty() {
            return Some("a subject has no empty tokens (leading, trailing or `..`)".to_owned());
        }
        if token.contains('*') || token.contains('>') {
            return Some("a subject to publish to has no wildcards (* or >)".to_owned());
        }
    }
    None
}

/// The server's address without credentials, and the credentials the URL carries.
fn split_url(text: &str) -> Result<(String, Option<NatsAuth>), String> {
    // Never the URL itself in a message: it may carry a password or token.
    let url = reqwest::Url::parse(text).map_err(|err| format!("is not a URL: {err}"))?;
    if !matches!(url.scheme(), "nats" | "tls") {
        return Err(format!("scheme {:?} is not nats or tls", url.scheme()));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("has no host")?;
    let server = format!("{}://{host}:{}", url.scheme(), url.port().unwrap_or(4222));
    let decode = |part: &str| {
        percent_decode(part).ok_or_else(|| "has credentials that are not UTF-8".to_owned())
    };
    let auth = match (url.username(), url.password()) {
        ("", None) => None,
        (user, Some(password)) => Some(NatsAuth::UserPassword {
            user: decode(user)?,
            password: Secret::from_bytes(decode(password)?),
        }),
        (token, None) => Some(NatsAuth::Token(Secret::from_bytes(decode(token)?))),
    };
    Ok((server, auth))
}

fn percent_decode(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = part
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(in crate::delivery::destinations) fn validate(
    c: &mut Checker,
    location: &str,
    raw: &RawNats,
) -> Option<NatsTarget> {
    let url = match &raw.url {
        Some(text) => c.check(
            format!("{location}.url"),
            Secret::resolve(text).and_then(|secret| {
                let text =
                    std::str::from_utf8(secret.expose()).map_err(|_| "is not UTF-8".to_owned())?;
                split_url(text)
            }),
        ),
        None => {
            c.error(format!("{location}.url"), "a nats destination needs a url");
            None
        }
    };
    let secret = |c: &mut Checker, key: &str, value: &Option<String>| match value {
        Some(text) => c.check(format!("{location}.{key}"), Secret::resolve(text)),
        None => None,
    };
    let password = secret(c, "password", &raw.password);
    let token = secret(c, "token", &raw.token);
    let given = match (&raw.user, password, token) {
        (None, None, None) => None,
        (Some(user), Some(password), None) => Some(NatsAuth::UserPassword {
            user: user.clone(),
            password,
        }),
        (None, None, Some(token)) => Some(NatsAuth::Token(token)),
        _ => {
            c.error(
                location.to_owned(),
                "give either user and password, or token (not both, not one of user/password)",
            );
            None
        }
    };
    let subject = match &raw.subject {
        Some(text) => c.check(
            format!("{location}.subject"),
            Template::parse(text).and_then(|template| match subject_problem(text) {
                Some(problem) => Err(problem),
                None => Ok(template),
            }),
        ),
        None => {
            c.error(
                format!("{location}.subject"),
                "a nats destination needs a subject, e.g. \"gitlab.{project}.{event_type}\"",
            );
            None
        }
    };
    if let Some(stream) = &raw.stream
        && (stream.is_empty()
            || stream
                .chars()
                .any(|ch| subject_char_refused(ch) || ch.is_control() || "/\\".contains(ch)))
    {
        c.error(
            format!("{location}.stream"),
            "a stream name has no spaces, `.`, `*`, `>`, `/` or `\\`",
        );
    }
    let forward_headers = crate::delivery::destinations::forward_headers(
        c,
        &format!("{location}.forward_headers"),
        &raw.forward_headers,
    );
    let (server, in_url) = url?;
    if in_url.is_some() && given.is_some() {
        c.error(
            location.to_owned(),
            "credentials are in the url and in user/password/token: keep one",
        );
    }
    Some(NatsTarget {
        server,
        auth: given.or(in_url),
        subject: subject?,
        stream: raw.stream.clone(),
        forward_headers: forward_headers?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_to_auth() {
        let (server, auth) = split_url("nats://app:p%40ss@127.0.0.1").unwrap();
        assert_eq!(server, "nats://127.0.0.1:4222");
        assert_eq!(
            auth,
            Some(NatsAuth::UserPassword {
                user: "app".into(),
                password: Secret::from_bytes("p@ss")
            })
        );
        let (server, auth) = split_url("tls://s3cret@[::1]:4333").unwrap();
        assert_eq!(server, "tls://[::1]:4333");
        assert_eq!(auth, Some(NatsAuth::Token(Secret::from_bytes("s3cret"))));
        let refused = split_url("http://app:hunter2@host").unwrap_err();
        assert!(!refused.contains("hunter2"), "{refused}");
        assert!(split_url("not a url").is_err());
    }

    #[test]
    fn subjects_that_cannot_be_published_to_are_refused() {
        for (text, ok) in [
            ("gitlab.{project}.{event_type}", true),
            ("hooks", true),
            ("a..b", false),
            (".a", false),
            ("a.{project}.", false),
            ("a.*", false),
            ("a.>", false),
            ("a b", false),
        ] {
            assert_eq!(subject_problem(text).is_none(), ok, "{text}");
        }
    }
}
