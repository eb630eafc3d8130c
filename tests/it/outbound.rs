//! The outbound side seen from outside: the circuit breaker, redirects, the address policy,
//! what is forwarded (encoding) and what is stored (credentials redacted).

use serde_json::Value;

use crate::harness::*;

fn metric(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')
            .map(str::to_owned)
    })
}

fn attempts_to(relay: &Relay, destination: &str) -> u64 {
    let output = relay.cli(&[
        "deliveries",
        "list",
        "--destination",
        destination,
        "--limit",
        "1000",
        "--json",
    ]);
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["attempts"]
                .as_u64()
                .unwrap()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_destination_is_only_probed_while_a_healthy_one_flows() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let nobody = free_port();
    let text = config(dir.path(), &sink.url, "").replace(
        "[[routes]]",
        &format!(
            r#"[destinations.dead]
url = "http://{nobody}/deliver"
allow_private_network = true
concurrency = 1
retry = {{ initial_delay = "10ms", max_delay = "20ms" }}
circuit_breaker = {{ failures = 3, probe_interval = "1h", min_probe_interval = "1h" }}

[[routes]]
source = "gitlab"
destinations = ["dead"]

[[routes]]"#
        ),
    );
    let relay = Relay::start(dir.path(), &text);
    let client = reqwest::Client::new();
    accept_pushes(&client, &relay, 0..20).await;
    eventually("the dead destination's breaker to open", || async {
        (destination(&relay, "dead")["state"] == "failing").then_some(())
    })
    .await;
    // The healthy destination gets everything, a second batch included...
    accept_pushes(&client, &relay, 20..40).await;
    sink.wait_for(40).await;
    // ...while the dead one was tried only until the breaker opened: no attempt is spent
    // on the 40 waiting deliveries.
    assert_eq!(attempts_to(&relay, "dead"), 3);
    assert_eq!(destination(&relay, "sink")["state"], "healthy");
}

#[tokio::test]
async fn redirects_are_recorded_not_followed_and_internal_addresses_need_consent() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    sink.set_status(302);
    let relay = Relay::start(
        dir.path(),
        &config(dir.path(), &sink.url, "retry = { max_attempts = 1 }"),
    );
    let client = reqwest::Client::new();
    assert_eq!(
        post_push(&client, &relay, push_body(1), None)
            .await
            .status(),
        202
    );
    let listed = wait_for_cli(
        &relay,
        &["deliveries", "list", "--json"],
        "a dead delivery",
        |out| out.contains("\"dead\""),
    )
    .await;
    let row: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(row["last_status"], 302);

    // Without allow_private_network, a loopback destination is refused by `config check`.
    let text = config(dir.path(), &sink.url, "").replace("allow_private_network = true\n", "");
    let stderr = config_check(dir.path(), &text);
    assert!(
        stderr.contains("destinations.sink.url") && stderr.contains("internal"),
        "{stderr}"
    );
}

#[tokio::test]
async fn encoded_bodies_keep_their_encoding_and_cookies_are_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = Relay::start(dir.path(), &config(dir.path(), &sink.url, ""));
    // Not real gzip: hookrelay never decodes, it relays the bytes with their encoding.
    let body = b"\x1f\x8b\x08\x00compressed-bytes".to_vec();
    let response = reqwest::Client::new()
        .post(relay.hook_url("gitlab"))
        .header("x-gitlab-token", TOKEN)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("cookie", "session=cookie-secret")
        .header("proxy-authorization", "Basic cHJveHktc2VjcmV0")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    sink.wait_for(1).await;
    sink.with_received(|received| {
        assert_eq!(received[0].body.as_ref(), body.as_slice());
        assert_eq!(received[0].headers["content-encoding"], "gzip");
        assert!(!received[0].headers.contains_key("cookie"));
    });
    let conn = rusqlite::Connection::open(dir.path().join("hookrelay.db")).unwrap();
    let headers: Vec<u8> = conn
        .query_row("SELECT headers FROM events", [], |row| row.get(0))
        .unwrap();
    let headers = String::from_utf8_lossy(&headers);
    assert!(headers.contains("cookie: [redacted]"), "{headers}");
    assert!(
        headers.contains("proxy-authorization: [redacted]"),
        "{headers}"
    );
    assert!(!headers.contains("cookie-secret") && !headers.contains("cHJveHktc2VjcmV0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_fanned_out_share_one_copy_within_the_delivery_memory_budget() {
    const BODY: usize = 6 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let hanging = Hanging::start().await;
    let mut destinations = String::new();
    for d in 1..=4 {
        destinations.push_str(&format!(
            "[destinations.d{d}]\nurl = \"{}\"\nallow_private_network = true\ntimeout = \"60s\"\n\n",
            hanging.url
        ));
    }
    let text = config(dir.path(), &hanging.url, "")
        .replace(
            "shutdown_grace = \"5s\"",
            "shutdown_grace = \"5s\"\ndelivery_memory = \"16MiB\"",
        )
        .replace("max_body = \"1MiB\"", "max_body = \"8MiB\"")
        .replace(
            "[destinations.sink]",
            &format!("{destinations}[destinations.sink]"),
        )
        .replace(
            "destinations = [\"sink\"]",
            "destinations = [\"d1\", \"d2\", \"d3\", \"d4\"]",
        );
    let relay = Relay::child(dir.path(), &text);
    let client = reqwest::Client::new();
    for n in 0..4 {
        let mut body = push_body(n).into_bytes();
        body.resize(BODY, b' ');
        let response = client
            .post(relay.hook_url("gitlab"))
            .header("x-gitlab-token", TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    // Two events fit in 16 MiB: each is forwarded to all four destinations from one copy,
    // and the other two events' deliveries wait, unclaimed, for memory.
    wait_for_cli(
        &relay,
        &["deliveries", "list", "--state", "pending", "--json"],
        "8 deliveries waiting for memory",
        |out| out.lines().count() == 8,
    )
    .await;
    hanging.wait_for(8).await;
    let distinct: std::collections::BTreeSet<String> = hanging.seen().into_iter().collect();
    assert_eq!(distinct.len(), 2, "{distinct:?}");
    let metrics = relay.metrics().await;
    assert_eq!(
        metric(&metrics, "hookrelay_delivery_memory_used_bytes").as_deref(),
        Some((2 * BODY).to_string().as_str())
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", relay.pid())).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("VmRSS: ?");
    println!("4 x 6 MiB events to 4 hanging destinations, 16 MiB budget: {rss}");
}
