//! `kind = "nats"` against the real local NATS server (JetStream on): the raw body and ids
//! arrive, an outage loses nothing, a kill -9 burst lands exactly once (Nats-Msg-Id).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::{self, stream::Stream};

use crate::broker_common::*;
use crate::harness::*;
use crate::proxy::Proxy;

const SERVER: &str = "127.0.0.1:4222";

/// A fresh stream capturing `<prefix>.>` on the local server, and that prefix.
async fn fresh_stream() -> Option<(Stream, String)> {
    let connected = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(SERVER)).await;
    let client = match connected {
        Ok(Ok(client)) => client,
        Ok(Err(err)) => return unreachable(&format!("NATS at {SERVER}"), err),
        Err(_) => return unreachable(&format!("NATS at {SERVER}"), "no answer in 5 s"),
    };
    let prefix = unique("hrit");
    let stream = jetstream::new(client)
        .create_stream(jetstream::stream::Config {
            name: prefix.to_uppercase(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .expect("JetStream on (nats-server -js)");
    Some((stream, prefix))
}

fn destination(server: &str, subject: &str) -> String {
    format!(
        "kind = \"nats\"\nurl = \"nats://{server}\"\nsubject = \"{subject}\"\nforward_headers = [\"x-trace\"]"
    )
}

async fn stored_count(stream: &Stream) -> u64 {
    stream.get_info().await.unwrap().state.messages
}

/// Every message in the stream, by sequence.
async fn all_messages(stream: &Stream) -> Vec<jetstream::message::StreamMessage> {
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        out.push(stream.get_raw_message(seq).await.unwrap());
    }
    out
}

fn header<'a>(message: &'a jetstream::message::StreamMessage, name: &str) -> Option<&'a str> {
    message.headers.get(name).map(|v| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_body_arrives_with_ids_as_headers_and_a_replay_is_a_duplicate_ack() {
    let Some((stream, prefix)) = fresh_stream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let subject = format!("{prefix}.{{source}}.{{project}}");
    let relay = Relay::start(
        dir.path(),
        &broker_config(dir.path(), &destination(SERVER, &subject)),
    );

    let body = b"\xff\x00not utf-8\r\n{}";
    let event = post_raw(
        &relay,
        body,
        &[
            ("content-type", "application/octet-stream"),
            ("x-trace", "t-1"),
        ],
    )
    .await;
    let id = delivery_of(&relay, &event);
    let shown = shown_when(&relay, &id, "delivered", |out| {
        out.contains("\"succeeded\"")
    })
    .await;
    assert!(shown.contains("stored: stream"), "{shown}");

    let message = stream.get_raw_message(1).await.unwrap();
    assert_eq!(message.payload.as_ref(), body);
    assert_eq!(message.subject.as_str(), format!("{prefix}.raw._"));
    assert_eq!(header(&message, "Nats-Msg-Id"), Some(id.as_str()));
    assert_eq!(header(&message, "webhook-id"), Some(id.as_str()));
    assert_eq!(
        header(&message, "x-hookrelay-event-id"),
        Some(event.as_str())
    );
    assert_eq!(header(&message, "x-hookrelay-source"), Some("raw"));
    assert_eq!(
        header(&message, "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(header(&message, "x-trace"), Some("t-1"));

    // A project with a dot and a slash stays one subject token.
    let client = reqwest::Client::new();
    let push = push_body(1).replace("group/app", "group/app.v2 x");
    assert_eq!(post_push(&client, &relay, push, None).await.status(), 202);
    let pushed = eventually("the push in the stream", || async {
        stream.get_raw_message(2).await.ok()
    })
    .await;
    assert_eq!(
        pushed.subject.as_str(),
        format!("{prefix}.gitlab.group/app_v2_x")
    );

    // The same delivery again is the same Nats-Msg-Id: stored once, and still delivered.
    assert!(relay.cli(&["replay", &id]).status.success());
    let shown = shown_when(&relay, &id, "a second delivered attempt", |out| {
        out.contains("duplicate, seq 1")
    })
    .await;
    assert!(shown.contains("already stored"), "{shown}");
    assert_eq!(stored_count(&stream).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_no_stream_captures_is_a_dead_letter_saying_so() {
    let Some((_stream, prefix)) = fresh_stream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let subject = format!("{prefix}-nowhere.{{source}}");
    let relay = Relay::start(
        dir.path(),
        &broker_config(dir.path(), &destination(SERVER, &subject)),
    );
    let event = post_raw(&relay, b"{}", &[]).await;
    let id = delivery_of(&relay, &event);
    let shown = shown_when(&relay, &id, "dead", |out| out.contains("\"dead\"")).await;
    // Dead at the first answer: no retry can make a stream appear.
    assert!(shown.contains("permanent failure"), "{shown}");
    assert!(
        shown.contains(&format!("no stream captures subject {prefix}-nowhere.raw")),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_wait_out_a_server_outage_and_arrive_once() {
    let Some((stream, prefix)) = fresh_stream().await else {
        return;
    };
    let proxy = Proxy::start(SERVER.parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = broker_config(
        dir.path(),
        &destination(&proxy.addr.to_string(), &format!("{prefix}.{{source}}")),
    );
    let relay = Relay::start(dir.path(), &config);
    let client = reqwest::Client::new();
    accept_pushes(&client, &relay, 0..1).await;
    eventually("the first push stored", || async {
        (stored_count(&stream).await == 1).then_some(())
    })
    .await;

    proxy.down();
    accept_pushes(&client, &relay, 1..6).await;
    wait_for_cli(
        &relay,
        &["deliveries", "list", "--json"],
        "failed attempts while NATS is away",
        |out| out.contains("\"last_verdict\":\"retryable\""),
    )
    .await;
    assert_eq!(
        stored_count(&stream).await,
        1,
        "stored while the way to it was cut"
    );

    proxy.up();
    wait_for_state(&relay, "succeeded", 6).await;
    let seen: Vec<usize> = all_messages(&stream)
        .await
        .iter()
        .map(|m| n_of(&m.payload))
        .collect();
    let distinct: BTreeSet<usize> = seen.iter().copied().collect();
    assert_eq!(distinct, (0..6).collect(), "{seen:?}");
    assert_eq!(seen.len(), 6, "duplicates: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_push_is_stored_exactly_once_after_kill_9() {
    let Some((stream, prefix)) = fresh_stream().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = broker_config(
        dir.path(),
        &format!(
            "{}\nconcurrency = 32",
            destination(SERVER, &format!("{prefix}.{{source}}"))
        ),
    );
    let mut relay = Relay::child(dir.path(), &config);
    let acknowledged = burst_cut_by_kill(&mut relay).await;

    let _relay = Relay::child(dir.path(), &config);
    let per_push: BTreeMap<usize, usize> =
        eventually("every acknowledged push in the stream", || {
            let (stream, acknowledged) = (&stream, &acknowledged);
            async move {
                let mut per_push = BTreeMap::new();
                for message in all_messages(stream).await {
                    *per_push.entry(n_of(&message.payload)).or_default() += 1;
                }
                let seen: BTreeSet<usize> = per_push.keys().copied().collect();
                acknowledged.is_subset(&seen).then_some(per_push)
            }
        })
        .await;
    let duplicated: Vec<_> = per_push.iter().filter(|(_, c)| **c > 1).collect();
    println!(
        "nats kill test: {} acknowledged of {BURST}, {} stored",
        acknowledged.len(),
        per_push.len()
    );
    assert!(duplicated.is_empty(), "stored twice: {duplicated:?}");
}

#[test]
fn settings_are_checked_and_no_password_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let url = "url = \"nats://app:hunter2@127.0.0.1\"";
    for (destination, expected) in [
        (
            "kind = \"nats\"\nurl = \"http://app:hunter2@host\"\nsubject = \"a\"".to_owned(),
            "destinations.broker.url: scheme \"http\" is not nats or tls",
        ),
        (
            "kind = \"nats\"\nurl = \"nats://app:hunter2@\"\nsubject = \"a\"".to_owned(),
            "destinations.broker.url: is not a URL",
        ),
        (
            format!("kind = \"nats\"\n{url}\nsubject = \"a.{{nope}}\""),
            "destinations.broker.subject: unknown field {nope}",
        ),
        (
            format!("kind = \"nats\"\n{url}\nsubject = \"a.>\""),
            "destinations.broker.subject: a subject to publish to has no wildcards",
        ),
        (
            format!("kind = \"nats\"\n{url}\nsubject = \"a..{{project}}\""),
            "destinations.broker.subject: a subject has no empty tokens",
        ),
        (
            format!("kind = \"nats\"\n{url}"),
            "destinations.broker.subject: a nats destination needs a subject",
        ),
        (
            format!("kind = \"nats\"\n{url}\nsubject = \"a\"\nstream = \"A.B\""),
            "destinations.broker.stream: a stream name has no",
        ),
        (
            format!("kind = \"nats\"\n{url}\nsubject = \"a\"\ntoken = \"t\""),
            "credentials are in the url and in user/password/token",
        ),
        (
            format!("kind = \"nats\"\n{url}\nsubject = \"a\"\nqueue = \"q\""),
            "unknown field `queue`",
        ),
    ] {
        let output = config_check(dir.path(), &broker_config(dir.path(), &destination));
        assert!(output.contains(expected), "{destination}:\n{output}");
        assert!(!output.contains("hunter2"), "{destination}:\n{output}");
    }
}
