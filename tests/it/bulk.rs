//! Bulk replay through the API: exactly what its dry run counted, nothing that arrived later.

use serde_json::json;

use crate::api::{Api, READ_TOKEN, api_section};
use crate::harness::*;

/// Two destinations, each giving up after one attempt.
fn two_dying_destinations(
    dir: &std::path::Path,
    sink: &str,
    other: &str,
    listen: std::net::SocketAddr,
) -> String {
    // No breaker: every delivery should get its one attempt while the sinks fail.
    let once = "retry = { max_attempts = 1 }\ncircuit_breaker = { failures = 1000000 }";
    let one = config(dir, sink, once);
    one.replace(
        "[[routes]]",
        &format!(
            "[destinations.other]\nurl = \"{other}\"\nallow_private_network = true\n\
             {once}\n\n[[routes]]"
        ),
    )
    .replace(
        "destinations = [\"sink\"]",
        "destinations = [\"sink\", \"other\"]",
    ) + &api_section(listen)
}

#[tokio::test]
async fn bulk_replay_replays_exactly_what_its_dry_run_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, other) = (Sink::start().await, Sink::start().await);
    sink.set_status(500);
    other.set_status(500);
    let listen = free_port();
    let text = two_dying_destinations(dir.path(), &sink.url, &other.url, listen);
    let relay = Relay::start(dir.path(), &text);
    let api = Api::new(listen);
    let client = reqwest::Client::new();
    for n in 0..100 {
        post_push(&client, &relay, push_body(n), None).await;
    }
    sink.wait_for(100).await;
    other.wait_for(100).await;
    let dead = |destination: &str| {
        format!("/api/v1/deliveries?state=dead&destination={destination}&limit=1000")
    };
    let count_dead = |destination: &'static str, expected: usize| {
        let (api, path) = (&api, dead(destination));
        async move {
            eventually(&format!("{expected} dead for {destination}"), || async {
                let found = api.get(&path).await["items"].as_array()?.len();
                (found == expected).then_some(())
            })
            .await
        }
    };
    count_dead("sink", 100).await;
    count_dead("other", 100).await;
    let one = api.get(&dead("sink")).await["items"][0].clone();
    assert_eq!(one["dead_reason"], "retry limit reached (max_attempts)");
    sink.set_status(200);

    let filter = json!({ "state": "dead", "destination": "sink" });
    let (status, dry) = api
        .post(
            "/api/v1/bulk/replay",
            json!({ "filter": filter, "dry_run": true }),
        )
        .await;
    assert_eq!((status, dry["count"].as_u64()), (200, Some(100)), "{dry}");
    assert_eq!(dry["examples"].as_array().unwrap().len(), 5);
    let (status, _) = api
        .call(
            "POST",
            "/api/v1/bulk/replay",
            Some(READ_TOKEN),
            Some(json!({"filter": filter})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, empty) = api
        .post("/api/v1/bulk/replay", json!({ "filter": {} }))
        .await;
    assert_eq!(status, 400, "{empty}");

    // Arriving after the dry run: outside its snapshot, never replayed by it.
    sink.set_status(500);
    post_push(&client, &relay, push_body(999), None).await;
    sink.wait_for(101).await;
    sink.set_status(200);
    let (status, job) = api
        .post(
            "/api/v1/bulk/replay",
            json!({ "filter": filter, "snapshot": dry["snapshot"] }),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let path = format!("/api/v1/jobs/{}", job["id"].as_str().unwrap());
    let job = eventually("the job to finish", || async {
        let job = api.get(&path).await;
        (!job["finished_at"].is_null() && job["waiting"] == 0).then_some(job)
    })
    .await;
    assert_eq!(
        (job["matched"].as_u64(), job["changed"].as_u64()),
        (Some(100), Some(100))
    );
    assert_eq!(
        (job["succeeded"].as_u64(), job["failed"].as_u64()),
        (Some(100), Some(0)),
        "{job}"
    );
    // 100 first attempts, the late event's, and exactly the 100 replays.
    assert_eq!(sink.count(), 201);
    assert_eq!(other.count(), 101);
    assert_eq!(
        api.get(&dead("other")).await["items"]
            .as_array()
            .unwrap()
            .len(),
        101
    );
    assert_eq!(
        api.get(&dead("sink")).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_running_job_can_be_cancelled_once_and_stays_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let listen = free_port();
    // No `sweep` role: no job runner here, so the job waits, running, for the cancel.
    let text = (config(dir.path(), &sink.url, "paused = true") + &api_section(listen)).replacen(
        "[server]\n",
        "[server]\nroles = [\"ingest\", \"api\", \"deliver\"]\n",
        1,
    );
    let relay = Relay::start(dir.path(), &text);
    let client = reqwest::Client::new();
    accept_pushes(&client, &relay, 0..3).await;
    let api = Api::new(listen);
    let (status, job) = api
        .post(
            "/api/v1/bulk/cancel",
            json!({"filter": {"state": "pending"}}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["state"], "running");
    let id = job["id"].as_str().unwrap();
    let cancel = format!("/api/v1/jobs/{id}/cancel");
    let (status, refused) = api.call("POST", &cancel, Some(READ_TOKEN), None).await;
    assert_eq!(status, 403, "{refused}");
    let (status, cancelled) = api.post(&cancel, json!({})).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(
        (cancelled["state"].as_str(), cancelled["changed"].as_u64()),
        (Some("cancelled"), Some(0))
    );
    let (status, again) = api.post(&cancel, json!({})).await;
    assert_eq!((status, again["code"].as_str()), (409, Some("conflict")));
    let (status, _) = api.post("/api/v1/jobs/job_unknown/cancel", json!({})).await;
    assert_eq!(status, 404);
    let listed = relay.cli(&["jobs", "list", "--json"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("\"cancelled\""), "{listed}");
    // Its deliveries were not touched.
    let pending = api.get("/api/v1/deliveries?state=pending").await;
    assert_eq!(pending["items"].as_array().unwrap().len(), 3);
}
