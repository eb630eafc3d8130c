//! The console against the memory step's store (a million events by default): how long the
//! events list (unfiltered, and filtered by source and state) and an event page take, asked
//! for as a signed-in browser asks.

use std::time::{Duration, Instant};

use anyhow::Context as _;

const TOKEN: &str = "bench-console-token-0123456789";
const RUNS: usize = 20;

/// The `[api]` section that puts the API and the console on the relay's own listener.
pub fn api_section() -> String {
    format!(
        "\n[api]\non_main_listener = true\ntokens = [{{ name = \"bench\", token = \"{TOKEN}\", scope = \"admin\" }}]\n"
    )
}

/// Median and slowest of `RUNS` answers to `path` (after two to warm up).
async fn time(
    client: &reqwest::Client,
    url: &str,
    cookie: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let mut took = Vec::new();
    for run in 0..RUNS + 2 {
        let started = Instant::now();
        let response = client.get(url).header("cookie", cookie).send().await?;
        let status = response.status();
        response.bytes().await?;
        anyhow::ensure!(status == 200, "{url}: HTTP {status}");
        if run >= 2 {
            took.push(started.elapsed());
        }
    }
    took.sort();
    Ok((took[took.len() / 2], took[took.len() - 1]))
}

pub async fn timings(base: &str, events: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let signed = client
        .post(format!("{base}/ui/login"))
        .header("origin", base)
        .form(&[("token", TOKEN)])
        .send()
        .await?;
    let cookie = signed
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("the console gave no session cookie")?
        .to_owned();
    let newest: serde_json::Value = client
        .get(format!("{base}/api/v1/events?limit=1"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let id = newest["items"][0]["id"]
        .as_str()
        .context("no event stored")?
        .to_owned();
    println!("  console on a store of {events} events (median and slowest of {RUNS}):");
    for (what, path, target) in [
        ("events list, unfiltered", "/ui/events".to_owned(), 100),
        (
            "events list, source + state (pending: all match)",
            "/ui/events?source=gitlab&state=pending".to_owned(),
            100,
        ),
        (
            "events list, source + state (dead: none match)",
            "/ui/events?source=gitlab&state=dead".to_owned(),
            100,
        ),
        (
            "events list, second page",
            "/ui/events?after=".to_owned(),
            100,
        ),
        (
            "events list, last hour + dead",
            "/ui/events?since=1h&state=dead".to_owned(),
            100,
        ),
        (
            "events list, body search that matches nothing",
            "/ui/events?contains=needle-in-no-body".to_owned(),
            100,
        ),
        (
            "events list, a project no event has (no index)",
            "/ui/events?project=nobody%2Fnothing".to_owned(),
            100,
        ),
        ("event page", format!("/ui/events/{id}"), 50),
    ] {
        let path = if path.ends_with("after=") {
            let page: serde_json::Value = client
                .get(format!("{base}/api/v1/events?limit=50"))
                .bearer_auth(TOKEN)
                .send()
                .await?
                .json()
                .await?;
            format!("{path}{}", page["next"].as_str().unwrap_or_default())
        } else {
            path
        };
        let (median, slowest) = time(&client, &format!("{base}{path}"), &cookie).await?;
        println!(
            "    {what:<50} {:>8.1} ms (slowest {:.1} ms)   (target < {target} ms)",
            median.as_secs_f64() * 1000.0,
            slowest.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}
