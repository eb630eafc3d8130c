//! `latest` across replicas: a command destination served by three replicas on one
//! PostgreSQL never runs two commands for the same key at once, and the newest event of
//! each key runs.

use std::collections::HashMap;

use serde_json::json;

use crate::command::command_config;
use crate::harness::*;
use crate::replicas::{Database, Replicas, on_database};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_command_on_three_replicas_never_runs_two_for_one_key_at_once() {
    let Some(database) = Database::fresh().await else {
        return;
    };
    let shared = tempfile::tempdir().unwrap();
    let log = shared.path().join("runs.log");
    // Each run records its start and end with a nanosecond clock, from whichever replica.
    let destination = format!(
        "argv = [\"/bin/sh\", \"-c\", \"echo start $1 $2 $(date +%s%N) >> {log}; sleep 0.1; echo end $1 $2 $(date +%s%N) >> {log}\", \"sh\", {{ pointer = \"/ref\" }}, {{ pointer = \"/n\" }}]\nordering = \"latest\"\nconcurrency = 4",
        log = log.display()
    );
    let replicas = Replicas::start_with(3, |dir| {
        on_database(&command_config(dir, &destination, ""), dir, &database)
    });
    let client = reqwest::Client::new();
    const PER_KEY: usize = 30;
    let refs = ["refs/heads/main", "refs/heads/staging"];
    // Arrivals spread over several runs' time, to every replica, so claims for one key
    // race on all three.
    let mut posts = tokio::task::JoinSet::new();
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(15));
    for n in 0..PER_KEY - 1 {
        pace.tick().await;
        for (k, git_ref) in refs.iter().enumerate() {
            let url = replicas.url((n + k) % 3).unwrap();
            let client = client.clone();
            let body = json!({"object_kind": "push", "ref": git_ref, "n": n});
            posts.spawn(async move {
                let response = client
                    .post(url)
                    .header("x-gitlab-event", "Push Hook")
                    .header("x-gitlab-token", TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
            });
        }
    }
    while posts.join_next().await.is_some() {}
    // The newest of each key, after all the others were acknowledged.
    for git_ref in refs {
        let body = json!({"object_kind": "push", "ref": git_ref, "n": PER_KEY - 1});
        let response = client
            .post(replicas.url(2).unwrap())
            .header("x-gitlab-event", "Push Hook")
            .header("x-gitlab-token", TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    eventually("every delivery finished", || async {
        let open = database
            .count("SELECT count(*) FROM {s}.deliveries WHERE state IN ('pending', 'in_flight')")
            .await;
        (open == 0).then_some(())
    })
    .await;
    let runs = std::fs::read_to_string(&log).unwrap();
    // Per key: (n, start, end) of each run.
    let mut spans: HashMap<String, Vec<(u64, u128, u128)>> = HashMap::new();
    let mut started: HashMap<(String, u64), u128> = HashMap::new();
    for line in runs.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let (what, key, n, at) = (
            parts[0],
            parts[1],
            parts[2].parse().unwrap(),
            parts[3].parse().unwrap(),
        );
        match what {
            "start" => {
                started.insert((key.to_owned(), n), at);
            }
            _ => {
                let start = started[&(key.to_owned(), n)];
                spans
                    .entry(key.to_owned())
                    .or_default()
                    .push((n, start, at));
            }
        }
    }
    for (key, mut runs_of_key) in spans {
        runs_of_key.sort_by_key(|(_, start, _)| *start);
        for pair in runs_of_key.windows(2) {
            assert!(
                pair[1].1 >= pair[0].2,
                "{key}: run of {} started before the run of {} ended",
                pair[1].0,
                pair[0].0
            );
        }
        assert!(
            runs_of_key
                .iter()
                .any(|(n, _, _)| *n as usize == PER_KEY - 1),
            "{key}: the newest event never ran"
        );
        assert!(runs_of_key.len() < PER_KEY, "{key}: nothing was superseded");
        assert!(
            runs_of_key.len() >= 3,
            "{key}: too few runs to race: {runs_of_key:?}"
        );
        eprintln!("{key}: {} runs of {PER_KEY} events", runs_of_key.len());
    }
    drop(replicas);
}
