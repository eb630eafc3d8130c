//! Benchmark plumbing: child processes, wrk runs and their parsing, the sink, load clients.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::http::HeaderMap;
use tokio::sync::Notify;

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn micros_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn ms(duration: Duration) -> String {
    format!("{:.2}ms", duration.as_secs_f64() * 1000.0)
}

/// The release binary next to this example (`target/release/examples/bench` → `target/release/hookrelay`).
pub fn relay_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("HOOKRELAY_BIN") {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("hookrelay"))
        .context("locating the hookrelay binary")?;
    if !path.exists() {
        bail!(
            "{} not found: build it with cargo build --release",
            path.display()
        );
    }
    Ok(path)
}

/// A server process that prints `listening on http://ADDR` as its first line.
pub struct Process {
    child: Child,
    pub url: String,
}

impl Process {
    pub fn start(
        program: &Path,
        args: &[&str],
        dir: &Path,
        label: &str,
    ) -> anyhow::Result<Process> {
        let log = std::fs::File::create(dir.join(format!("{label}.log")))?;
        let mut child = Command::new(program)
            .args(args)
            .env("HOOKRELAY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("{label} did not start: {line:?}"))?
            .to_owned();
        Ok(Process { child, url })
    }

    /// Peak resident set size (VmHWM) in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        self.status_mb("VmHWM:")
    }

    fn status_mb(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    }

    /// Resident set size now (VmRSS) in MB.
    pub fn rss_mb(&self) -> f64 {
        self.status_mb("VmRSS:")
    }

    /// CPU time the process has used so far (user + system, all threads).
    pub fn cpu_time(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        stat_ticks(&stat, 13, 14)
    }

    /// SIGTERM and wait, so the store is closed cleanly before the next phase.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The ceiling: axum reading the body and answering 200, nothing stored.
pub async fn bare_server() -> anyhow::Result<()> {
    let app = axum::Router::new().route(
        "/hooks/{source}",
        axum::routing::post(|_body: axum::body::Bytes| async { "{}" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    use std::io::Write as _;
    std::io::stdout().flush()?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// A GitLab push event of about 3 KB, shaped like the documented payload.
pub fn push_body_3k() -> String {
    let commits: Vec<String> = (0..6)
        .map(|i| {
            format!(
                r#"{{"id":"b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327{i}","message":"Update Catalan translation to e38cb41 (#{i})\n\nSee https://gitlab.example.com/mike/diaspora/issues/{i}","title":"Update Catalan translation to e38cb41","timestamp":"2011-12-12T14:27:31+02:00","url":"http://example.com/mike/diaspora/commit/b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327","author":{{"name":"Jordi Mallach","email":"jordi@softcatala.org"}},"added":["CHANGELOG"],"modified":["app/controller/application.rb"],"removed":[]}}"#
            )
        })
        .collect();
    format!(
        r#"{{"object_kind":"push","event_name":"push","before":"95790bf891e76fee5e1747ab589903a6a1f80f22","after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7","ref":"refs/heads/master","ref_protected":true,"checkout_sha":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7","user_id":4,"user_name":"John Smith","user_username":"jsmith","user_email":"john@example.com","project_id":15,"project":{{"id":15,"name":"Diaspora","description":"","web_url":"http://example.com/mike/diaspora","git_ssh_url":"git@example.com:mike/diaspora.git","git_http_url":"http://example.com/mike/diaspora.git","namespace":"Mike","visibility_level":0,"path_with_namespace":"mike/diaspora","default_branch":"master"}},"commits":[{}],"total_commits_count":6}}"#,
        commits.join(",")
    )
}

/// A wrk script posting the body with GitLab headers and a unique, random-looking
/// Idempotency-Key per request.
pub fn write_wrk_script(dir: &Path, body: &str, token: &str, run: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("post-{run}.lua"));
    let script = format!(
        r#"wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Gitlab-Event"] = "Push Hook"
wrk.headers["X-Gitlab-Token"] = "{token}"
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local counter = 0
function request()
  counter = counter + 1
  -- Real senders use random UUIDs, which land all over the dedup index; so do we.
  wrk.headers["Idempotency-Key"] = string.format("%08x%08x-{run}-%d-%d", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff), tid, counter)
  return wrk.format()
end
"#
    );
    std::fs::write(&path, script)?;
    Ok(path)
}

/// Fields `user` and `system` (0-based, counted after the command name) of a
/// `/proc/.../stat` line, summed, as a duration.
fn stat_ticks(stat: &str, user: usize, system: usize) -> Duration {
    // The command name may hold spaces; the fields proper start after its closing ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |index: usize| -> u64 {
        fields
            .get(index - 2)
            .and_then(|field| field.parse().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros((tick(user) + tick(system)) * 1_000_000 / per_second)
}

/// CPU time spent per item, in µs.
pub fn micros_each(spent: Duration, items: u64) -> f64 {
    spent.as_secs_f64() * 1e6 / items.max(1) as f64
}

/// The most items a second this machine's cores could carry at `micros` of CPU each.
pub fn cores_allow(micros: f64) -> f64 {
    cores() as f64 * 1e6 / micros
}

/// CPU time this process has used so far.
pub fn own_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    stat_ticks(&stat, 13, 14)
}

/// CPU time used so far by every process whose command is `name` (e.g. the database
/// server's processes); one that ended in between takes its time with it.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub fn processes_cpu_time(name: &str) -> Duration {
    let wanted = format!("({name})");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter(|stat| stat.split_whitespace().nth(1) == Some(wanted.as_str()))
        .map(|stat| stat_ticks(&stat, 13, 14))
        .sum()
}

/// CPU time of this process's children that have been waited for (wrk runs).
pub fn children_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    stat_ticks(&stat, 15, 16)
}

#[derive(Debug, Clone)]
pub struct WrkResult {
    /// Requests answered in the run (2xx or not).
    pub requests: u64,
    /// The CPU time wrk itself used generating the load.
    pub client_cpu: Duration,
    pub requests_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub non_2xx: u64,
}

pub fn run_wrk(
    url: &str,
    script: &Path,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<WrkResult> {
    // What the previous run left in the page cache is written out first, so its writeback
    // does not land in this run's fsyncs (seen as p99 readings swinging 6 to 84 ms).
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let client_cpu_before = children_cpu_time();
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let client_cpu = children_cpu_time().saturating_sub(client_cpu_before);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let parsed = parse_wrk(&text).map(|result| WrkResult {
        client_cpu,
        ..result
    });
    parsed.with_context(|| {
        format!(
            "unexpected wrk output:\n{text}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn parse_wrk(text: &str) -> Option<WrkResult> {
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(prefix))
            .map(|rest| rest.trim().to_owned())
    };
    let requests_per_sec = field("Requests/sec:")?.parse().ok()?;
    let p50 = parse_wrk_duration(&field("50%")?)?;
    let p99 = parse_wrk_duration(&field("99%")?)?;
    let non_2xx = field("Non-2xx or 3xx responses:")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let requests = text
        .lines()
        .find(|line| line.contains(" requests in "))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some(WrkResult {
        requests,
        client_cpu: Duration::ZERO,
        requests_per_sec,
        p50,
        p99,
        non_2xx,
    })
}

fn parse_wrk_duration(raw: &str) -> Option<Duration> {
    let split = raw.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = raw.split_at(split);
    let number: f64 = number.trim().parse().ok()?;
    let micros = match unit {
        "us" => number,
        "ms" => number * 1_000.0,
        "s" => number * 1_000_000.0,
        "m" => number * 60_000_000.0,
        _ => return None,
    };
    Some(Duration::from_micros(micros as u64))
}

/// The destination: counts deliveries and, for latency probes, records receive→delivered time.
#[derive(Clone)]
pub struct Sink {
    pub url: String,
    count: Arc<AtomicU64>,
    latencies: Arc<Mutex<Vec<Duration>>>,
    arrived: Arc<Notify>,
}

impl Sink {
    /// A sink that answers at once.
    pub async fn start() -> anyhow::Result<Sink> {
        Self::start_with_delay(Duration::ZERO).await
    }

    /// A sink that takes `delay` to answer each delivery (a real service's work).
    pub async fn start_with_delay(delay: Duration) -> anyhow::Result<Sink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sink = Sink {
            url: format!("http://{}/deliver", listener.local_addr()?),
            count: Arc::default(),
            latencies: Arc::default(),
            arrived: Arc::default(),
        };
        let state = sink.clone();
        let app = axum::Router::new().route(
            "/deliver",
            axum::routing::post(move |headers: HeaderMap, _body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    state.record(&headers);
                    "ok"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(sink)
    }

    fn record(&self, headers: &HeaderMap) {
        // Latency probes carry their send time in the key: lat-<n>-<micros>.
        let sent = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|key| key.starts_with("lat-"))
            .and_then(|key| key.rsplit('-').next())
            .and_then(|micros| micros.parse::<u64>().ok());
        if let Some(sent) = sent {
            let latency = Duration::from_micros(micros_now().saturating_sub(sent));
            self.latencies.lock().unwrap().push(latency);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.arrived.notify_waiters();
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The receive→delivered latencies recorded since the last reset.
    pub fn latencies(&self) -> Vec<Duration> {
        self.latencies.lock().unwrap().clone()
    }

    pub fn reset(&self) {
        self.count.store(0, Ordering::Relaxed);
        self.latencies.lock().unwrap().clear();
    }

    /// True when `count` arrived within `patience`.
    pub async fn wait_for(&self, count: u64, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let arrived = self.arrived.notified();
            if self.count() >= count {
                return true;
            }
            // Arrivals notify waiters; the short cap only guards against a missed wake-up.
            let wake = tokio::time::Instant::now() + Duration::from_millis(50);
            if tokio::time::timeout_at(deadline.min(wake), arrived)
                .await
                .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return self.count() >= count;
            }
        }
    }
}

/// Posts `count` events with `concurrency` requests in flight.
pub async fn post_many(
    base: &str,
    body: &str,
    token: &str,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, next) = (client.clone(), next.clone());
        let (url, body, token) = (
            format!("{base}/hooks/gitlab"),
            body.to_owned(),
            token.to_owned(),
        );
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count as u64 {
                    return Ok::<_, anyhow::Error>(());
                }
                let response = client
                    .post(&url)
                    .header("x-gitlab-event", "Push Hook")
                    .header("x-gitlab-token", &token)
                    .header("idempotency-key", format!("load-{n}"))
                    .body(body.clone())
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("load request answered {}", response.status());
                }
            }
        });
    }
    while let Some(result) = workers.join_next().await {
        result??;
    }
    Ok(())
}

/// A GitLab push to `base`, with a fresh idempotency key made from `tag`.
pub fn push_request(
    client: &reqwest::Client,
    base: &str,
    body: &str,
    token: &str,
    tag: &str,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{base}/hooks/gitlab"))
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", token)
        .header("idempotency-key", format!("{tag}-{}", micros_now()))
        .body(body.to_owned())
}

/// p50, p99 and max of `samples` (sorted in place); zeros when there are none.
pub fn quantiles(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort();
    let pick = |q: f64| {
        samples
            .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    (
        pick(0.50),
        pick(0.99),
        samples.last().copied().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_output_parses() {
        let text = "  291000 requests in 3.00s, 1 MB read\n  Latency Distribution\n     50%  235.00us\n     99%    1.20ms\n  Non-2xx or 3xx responses: 3\nRequests/sec:  97000.12\n";
        let parsed = super::parse_wrk(text).unwrap();
        assert_eq!(parsed.p50.as_micros(), 235);
        assert_eq!(parsed.p99.as_micros(), 1200);
        assert_eq!(parsed.non_2xx, 3);
        assert_eq!(parsed.requests, 291000);
    }
}
