//! Ingest seen from outside: tokens, dedup, limits, unknown sources, bytes relayed untouched.

use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn a_push_event_reaches_the_sink_byte_identical_with_its_headers() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = Relay::start(dir.path(), &config(dir.path(), &sink.url, ""));
    let body = "{ \"object_kind\": \"push\",\n  \"ref\": \"refs/heads/main\" ,\"unicode\": \"h\u{e9}\" }  \n";
    let client = reqwest::Client::new();
    let response = client
        .post(relay.hook_url("gitlab"))
        .header("content-type", "application/json")
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", TOKEN)
        .header("x-gitlab-instance", "https://gitlab.example.com")
        .header(
            "x-gitlab-event-uuid",
            "e0b2c3a4-0000-4000-8000-000000000001",
        )
        .header("idempotency-key", "push-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["deliveries"], 1);
    assert_eq!(answer["duplicate"], false);
    let event_id = answer["event_id"].as_str().unwrap().to_owned();

    sink.wait_for(1).await;
    sink.with_received(|received| {
        let got = &received[0];
        assert_eq!(got.body.as_ref(), body.as_bytes());
        let header = |name: &str| {
            got.headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        assert_eq!(header("x-gitlab-event").as_deref(), Some("Push Hook"));
        assert_eq!(
            header("x-gitlab-instance").as_deref(),
            Some("https://gitlab.example.com")
        );
        assert_eq!(header("idempotency-key").as_deref(), Some("push-1"));
        assert_eq!(header("x-hookrelay-event-id"), Some(event_id.clone()));
        assert!(header("webhook-id").unwrap().starts_with("dlv_"));
        assert!(header("webhook-timestamp").unwrap().parse::<i64>().is_ok());
        assert_eq!(
            header("x-gitlab-token"),
            None,
            "the sender's secret must not be forwarded"
        );
    });
}

#[tokio::test]
async fn repeats_wrong_tokens_huge_bodies_and_broken_json_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = Relay::start(dir.path(), &config(dir.path(), &sink.url, ""));
    let client = reqwest::Client::new();

    // The same Idempotency-Key twice: one event, one delivery, the original id both times.
    let first: Value = post_push(&client, &relay, push_body(1), Some("same"))
        .await
        .json()
        .await
        .unwrap();
    let repeat = post_push(&client, &relay, push_body(1), Some("same")).await;
    assert_eq!(repeat.status(), 200);
    let repeat: Value = repeat.json().await.unwrap();
    assert_eq!(repeat["duplicate"], true);
    assert_eq!(repeat["deliveries"], 0);
    assert_eq!(repeat["event_id"], first["event_id"]);

    // Wrong and missing tokens: 401, nothing stored.
    for token in [Some("wrong"), None] {
        let mut request = client
            .post(relay.hook_url("gitlab"))
            .header("x-gitlab-event", "Push Hook")
            .body(push_body(2));
        if let Some(token) = token {
            request = request.header("x-gitlab-token", token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let text = response.text().await.unwrap();
        assert!(!text.contains(TOKEN), "{text}");
    }

    // Over the 1 MiB limit: 413, declared or streamed without a length.
    // Declared too large: refused from the headers alone, before the body is sent.
    let declared = format!("content-length: {}\r\n", 2 * 1024 * 1024);
    assert_eq!(raw_post(&relay, &declared, &[]).await, 413);
    // Streamed without a length: refused once the limit is passed.
    let huge = vec![b'x'; (1024 + 128) * 1024];
    let mut chunked = Vec::new();
    for chunk in huge.chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        raw_post(&relay, "transfer-encoding: chunked\r\n", &chunked).await,
        413
    );
    let health = client
        .get(format!("{}/healthz", relay.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // Unknown source: 404.
    let response = client
        .post(relay.hook_url("nope"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // Malformed JSON is relayed as it came.
    let broken = "{\"object_kind\": \"push\", oops";
    let response = post_push(&client, &relay, broken.to_owned(), Some("broken")).await;
    assert_eq!(response.status(), 202);

    sink.wait_for(2).await;
    let requests = source_requests(&relay, "gitlab");
    sink.with_received(|received| {
        let bodies: Vec<&[u8]> = received.iter().map(|r| r.body.as_ref()).collect();
        assert!(bodies.contains(&broken.as_bytes()));
        assert!(bodies.contains(&push_body(1).as_bytes()));
    });
    assert_eq!(
        (
            &requests["invalid_credentials"],
            &requests["missing_credentials"]
        ),
        (&1.into(), &1.into()),
        "{requests}"
    );
    // Only the two accepted events were ever stored: the rejected ones left no delivery.
    let listed = relay.cli(&["deliveries", "list", "--json"]);
    let lines = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
    assert!(sink.count() == 2, "nothing else may be delivered");
}

/// Sends a request over a raw socket (so the test controls framing); returns the status.
async fn raw_post(relay: &Relay, extra_headers: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = relay.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /hooks/gitlab HTTP/1.1\r\nhost: {address}\r\nx-gitlab-token: {TOKEN}\r\n{extra_headers}\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The relay may stop reading once the limit is passed; the answer still comes.
    let _ = stream.write_all(body).await;
    let mut answer = vec![0; 1024];
    let read = stream.read(&mut answer).await.expect("reading the answer");
    let text = String::from_utf8_lossy(&answer[..read]).into_owned();
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[tokio::test]
async fn unrouted_events_are_stored_and_answered_2xx() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), "http://127.0.0.1:9/unused", "").replace(
        "destinations = [\"sink\"]",
        "events = [\"Tag Push Hook\"]\ndestinations = [\"sink\"]",
    );
    let relay = Relay::start(dir.path(), &text);
    let client = reqwest::Client::new();
    let response = post_push(&client, &relay, push_body(1), None).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["deliveries"], 0);
    let event_id = answer["event_id"].as_str().unwrap();
    // Stored: the event row is in the database, with its body, and no delivery.
    let conn = rusqlite::Connection::open(dir.path().join("hookrelay.db")).unwrap();
    let (body, deliveries): (Vec<u8>, i64) = conn
        .query_row(
            "SELECT body, (SELECT COUNT(*) FROM deliveries) FROM events WHERE id = ?1",
            [event_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("the unrouted event is not in the store");
    assert_eq!(body, push_body(1).into_bytes());
    assert_eq!(deliveries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bodies_past_the_memory_budget_gets_503_not_an_outage() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let text = config(dir.path(), &sink.url, "")
        .replace("max_body = \"1MiB\"", "max_body = \"48KiB\"")
        .replace(
            "shutdown_grace = \"5s\"",
            "shutdown_grace = \"5s\"\nmax_inflight_body = \"64KiB\"",
        );
    let relay = Relay::child(dir.path(), &text);
    let client = reqwest::Client::new();
    let body = vec![b'x'; 40 * 1024];

    // A slow upload has sent 40 KiB of its 41 KiB: those bytes count against the budget.
    let address = relay.url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /hooks/gitlab HTTP/1.1\r\nhost: {address}\r\nx-gitlab-token: {TOKEN}\r\ncontent-length: {}\r\n\r\n",
        body.len() + 1024
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body).await.unwrap();
    relay
        .wait_for_metric("hookrelay_ingest_body_budget_used_bytes 40960")
        .await;

    // Another 40 KiB does not fit: refused, with a hint to retry.
    let refused = post_push(
        &client,
        &relay,
        String::from_utf8(body.clone()).unwrap(),
        None,
    )
    .await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));

    // The slow upload completes normally, and then there is room again.
    slow.write_all(&[b' '; 1024]).await.unwrap();
    let mut answer = vec![0; 512];
    let read = slow.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..read]).starts_with("HTTP/1.1 202"));
    let accepted = post_push(&client, &relay, String::from_utf8(body).unwrap(), None).await;
    assert_eq!(accepted.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_for_a_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let text = config(dir.path(), &sink.url, "").replace(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\nmax_connections = 1",
    );
    let relay = Relay::start(dir.path(), &text);
    // One idle connection takes the only slot.
    let address = relay.url.trim_start_matches("http://").to_owned();
    let idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    let client = reqwest::Client::new();
    let url = relay.hook_url("gitlab");
    let mut waiting = tokio::spawn(async move {
        client
            .post(url)
            .header("x-gitlab-token", TOKEN)
            .body(push_body(1))
            .send()
            .await
            .map(|r| r.status())
    });
    // Proving that nothing happens needs a deadline; 300 ms is ample on loopback.
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut waiting).await;
    assert!(
        early.is_err(),
        "a second connection was served past max_connections = 1"
    );
    drop(idle);
    assert_eq!(waiting.await.unwrap().unwrap(), 202);
}
