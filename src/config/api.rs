//! Validation of `[api]`: where the management API listens and who may use it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Checker, Secret};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// A unix socket serving the API to local users its file permissions admit (0600).
    pub socket: Option<String>,
    /// The API on its own TCP address (tokens required), so `/hooks` can face the internet
    /// while the API does not.
    pub listen: Option<String>,
    /// Also serve `/api/v1` on `server.listen` (tokens required). Off by default.
    pub on_main_listener: Option<bool>,
    #[serde(default)]
    pub tokens: Vec<RawToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub name: String,
    pub token: String,
    pub scope: String,
}

/// What a token may do: `read` lists and shows; `admin` also replays, cancels and pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Admin,
}

#[derive(Debug, Clone)]
pub struct ApiToken {
    pub name: String,
    pub secret: Secret,
    pub scope: Scope,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `None` when disabled with `socket = ""`.
    pub socket: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub on_main_listener: bool,
    pub tokens: Vec<ApiToken>,
}

/// The socket path when none is configured: next to the store file.
pub fn default_socket(store_url: &str) -> PathBuf {
    let store = Path::new(store_url.strip_prefix("sqlite://").unwrap_or(""));
    match store.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.join("hookrelay.sock"),
        None => PathBuf::from("hookrelay.sock"),
    }
}

/// The socket a server with this raw config listens on (also what CLI commands connect to).
pub fn socket_path(raw: Option<&str>, store_url: &str) -> Option<PathBuf> {
    match raw {
        Some("") => None,
        Some(path) => Some(PathBuf::from(path)),
        None => Some(default_socket(store_url)),
    }
}

pub(super) fn validate_api(c: &mut Checker, raw: &RawApi, store_url: &str) -> ApiConfig {
    let listen = raw.listen.as_deref().and_then(|text| {
        c.check(
            "api.listen",
            text.parse::<SocketAddr>()
                .map_err(|err| format!("expected an address like 127.0.0.1:8081: {err}")),
        )
    });
    let mut tokens = Vec::new();
    for (index, token) in raw.tokens.iter().enumerate() {
        let location = format!("api.tokens[{index}]");
        let scope = match token.scope.as_str() {
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => {
                c.error(
                    format!("{location}.scope"),
                    "expected \"read\" or \"admin\"",
                );
                None
            }
        };
        let secret = c.check(format!("{location}.token"), Secret::resolve(&token.token));
        if let Some(secret) = &secret
            && secret.expose().len() < 16
        {
            c.error(
                format!("{location}.token"),
                "is shorter than 16 characters: API tokens guard replay and cancel; use a long random value",
            );
        }
        if tokens.iter().any(|t: &ApiToken| t.name == token.name) {
            c.error(format!("{location}.name"), "is used by another token");
        }
        if let (Some(scope), Some(secret)) = (scope, secret) {
            tokens.push(ApiToken {
                name: token.name.clone(),
                secret,
                scope,
            });
        }
    }
    let on_main_listener = raw.on_main_listener.unwrap_or(false);
    if (listen.is_some() || on_main_listener) && raw.tokens.is_empty() {
        c.error(
            "api.tokens",
            "the API is served over TCP (api.listen or api.on_main_listener) but no token is configured: nobody could use it",
        );
    }
    ApiConfig {
        socket: socket_path(raw.socket.as_deref(), store_url),
        listen,
        on_main_listener,
        tokens,
    }
}
