//! The command line outside the server: config check explains every error.

use crate::harness::*;

#[test]
fn config_check_accepts_the_shipped_example_and_locates_every_error() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hookrelay.toml");
    let output = std::process::Command::new(binary())
        .args(["config", "check", example])
        .env("GITLAB_WEBHOOK_TOKEN", "example-token")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[sources.gitlab]\nprovider = \"gitlob\"\n\n[[routes]]\nsource = \"gitlab\"\ndestinations = [\"nowhere\"]\n",
    )
    .unwrap();
    let output = std::process::Command::new(binary())
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(errors.contains("sources.gitlab.provider"), "{errors}");
    assert!(errors.contains("routes[0].destinations[0]"), "{errors}");
    assert!(errors.contains("bad.toml"), "{errors}");
}

#[test]
fn serve_refuses_a_bad_config_instead_of_starting_half_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookrelay.toml");
    std::fs::write(&path, "[server]\nlisten = \"not an address\"\n").unwrap();
    let output = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("server.listen"));
}

#[test]
fn config_errors_point_at_secrets_without_quoting_them() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // A secret written without quotes: not TOML at all.
        "[sources.gitlab]\nprovider = \"gitlab\"\nsecret = glpat-unquoted-0001\n",
        // A misspelled key holding a token.
        "[sources.gitlab]\nprovider = \"gitlab\"\nscret = \"glpat-misspelled-0002\"\n",
        // A secret of the wrong type (a number).
        "[sources.gitlab]\nprovider = \"gitlab\"\nsecret = 40033003\n",
        // A destination URL with credentials that does not parse.
        "[destinations.ci]\nurl = \"http://user:hunter2-0004@[bad/hook\"\n",
    ];
    for (case, secret) in cases.iter().zip([
        "glpat-unquoted-0001",
        "glpat-misspelled-0002",
        "40033003",
        "hunter2-0004",
    ]) {
        let output = config_check(dir.path(), case);
        assert!(!output.contains(secret), "{secret} echoed:\n{output}");
        assert!(
            output.contains("line ") || output.contains("destinations.ci.url"),
            "no location:\n{output}"
        );
    }
}

#[test]
fn without_a_server_the_cli_says_so_in_one_line_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sink_url = "http://127.0.0.1:9/webhook";
    std::fs::write(
        dir.path().join("hookrelay.toml"),
        config(dir.path(), sink_url, ""),
    )
    .unwrap();
    let output = cli_in(dir.path(), &["deliveries", "list"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach hookrelay at"), "{stderr}");
    assert!(
        !dir.path().join("hookrelay.db").exists(),
        "the CLI created a store"
    );
    let missing = std::process::Command::new(binary())
        .args(["events", "list", "--config", "no-such.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no config file no-such.toml"), "{stderr}");
    let unreachable = std::process::Command::new(binary())
        .args(["sources", "list", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        stderr.contains("cannot reach hookrelay at http://127.0.0.1:9"),
        "{stderr}"
    );
}

#[tokio::test]
async fn deliveries_of_a_removed_destination_are_reported_not_silently_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let text = config(dir.path(), &sink.url, "paused = true");
    let mut relay = Relay::child(dir.path(), &text);
    let client = reqwest::Client::new();
    assert_eq!(
        post_push(&client, &relay, push_body(1), None)
            .await
            .status(),
        202
    );
    relay.terminate();
    // The destination (and its route) are renamed away.
    let renamed = text
        .replace("[destinations.sink]", "[destinations.renamed]")
        .replace("destinations = [\"sink\"]", "destinations = [\"renamed\"]");
    std::fs::write(dir.path().join("hookrelay.toml"), &renamed).unwrap();
    let output = relay.cli(&[
        "config",
        "check",
        dir.path().join("hookrelay.toml").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(
        stdout.contains("1 deliveries wait for destination \"sink\""),
        "{stdout}"
    );
    let relay = Relay::child(dir.path(), &renamed);
    assert!(
        relay.log().contains("wait for destination \"sink\""),
        "{}",
        relay.log()
    );
    let listed = relay.cli(&["deliveries", "list", "--destination", "sink", "--json"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 1);
}
