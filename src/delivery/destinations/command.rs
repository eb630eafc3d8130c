//! The command destination: runs an argv (never a shell unless asked) per delivery, with
//! values from the event only as separate arguments or environment variables; a timeout
//! ends the whole process group (TERM, then KILL); output is kept bounded, head and tail.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

mod settings;
mod verdict;

pub(super) use settings::validate;
pub use settings::{RawCommand, RawInherit, RawValue};

use crate::delivery::{AttemptOutcome, Destination, Outbound};
use crate::domain::{AttemptDetail, Verdict};
use crate::store::StoredRequest;

/// Where an argument's or variable's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    Literal(String),
    /// A JSON pointer into the body (`/checkout_sha`); strings verbatim, other values as JSON.
    Pointer(String),
    Header(String),
    /// What ingest classified, or an id: ref, branch, tag, project, commit_before,
    /// commit_after, sender, event_type, source, event_id, delivery_id.
    Field(String),
    /// The path of a temporary file holding the raw body (removed after the run).
    BodyFile,
}

pub use super::message::FIELDS;

#[derive(Debug, Clone, PartialEq)]
pub enum InheritEnv {
    Nothing,
    All,
    Names(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommandTarget {
    pub argv: Vec<ArgValue>,
    /// Run `argv[0]` as a `/bin/sh -c` script, the other values as `$1`, `$2`, ...
    pub shell: bool,
    pub working_dir: Option<PathBuf>,
    pub env: Vec<(String, ArgValue)>,
    pub inherit_env: InheritEnv,
    pub user: Option<u32>,
    pub group: Option<u32>,
    /// The raw body on stdin (else stdin is empty).
    pub stdin_body: bool,
    /// Exit codes that mean "another try cannot help": dead at once.
    pub permanent_exit_codes: Vec<i32>,
    /// After the timeout, how long the process group has between TERM and KILL.
    pub kill_grace: Duration,
    /// Bytes of output kept per stream (half from the head, half from the tail).
    pub output_limit: usize,
}

/// How long output may stay open after the command ended (a background child holding it).
const PIPE_LINGER: Duration = Duration::from_secs(2);

pub struct CommandDestination {
    target: CommandTarget,
    timeout: Duration,
}

impl CommandDestination {
    pub fn new(target: CommandTarget, timeout: Duration) -> Self {
        Self { target, timeout }
    }
}

/// The text of one value for this delivery; `None` when it names something absent (empty).
fn resolve(value: &ArgValue, outbound: &Outbound<'_>, body_file: &Option<PathBuf>) -> String {
    let request = outbound.request;
    match value {
        ArgValue::Literal(text) => text.clone(),
        ArgValue::Pointer(pointer) => serde_json::from_slice::<Value>(&request.body)
            .ok()
            .and_then(|body| body.pointer(pointer).cloned())
            .map(|found| match found {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .unwrap_or_default(),
        ArgValue::Header(name) => request
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default(),
        ArgValue::Field(field) => {
            super::message::field(field, request, outbound.delivery_id).unwrap_or_default()
        }
        ArgValue::BodyFile => body_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    }
}

/// The raw body in a file of its own, for `{ body_file = true }`; removed on drop.
struct BodyFile(PathBuf);

impl BodyFile {
    fn write(request: &StoredRequest, delivery: &str) -> std::io::Result<BodyFile> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = std::env::temp_dir().join(format!("hookrelay-{delivery}-{}", fastrand::u64(..)));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(&request.body)?;
        Ok(BodyFile(path))
    }
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running process group: ended (TERM, then KILL after the grace) if dropped before it
/// finished, so an aborted attempt (shutdown past its grace) leaves nothing behind.
struct Group {
    pgid: i32,
    grace: Duration,
    done: bool,
}

impl Group {
    fn signal(pgid: i32, signal: i32) {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }

    /// TERM to the whole group; KILL to whatever is left once the leader is gone or the
    /// grace has passed (a grandchild that ignores TERM goes too).
    async fn end(&mut self, child: &mut tokio::process::Child) {
        Self::signal(self.pgid, libc::SIGTERM);
        let _ = tokio::time::timeout(self.grace, child.wait()).await;
        Self::signal(self.pgid, libc::SIGKILL);
        let _ = child.wait().await;
        self.done = true;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (pgid, grace) = (self.pgid, self.grace);
        Self::signal(pgid, libc::SIGTERM);
        std::thread::spawn(move || {
            std::thread::sleep(grace);
            Self::signal(pgid, libc::SIGKILL);
        });
    }
}

/// The first and last bytes of a stream, and how many there were in all; reading never
/// stops, so a chatty child never blocks on a full pipe.
async fn capture(mut stream: impl AsyncRead + Unpin, limit: usize) -> (Vec<u8>, Vec<u8>, u64) {
    let half = limit / 2;
    let (mut head, mut tail) = (Vec::new(), std::collections::VecDeque::new());
    let mut total = 0u64;
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n as u64;
        let mut chunk = &buffer[..n];
        if head.len() < half {
            let take = (half - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
        }
        tail.extend(chunk.iter().copied());
        while tail.len() > half {
            tail.pop_front();
        }
    }
    (head, tail.into_iter().collect(), total)
}

fn describe_stream(name: &str, (head, tail, total): &(Vec<u8>, Vec<u8>, u64)) -> String {
    if *total == 0 {
        return String::new();
    }
    let kept = (head.len() + tail.len()) as u64;
    let mut text = format!("--- {name} ({total} bytes) ---\n");
    text.push_str(&String::from_utf8_lossy(head));
    if *total > kept {
        text.push_str(&format!("\n[... {} bytes cut ...]\n", total - kept));
    }
    text.push_str(&String::from_utf8_lossy(tail));
    text.push('\n');
    text
}

/// A run that could not start (or be watched): retried; `down` when hookrelay's side of the
/// machine is at fault (a missing program, no room for the body file).
fn failure(summary: &str, error: String, down: bool) -> AttemptOutcome {
    AttemptOutcome {
        verdict: Verdict::Retryable,
        retry_after: None,
        class: "spawn_error",
        detail: AttemptDetail::failed(summary, error),
        destination_down: down,
    }
}

#[async_trait::async_trait]
impl Destination for CommandDestination {
    async fn deliver(&self, outbound: &Outbound<'_>) -> AttemptOutcome {
        let target = &self.target;
        let needs_file = target
            .argv
            .iter()
            .chain(target.env.iter().map(|(_, v)| v))
            .any(|v| *v == ArgValue::BodyFile);
        let body_file = match needs_file {
            true => match BodyFile::write(outbound.request, outbound.delivery_id) {
                Ok(file) => Some(file),
                Err(err) => {
                    return failure(
                        "no body file",
                        format!("cannot write the body file: {err}"),
                        true,
                    );
                }
            },
            false => None,
        };
        let path = body_file.as_ref().map(|f| f.0.clone());
        let values: Vec<String> = target
            .argv
            .iter()
            .map(|v| resolve(v, outbound, &path))
            .collect();
        let mut command = if target.shell {
            let mut command = tokio::process::Command::new("/bin/sh");
            // The script is argv[0]; values reach it as $1, $2, ..., never spliced in.
            command
                .arg("-c")
                .arg(&values[0])
                .arg("hookrelay")
                .args(&values[1..]);
            command
        } else {
            let mut command = tokio::process::Command::new(&values[0]);
            command.args(&values[1..]);
            command
        };
        match &target.inherit_env {
            InheritEnv::All => {}
            InheritEnv::Nothing => {
                command.env_clear();
            }
            InheritEnv::Names(names) => {
                command.env_clear();
                for name in names {
                    if let Some(value) = std::env::var_os(name) {
                        command.env(name, value);
                    }
                }
            }
        }
        for (name, value) in &target.env {
            command.env(name, resolve(value, outbound, &path));
        }
        if let Some(dir) = &target.working_dir {
            command.current_dir(dir);
        }
        if let Some(uid) = target.user {
            command.uid(uid);
        }
        if let Some(gid) = target.group {
            command.gid(gid);
        }
        command
            .process_group(0)
            .stdin(if target.stdin_body {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                return failure(
                    "cannot start",
                    format!("cannot start {:?}: {err}", values[0]),
                    true,
                );
            }
        };
        let Some(pid) = child.id() else {
            return failure(
                "not watched",
                "the command exited before it could be watched".into(),
                false,
            );
        };
        let mut group = Group {
            pgid: pid as i32,
            grace: target.kill_grace,
            done: false,
        };
        if let Some(mut stdin) = child.stdin.take() {
            let body = outbound.request.body.clone();
            // A command that does not read its stdin must not block the run.
            tokio::spawn(async move {
                let _ = stdin.write_all(&body).await;
            });
        }
        let limit = target.output_limit;
        let stdout = tokio::spawn(capture(child.stdout.take().expect("piped"), limit));
        let stderr = tokio::spawn(capture(child.stderr.take().expect("piped"), limit));
        let waited = tokio::time::timeout(self.timeout, child.wait()).await;
        let status = match waited {
            Ok(status) => {
                group.done = true;
                status
            }
            Err(_) => {
                group.end(&mut child).await;
                Err(std::io::Error::other("timeout"))
            }
        };
        // A background process the command left may hold the pipes open: keep what was read.
        let collect = |task: tokio::task::JoinHandle<(Vec<u8>, Vec<u8>, u64)>| async move {
            match tokio::time::timeout(PIPE_LINGER, task).await {
                Ok(Ok(captured)) => captured,
                _ => (
                    Vec::new(),
                    b"[output still open after the command ended]".to_vec(),
                    0,
                ),
            }
        };
        let out = collect(stdout).await;
        let err = collect(stderr).await;
        let excerpt = describe_stream("stdout", &out) + &describe_stream("stderr", &err);
        let excerpt = (!excerpt.is_empty()).then_some(excerpt);
        let (verdict, class, summary) =
            verdict::judge(&status, &target.permanent_exit_codes, self.timeout);
        let error = match (verdict, &status) {
            (Verdict::Delivered, _) => None,
            (_, Err(_)) => Some(format!("{summary}: process group ended")),
            _ => Some(summary.clone()),
        };
        AttemptOutcome {
            verdict,
            retry_after: None,
            class,
            detail: AttemptDetail {
                summary,
                status: None,
                error,
                response_excerpt: excerpt,
                response_headers: None,
            },
            destination_down: false,
        }
    }
}
