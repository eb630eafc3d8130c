//! The front door under hostile clients, seen from outside: silent sockets, huge heads,
//! strangers' uploads, trickling bodies, replayed signatures, floods and loops. The
//! attacker connects from 127.0.0.1, the real sender from 127.0.0.2.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const SENDER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn relay_address(relay: &Relay) -> SocketAddr {
    relay.url.trim_start_matches("http://").parse().unwrap()
}

async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

fn client_from(from: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(from))
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// Reads until the server answers or closes; `None` when nothing came within `patience`.
async fn answer(stream: &mut TcpStream, patience: Duration) -> Option<String> {
    let mut buffer = vec![0; 4096];
    match tokio::time::timeout(patience, stream.read(&mut buffer)).await {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&buffer[..n]).into_owned()),
        Ok(Err(_)) => Some(String::new()),
        Err(_) => None,
    }
}

fn with_server(config: String, settings: &str) -> String {
    config.replace(
        "shutdown_grace = \"5s\"",
        &format!("shutdown_grace = \"5s\"\n{settings}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_neither_keep_a_sender_out_nor_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let settings =
        "max_connections = 64\nmax_connections_per_client = 32\nheader_read_timeout = \"1s\"";
    let relay = Relay::child(
        dir.path(),
        &with_server(config(dir.path(), &sink.url, ""), settings),
    );
    let address = relay_address(&relay);
    // As many silent sockets as the server has slots, all from one address.
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(connect_from(ATTACKER, address).await);
    }
    let response = client_from(SENDER)
        .post(relay.hook_url("gitlab"))
        .header("x-gitlab-token", TOKEN)
        .body(push_body(1))
        .send()
        .await
        .expect("a real sender got through while silent sockets were open");
    assert_eq!(response.status(), 202);
    // Every silent socket is closed by the server: refused at once past the per-client cap,
    // or cut off once the header timeout passes.
    for (i, socket) in silent.iter_mut().enumerate() {
        let closed = answer(socket, PATIENCE).await;
        assert!(closed.is_some(), "silent socket {i} is still open");
    }
    // A request head past max_header_bytes is refused, not buffered.
    let mut huge = connect_from(SENDER, address).await;
    let head = format!(
        "POST /hooks/gitlab HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = huge.write_all(head.as_bytes()).await;
    let reply = answer(&mut huge, PATIENCE).await.unwrap_or_default();
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 431"),
        "{reply}"
    );
    assert!(
        relay
            .metrics()
            .await
            .contains("hookrelay_connections_refused_total{reason=\"per_client\"} 32")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_before_a_byte_of_their_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = Relay::child(dir.path(), &config(dir.path(), &sink.url, ""));
    let address = relay_address(&relay);
    let mut strangers = Vec::new();
    for _ in 0..11 {
        let mut stream = connect_from(ATTACKER, address).await;
        let head = "POST /hooks/gitlab HTTP/1.1\r\nhost: x\r\nx-gitlab-token: guess\r\ncontent-length: 1000000\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        strangers.push(stream);
    }
    for stream in &mut strangers {
        // No body was sent: the answer can only come from the head.
        let reply = answer(stream, Duration::from_secs(10)).await;
        let reply = reply.expect("a stranger's upload was waited for");
        assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    }
    let metrics = relay.metrics().await;
    assert!(metrics.contains("hookrelay_ingest_body_budget_used_bytes 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_bodies_are_cut_off_and_hold_no_budget_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    // GitHub signs the body, so these uploads cannot be refused from their head.
    // The body timeout is an hour: only the minimum rate can cut a trickle off in time.
    let text = with_server(
        config(dir.path(), &sink.url, ""),
        "max_inflight_body = \"4MiB\"\nbody_read_timeout = \"1h\"",
    )
    .replace(
        "[destinations.sink]",
        "[sources.github]\nprovider = \"github\"\nsecret = \"gh-secret\"\nmax_body = \"1MiB\"\n\n[destinations.sink]",
    );
    let relay = Relay::child(dir.path(), &text);
    let address = relay_address(&relay);
    let mut trickles = Vec::new();
    for _ in 0..6 {
        let mut stream = connect_from(ATTACKER, address).await;
        let head = "POST /hooks/github HTTP/1.1\r\nhost: x\r\nx-hub-signature-256: sha256=00\r\ncontent-length: 1000000\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        trickles.push(stream);
    }
    let trickling = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut replies = Vec::new();
        for mut stream in trickles {
            loop {
                assert!(started.elapsed() < PATIENCE, "a trickle was never cut off");
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
                if let Some(reply) = answer(&mut stream, Duration::from_millis(200)).await {
                    replies.push(reply);
                    break;
                }
            }
        }
        (replies, started.elapsed())
    });
    // Meanwhile a real sender is served at once.
    let response = client_from(SENDER)
        .post(relay.hook_url("gitlab"))
        .header("x-gitlab-token", TOKEN)
        .body(push_body(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let (replies, took) = trickling.await.unwrap();
    assert_eq!(replies.len(), 6);
    for reply in replies {
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
            "{reply}"
        );
    }
    println!("six 1-byte trickles were cut off within {took:?}");
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains("hookrelay_requests_total{source=\"github\",outcome=\"too_slow\"} 6"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_captured_signed_gitlab_request_cannot_be_replayed_under_a_new_idempotency_key() {
    use hookrelay::signing::{standard_secret, standard_v1_signature};
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let text = config(dir.path(), &sink.url, "").replace(
        "max_body = \"1MiB\"",
        &format!("max_body = \"1MiB\"\nsigning_secrets = [\"{whsec}\"]"),
    );
    let relay = Relay::start(dir.path(), &text);
    let key = standard_secret(whsec.as_bytes()).unwrap();
    let body = push_body(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let signature = standard_v1_signature(key.expose(), "msg_1", now, body.as_bytes());
    let client = reqwest::Client::new();
    let post = |idempotency_key: &'static str| {
        client
            .post(relay.hook_url("gitlab"))
            .header("x-gitlab-event", "Push Hook")
            .header("webhook-id", "msg_1")
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature.clone())
            .header("idempotency-key", idempotency_key)
            .body(body.clone())
            .send()
    };
    let first: serde_json::Value = post("k1").await.unwrap().json().await.unwrap();
    for fresh in ["k2", "k3", "k4"] {
        let replay = post(fresh).await.unwrap();
        assert_eq!(replay.status(), 200, "replay with {fresh} made a new event");
        let replay: serde_json::Value = replay.json().await.unwrap();
        assert_eq!(replay["event_id"], first["event_id"]);
    }
}

#[tokio::test]
async fn rates_and_the_backlog_limit_answer_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let text = with_server(
        config(dir.path(), &sink.url, "paused = true"),
        "max_pending_deliveries = 3",
    )
    .replace(
        "max_body = \"1MiB\"",
        "max_body = \"1MiB\"\nrate_limit = \"2/min\"",
    );
    let relay = Relay::start(dir.path(), &text);
    let client = reqwest::Client::new();
    accept_pushes(&client, &relay, 0..2).await;
    let limited = post_push(&client, &relay, push_body(2), None).await;
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "{wait}");

    // A second source without a rate limit fills the backlog of the paused destination.
    let dir = tempfile::tempdir().unwrap();
    let text = with_server(
        config(dir.path(), &sink.url, "paused = true"),
        "max_pending_deliveries = 3",
    );
    let relay = Relay::start(dir.path(), &text);
    accept_pushes(&client, &relay, 0..3).await;
    let full = post_push(&client, &relay, push_body(3), None).await;
    assert_eq!(full.status(), 503);
    assert!(full.headers().contains_key("retry-after"));
    let ready = reqwest::get(format!("{}/readyz", relay.url)).await.unwrap();
    assert_eq!(ready.status(), 503);
}

#[tokio::test]
async fn two_relays_pointing_at_each_other_stop_after_a_few_hops() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    // Forwarded requests never carry the sender's token, so the loop needs open sources.
    let open_relay = |dir: &std::path::Path, to: SocketAddr, listen: SocketAddr| {
        let text = config(
            dir,
            &format!("http://{to}/hooks/gitlab"),
            "retry = { max_attempts = 1 }",
        )
        .replace(&format!("secret = \"{TOKEN}\""), "");
        Relay::child_on(dir, &text, &listen.to_string())
    };
    let a = open_relay(dir_a.path(), port_b, port_a);
    let b = open_relay(dir_b.path(), port_a, port_b);
    let client = reqwest::Client::new();
    assert_eq!(
        post_push(&client, &a, push_body(1), None).await.status(),
        202
    );
    // The fourth hop comes back to `a`, which refuses it.
    a.wait_for_metric("hookrelay_requests_total{source=\"gitlab\",outcome=\"forwarding_loop\"} 1")
        .await;
    let accepted = |text: String| -> u64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix("hookrelay_requests_total{source=\"gitlab\",outcome=\"accepted\"} ")
            })
            .unwrap()
            .parse()
            .unwrap()
    };
    let total = accepted(a.metrics().await) + accepted(b.metrics().await);
    assert_eq!(total, 4, "one post made {total} events");
}
