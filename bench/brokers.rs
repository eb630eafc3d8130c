//! Publishing throughput per destination kind in one run: a stored backlog drained to an
//! instant HTTP sink, then to each local broker this build has (NATS JetStream, Redis Streams,
//! RabbitMQ, MQTT), every one acknowledged as its destination defines "delivered". The
//! relay's own figures (`destinations list`) say when the backlog is gone.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{self, Process};

const TOKEN: &str = "bench-token";

/// One kind to drain to: its name, its destination settings, and what readies the broker.
struct Kind {
    name: &'static str,
    settings: String,
}

fn config(db: &Path, destination: &str, paused: bool, concurrency: usize) -> String {
    format!(
        r#"
[server]
store = "sqlite://{db}"
shutdown_grace = "5s"
max_connections_per_client = 4096
max_connections = 4096

[sources.gitlab]
provider = "gitlab"
secret = "{TOKEN}"

[destinations.out]
{destination}
timeout = "10s"
concurrency = {concurrency}
paused = {paused}
retry = {{ initial_delay = "1s", max_delay = "10s" }}

[[routes]]
source = "gitlab"
destinations = ["out"]
"#,
        db = db.display()
    )
}

/// Deliveries of `out` the relay counts as succeeded (read through its API socket).
fn succeeded(relay_bin: &Path, config_path: &Path) -> anyhow::Result<u64> {
    let output = Command::new(relay_bin)
        .args(["destinations", "list", "--json", "--config"])
        .arg(config_path)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    for line in text.lines() {
        let view: serde_json::Value = serde_json::from_str(line)?;
        if view["name"] == "out" {
            return Ok(view["succeeded"].as_u64().unwrap_or(0));
        }
    }
    anyhow::bail!("no destination out in {text:?}")
}

#[cfg_attr(
    not(any(
        feature = "nats",
        feature = "redis",
        feature = "amqp",
        feature = "mqtt"
    )),
    allow(unused_mut, unused_variables)
)]
async fn kinds(sink_url: &str, run: &str) -> Vec<Kind> {
    let mut kinds = vec![Kind {
        name: "http (instant sink)",
        settings: format!("url = \"{sink_url}\"\nallow_private_network = true"),
    }];
    #[cfg(feature = "nats")]
    match nats_stream(run).await {
        Ok(subject) => kinds.push(Kind {
            name: "nats (JetStream ack)",
            settings: format!(
                "kind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"{subject}\""
            ),
        }),
        Err(err) => println!("  nats: skipped ({err:#})"),
    }
    #[cfg(feature = "redis")]
    match listening(6379) {
        true => kinds.push(Kind {
            name: "redis (XADD, append-once script)",
            settings: format!(
                "kind = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nstream = \"hookrelay-bench-{run}\"\nmaxlen = 1000000"
            ),
        }),
        false => println!("  redis: skipped (nothing listens on 127.0.0.1:6379)"),
    }
    #[cfg(feature = "amqp")]
    match amqp_queue(run).await {
        Ok(queue) => kinds.push(Kind {
            name: "amqp (publisher confirm)",
            settings: format!(
                "kind = \"amqp\"\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\nrouting_key = \"{queue}\""
            ),
        }),
        Err(err) => println!("  amqp: skipped ({err:#})"),
    }
    #[cfg(feature = "mqtt")]
    match listening(1883) {
        true => kinds.push(Kind {
            name: "mqtt (QoS 1 PUBACK)",
            settings: format!(
                "kind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"\ntopic = \"hookrelay-bench/{run}/{{event_type}}\""
            ),
        }),
        false => println!("  mqtt: skipped (nothing listens on 127.0.0.1:1883)"),
    }
    kinds
}

#[cfg(any(feature = "redis", feature = "mqtt"))]
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// A durable queue of its own on the default exchange (gone ten minutes after the run).
#[cfg(feature = "amqp")]
async fn amqp_queue(run: &str) -> anyhow::Result<String> {
    use lapin::types::{AMQPValue, FieldTable};
    let connection = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await?;
    let channel = connection.create_channel().await?;
    let queue = format!("hookrelay-bench-{run}");
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), AMQPValue::LongUInt(600_000));
    let options = lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), options, arguments)
        .await?;
    Ok(queue)
}

/// A JetStream stream of its own for this run; returns the subject to publish to.
#[cfg(feature = "nats")]
async fn nats_stream(run: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let client = tokio::time::timeout(
        Duration::from_secs(5),
        async_nats::connect("nats://127.0.0.1:4222"),
    )
    .await
    .context("no answer in 5 s")??;
    let stream = format!("HOOKRELAY_BENCH_{run}");
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("bench.{run}.>")],
            max_age: Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    Ok(format!("bench.{run}.{{event_type}}"))
}

/// Drains `count` stored events to each kind; prints deliveries per second for each.
pub async fn compare(
    relay_bin: &Path,
    dir: &Path,
    body: &str,
    sink: &support::Sink,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let run = uuid_like();
    println!(
        "publishing: backlogs of {count} stored events (3 KB) drained per destination kind, concurrency {concurrency}"
    );
    for kind in kinds(&sink.url, &run).await {
        let label = kind.name.split_whitespace().next().unwrap_or("kind");
        let db = dir.join(format!("brokers-{label}.db"));
        let config_path = dir.join(format!("brokers-{label}.toml"));
        let start = |paused: bool| -> anyhow::Result<Process> {
            std::fs::write(
                &config_path,
                config(&db, &kind.settings, paused, concurrency),
            )?;
            Process::start(
                relay_bin,
                &[
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--config",
                    config_path.to_str().unwrap(),
                ],
                dir,
                &format!("brokers-{label}"),
            )
        };
        let loader = start(true)?;
        support::post_many(&loader.url, body, TOKEN, count, 64).await?;
        loader.stop();
        sink.reset();
        let forwarder = start(false)?;
        let started = Instant::now();
        let mut done = 0;
        while started.elapsed() < Duration::from_secs(180) {
            done = succeeded(relay_bin, &config_path)?;
            if done >= count as u64 {
                break;
            }
            // Each look counts the destination's deliveries: often enough to time a drain
            // of seconds, rare enough not to slow it.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu = forwarder.cpu_time();
        forwarder.stop();
        let note = match done >= count as u64 {
            true => String::new(),
            false => format!("  (only {done} in 180 s)"),
        };
        println!(
            "  {:<34} {:>7.0} deliveries/s ({done} in {seconds:.2} s, relay CPU {:.1} µs each){note}",
            kind.name,
            done as f64 / seconds,
            support::micros_each(cpu, done),
        );
    }
    cleanup(&run).await;
    Ok(())
}

/// What this run left in the shared brokers: the Redis stream and the JetStream stream (the
/// queue expires by itself; MQTT keeps nothing without subscribers).
async fn cleanup(run: &str) {
    // The stream and the append-once script's keys beside it (one per delivery).
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!(
                "redis-cli --scan --pattern 'hookrelay-bench-{run}*' | xargs -r -n 1000 redis-cli del"
            ),
        ])
        .output();
    #[cfg(feature = "nats")]
    if let Ok(client) = async_nats::connect("nats://127.0.0.1:4222").await {
        let _ = async_nats::jetstream::new(client)
            .delete_stream(format!("HOOKRELAY_BENCH_{run}"))
            .await;
    }
}

fn uuid_like() -> String {
    format!("{:x}", support::micros_now())
}
