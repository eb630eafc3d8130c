//! hookrelay's own notifications, end to end: the real binary, a destination that fails until
//! its deliveries go dead, and a real sink receiving Slack-shaped messages; the rules that
//! keep a flapping destination or a failing notification channel from flooding anyone.

use serde_json::Value;

use crate::harness::*;

/// The notifications a sink received, as (type, text) from their Slack-shaped bodies.
fn messages(sink: &Sink) -> Vec<(String, String)> {
    sink.with_received(|received| {
        received
            .iter()
            .map(|r| {
                assert_eq!(r.headers["content-type"], "application/json");
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                // Slack's shape: the text, with formatting and unfurling off.
                assert_eq!(body["mrkdwn"], false, "{body}");
                assert_eq!(body["unfurl_links"], false, "{body}");
                let text = body["text"].as_str().unwrap().to_owned();
                let kind = [
                    ("is dead after", "delivery.dead"),
                    ("went dead in", "delivery.dead"),
                    ("is failing", "destination.failing"),
                    ("recovered", "destination.recovered"),
                    ("deliveries waiting", "backlog.high"),
                    ("refused", "source.rejecting"),
                ]
                .iter()
                .find(|(phrase, _)| text.contains(phrase))
                .map_or("?", |(_, kind)| kind);
                (kind.to_owned(), text)
            })
            .collect()
    })
}

fn count(messages: &[(String, String)], kind: &str) -> usize {
    messages.iter().filter(|(k, _)| k == kind).count()
}

async fn metric(relay: &Relay, kind: &str, outcome: &str) -> u64 {
    let line = format!("hookrelay_notifications_total{{type=\"{kind}\",outcome=\"{outcome}\"}} ");
    relay
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .map_or(0, |n| n.trim().parse::<f64>().unwrap() as u64)
}

fn config(dir: &std::path::Path, flaky: &str, chat: &str, extra: &str) -> String {
    format!(
        r#"
[server]
store = "sqlite://{db}"

[sources.gitlab]
provider = "gitlab"
secret = "{TOKEN}"

[destinations.flaky]
url = "{flaky}"
allow_private_network = true
timeout = "5s"
retry = {{ initial_delay = "50ms", max_delay = "100ms", max_attempts = 3 }}
circuit_breaker = {{ failures = 3, probe_interval = "200ms" }}

[destinations.chat]
url = "{chat}"
allow_private_network = true
format = "slack"
retry = {{ initial_delay = "50ms", max_delay = "100ms", max_attempts = 2 }}

[notifications]
check_interval = "200ms"

[[routes]]
source = "gitlab"
destinations = ["flaky"]

{extra}
"#,
        db = dir.join("hookrelay.db").display()
    )
}

const HAPPENINGS: &str = r#"
[[routes]]
source = "hookrelay"
events = ["delivery.dead", "destination.failing", "destination.recovered"]
destinations = ["chat"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_is_told_once_each_dead_delivery_once_and_its_recovery_once() {
    let dir = tempfile::tempdir().unwrap();
    let (flaky, chat) = (Sink::start().await, Sink::start().await);
    flaky.set_status(500);
    let relay = Relay::child(
        dir.path(),
        &config(dir.path(), &flaky.url, &chat.url, HAPPENINGS),
    );
    let client = reqwest::Client::new();
    accept_pushes(&client, &relay, 0..3).await;
    chat.wait_until("3 dead deliveries and the failure told", |r| r.len() >= 4)
        .await;
    let told = messages(&chat);
    assert_eq!(count(&told, "delivery.dead"), 3, "{told:?}");
    assert_eq!(count(&told, "destination.failing"), 1, "{told:?}");
    let dead_ids: std::collections::HashSet<_> = told
        .iter()
        .filter(|(k, _)| k == "delivery.dead")
        .map(|(_, text)| text.split_whitespace().nth(2).unwrap().to_owned())
        .collect();
    assert_eq!(dead_ids.len(), 3, "one message per dead delivery: {told:?}");
    assert!(told[0].1.starts_with("hookrelay: "), "{told:?}");

    // It answers again: the next delivery closes the breaker and the recovery is told.
    flaky.set_status(200);
    accept_pushes(&client, &relay, 3..4).await;
    chat.wait_until("the recovery told", |r| r.len() >= 5).await;
    assert_eq!(count(&messages(&chat), "destination.recovered"), 1);

    // It flaps: failing again at once is held by the cooldown (min_interval, 10 min), so
    // nobody hears of it again, and its recovery is not told either.
    flaky.set_status(500);
    accept_pushes(&client, &relay, 4..7).await;
    eventually("the second failure held by the cooldown", || async {
        (metric(&relay, "destination.failing", "cooldown").await >= 1).then_some(())
    })
    .await;
    flaky.set_status(200);
    accept_pushes(&client, &relay, 7..8).await;
    eventually(
        "the second recovery held: nothing was told to recover from",
        || async {
            (metric(&relay, "destination.recovered", "nothing_to_recover").await >= 1).then_some(())
        },
    )
    .await;
    let told = messages(&chat);
    assert_eq!(count(&told, "destination.failing"), 1, "{told:?}");
    assert_eq!(count(&told, "destination.recovered"), 1, "{told:?}");
    assert_eq!(metric(&relay, "destination.failing", "sent").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_that_goes_dead_is_never_notified() {
    let dir = tempfile::tempdir().unwrap();
    let (flaky, chat) = (Sink::start().await, Sink::start().await);
    flaky.set_status(500);
    // The chat tool refuses everything (permanent): each notification goes dead at once.
    chat.set_status(400);
    let relay = Relay::child(
        dir.path(),
        &config(dir.path(), &flaky.url, &chat.url, HAPPENINGS),
    );
    let client = reqwest::Client::new();
    accept_pushes(&client, &relay, 0..1).await;
    eventually("the dead notification held as a loop", || async {
        (metric(&relay, "delivery.dead", "loop").await >= 1).then_some(())
    })
    .await;
    // The flaky delivery's death (1) and the failure (1) were sent; the chat deliveries
    // that died of them made nothing more.
    assert_eq!(metric(&relay, "delivery.dead", "sent").await, 1);
    let notified: std::collections::HashSet<String> = chat.with_received(|r| {
        r.iter()
            .map(|r| r.headers["webhook-id"].to_str().unwrap().to_owned())
            .collect()
    });
    assert_eq!(
        notified.len(),
        2,
        "deliveries that reached the chat tool: {notified:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_and_a_growing_backlog_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let (flaky, chat) = (Sink::start().await, Sink::start().await);
    let levels = r#"
[[routes]]
source = "hookrelay"
events = ["source.rejecting", "backlog.high"]
destinations = ["chat"]
"#;
    let mut text = config(dir.path(), &flaky.url, &chat.url, levels);
    text = text.replace(
        "[notifications]\n",
        "[notifications]\nbacklog_threshold = 3\nrejecting_min_requests = 4\n",
    );
    text = text.replace(
        "[destinations.flaky]\n",
        "[destinations.flaky]\npaused = true\n",
    );
    let relay = Relay::child(dir.path(), &text);
    let client = reqwest::Client::new();
    for _ in 0..4 {
        let refused = client
            .post(relay.hook_url("gitlab"))
            .header("x-gitlab-event", "Push Hook")
            .header("x-gitlab-token", "not-the-secret")
            .body(push_body(0))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
    }
    accept_pushes(&client, &relay, 0..3).await;
    chat.wait_until("the refusals and the backlog told", |r| r.len() >= 2)
        .await;
    let told = messages(&chat);
    let rejecting = told.iter().find(|(k, _)| k == "source.rejecting").unwrap();
    assert!(
        rejecting.1.contains("\"gitlab\" refused 4 of")
            && rejecting.1.contains("invalid_credentials"),
        "{told:?}"
    );
    let backlog = told.iter().find(|(k, _)| k == "backlog.high").unwrap();
    assert!(
        backlog.1.contains("\"flaky\" has 3 deliveries waiting"),
        "{told:?}"
    );
    // Still high at the next looks: told once.
    eventually("the backlog seen still high", || async {
        (metric(&relay, "backlog.high", "still_high").await >= 1).then_some(())
    })
    .await;
    assert_eq!(count(&messages(&chat), "backlog.high"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_deliveries_can_be_told_in_one_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (flaky, chat) = (Sink::start().await, Sink::start().await);
    flaky.set_status(500);
    let text = config(dir.path(), &flaky.url, &chat.url, HAPPENINGS)
        .replace("failures = 3,", "failures = 1000,")
        .replace(
            "[notifications]\n",
            "[notifications]\ndead_digest = \"2s\"\n",
        );
    let relay = Relay::child(dir.path(), &text);
    let client = reqwest::Client::new();
    accept_pushes(&client, &relay, 0..3).await;
    chat.wait_for(1).await;
    let told = messages(&chat);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0]
            .1
            .contains("3 deliveries went dead in 2s: 3 to \"flaky\""),
        "{told:?}"
    );
    assert_eq!(metric(&relay, "delivery.dead", "sent").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_fixed_by_a_reload_is_told_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let (broken, fixed, chat) = (
        Sink::start().await,
        Sink::start().await,
        Sink::start().await,
    );
    broken.set_status(500);
    let text = config(dir.path(), &broken.url, &chat.url, HAPPENINGS);
    let relay = Relay::child(dir.path(), &text);
    let client = reqwest::Client::new();
    accept_pushes(&client, &relay, 0..3).await;
    chat.wait_until("the failure told", |r| {
        r.iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("is failing"))
    })
    .await;
    // The operator points it somewhere that works: the rebuilt destination starts with a
    // closed breaker and no delivery has to succeed for the recovery to be told.
    std::fs::write(
        dir.path().join("hookrelay.toml"),
        text.replace(&broken.url, &fixed.url),
    )
    .unwrap();
    let reloaded = relay.cli(&["reload"]);
    assert!(
        reloaded.status.success(),
        "{}",
        String::from_utf8_lossy(&reloaded.stderr)
    );
    chat.wait_until("the recovery told", |r| {
        r.iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("recovered"))
    })
    .await;
    let told = messages(&chat);
    assert_eq!(count(&told, "destination.failing"), 1, "{told:?}");
    assert_eq!(count(&told, "destination.recovered"), 1, "{told:?}");
}
