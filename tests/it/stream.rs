//! The live stream from outside: `/api/v1/stream` tells a new event, then its delivery's
//! outcome, with the listings' filters and tokens; `hookrelay tail` follows it.

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use crate::api::{READ_TOKEN, api_section};
use crate::harness::*;

/// Reads the stream until `until` holds for the text read so far; the text.
async fn read_until(response: &mut reqwest::Response, until: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while !until(&text) {
            let chunk = response.chunk().await.unwrap().expect("the stream ended");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream did not tell it; it said:\n{text}"));
    text
}

#[tokio::test]
async fn the_stream_tells_new_events_and_then_their_deliveries_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.set_status(503);
    let listen = free_port();
    let text = config(
        dir.path(),
        &sink.url,
        "retry = { initial_delay = \"200ms\" }",
    ) + &api_section(listen);
    let relay = Relay::start(dir.path(), &text);
    let client = reqwest::Client::new();
    let base = format!("http://{listen}/api/v1/stream");
    let refused = client.get(&base).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let bad = client
        .get(format!("{base}?state=exploded"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let mut all = client
        .get(&base)
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), 200);
    assert_eq!(all.headers()["content-type"], "text/event-stream");
    let mut other_source = client
        .get(format!("{base}?source=elsewhere"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    let mut tail = Command::new(binary())
        .args(["tail", "--json"])
        .env("HOOKRELAY_CONFIG", dir.path().join("hookrelay.toml"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The stream starts from now: give the tail its first look before the push.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let accepted: serde_json::Value = post_push(&client, &relay, push_body(1), None)
        .await
        .json()
        .await
        .unwrap();
    let event_id = accepted["event_id"].as_str().unwrap().to_owned();
    let told = read_until(&mut all, |text| text.contains(&event_id)).await;
    assert!(told.contains("event: event"), "{told}");
    assert!(told.contains("\"state\":\"pending\""), "{told}");
    sink.set_status(200);
    let told = read_until(&mut all, |text| text.contains("\"state\":\"succeeded\"")).await;
    assert!(told.contains("event: delivery"), "{told}");
    assert!(
        told.contains(&format!("\"event_id\":\"{event_id}\"")),
        "{told}"
    );

    // A filter that matches nothing tells nothing (a keep-alive at most).
    let quiet =
        tokio::time::timeout(std::time::Duration::from_millis(1500), other_source.chunk()).await;
    if let Ok(chunk) = quiet {
        let chunk = chunk.unwrap().unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&chunk).contains("event:"),
            "{chunk:?}"
        );
    }

    let stdout = std::io::BufReader::new(tail.stdout.take().unwrap());
    let lines = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in stdout.lines() {
            let line = line.unwrap();
            let done = line.contains("\"succeeded\"");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let lines = tokio::time::timeout(std::time::Duration::from_secs(20), lines)
        .await
        .expect("tail printed no success")
        .unwrap();
    tail.kill().unwrap();
    let _ = tail.wait();
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["type"], "event");
    assert_eq!(first["id"], event_id.as_str());
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["type"], "delivery");
    assert_eq!(last["state"], "succeeded");
}
