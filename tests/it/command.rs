//! Command destinations from outside: a real `git pull` deploy, `latest` over a burst, the
//! process group ended at the timeout, values passed verbatim, bounded output.

use std::path::Path;

use serde_json::{Value, json};

use crate::harness::*;

/// One GitLab source routed to a command destination `deploy` with these settings.
pub fn command_config(dir: &Path, destination: &str, route: &str) -> String {
    format!(
        r#"
[server]
store = "sqlite://{db}"
shutdown_grace = "5s"

[sources.gitlab]
provider = "gitlab"
secret = "{TOKEN}"

[destinations.deploy]
kind = "command"
{destination}

[[routes]]
source = "gitlab"
destinations = ["deploy"]
{route}
"#,
        db = dir.join("hookrelay.db").display()
    )
}

pub async fn push(client: &reqwest::Client, relay: &Relay, body: Value) -> u16 {
    client
        .post(relay.hook_url("gitlab"))
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A push to main, accepted or not.
pub async fn push_main(relay: &Relay) -> u16 {
    let body = json!({"object_kind": "push", "ref": "refs/heads/main"});
    push(&reqwest::Client::new(), relay, body).await
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_main_deploys_with_a_real_git_pull_and_other_branches_do_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (origin, work, clone) = (
        dir.path().join("origin.git"),
        dir.path().join("work"),
        dir.path().join("clone"),
    );
    git(
        dir.path(),
        &["init", "--bare", "-b", "main", origin.to_str().unwrap()],
    );
    git(
        dir.path(),
        &["clone", origin.to_str().unwrap(), work.to_str().unwrap()],
    );
    git(&work, &["commit", "--allow-empty", "-m", "first"]);
    git(&work, &["push", "origin", "HEAD:main"]);
    git(
        dir.path(),
        &["clone", origin.to_str().unwrap(), clone.to_str().unwrap()],
    );
    let destination = format!(
        "argv = [\"git\", \"-C\", \"{}\", \"pull\", \"--ff-only\"]\ninherit_env = [\"PATH\", \"HOME\"]",
        clone.display()
    );
    let text = command_config(dir.path(), &destination, "branches = [\"main\"]");
    let relay = Relay::start(dir.path(), &text);
    git(&work, &["commit", "--allow-empty", "-m", "second"]);
    git(&work, &["push", "origin", "HEAD:main"]);
    let sha = git(&work, &["rev-parse", "HEAD"]);
    let client = reqwest::Client::new();
    let event = json!({"object_kind": "push", "ref": "refs/heads/main", "checkout_sha": sha,
                       "project": {"path_with_namespace": "group/app"}});
    assert_eq!(push(&client, &relay, event).await, 202);
    let other = json!({"object_kind": "push", "ref": "refs/heads/feature", "checkout_sha": sha});
    assert_eq!(push(&client, &relay, other).await, 202);
    wait_for_state(&relay, "succeeded", 1).await;
    assert_eq!(
        git(&clone, &["rev-parse", "HEAD"]),
        sha,
        "the clone was not updated"
    );
    let all = relay.cli(&["deliveries", "list", "--json"]);
    assert_eq!(
        String::from_utf8_lossy(&all.stdout).lines().count(),
        1,
        "the feature push deployed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ten_pushes_runs_the_first_and_the_newest_while_another_branch_runs_alongside() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let destination = format!(
        "argv = [\"/bin/sh\", \"-c\", \"echo start $1 >> {log}; sleep 1; echo end $1 >> {log}\", \"sh\", {{ pointer = \"/n\" }}]\nordering = \"latest\"\nconcurrency = 2",
        log = log.display()
    );
    let relay = Relay::start(dir.path(), &command_config(dir.path(), &destination, ""));
    let client = reqwest::Client::new();
    for n in 0..10 {
        push(
            &client,
            &relay,
            json!({"object_kind": "push", "ref": "refs/heads/main", "n": n}),
        )
        .await;
        if n == 0 {
            // The first run is under way before the rest of the burst arrives.
            wait_for_file(&log, "start 0").await;
        }
    }
    push(
        &client,
        &relay,
        json!({"object_kind": "push", "ref": "refs/heads/staging", "n": 100}),
    )
    .await;
    wait_for_state(&relay, "succeeded", 3).await;
    let superseded = relay.cli(&["deliveries", "list", "--state", "superseded", "--json"]);
    assert_eq!(
        String::from_utf8_lossy(&superseded.stdout).lines().count(),
        8
    );
    let runs = std::fs::read_to_string(&log).unwrap();
    let started: Vec<&str> = runs.lines().filter(|l| l.starts_with("start")).collect();
    assert_eq!(started.len(), 3, "{runs}");
    assert!(
        started.contains(&"start 9") && started.contains(&"start 100"),
        "{runs}"
    );
    // Staging did not wait for main: it started before main's first run ended.
    let position = |line: &str| runs.lines().position(|l| l == line).unwrap();
    assert!(position("start 100") < position("end 0"), "{runs}");
}

async fn wait_for_file(path: &Path, needle: &str) {
    eventually(&format!("{needle:?} in {path:?}"), || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.contains(needle).then_some(())
    })
    .await
}

/// Running (a zombie, killed but not yet reaped by whoever adopted it, counts as gone).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_timeout_the_whole_process_group_goes_even_what_ignores_term() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = format!(
        "trap '' TERM; (trap '' TERM; sleep 300) & echo $! >> {p}; echo $$ >> {p}; sleep 300",
        p = pids.display()
    );
    let destination = format!(
        "argv = [\"/bin/sh\", \"-c\", \"{script}\"]\ntimeout = \"1s\"\nkill_grace = \"200ms\"\nretry = {{ max_attempts = 1 }}"
    );
    let relay = Relay::start(dir.path(), &command_config(dir.path(), &destination, ""));
    push_main(&relay).await;
    let dead = wait_for_state(&relay, "dead", 1).await;
    assert!(dead.contains("timeout after 1s"), "{dead}");
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "the script and its grandchild");
    for pid in pids {
        wait_until_gone(pid).await;
    }
}

/// Waits until `pid` is gone; signals arrive asynchronously, so a moment is allowed.
pub async fn wait_until_gone(pid: i32) {
    eventually(&format!("process {pid} to be gone"), || async {
        (!alive(pid)).then_some(())
    })
    .await
}

/// The one delivery in `state`, shown in full (JSON with its attempts).
pub async fn show_the_one(relay: &Relay, state: &str) -> Value {
    let listed = wait_for_state(relay, state, 1).await;
    let id = serde_json::from_str::<Value>(listed.lines().next().unwrap()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    serde_json::from_slice(&relay.cli(&["deliveries", "show", &id, "--json"]).stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_values_reach_the_command_verbatim_one_argument_each() {
    let dir = tempfile::tempdir().unwrap();
    let (out, marker) = (dir.path().join("args"), dir.path().join("pwned"));
    let nasty = [
        "two words".to_owned(),
        "'single' \"double\"".to_owned(),
        format!("$(touch {})", marker.display()),
        format!("`touch {}`", marker.display()),
        format!("x; touch {}", marker.display()),
        "line one\nline two".to_owned(),
    ];
    let pointers: Vec<String> = (0..nasty.len())
        .map(|i| format!("{{ pointer = \"/v/{i}\" }}"))
        .collect();
    let destination = format!(
        "argv = [\"/bin/sh\", \"-c\", \"printf '%s\\\\0' \\\"$@\\\" > {out}\", \"sh\", {}]\nenv = {{ BRANCH = {{ field = \"branch\" }} }}",
        pointers.join(", "),
        out = out.display()
    );
    let relay = Relay::start(dir.path(), &command_config(dir.path(), &destination, ""));
    let client = reqwest::Client::new();
    push(
        &client,
        &relay,
        json!({"object_kind": "push", "ref": "refs/heads/main", "v": nasty}),
    )
    .await;
    wait_for_state(&relay, "succeeded", 1).await;
    let written = std::fs::read(&out).unwrap();
    let args: Vec<String> = written
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8(a.to_vec()).unwrap())
        .collect();
    assert_eq!(args, nasty);
    assert!(!marker.exists(), "a value was executed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_of_output_finish_and_the_record_keeps_head_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    let destination = "argv = [\"/bin/sh\", \"-c\", \"echo BEGIN; head -c 50000000 /dev/zero | tr '\\\\0' x; echo; echo END; exit 3\"]\nretry = { max_attempts = 1 }\npermanent_exit_codes = [3]";
    let relay = Relay::start(dir.path(), &command_config(dir.path(), destination, ""));
    push_main(&relay).await;
    let shown = show_the_one(&relay, "dead").await;
    let attempt = &shown["attempts"][0];
    assert_eq!(attempt["error"], "exit 3 (permanent)");
    assert_eq!(
        shown["delivery"]["dead_reason"],
        "permanent failure (the destination's rules)"
    );
    let excerpt = attempt["response_excerpt"].as_str().unwrap();
    assert!(
        excerpt.starts_with("--- stdout (50000011 bytes) ---\nBEGIN"),
        "{}",
        &excerpt[..80]
    );
    assert!(excerpt.trim_end().ends_with("END"), "tail missing");
    assert!(excerpt.contains("bytes cut"));
    assert!(
        excerpt.len() < 70_000,
        "output not bounded: {}",
        excerpt.len()
    );
}

pub async fn wait_for_file_to_exist(path: &Path) {
    eventually(&format!("{path:?} to exist"), || async {
        path.exists().then_some(())
    })
    .await
}
