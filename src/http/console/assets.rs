//! The console's stylesheet and script, embedded in the binary and served under a path that
//! carries their digest, so a browser may keep them forever and still never runs a stale one.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const FILES: [(&str, &str, &str); 2] = [
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../../assets/console/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../assets/console/app.js"),
    ),
];

fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let mut hash = Sha256::new();
        for (_, _, text) in FILES {
            hash.update(text.as_bytes());
        }
        hex::encode(&hash.finalize()[..6])
    })
}

/// Where a page links `file` from.
pub fn path(file: &str) -> String {
    format!("/ui/static/{}/{file}", version())
}

pub async fn serve(Path((asked, file)): Path<(String, String)>) -> Response {
    let Some((_, content_type, text)) = FILES.iter().find(|(name, _, _)| *name == file) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    let cache = if asked == version() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = (*text).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}
