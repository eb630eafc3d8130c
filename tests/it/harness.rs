//! Test harness: the service in-process or the real binary as a child, a real HTTP sink, and
//! `eventually` for state seen only from outside.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tokio::sync::Notify;

pub const TOKEN: &str = "gitlab-secret-token";

/// Long enough for a slow CI machine, short enough that a hang fails the run.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_hookrelay")
}

/// A running hookrelay with its own data directory: in-process (the default, [`Relay::start`])
/// or the real binary as a child ([`Relay::child`]) for kill and signal tests and for tests
/// that read `/metrics` or the log (one registry and one log per process).
pub struct Relay {
    running: Running,
    pub url: String,
    pub dir: PathBuf,
}

enum Running {
    Child(Child),
    /// The service on a thread with its own runtime, so a test may block (CLI calls)
    /// while it serves.
    InProcess {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

impl Relay {
    /// Writes `config` to `dir/hookrelay.toml` and runs the service in-process on a free port.
    pub fn start(dir: &Path, config: &str) -> Relay {
        Self::start_on(dir, config, "127.0.0.1:0")
    }

    /// Like [`Relay::start`], listening on `listen`.
    pub fn start_on(dir: &Path, config: &str, listen: &str) -> Relay {
        let config_path = dir.join("hookrelay.toml");
        std::fs::write(&config_path, config).unwrap();
        let listen: SocketAddr = listen.parse().unwrap();
        let parsed = hookrelay::config::Config::parse(config, "hookrelay.toml", std::iter::empty())
            .unwrap_or_else(|errors| panic!("config refused:\n{errors}"));
        let (started, ready) = std::sync::mpsc::channel::<Result<String, String>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let built = async {
                    let listener = tokio::net::TcpListener::bind(listen).await?;
                    let mut app = hookrelay::App::build(parsed, listener).await?;
                    let address = app.local_addr()?;
                    let scheme = if app.tls().is_some() { "https" } else { "http" };
                    app.reload_from(config_path, Some(address));
                    anyhow::Ok((app, format!("{scheme}://{address}")))
                };
                match built.await {
                    Ok((app, url)) => {
                        let _ = started.send(Ok(url));
                        app.run_until(async {
                            let _ = stopped.await;
                        })
                        .await;
                    }
                    Err(err) => {
                        let _ = started.send(Err(format!("{err:#}")));
                    }
                }
            });
        });
        let url = match ready.recv() {
            Ok(Ok(url)) => url,
            Ok(Err(err)) => panic!("hookrelay did not start: {err}"),
            Err(_) => panic!("hookrelay's thread ended before it started"),
        };
        Relay {
            running: Running::InProcess {
                stop: Some(stop),
                thread: Some(thread),
            },
            url,
            dir: dir.to_owned(),
        }
    }

    /// Writes `config` to `dir/hookrelay.toml` and starts `hookrelay serve` as a child
    /// process on a free port.
    pub fn child(dir: &Path, config: &str) -> Relay {
        Self::child_with(dir, config, "127.0.0.1:0", &[])
    }

    /// Like [`Relay::child`], listening on `listen`.
    pub fn child_on(dir: &Path, config: &str, listen: &str) -> Relay {
        Self::child_with(dir, config, listen, &[])
    }

    /// Like [`Relay::child`], listening on `listen`, with extra environment variables.
    pub fn child_with(dir: &Path, config: &str, listen: &str, env: &[(&str, &str)]) -> Relay {
        let config_path = dir.join("hookrelay.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("hookrelay.log"))
            .unwrap();
        let mut child = Command::new(binary())
            .args(["serve", "--listen", listen, "--config"])
            .arg(&config_path)
            .env("HOOKRELAY_LOG", "info,hookrelay=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawning hookrelay");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(dir.join("hookrelay.log")).unwrap_or_default();
                panic!("hookrelay did not start: {line:?}\n{log}")
            })
            .to_owned();
        Relay {
            running: Running::Child(child),
            url,
            dir: dir.to_owned(),
        }
    }

    fn process(&mut self) -> &mut Child {
        match &mut self.running {
            Running::Child(child) => child,
            Running::InProcess { .. } => {
                panic!(
                    "this relay runs in-process: start it with Relay::child to kill or signal it"
                )
            }
        }
    }

    pub fn hook_url(&self, source: &str) -> String {
        format!("{}/hooks/{source}", self.url)
    }

    pub fn pid(&self) -> u32 {
        self.must_be_child("a process id");
        match &self.running {
            Running::Child(child) => child.id(),
            Running::InProcess { .. } => unreachable!(),
        }
    }

    /// `kill -9`: no chance to flush or release anything.
    pub fn kill(&mut self) {
        let child = self.process();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether the process has exited (killed by someone else, for instance).
    pub fn try_exited(&mut self) -> bool {
        self.process().try_wait().ok().flatten().is_some()
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.process();
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        child.wait().unwrap()
    }

    /// Runs a CLI command against this relay's config (and so its store).
    pub fn cli(&self, args: &[&str]) -> Output {
        cli_in(&self.dir, args)
    }

    fn must_be_child(&self, what: &str) {
        assert!(
            matches!(self.running, Running::Child(_)),
            "{what} belong to the whole process: start this relay with Relay::child"
        );
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.must_be_child("metrics");
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until a `/metrics` line starts with `line`; panics after [`PATIENCE`].
    pub async fn wait_for_metric(&self, line: &str) {
        eventually(&format!("metric {line:?}"), || async {
            let metrics = self.metrics().await;
            metrics.lines().any(|l| l.starts_with(line)).then_some(())
        })
        .await
    }

    pub fn log(&self) -> String {
        self.must_be_child("logs");
        std::fs::read_to_string(self.dir.join("hookrelay.log")).unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Child(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::InProcess { stop, thread } => {
                // A graceful stop (within shutdown_grace): the store's lock is free after.
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// Runs `hookrelay serve` with `config`, expecting it to refuse to start; returns its log.
pub fn serve_refused(dir: &Path, name: &str, config: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("hookrelay kept running with {name}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "serve exited 0 with {name}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `hookrelay config check` of `text`, expected to fail; its whole output.
pub fn config_check(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("check.toml");
    std::fs::write(&path, text).unwrap();
    let output = std::process::Command::new(binary())
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success(), "accepted:\n{text}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn cli_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("HOOKRELAY_CONFIG", dir.join("hookrelay.toml"))
        .output()
        .unwrap()
}

/// Every delivery's state and attempt count, read from the store file itself: for checks
/// made while no server runs (a restart would change what is there).
pub fn stored_deliveries(dir: &Path) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open(dir.join("hookrelay.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT state, attempts FROM deliveries ORDER BY seq")
        .unwrap();
    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A config with one GitLab source and one HTTP destination routed for every event.
pub fn config(dir: &Path, sink_url: &str, destination_extra: &str) -> String {
    format!(
        r#"
[server]
store = "sqlite://{db}"
shutdown_grace = "5s"

[sources.gitlab]
provider = "gitlab"
secret = "{TOKEN}"
max_body = "1MiB"

[destinations.sink]
url = "{sink_url}"
allow_private_network = true
timeout = "5s"
{destination_extra}

[[routes]]
source = "gitlab"
destinations = ["sink"]
"#,
        db = dir.join("hookrelay.db").display()
    )
}

pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
struct SinkState {
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    status: Arc<AtomicU16>,
    /// Requests still to fail with 500 before `status` applies.
    fail_next: Arc<AtomicUsize>,
    /// Milliseconds to wait before answering.
    delay_ms: Arc<AtomicU64>,
    /// Every request whose arrival number is a multiple of this fails with 503 (0: none).
    fail_every: Arc<AtomicUsize>,
}

/// The destination side: records every request and answers with a status the test controls.
pub struct Sink {
    pub url: String,
    state: SinkState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Sink {
    pub async fn start() -> Sink {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(address: SocketAddr) -> Sink {
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let url = format!("http://{}/deliver", listener.local_addr().unwrap());
        let state = SinkState {
            received: Arc::default(),
            arrived: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            fail_next: Arc::default(),
            delay_ms: Arc::default(),
            fail_every: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/deliver", axum::routing::post(record))
            .with_state(state.clone());
        let (shutdown, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Sink {
            url,
            state,
            shutdown: Some(shutdown),
        }
    }

    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    pub fn delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn fail_next(&self, count: usize) {
        self.state.fail_next.store(count, Ordering::SeqCst);
    }

    /// Answers 503 to every `n`th request from now on (10: a tenth of them).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))] // the replica tests use it
    pub fn fail_every(&self, n: usize) {
        self.state.fail_every.store(n, Ordering::SeqCst);
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// Waits until `done` holds for what arrived so far; panics after [`PATIENCE`].
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Received]) -> bool) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let arrived = self.state.arrived.notified();
            if done(&self.state.received.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "sink: gave up waiting for {what}; got {} requests",
                    self.count()
                );
            }
        }
    }

    pub async fn wait_for(&self, count: usize) {
        self.wait_until(&format!("{count} requests"), |r| r.len() >= count)
            .await;
    }

    pub fn with_received<T>(&self, read: impl FnOnce(&[Received]) -> T) -> T {
        read(&self.state.received.lock().unwrap())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn record(State(state): State<SinkState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let failing = state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let arrival = {
        let mut received = state.received.lock().unwrap();
        received.push(Received { headers, body });
        received.len()
    };
    state.arrived.notify_waiters();
    let every = state.fail_every.load(Ordering::SeqCst);
    if every > 0 && arrival % every == 0 {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap()
    }
}

/// Finds a port nobody listens on (bound, then released).
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

pub fn push_body(n: usize) -> String {
    format!(
        r#"{{"object_kind":"push","event_name":"push","ref":"refs/heads/main","n":{n},"project":{{"path_with_namespace":"group/app"}}}}"#
    )
}

/// Posts push `n` to a hook URL (for tasks that hold no `Relay`); its status.
pub async fn post_push_to(client: &reqwest::Client, url: &str, n: usize) -> reqwest::StatusCode {
    send_push(client, url, n, None).await.unwrap().status()
}

/// Posts push `n` to a hook URL, with `key` as its Idempotency-Key; the answer, or the error
/// when the relay went away before answering.
pub async fn send_push(
    client: &reqwest::Client,
    url: &str,
    n: usize,
    key: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", TOKEN)
        .body(push_body(n));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await
}

pub async fn post_push(
    client: &reqwest::Client,
    relay: &Relay,
    body: String,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = client
        .post(relay.hook_url("gitlab"))
        .header("content-type", "application/json")
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", TOKEN)
        .body(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

/// Posts pushes `ns` all at once to `relay` (GitLab, each with the Idempotency-Key
/// `{key_prefix}-{n}`) and kills the relay with SIGKILL once `kill_after` are acknowledged;
/// returns the pushes answered 2xx. Answers are gathered while it waits, so a relay that is
/// gone before the kill point (every request then fails) ends the wait: it never hangs.
pub async fn posts_cut_by_kill(
    client: &reqwest::Client,
    relay: &mut Relay,
    ns: std::ops::Range<usize>,
    key_prefix: &str,
    kill_after: usize,
) -> std::collections::BTreeSet<usize> {
    let count = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let mut requests = tokio::task::JoinSet::new();
    for n in ns {
        let (client, url) = (client.clone(), relay.hook_url("gitlab"));
        let (count, enough, key) = (count.clone(), enough.clone(), format!("{key_prefix}-{n}"));
        requests.spawn(async move {
            let response = send_push(&client, &url, n, Some(&key)).await;
            let ok = response.is_ok_and(|r| r.status().is_success());
            if ok && count.fetch_add(1, Ordering::SeqCst) + 1 == kill_after {
                enough.notify_one();
            }
            ok.then_some(n)
        });
    }
    let mut acknowledged = std::collections::BTreeSet::new();
    let mut killed = false;
    loop {
        tokio::select! {
            _ = enough.notified(), if !killed => {
                relay.kill();
                killed = true;
            }
            finished = requests.join_next() => match finished {
                Some(result) => acknowledged.extend(result.unwrap()),
                None => break,
            },
        }
    }
    if !killed {
        eprintln!(
            "the relay ended before {kill_after} acknowledgements (exited: {})",
            relay.try_exited()
        );
        relay.kill();
    }
    acknowledged
}

/// Posts pushes `ns` one after another; each must be accepted (202).
pub async fn accept_pushes(client: &reqwest::Client, relay: &Relay, ns: std::ops::Range<usize>) {
    for n in ns {
        let status = post_push(client, relay, push_body(n), None).await.status();
        assert_eq!(status, 202, "push {n}");
    }
}

/// The item named `name` of a `list --json` CLI command (`sources`, `destinations`).
fn listed(relay: &Relay, what: &str, name: &str) -> serde_json::Value {
    let output = relay.cli(&[what, "list", "--json"]);
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {what} list"))
}

/// A source's requests by outcome, as the API counts them (`sources list`).
pub fn source_requests(relay: &Relay, source: &str) -> serde_json::Value {
    listed(relay, "sources", source)["requests"].clone()
}

/// A destination as `destinations list` shows it.
pub fn destination(relay: &Relay, name: &str) -> serde_json::Value {
    listed(relay, "destinations", name)
}

/// Asks `probe` until it answers `Some`, and returns that; panics after [`PATIENCE`] saying
/// what was awaited. The one poll loop of the tests, for state seen only from outside.
pub async fn eventually<T, F>(what: &str, mut probe: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let probe = || {
        let answer = probe();
        async move { answer.await.ok_or_else(String::new) }
    };
    eventually_saying(what, probe).await
}

/// [`eventually`] for probes that can say what they saw instead (`Err`): the last of it is
/// in the panic message.
pub async fn eventually_saying<T, F>(what: &str, mut probe: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let seen = match probe().await {
            Ok(found) => return found,
            Err(seen) => seen,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}; last seen:\n{seen}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls a CLI query until `done` holds; the state lives in another process's store.
pub async fn wait_for_cli(
    relay: &Relay,
    args: &[&str],
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    eventually_saying(what, || async {
        let output = relay.cli(args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        match done(&stdout) {
            true => Ok(stdout),
            false => Err(format!(
                "{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )),
        }
    })
    .await
}

/// Waits until exactly `count` deliveries are in `state` (CLI, JSON lines); returns them.
pub async fn wait_for_state(relay: &Relay, state: &str, count: usize) -> String {
    let what = format!("{count} deliveries {state}");
    wait_for_cli(
        relay,
        &["deliveries", "list", "--state", state, "--json"],
        &what,
        |out: &str| out.lines().count() == count,
    )
    .await
}

pub use crate::hanging::Hanging;
