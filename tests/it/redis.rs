//! `kind = "redis"` against the real local Redis: the raw body and ids arrive as fields, a
//! replay appends nothing new (the dedup script), `durable = "aof"` says why this server
//! cannot confirm, an outage loses nothing, a kill -9 burst lands exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ::redis::AsyncCommands;
use ::redis::aio::MultiplexedConnection;

use crate::broker_common::*;
use crate::harness::*;
use crate::proxy::Proxy;

const SERVER: &str = "127.0.0.1:6379";

/// An entry as XRANGE gives it: its id and its fields in order.
type Entry = (String, Vec<(String, Vec<u8>)>);

async fn connect() -> Option<MultiplexedConnection> {
    let client = ::redis::Client::open(format!("redis://{SERVER}")).unwrap();
    let connected = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await;
    match connected {
        Ok(Ok(connection)) => Some(connection),
        Ok(Err(err)) => unreachable(&format!("Redis at {SERVER}"), err),
        Err(_) => unreachable(&format!("Redis at {SERVER}"), "no answer in 5 s"),
    }
}

async fn entries(redis: &mut MultiplexedConnection, key: &str) -> Vec<Entry> {
    ::redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(redis)
        .await
        .unwrap()
}

fn field<'a>(entry: &'a Entry, name: &str) -> Option<&'a [u8]> {
    entry
        .1
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// A ten-minute dedup window: long enough for every test, and the keys beside the stream
/// (one per delivery) leave the shared Redis by themselves.
fn destination(server: &str, key: &str, extra: &str) -> String {
    format!(
        "kind = \"redis\"\nurl = \"redis://{server}\"\nstream = \"{key}\"\nforward_headers = [\"x-trace\"]\ndedup_window = \"10m\"\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_body_arrives_with_ids_as_fields_and_a_replay_appends_nothing() {
    let Some(mut redis) = connect().await else {
        return;
    };
    let prefix = unique("hrit:");
    let dir = tempfile::tempdir().unwrap();
    let key = format!("{prefix}:{{source}}");
    let relay = Relay::start(
        dir.path(),
        &broker_config(dir.path(), &destination(SERVER, &key, "maxlen = 100")),
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
    let stream = format!("{prefix}:raw");
    let stored = entries(&mut redis, &stream).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let entry = &stored[0];
    assert!(shown.contains(&format!("appended {}", entry.0)), "{shown}");
    assert_eq!(field(entry, "body"), Some(&body[..]));
    assert_eq!(field(entry, "webhook-id"), Some(id.as_bytes()));
    assert_eq!(field(entry, "x-hookrelay-event-id"), Some(event.as_bytes()));
    assert_eq!(field(entry, "x-hookrelay-source"), Some(&b"raw"[..]));
    assert_eq!(
        field(entry, "content-type"),
        Some(&b"application/octet-stream"[..])
    );
    assert_eq!(field(entry, "x-trace"), Some(&b"t-1"[..]));

    // The same delivery again finds its mark: no second entry, and still delivered.
    assert!(relay.cli(&["replay", &id]).status.success());
    let shown = shown_when(&relay, &id, "a second delivered attempt", |out| {
        out.contains("\"duplicate\"")
    })
    .await;
    assert!(
        shown.contains(&format!("already appended to {stream} as {}", entry.0)),
        "{shown}"
    );
    assert_eq!(entries(&mut redis, &stream).await.len(), 1);
    let _: () = redis.del(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_aof_on_a_server_that_cannot_confirm_is_a_dead_letter_saying_why() {
    let Some(mut redis) = connect().await else {
        return;
    };
    let stream = unique("hrit:aof:");
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(
        dir.path(),
        &broker_config(
            dir.path(),
            &destination(SERVER, &stream, "durable = \"aof\""),
        ),
    );
    let event = post_raw(&relay, b"{}", &[]).await;
    let id = delivery_of(&relay, &event);
    let shown = shown_when(&relay, &id, "dead", |out| out.contains("\"dead\"")).await;
    assert!(shown.contains("permanent failure"), "{shown}");
    let stored = entries(&mut redis, &stream).await;
    assert_eq!(stored.len(), 1, "appended, only not confirmed");
    assert!(
        shown.contains(&format!("appended to {stream} as {}", stored[0].0)),
        "{shown}"
    );
    // 7.0 does not know WAITAOF; 7.2 and later refuse it while the AOF is off.
    let info: String = ::redis::cmd("INFO")
        .arg("server")
        .query_async(&mut redis)
        .await
        .unwrap();
    if info.contains("redis_version:7.0.") {
        assert!(
            shown.contains("needs WAITAOF (Redis 7.2 or later)"),
            "{shown}"
        );
    } else {
        assert!(shown.contains("WAITAOF"), "{shown}");
    }
    let _: () = redis.del(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_wait_out_a_server_outage_and_arrive_once() {
    let Some(mut redis) = connect().await else {
        return;
    };
    let stream = unique("hrit:outage:");
    let proxy = Proxy::start(SERVER.parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = broker_config(
        dir.path(),
        &destination(&proxy.addr.to_string(), &stream, ""),
    );
    let relay = Relay::start(dir.path(), &config);
    let client = reqwest::Client::new();
    accept_pushes(&client, &relay, 0..1).await;
    wait_for_state(&relay, "succeeded", 1).await;

    proxy.down();
    accept_pushes(&client, &relay, 1..6).await;
    wait_for_cli(
        &relay,
        &["deliveries", "list", "--json"],
        "failed attempts while Redis is away",
        |out| out.contains("\"last_verdict\":\"retryable\""),
    )
    .await;
    assert_eq!(entries(&mut redis, &stream).await.len(), 1);

    proxy.up();
    wait_for_state(&relay, "succeeded", 6).await;
    let seen: Vec<usize> = entries(&mut redis, &stream)
        .await
        .iter()
        .map(|entry| n_of(field(entry, "body").unwrap()))
        .collect();
    assert_eq!(
        seen.iter().copied().collect::<BTreeSet<_>>(),
        (0..6).collect()
    );
    assert_eq!(seen.len(), 6, "duplicates: {seen:?}");
    let _: () = redis.del(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_push_is_appended_exactly_once_after_kill_9() {
    let Some(mut redis) = connect().await else {
        return;
    };
    let stream = unique("hrit:kill:");
    let dir = tempfile::tempdir().unwrap();
    let config = broker_config(
        dir.path(),
        &destination(SERVER, &stream, "concurrency = 32"),
    );
    let mut relay = Relay::child(dir.path(), &config);
    let acknowledged = burst_cut_by_kill(&mut relay).await;

    let _relay = Relay::child(dir.path(), &config);
    let per_push: BTreeMap<usize, usize> =
        eventually("every acknowledged push in the stream", || {
            let (mut redis, stream, acknowledged) = (redis.clone(), &stream, &acknowledged);
            async move {
                let redis = &mut redis;
                let mut per_push = BTreeMap::new();
                for entry in entries(redis, stream).await {
                    *per_push
                        .entry(n_of(field(&entry, "body").unwrap()))
                        .or_default() += 1;
                }
                let seen: BTreeSet<usize> = per_push.keys().copied().collect();
                acknowledged.is_subset(&seen).then_some(per_push)
            }
        })
        .await;
    let duplicated: Vec<_> = per_push.iter().filter(|(_, c)| **c > 1).collect();
    println!(
        "redis kill test: {} acknowledged of {BURST}, {} appended",
        acknowledged.len(),
        per_push.len()
    );
    assert!(duplicated.is_empty(), "appended twice: {duplicated:?}");
    let _: () = redis.del(&stream).await.unwrap();
}

#[test]
fn settings_are_checked_and_no_password_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let url = "url = \"redis://:hunter2@127.0.0.1\"";
    for (destination, expected) in [
        (
            "kind = \"redis\"\nurl = \"rediss://:hunter2@host\"\nstream = \"s\"".to_owned(),
            "destinations.broker.url: rediss (TLS) is not supported",
        ),
        (
            "kind = \"redis\"\nurl = \"hunter2\"\nstream = \"s\"".to_owned(),
            "destinations.broker.url: is not a URL",
        ),
        (
            format!("kind = \"redis\"\n{url}\nstream = \"s:{{nope}}\""),
            "destinations.broker.stream: unknown field {nope}",
        ),
        (
            format!("kind = \"redis\"\n{url}"),
            "destinations.broker.stream: a redis destination needs a stream key",
        ),
        (
            format!("kind = \"redis\"\n{url}\nstream = \"s\"\ndurable = \"always\""),
            "destinations.broker.durable: \"always\" is not \"none\" or \"aof\"",
        ),
        (
            format!("kind = \"redis\"\n{url}\nstream = \"s\"\ndedup_window = \"5ms\""),
            "destinations.broker.dedup_window: is under a second",
        ),
        (
            format!("kind = \"redis\"\n{url}\nstream = \"s\"\nmaxlen = 0"),
            "destinations.broker.maxlen: is 0",
        ),
        (
            format!("kind = \"redis\"\n{url}\nstream = \"s\"\nforward_headers = [\"body\"]"),
            "\"body\" is the field the body is sent in",
        ),
        (
            format!("kind = \"redis\"\n{url}\nstream = \"s\"\nkey = \"k\""),
            "unknown field `key`",
        ),
    ] {
        let output = config_check(dir.path(), &broker_config(dir.path(), &destination));
        assert!(output.contains(expected), "{destination}:\n{output}");
        assert!(!output.contains("hunter2"), "{destination}:\n{output}");
    }
}
