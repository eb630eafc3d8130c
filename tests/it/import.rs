//! `hookrelay import adnanh`: every field converts or is named as not mapped, and the
//! imported config runs the same commands with the same arguments as adnanh/webhook itself.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::harness::*;

fn import(dir: &Path, hooks: &serde_json::Value, name: &str) -> (String, String) {
    let file = dir.join(name);
    std::fs::write(&file, hooks.to_string()).unwrap();
    let output = Command::new(binary())
        .args(["import", "adnanh"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn every_field_converts_or_is_named_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = json!([
        {
            "id": "gitlab-deploy",
            "execute-command": "/usr/local/bin/deploy",
            "command-working-directory": "/srv/app",
            "pass-arguments-to-command": [
                {"source": "payload", "name": "project.path_with_namespace"},
                {"source": "header", "name": "X-Gitlab-Event"},
                {"source": "string", "name": "--fast"},
                {"source": "url", "name": "debug"}
            ],
            "pass-environment-to-command": [
                {"source": "payload", "name": "checkout_sha", "envname": "SHA"},
                {"source": "payload", "name": "user_name"}
            ],
            "pass-file-to-command": [{"source": "entire-payload", "envname": "PAYLOAD_FILE"}],
            "http-methods": ["POST", "GET"],
            "response-message": "deploying",
            "success-http-response-code": 201,
            "trigger-rule-mismatch-http-response-code": 400,
            "include-command-output-in-response": true,
            "trigger-rule": {"and": [
                {"match": {"type": "value", "value": "s3cret", "parameter": {"source": "header", "name": "X-Gitlab-Token"}}},
                {"match": {"type": "ip-whitelist", "ip-range": "192.0.2.0/24"}},
                {"or": [
                    {"match": {"type": "value", "value": "refs/heads/main", "parameter": {"source": "payload", "name": "ref"}}},
                    {"match": {"type": "regex", "regex": "^refs/tags/v", "parameter": {"source": "payload", "name": "ref"}}}
                ]},
                {"not": {"match": {"type": "value", "value": "bot", "parameter": {"source": "payload", "name": "user_username"}}}}
            ]}
        },
        {
            "id": "github-hook",
            "execute-command": "/bin/true",
            "trigger-rule": {"match": {"type": "payload-hmac-sha256", "secret": "gh-secret",
                                       "parameter": {"source": "header", "name": "X-Hub-Signature-256"}}}
        },
        {
            "id": "generic-hook",
            "execute-command": "/bin/true",
            "trigger-rule": {"match": {"type": "payload-hmac-sha512", "secret": "x-secret",
                                       "parameter": {"source": "header", "name": "X-Signature"}}}
        }
    ]);
    let (toml, stderr) = import(dir.path(), &hooks, "hooks.json");
    let config: toml::Table = toml::from_str(&toml).unwrap();
    let at = |path: &str| {
        path.split('.')
            .fold(toml::Value::Table(config.clone()), |v, key| {
                match key.parse::<usize>() {
                    Ok(i) => v[i].clone(),
                    Err(_) => v
                        .get(key)
                        .unwrap_or_else(|| panic!("{path} missing:\n{toml}"))
                        .clone(),
                }
            })
    };
    let text = |path: &str| at(path).as_str().unwrap().to_owned();
    assert_eq!(text("sources.gitlab-deploy.provider"), "gitlab");
    assert_eq!(text("sources.gitlab-deploy.secret"), "s3cret");
    assert_eq!(text("sources.gitlab-deploy.allow_ips.0"), "192.0.2.0/24");
    assert_eq!(text("destinations.gitlab-deploy.working_dir"), "/srv/app");
    assert_eq!(
        text("destinations.gitlab-deploy.argv.0"),
        "/usr/local/bin/deploy"
    );
    assert_eq!(
        text("destinations.gitlab-deploy.argv.1.pointer"),
        "/project/path_with_namespace"
    );
    assert_eq!(
        text("destinations.gitlab-deploy.argv.2.header"),
        "X-Gitlab-Event"
    );
    assert_eq!(text("destinations.gitlab-deploy.argv.3"), "--fast");
    assert_eq!(
        text("destinations.gitlab-deploy.env.SHA.pointer"),
        "/checkout_sha"
    );
    assert_eq!(
        text("destinations.gitlab-deploy.env.HOOK_user_name.pointer"),
        "/user_name"
    );
    assert_eq!(
        at("destinations.gitlab-deploy.env.PAYLOAD_FILE.body_file").as_bool(),
        Some(true)
    );
    assert_eq!(text("routes.0.when.all.0.any.1.regex"), "^refs/tags/v");
    assert_eq!(text("routes.0.when.all.1.not.equals"), "bot");
    assert_eq!(text("sources.github-hook.provider"), "github");
    assert_eq!(text("sources.github-hook.secret"), "gh-secret");
    assert_eq!(text("sources.generic-hook.auth.algorithm"), "sha512");
    for named in [
        "gitlab-deploy: pass-arguments-to-command[3]: source \"url\"",
        "gitlab-deploy: http-methods",
        "gitlab-deploy: response-message",
        "gitlab-deploy: success-http-response-code",
        "gitlab-deploy: trigger-rule-mismatch-http-response-code",
        "gitlab-deploy: include-command-output-in-response: not supported",
    ] {
        assert!(stderr.contains(named), "{named} not reported:\n{stderr}");
    }
    // The result is a valid config.
    let file = dir.path().join("hookrelay.toml");
    std::fs::write(&file, &toml).unwrap();
    let check = Command::new(binary())
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("ok (3 sources, 3 destinations, 3 routes)"),
        "{said}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // YAML hooks files convert the same.
    let yaml = dir.path().join("hooks.yaml");
    std::fs::write(&yaml, "- id: y\n  execute-command: /bin/true\n").unwrap();
    let output = Command::new(binary())
        .args(["import", "adnanh"])
        .arg(&yaml)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("[sources.y]"));
}

/// The hooks both tools run: a script recording its arguments and `$SHA`, one line a run.
fn side_by_side_hooks(script: &Path) -> serde_json::Value {
    json!([{
        "id": "deploy",
        "execute-command": script.to_str().unwrap(),
        "pass-arguments-to-command": [
            {"source": "payload", "name": "ref"},
            {"source": "payload", "name": "project.path_with_namespace"},
            {"source": "header", "name": "X-Gitlab-Event"},
            {"source": "string", "name": "literal value"}
        ],
        "pass-environment-to-command": [{"source": "payload", "name": "checkout_sha", "envname": "SHA"}],
        "trigger-rule": {"and": [
            {"match": {"type": "value", "value": "token-1", "parameter": {"source": "header", "name": "X-Gitlab-Token"}}},
            {"match": {"type": "value", "value": "refs/heads/main", "parameter": {"source": "payload", "name": "ref"}}}
        ]}
    }])
}

fn recorder(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (script, log) = (
        dir.join(format!("{name}.sh")),
        dir.join(format!("{name}.log")),
    );
    // One write per run: adnanh/webhook runs hooks at the same time, and two appends (the
    // fields, then the newline) from two runs interleaved into one line.
    let body = format!(
        "#!/bin/sh\nline=$(printf '%s|' \"$@\" \"$SHA\")\nprintf '%s\\n' \"$line\" >> {}\n",
        log.display()
    );
    std::fs::write(&script, body).unwrap();
    Command::new("chmod")
        .args(["+x"])
        .arg(&script)
        .status()
        .unwrap();
    (script, log)
}

async fn wait_for_lines(path: &Path, count: usize) -> Vec<String> {
    eventually(&format!("{count} lines in {path:?}"), || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        (lines.len() >= count).then_some(lines)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_imported_config_runs_what_adnanh_webhook_runs() {
    let Ok(webhook) = which("webhook") else {
        let why = "the Debian package `webhook` (adnanh/webhook) is not installed";
        assert!(std::env::var("CI").is_err(), "{why}");
        eprintln!("skipped: {why}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (theirs, their_log) = recorder(dir.path(), "theirs");
    let (ours, our_log) = recorder(dir.path(), "ours");
    let hooks_file = dir.path().join("theirs.json");
    std::fs::write(&hooks_file, side_by_side_hooks(&theirs).to_string()).unwrap();
    let port = free_port().port().to_string();
    let mut adnanh = Command::new(webhook)
        .args([
            "-hooks",
            hooks_file.to_str().unwrap(),
            "-ip",
            "127.0.0.1",
            "-port",
            &port,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (toml, _) = import(dir.path(), &side_by_side_hooks(&ours), "ours.json");
    let store = format!(
        "[server]\nstore = \"sqlite://{}\"\n\n",
        dir.path().join("h.db").display()
    );
    let relay = Relay::start(dir.path(), &(store + &toml));
    let client = reqwest::Client::new();
    let their_url = format!("http://127.0.0.1:{port}/hooks/deploy");
    eventually("webhook to start", || async {
        client.get(&their_url).send().await.ok().map(drop)
    })
    .await;
    let requests = [
        ("token-1", "refs/heads/main", "aaa"),
        ("token-1", "refs/heads/feature", "bbb"),
        ("wrong", "refs/heads/main", "ccc"),
        ("token-1", "refs/heads/main", "it's \"quoted\" $(x)"),
    ];
    for (token, git_ref, sha) in requests {
        let body = json!({"ref": git_ref, "checkout_sha": sha, "project": {"path_with_namespace": "group/app"}});
        for url in [their_url.clone(), relay.hook_url("deploy")] {
            client
                .post(url)
                .header("content-type", "application/json")
                .header("x-gitlab-event", "Push Hook")
                .header("x-gitlab-token", token)
                .json(&body)
                .send()
                .await
                .unwrap();
        }
    }
    let mut their_runs = wait_for_lines(&their_log, 2).await;
    let mut our_runs = wait_for_lines(&our_log, 2).await;
    let _ = adnanh.kill();
    let _ = adnanh.wait();
    their_runs.sort();
    our_runs.sort();
    assert_eq!(our_runs, their_runs);
    assert_eq!(their_runs.len(), 2, "{their_runs:?}");
    assert!(their_runs[0].starts_with("refs/heads/main|group/app|Push Hook|literal value|"));
}

fn which(name: &str) -> Result<String, ()> {
    let output = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map_err(|_| ())?;
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() && !path.is_empty() {
        Ok(path)
    } else {
        Err(())
    }
}
