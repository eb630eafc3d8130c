//! Command destinations through hookrelay's own lifecycle: kill -9 mid-run, SIGTERM within
//! and past the grace; and running as another user.

use crate::command::{
    command_config, push_main, show_the_one, wait_for_file_to_exist, wait_until_gone,
};
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_off_by_kill_9_is_recorded_as_interrupted_and_retried_or_dead_by_policy() {
    for policy in ["retry", "dead"] {
        let dir = tempfile::tempdir().unwrap();
        let started = dir.path().join("started");
        let slow = format!(
            "argv = [\"/bin/sh\", \"-c\", \"touch {}; sleep 30\"]\non_interrupt = \"{policy}\"\nretry = {{ initial_delay = \"100ms\" }}",
            started.display()
        );
        let mut relay = Relay::child(dir.path(), &command_config(dir.path(), &slow, ""));
        push_main(&relay).await;
        wait_for_file_to_exist(&started).await;
        relay.kill();
        // The next start runs a quick command instead.
        let quick = format!(
            "argv = [\"/bin/true\"]\non_interrupt = \"{policy}\"\nretry = {{ initial_delay = \"100ms\" }}"
        );
        let relay = Relay::child(dir.path(), &command_config(dir.path(), &quick, ""));
        let state = if policy == "retry" {
            "succeeded"
        } else {
            "dead"
        };
        let shown = show_the_one(&relay, state).await;
        let attempts = shown["attempts"].as_array().unwrap();
        assert!(
            attempts[0]["error"]
                .as_str()
                .unwrap()
                .starts_with("interrupted"),
            "{policy}: {shown}"
        );
        match policy {
            "retry" => assert_eq!(attempts.len(), 2, "{shown}"),
            _ => {
                assert_eq!(attempts.len(), 1, "{shown}");
                assert!(
                    shown["delivery"]["dead_reason"]
                        .as_str()
                        .unwrap()
                        .contains("on_interrupt")
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_run_finish_within_the_grace_and_ends_it_past_the_grace() {
    for (grace, sleep, expected) in [
        ("5s", "1", ("succeeded", 1)),
        ("300ms", "30", ("pending", 0)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (started, pid) = (dir.path().join("started"), dir.path().join("pid"));
        let destination = format!(
            "argv = [\"/bin/sh\", \"-c\", \"echo $$ > {}; touch {}; sleep {sleep}\"]",
            pid.display(),
            started.display()
        );
        let text = command_config(dir.path(), &destination, "").replace(
            "shutdown_grace = \"5s\"",
            &format!("shutdown_grace = \"{grace}\""),
        );
        let mut relay = Relay::child(dir.path(), &text);
        push_main(&relay).await;
        wait_for_file_to_exist(&started).await;
        assert!(relay.terminate().success());
        let stored = stored_deliveries(dir.path());
        assert_eq!(
            stored,
            [(expected.0.to_owned(), expected.1)],
            "grace {grace}"
        );
        let pid: i32 = std::fs::read_to_string(&pid)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        wait_until_gone(pid).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_can_run_as_another_user_and_a_shell_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let running_as_root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !running_as_root {
        assert!(
            std::env::var("CI").is_err(),
            "dropping privileges needs root"
        );
        eprintln!("skipped: dropping privileges needs root");
        return;
    }
    let destination = "argv = [\"/usr/bin/id\", \"-u\"]\nuser = \"nobody\"\ngroup = \"nogroup\"";
    let text = command_config(dir.path(), destination, "");
    let relay = Relay::start(dir.path(), &text);
    push_main(&relay).await;
    let shown = show_the_one(&relay, "succeeded").await;
    let nobody = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("nobody:x:")
                .map(|r| r.split(':').next().unwrap().to_owned())
        })
        .unwrap();
    let output = shown["attempts"][0]["response_excerpt"].as_str().unwrap();
    assert!(output.contains(&format!("\n{nobody}\n")), "{output}");

    let shell = dir.path().join("shell.toml");
    std::fs::write(
        &shell,
        command_config(dir.path(), "argv = [\"echo $1\"]\nshell = true", ""),
    )
    .unwrap();
    let check = std::process::Command::new(binary())
        .args(["config", "check"])
        .arg(&shell)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && said.contains("destinations.deploy.shell"),
        "{said}"
    );
}
