//! Every attempt is shown as what it was: a command's exit 0 is a success everywhere (the
//! destination list, the API, `/metrics`), a failing run is the last failure with its exit code.

use serde_json::json;

use crate::command::{command_config, push};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_0_is_a_success_and_exit_3_is_the_last_failure() {
    let dir = tempfile::tempdir().unwrap();
    let destination_settings = "argv = [\"/bin/sh\", \"-c\", \"exit $1\", \"sh\", { pointer = \"/code\" }]\nretry = { max_attempts = 1 }";
    let relay = Relay::child(
        dir.path(),
        &command_config(dir.path(), destination_settings, ""),
    );
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let body = json!({"object_kind": "push", "ref": "refs/heads/main", "code": "0"});
        assert_eq!(push(&client, &relay, body).await, 202);
    }
    wait_for_state(&relay, "succeeded", 2).await;

    let shown = destination(&relay, "deploy");
    assert!(shown["last_success_at"].is_i64(), "{shown}");
    assert!(shown["last_failure"].is_null(), "{shown}");
    let table = String::from_utf8(relay.cli(&["destinations", "list"]).stdout).unwrap();
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.contains("deploy"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert!(
        row[row.len() - 1] == "-" && row[row.len() - 2] != "-",
        "a last success and no failure: {table}"
    );
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains(
            "hookrelay_delivery_attempts_total{destination=\"deploy\",verdict=\"delivered\",outcome=\"exit_0\"} 2"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("outcome=\"error\""), "{metrics}");
    let listed = String::from_utf8(relay.cli(&["deliveries", "list"]).stdout).unwrap();
    assert_eq!(listed.matches("exit 0").count(), 2, "{listed}");

    let body = json!({"object_kind": "push", "ref": "refs/heads/main", "code": "3"});
    assert_eq!(push(&client, &relay, body).await, 202);
    wait_for_state(&relay, "dead", 1).await;
    let shown = destination(&relay, "deploy");
    assert_eq!(shown["last_failure"]["summary"], "exit 3", "{shown}");
    assert_eq!(shown["last_failure"]["verdict"], "retryable", "{shown}");
    let table = String::from_utf8(relay.cli(&["destinations", "list"]).stdout).unwrap();
    assert!(table.contains("exit 3"), "{table}");
    let listed = String::from_utf8(relay.cli(&["deliveries", "list"]).stdout).unwrap();
    assert!(listed.contains("exit 3"), "{listed}");
    assert!(
        relay.metrics().await.contains(
            "hookrelay_delivery_attempts_total{destination=\"deploy\",verdict=\"retryable\",outcome=\"exit_nonzero\"} 1"
        )
    );
}
