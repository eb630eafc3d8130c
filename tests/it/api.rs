//! The management API from outside: tokens and scopes, filters and paging while events
//! arrive, masked credentials, bulk replay, pause and resume, counts by source, OpenAPI.

use serde_json::{Value, json};

use crate::harness::*;

pub const READ_TOKEN: &str = "read-token-0123456789";
pub const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// `[api]` on its own TCP address with a read and an admin token.
pub fn api_section(listen: std::net::SocketAddr) -> String {
    format!(
        r#"
[api]
listen = "{listen}"
tokens = [
  {{ name = "viewer", token = "{READ_TOKEN}", scope = "read" }},
  {{ name = "ops", token = "{ADMIN_TOKEN}", scope = "admin" }},
]
"#
    )
}

pub struct Api {
    pub base: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(listen: std::net::SocketAddr) -> Api {
        Api {
            base: format!("http://{listen}"),
            client: reqwest::Client::new(),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, Some(READ_TOKEN), None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(ADMIN_TOKEN), Some(body)).await
    }
}

/// A relay with the API on its own address, and a sink behind it.
/// A relay with its API on its own address, started by `start` (in-process or a child).
async fn relay_with_api(
    start: fn(&std::path::Path, &str) -> Relay,
) -> (tempfile::TempDir, Sink, Relay, Api) {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let listen = free_port();
    let text = config(dir.path(), &sink.url, "") + &api_section(listen);
    let relay = start(dir.path(), &text);
    (dir, sink, relay, Api::new(listen))
}

#[tokio::test]
async fn tokens_decide_who_reads_and_who_writes_and_every_route_is_documented() {
    // A child: its log is checked for tokens.
    let (dir, _sink, relay, api) = relay_with_api(Relay::child).await;
    let unknown = "/api/v1/deliveries/dlv_0000000000000000000000000000000f/replay";
    for (method, path, token, expected) in [
        ("GET", "/api/v1/events", None, 401),
        ("GET", "/api/v1/events", Some("wrong-token-0123456789"), 401),
        ("GET", "/api/v1/events", Some(READ_TOKEN), 200),
        ("GET", "/api/v1/destinations", Some(READ_TOKEN), 200),
        ("GET", "/api/v1/jobs", Some(READ_TOKEN), 200),
        ("POST", unknown, Some(READ_TOKEN), 403),
        (
            "POST",
            "/api/v1/destinations/sink/pause",
            Some(READ_TOKEN),
            403,
        ),
        ("POST", unknown, Some(ADMIN_TOKEN), 404),
        ("POST", unknown, None, 401),
        (
            "GET",
            "/api/v1/events?state=exploded",
            Some(READ_TOKEN),
            400,
        ),
        (
            "GET",
            "/api/v1/events?since=yesterday",
            Some(READ_TOKEN),
            400,
        ),
        ("GET", "/api/v1/events?after=bogus", Some(READ_TOKEN), 400),
        ("GET", "/api/v1/events?contains=push", Some(READ_TOKEN), 200),
        (
            "GET",
            "/api/v1/deliveries?contains=push",
            Some(READ_TOKEN),
            400,
        ),
    ] {
        let body = (method == "POST").then(|| json!({}));
        let (status, answer) = api.call(method, path, token, body).await;
        assert_eq!(status, expected, "{method} {path} with {token:?}: {answer}");
        if status >= 400 {
            assert!(
                answer["code"].is_string() && answer["message"].is_string(),
                "{answer}"
            );
        }
    }
    // The token never shows up in the log.
    assert!(!relay.log().contains(ADMIN_TOKEN) && !relay.log().contains(READ_TOKEN));
    // The API is not on the internet-facing listener unless configured so.
    let main = reqwest::get(format!("{}/api/v1/events", relay.url))
        .await
        .unwrap();
    assert_eq!(main.status(), 404);

    let doc = reqwest::get(format!("{}/api/v1/openapi.json", api.base))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for route in [
        "/api/v1/events",
        "/api/v1/events/{id}",
        "/api/v1/deliveries",
        "/api/v1/deliveries/{id}",
        "/api/v1/deliveries/{id}/replay",
        "/api/v1/deliveries/{id}/cancel",
        "/api/v1/bulk/replay",
        "/api/v1/bulk/cancel",
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/destinations",
        "/api/v1/destinations/{name}/pause",
        "/api/v1/destinations/{name}/resume",
        "/api/v1/sources",
        "/api/v1/reload",
        "/api/v1/stream",
        "/api/v1/jobs/{id}/cancel",
    ] {
        assert!(
            paths.contains_key(route),
            "{route} is not in the OpenAPI document"
        );
    }
    assert_eq!(paths.len(), 17, "a route is documented but not listed here");
    std::fs::write(dir.path().join("openapi.json"), doc.to_string()).unwrap();
}

#[tokio::test]
async fn paging_while_events_arrive_never_skips_or_repeats_and_credentials_stay_masked() {
    let (_dir, _sink, relay, api) = relay_with_api(Relay::start).await;
    let client = reqwest::Client::new();
    accept_pushes(&client, &relay, 0..23).await;
    let mut seen = Vec::new();
    let mut path = "/api/v1/events?limit=5&ref=main&project=group/app".to_owned();
    loop {
        let page = api.get(&path).await;
        for event in page["items"].as_array().unwrap() {
            seen.push(event["id"].as_str().unwrap().to_owned());
        }
        // New events keep arriving between pages.
        post_push(&client, &relay, push_body(100 + seen.len()), None).await;
        match page["next"].as_str() {
            Some(next) => {
                path = format!("/api/v1/events?limit=5&ref=main&project=group/app&after={next}")
            }
            None => break,
        }
    }
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (23, 23), "skipped or repeated");

    let event = api.get(&format!("/api/v1/events/{}", seen[0])).await;
    let token = event["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "x-gitlab-token")
        .unwrap();
    assert_eq!(token["value"], "[redacted]");
    assert!(!event.to_string().contains(TOKEN));
    assert_eq!(event["body_json"]["object_kind"], "push");
    assert_eq!(
        (event["branch"].as_str(), event["project"].as_str()),
        (Some("main"), Some("group/app"))
    );
    let deliveries = api
        .get("/api/v1/deliveries?destination=sink&limit=1000")
        .await;
    assert!(deliveries["items"].as_array().unwrap().len() >= 23);
    let none = api.get("/api/v1/events?ref=develop").await;
    assert!(none["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_pause_holds_deliveries_through_a_restart_and_resume_keeps_fifo_order() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let listen = free_port();
    let text = config(dir.path(), &sink.url, "ordering = \"fifo\"") + &api_section(listen);
    let relay = Relay::start(dir.path(), &text);
    let paused = relay.cli(&["destinations", "pause", "sink"]);
    assert!(
        paused.status.success(),
        "{}",
        String::from_utf8_lossy(&paused.stderr)
    );
    let client = reqwest::Client::new();
    accept_pushes(&client, &relay, 0..3).await;
    // A restart: the pause is in the store, not in the process.
    drop(relay);
    let relay = Relay::start(dir.path(), &text);
    accept_pushes(&client, &relay, 3..6).await;
    let api = Api::new(listen);
    let destinations = api.get("/api/v1/destinations").await;
    assert_eq!(destinations[0]["state"], "paused", "{destinations}");
    assert_eq!(destinations[0]["pending"], 6);
    // A worker that ignored the pause would have delivered within its 1 s poll interval.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(sink.count(), 0, "delivered while paused");
    let resumed = relay.cli(&["destinations", "resume", "sink"]);
    assert!(resumed.status.success());
    sink.wait_for(6).await;
    sink.with_received(|received| {
        let order: Vec<String> = received
            .iter()
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["n"].to_string())
            .collect();
        assert_eq!(order, ["0", "1", "2", "3", "4", "5"]);
    });
}

#[tokio::test]
async fn sources_count_what_was_accepted_repeated_and_refused() {
    let (_dir, _sink, relay, api) = relay_with_api(Relay::start).await;
    let client = reqwest::Client::new();
    post_push(&client, &relay, push_body(1), Some("k1")).await;
    post_push(&client, &relay, push_body(1), Some("k1")).await;
    let forged = client
        .post(relay.hook_url("gitlab"))
        .header("x-gitlab-token", "wrong")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let sources = api.get("/api/v1/sources").await;
    assert_eq!(
        sources[0]["requests"],
        json!({ "accepted": 1, "duplicate": 1, "invalid_credentials": 1 })
    );
}
