//! Delivery benchmarks: draining a stored backlog (to an instant sink with the default
//! concurrency, to a 5 ms sink with concurrency 64), delivery while ingest runs flat out,
//! receive→delivered latency under a constant offered load, and memory with a large backlog.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::support::{self, Process, Sink, WrkResult};

/// A relay's config for (db path, sink url, paused, concurrency).
pub type ConfigFor<'a> = &'a dyn Fn(&Path, &str, bool, Option<usize>) -> String;

/// How a relay for one phase is configured.
pub struct Setup<'a> {
    pub relay_bin: &'a Path,
    pub dir: &'a Path,
    pub body: &'a str,
    pub token: &'a str,
    pub config: ConfigFor<'a>,
}

impl Setup<'_> {
    fn start(
        &self,
        label: &str,
        sink: &Sink,
        paused: bool,
        concurrency: Option<usize>,
    ) -> anyhow::Result<Process> {
        self.start_with(label, sink, paused, concurrency, "")
    }

    /// Like `start`, with `extra` TOML after the config.
    fn start_with(
        &self,
        label: &str,
        sink: &Sink,
        paused: bool,
        concurrency: Option<usize>,
        extra: &str,
    ) -> anyhow::Result<Process> {
        let config_path = self.dir.join(format!("{label}.toml"));
        let db = self.dir.join(format!("{label}.db"));
        let text = (self.config)(&db, &sink.url, paused, concurrency) + extra;
        std::fs::write(&config_path, text)?;
        Process::start(
            self.relay_bin,
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--config",
                config_path.to_str().unwrap(),
            ],
            self.dir,
            label,
        )
    }
}

pub struct Drain {
    pub delivered: u64,
    pub seconds: f64,
    pub drained: bool,
    /// The relay's CPU time per delivery (start-up included), in µs.
    pub cpu_us: f64,
}

impl Drain {
    pub fn per_second(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }
}

/// Stores `count` events with the destination paused, restarts with it running and times
/// the backlog's drain.
pub async fn drain(
    setup: &Setup<'_>,
    label: &str,
    sink: &Sink,
    count: usize,
    concurrency: Option<usize>,
) -> anyhow::Result<Drain> {
    let loader = setup.start(label, sink, true, concurrency)?;
    support::post_many(&loader.url, setup.body, setup.token, count, 64).await?;
    loader.stop();
    sink.reset();
    let started = Instant::now();
    let forwarder = setup.start(label, sink, false, concurrency)?;
    let drained = sink.wait_for(count as u64, Duration::from_secs(120)).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = forwarder.cpu_time();
    forwarder.stop();
    Ok(Drain {
        delivered: sink.count(),
        seconds,
        drained,
        cpu_us: support::micros_each(cpu, sink.count()),
    })
}

pub struct UnderLoad {
    pub ingest: WrkResult,
    /// Delivered while wrk ran, and after it until the backlog was gone.
    pub delivered_during: u64,
    pub tail_seconds: f64,
}

/// wrk flat out against a relay whose destination runs (default concurrency): how much of
/// what is accepted is delivered in the same seconds.
pub async fn under_load(
    setup: &Setup<'_>,
    sink: &Sink,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<UnderLoad> {
    let relay = setup.start("underload", sink, false, None)?;
    let script = support::write_wrk_script(setup.dir, setup.body, setup.token, "underload")?;
    sink.reset();
    let url = format!("{}/hooks/gitlab", relay.url);
    let ingest =
        tokio::task::spawn_blocking(move || support::run_wrk(&url, &script, connections, seconds))
            .await??;
    let delivered_during = sink.count();
    let accepted = ingest.requests.saturating_sub(ingest.non_2xx);
    let tail = Instant::now();
    sink.wait_for(accepted, Duration::from_secs(120)).await;
    let tail_seconds = tail.elapsed().as_secs_f64();
    relay.stop();
    Ok(UnderLoad {
        ingest,
        delivered_during,
        tail_seconds,
    })
}

pub struct Steady {
    pub rate: u64,
    pub sent: u64,
    pub delivered: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// The largest gap between accepted and delivered seen while the load ran.
    pub max_backlog: u64,
    pub backlog_at_end: u64,
    /// CPU time per request while the load ran, in µs: the relay's (receive and deliver),
    /// and this process's (the generator and the sink).
    pub relay_cpu_us: f64,
    pub bench_cpu_us: f64,
}

/// An open-loop generator: `rate` requests a second for `seconds`, each sent on schedule
/// whether or not earlier ones were answered (no coordinated omission), each stamped with
/// its send time; the sink measures receive→delivered.
pub async fn steady(
    setup: &Setup<'_>,
    sink: &Sink,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Steady> {
    let relay = setup.start("steady", sink, false, None)?;
    sink.reset();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let total = rate * seconds;
    let (relay_cpu, bench_cpu) = (relay.cpu_time(), support::own_cpu_time());
    let accepted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    let mut requests = tokio::task::JoinSet::new();
    let (mut sent, mut max_backlog) = (0u64, 0u64);
    while sent < total {
        ticker.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            let request = support::push_request(
                &client,
                &relay.url,
                setup.body,
                setup.token,
                &format!("lat-{sent}"),
            );
            let (accepted, failed) = (accepted.clone(), failed.clone());
            requests.spawn(async move {
                match request.send().await {
                    Ok(response) if response.status().is_success() => {
                        accepted.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            });
            sent += 1;
        }
        while requests.try_join_next().is_some() {}
        let backlog = accepted
            .load(Ordering::Relaxed)
            .saturating_sub(sink.count());
        max_backlog = max_backlog.max(backlog);
    }
    while requests.join_next().await.is_some() {}
    let per_request = |spent: Duration| support::micros_each(spent, total);
    let relay_cpu_us = per_request(relay.cpu_time() - relay_cpu);
    let bench_cpu_us = per_request(support::own_cpu_time() - bench_cpu);
    let backlog_at_end = accepted
        .load(Ordering::Relaxed)
        .saturating_sub(sink.count());
    if failed.load(Ordering::Relaxed) > 0 {
        bail!(
            "{} of {total} steady requests were not accepted",
            failed.load(Ordering::Relaxed)
        );
    }
    sink.wait_for(total, Duration::from_secs(60)).await;
    relay.stop();
    let mut samples = sink.latencies();
    let (p50, p99, max) = support::quantiles(&mut samples);
    Ok(Steady {
        rate,
        sent: total,
        delivered: samples.len() as u64,
        p50,
        p99,
        max,
        max_backlog,
        backlog_at_end,
        relay_cpu_us,
        bench_cpu_us,
    })
}

/// Resident memory after storing `count` events with the destination paused; then the
/// console's pages on that store, timed (after the memory is read).
pub async fn memory(setup: &Setup<'_>, sink: &Sink, count: usize) -> anyhow::Result<(f64, f64)> {
    let api = crate::console::api_section();
    let relay = setup.start_with("memory", sink, true, None, &api)?;
    support::post_many(&relay.url, setup.body, setup.token, count, 64).await?;
    let (now, peak) = (relay.rss_mb(), relay.peak_rss_mb());
    crate::console::timings(&relay.url, count).await?;
    relay.stop();
    Ok((now, peak))
}
