//! Store size under steady load, with retention and without (the baseline), side by side:
//! with retention the freed pages are reused, so the store stops growing. The size is read
//! by the caller's probe: the SQLite files, or a PostgreSQL schema's tables.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{self, Process};

/// The store's size on disk: the database file, and its WAL (which keeps its size, up to a
/// cap, once grown: it is rewritten in place).
pub fn store_bytes(db: &Path) -> (u64, u64) {
    let size = |suffix: &str| {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    };
    (size(""), size("-wal"))
}

/// One sample: seconds since the start, and the probe's two sizes in bytes (SQLite: the
/// database file and its WAL; PostgreSQL: tables with their TOAST, and indexes).
pub type Sample = (u64, u64, u64);

/// The steady load: `rate` events per second for `seconds`.
pub struct Load<'a> {
    pub body: &'a str,
    pub token: &'a str,
    pub rate: u64,
    pub seconds: u64,
}

/// Runs the load against a relay with `config` and samples the store size (`probe`) six
/// times and at the end.
pub async fn run<Probe, Size>(
    relay_bin: &Path,
    dir: &Path,
    config: &str,
    name: &str,
    load: &Load<'_>,
    mut probe: Probe,
) -> anyhow::Result<Vec<Sample>>
where
    Probe: FnMut() -> Size,
    Size: std::future::Future<Output = anyhow::Result<(u64, u64)>>,
{
    let Load {
        body,
        token,
        rate,
        seconds,
    } = *load;
    let config_path = dir.join(format!("{name}.toml"));
    std::fs::write(&config_path, config)?;
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        config_path.to_str().unwrap(),
    ];
    let relay = Process::start(relay_bin, &args, dir, name)?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let every = Duration::from_secs((seconds / 6).max(1));
    let mut next_sample = started;
    let mut inflight = tokio::task::JoinSet::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        let request = support::push_request(&client, &relay.url, body, token, name);
        inflight.spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
        while inflight.try_join_next().is_some() {}
        if Instant::now() >= next_sample {
            let (first, second) = probe().await?;
            samples.push((started.elapsed().as_secs(), first, second));
            next_sample += every;
        }
    }
    while inflight.join_next().await.is_some() {}
    let (first, second) = probe().await?;
    samples.push((started.elapsed().as_secs(), first, second));
    relay.stop();
    Ok(samples)
}

/// The two runs side by side, sizes in MB; `second` names the probe's second size.
pub fn print(kept: &[Sample], pruned: &[Sample], second: &str) {
    println!(
        "{:>8}  {:>20}  {:>30}",
        "elapsed", "default (7 d)", "succeeded = 5s, sweep 1 s"
    );
    for ((at, without, without_2), (_, with, with_2)) in kept.iter().zip(pruned) {
        println!(
            "{:>7}s  {:>7.1} MB + {second} {:>5.1}  {:>15.1} MB + {second} {:>5.1}",
            at,
            *without as f64 / 1e6,
            *without_2 as f64 / 1e6,
            *with as f64 / 1e6,
            *with_2 as f64 / 1e6
        );
    }
}
