//! A client of the management API (`/api/v1`), over the local unix socket or HTTP(S):
//! what the CLI (and tests) use to talk to a running server, local or remote.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

/// Where the API is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The local server's socket (no token: its file permissions admit the caller).
    Socket(PathBuf),
    /// `http(s)://host:port`, with a bearer token.
    Url {
        base: reqwest::Url,
        token: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach hookrelay at {place}: {reason}")]
    Unreachable { place: String, reason: String },
    /// The API answered with an error body (`code`, `message`).
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from {place}: {reason}")]
    Protocol { place: String, reason: String },
}

pub struct Client {
    endpoint: Endpoint,
    http: reqwest::Client,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self { endpoint, http }
    }

    fn place(&self) -> String {
        match &self.endpoint {
            Endpoint::Socket(path) => path.display().to_string(),
            Endpoint::Url { base, .. } => base.as_str().trim_end_matches('/').to_owned(),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(http::Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        self.call(http::Method::POST, path, Some(body)).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let body = body.map(|b| Bytes::from(b.to_string()));
        let (status, bytes) = match &self.endpoint {
            Endpoint::Socket(socket) => self.over_socket(socket, method, path, body).await?,
            Endpoint::Url { base, token } => {
                let url = base.join(path).map_err(|err| self.protocol(err))?;
                let mut request = self.http.request(method, url);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                if let Some(body) = body {
                    request = request
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(body);
                }
                let response = request.send().await.map_err(|err| self.unreachable(err))?;
                let status = response.status().as_u16();
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|err| self.unreachable(err))?;
                (status, bytes)
            }
        };
        if !(200..300).contains(&status) {
            let parsed: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
            let field = |name: &str| {
                parsed
                    .as_ref()
                    .and_then(|v| v.get(name))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            return Err(ClientError::Api {
                status,
                code: field("code").unwrap_or_else(|| "unknown".into()),
                message: field("message")
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned()),
            });
        }
        serde_json::from_slice(&bytes).map_err(|err| self.protocol(err))
    }

    async fn over_socket(
        &self,
        socket: &PathBuf,
        method: http::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes), ClientError> {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|err| self.unreachable(err))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| self.unreachable(err))?;
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost");
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|err| self.protocol(err))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| self.unreachable(err))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|err| self.unreachable(err))?
            .to_bytes();
        Ok((status, bytes))
    }

    fn unreachable(&self, err: impl std::error::Error) -> ClientError {
        ClientError::Unreachable {
            place: self.place(),
            reason: root_cause(&err),
        }
    }

    fn protocol(&self, err: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol {
            place: self.place(),
            reason: err.to_string(),
        }
    }
}

/// The innermost cause ("Connection refused (os error 111)"), not the outer wrapper's
/// "error sending request for url ...".
fn root_cause(err: &dyn std::error::Error) -> String {
    let mut cause = err;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}
