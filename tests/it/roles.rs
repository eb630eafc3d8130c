//! `[server] roles`: a process takes only the work it was given. Without `deliver` it stores
//! and answers but never delivers, and its API still pauses (through the store); without
//! `ingest` its `/hooks` answers 404 and says why; a role that does not exist is refused.

use std::time::Duration;

use crate::harness::*;

fn with_roles(text: String, roles: &str) -> String {
    text.replacen("[server]\n", &format!("[server]\nroles = {roles}\n"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_deliver_events_are_stored_and_answered_but_never_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let text = with_roles(config(dir.path(), &sink.url, ""), r#"["ingest", "api"]"#);
    let relay = Relay::start(dir.path(), &text);
    let client = reqwest::Client::new();
    accept_pushes(&client, &relay, 0..3).await;
    // Absence cannot be awaited: this outlasts a worker's 1 s poll and its wake-up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.count(), 0, "a process without \"deliver\" delivered");
    let sink_state = destination(&relay, "sink");
    assert_eq!(sink_state["pending"], 3, "{sink_state}");
    assert_eq!(sink_state["state"], "healthy", "{sink_state}");
    // No worker runs here, and the pause is still stored (for the processes that deliver).
    let paused = relay.cli(&["destinations", "pause", "sink"]);
    assert!(
        paused.status.success(),
        "{}",
        String::from_utf8_lossy(&paused.stderr)
    );
    assert_eq!(destination(&relay, "sink")["state"], "paused");
}

#[tokio::test]
async fn without_ingest_hooks_answer_404_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let text = with_roles(
        config(dir.path(), &sink.url, ""),
        r#"["deliver", "api", "sweep"]"#,
    );
    let relay = Relay::start(dir.path(), &text);
    let client = reqwest::Client::new();
    let answer = post_push(&client, &relay, push_body(0), None).await;
    assert_eq!(answer.status(), 404);
    let body = answer.text().await.unwrap();
    assert!(body.contains("server.roles"), "{body}");
    let ready = client
        .get(relay.hook_url("x").replace("/hooks/x", "/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[test]
fn roles_that_do_not_exist_or_repeat_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (roles, said) in [
        (r#"["ingestion"]"#, r#""ingestion" is not a role"#),
        (r#"["api", "api"]"#, r#""api" is named twice"#),
        ("[]", "name at least one role"),
    ] {
        let text = with_roles(config(dir.path(), "http://127.0.0.1:9/", ""), roles);
        let out = config_check(dir.path(), &text);
        assert!(
            out.contains("server.roles") && out.contains(said),
            "{roles}: {out}"
        );
    }
}
