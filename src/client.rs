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
            return Err(refused(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|err| self.protocol(err))
    }

    /// Follows a server-sent-events route, calling `on_message(event, data)` for each message
    /// until the server ends the stream or `on_message` returns false.
    pub async fn follow(
        &self,
        path: &str,
        mut on_message: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), ClientError> {
        let mut body = self.open_stream(path).await?;
        let mut parser = SseParser::default();
        while let Some(chunk) = body
            .next_chunk()
            .await
            .map_err(|err| ClientError::Unreachable {
                place: self.place(),
                reason: root_cause(err.as_ref()),
            })?
        {
            for (event, data) in parser.push(&chunk) {
                if !on_message(&event, &data) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn open_stream(&self, path: &str) -> Result<StreamBody, ClientError> {
        match &self.endpoint {
            Endpoint::Url { base, token } => {
                let url = base.join(path).map_err(|err| self.protocol(err))?;
                // No overall timeout: the stream is meant to last.
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .connect_timeout(std::time::Duration::from_secs(10))
                    .build()
                    .unwrap_or_default();
                let mut request = http.get(url);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.map_err(|err| self.unreachable(err))?;
                let status = response.status().as_u16();
                if !(200..300).contains(&status) {
                    let bytes = response.bytes().await.unwrap_or_default();
                    return Err(refused(status, &bytes));
                }
                Ok(StreamBody::Http(response))
            }
            Endpoint::Socket(socket) => {
                let response = self
                    .socket_request(socket, http::Method::GET, path, None)
                    .await?;
                let status = response.status().as_u16();
                if !(200..300).contains(&status) {
                    let bytes = response
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    return Err(refused(status, &bytes));
                }
                Ok(StreamBody::Socket(response.into_body()))
            }
        }
    }

    async fn over_socket(
        &self,
        socket: &PathBuf,
        method: http::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes), ClientError> {
        let response = self.socket_request(socket, method, path, body).await?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|err| self.unreachable(err))?
            .to_bytes();
        Ok((status, bytes))
    }

    async fn socket_request(
        &self,
        socket: &PathBuf,
        method: http::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
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
        sender
            .send_request(request)
            .await
            .map_err(|err| self.unreachable(err))
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

/// The API's error answer (`code`, `message`), or its text when it is not one.
fn refused(status: u16, bytes: &[u8]) -> ClientError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    ClientError::Api {
        status,
        code: field("code").unwrap_or_else(|| "unknown".into()),
        message: field("message")
            .unwrap_or_else(|| String::from_utf8_lossy(bytes).trim().to_owned()),
    }
}

enum StreamBody {
    Http(reqwest::Response),
    Socket(hyper::body::Incoming),
}

impl StreamBody {
    async fn next_chunk(
        &mut self,
    ) -> Result<Option<Bytes>, Box<dyn std::error::Error + Send + Sync>> {
        match self {
            Self::Http(response) => Ok(response.chunk().await?),
            Self::Socket(body) => loop {
                match body.frame().await {
                    None => return Ok(None),
                    Some(frame) => {
                        if let Ok(data) = frame?.into_data() {
                            return Ok(Some(data));
                        }
                    }
                }
            },
        }
    }
}

/// Splits a server-sent-events byte stream into (event, data) messages.
#[derive(Default)]
struct SseParser {
    pending: Vec<u8>,
    event: String,
    data: Vec<String>,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8]) -> Vec<(String, String)> {
        self.pending.extend_from_slice(chunk);
        let mut messages = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    let event = std::mem::take(&mut self.event);
                    let event = if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    };
                    messages.push((event, self.data.join("\n")));
                    self.data.clear();
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event = value.to_owned(),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::SseParser;

    #[test]
    fn messages_are_split_however_the_bytes_arrive() {
        let text = b": keep-alive\n\nevent: event\nid: evt_1\ndata: {\"a\":1}\n\nevent: gap\ndata: {}\r\n\r\n";
        for cut in 0..text.len() {
            let mut parser = SseParser::default();
            let mut got = parser.push(&text[..cut]);
            got.extend(parser.push(&text[cut..]));
            assert_eq!(
                got,
                [
                    ("event".to_owned(), "{\"a\":1}".to_owned()),
                    ("gap".to_owned(), "{}".to_owned())
                ],
                "cut at {cut}"
            );
        }
    }
}
