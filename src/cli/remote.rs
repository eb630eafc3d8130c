//! Inspection and control commands: every one is a call to a server's management API, so
//! they work the same against the local server (its unix socket) and a remote one (`--url`).

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::output::{ago, last_outcome, state_cell, table, text};
use crate::client::{Client, ClientError, Endpoint};

mod bulk;
mod inspect;
mod jobs;
mod tail;

#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The server's API, such as https://relay.example:8081 (default: the local server's
    /// socket, from the config file).
    #[arg(long, env = "HOOKRELAY_URL", global = true)]
    url: Option<String>,
    /// API token (needed with --url).
    #[arg(long, env = "HOOKRELAY_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Config file naming the local server's socket (api.socket).
    #[arg(
        long,
        short,
        env = "HOOKRELAY_CONFIG",
        default_value = "hookrelay.toml",
        global = true
    )]
    config: PathBuf,
    /// JSON for scripts: one object per line for lists.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Args, Clone, Default)]
pub struct FilterArgs {
    /// Events received by this source (its name in the config).
    #[arg(long)]
    source: Option<String>,
    /// The sender's event type, as stored (`Push Hook`, `push`, `pull_request`).
    #[arg(long)]
    event_type: Option<String>,
    /// Received at or after: an age (12h, 30m), RFC 3339 time or epoch milliseconds.
    #[arg(long)]
    since: Option<String>,
    /// Received at or before (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Branch, tag or full ref.
    #[arg(long = "ref")]
    git_ref: Option<String>,
    /// The project or repository path (`group/app`, `owner/repo`).
    #[arg(long)]
    project: Option<String>,
    /// Who caused the event (GitLab's user_username, GitHub's sender.login).
    #[arg(long)]
    sender: Option<String>,
    /// Events whose body contains this text (`events list` and `tail` only).
    #[arg(long)]
    contains: Option<String>,
    /// pending, in_flight, succeeded, dead, superseded or cancelled.
    #[arg(long)]
    state: Option<String>,
    /// Deliveries to this destination (its name in the config).
    #[arg(long)]
    destination: Option<String>,
}

impl FilterArgs {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("source", &self.source),
            ("event_type", &self.event_type),
            ("since", &self.since),
            ("until", &self.until),
            ("ref", &self.git_ref),
            ("project", &self.project),
            ("sender", &self.sender),
            ("contains", &self.contains),
            ("state", &self.state),
            ("destination", &self.destination),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_deref().map(|v| (key, v)))
        .collect()
    }

    fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }

    fn as_json(&self) -> Value {
        self.pairs()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::from(v)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

#[derive(Subcommand)]
pub enum RemoteCommand {
    /// Received events: list, show.
    Events {
        #[command(subcommand)]
        command: ListShow,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Deliveries (one per event and destination): list, show.
    Deliveries {
        #[command(subcommand)]
        command: ListShow,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Deliver again now with a fresh retry window: one delivery by id, or every delivery
    /// matching the filters (asks first, then follows the outcomes).
    Replay(bulk::BulkArgs),
    /// Stop waiting deliveries: one by id, or every one matching the filters.
    Cancel(bulk::BulkArgs),
    /// Destinations: live state and backlog; pause and resume.
    Destinations {
        #[command(subcommand)]
        command: DestinationsCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Apply the config file again without a restart (as SIGHUP does).
    Reload {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Bulk jobs (replays and cancels by filter): list, follow one to its end.
    Jobs {
        #[command(subcommand)]
        command: jobs::JobsCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Follow new events and delivery state changes as they happen (Ctrl-C stops).
    Tail(tail::TailArgs),
    /// Sources with their request counts.
    Sources {
        #[command(subcommand)]
        command: SourcesCommand,
        #[command(flatten)]
        api: ApiArgs,
    },
}

// Parsed once per run: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum ListShow {
    /// Newest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// How many at most (pages are fetched as needed).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One, in full.
    Show {
        /// Its id (evt_... or dlv_...).
        id: String,
    },
}

#[derive(Subcommand)]
pub enum DestinationsCommand {
    /// Every destination with its state, backlog, last success and last failure.
    List,
    /// Hold deliveries (events are still accepted); survives restarts.
    Pause {
        /// The destination's name in the config.
        name: String,
    },
    /// Deliver again (in order where the mode is fifo).
    Resume {
        /// The destination's name in the config.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum SourcesCommand {
    /// Every source with its requests by outcome since the server started.
    List,
}

impl ApiArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        let endpoint = match &self.url {
            Some(url) => Endpoint::Url {
                base: url
                    .parse()
                    .map_err(|err| anyhow::anyhow!("--url {url:?} is not a URL: {err}"))?,
                token: self.token.clone(),
            },
            None if !self.config.exists() => anyhow::bail!(
                "no config file {}: give the local server's with --config FILE, or a remote one's API with --url",
                self.config.display()
            ),
            None => match crate::config::load_api_socket(&self.config) {
                Ok(Some(socket)) => Endpoint::Socket(socket),
                Ok(None) => anyhow::bail!(
                    "{} disables the API socket (api.socket = \"\"): use --url and --token",
                    self.config.display()
                ),
                Err(err) => anyhow::bail!(
                    "cannot find the local server's API: {}",
                    err.to_string().lines().last().unwrap_or_default().trim()
                ),
            },
        };
        Ok(Client::new(endpoint))
    }
}

pub async fn run(command: RemoteCommand) -> anyhow::Result<ExitCode> {
    let result = match command {
        RemoteCommand::Events { command, api } => inspect::events(command, &api).await,
        RemoteCommand::Deliveries { command, api } => inspect::deliveries(command, &api).await,
        RemoteCommand::Replay(args) => bulk::run(args, "replay").await,
        RemoteCommand::Cancel(args) => bulk::run(args, "cancel").await,
        RemoteCommand::Destinations { command, api } => destinations(command, &api).await,
        RemoteCommand::Sources { api, .. } => sources(&api).await,
        RemoteCommand::Jobs { command, api } => jobs::run(command, &api).await,
        RemoteCommand::Tail(args) => tail::run(args).await,
        RemoteCommand::Reload { api } => {
            let answer: Value = api.client()?.post("/api/v1/reload", &json!({})).await?;
            for note in answer["notes"].as_array().into_iter().flatten() {
                println!("{}", note.as_str().unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    // One line for the usual failures (server down, bad token), not a chain.
    result.map_err(|err| match err.downcast::<ClientError>() {
        Ok(client) => anyhow::anyhow!("{client}"),
        Err(other) => other,
    })
}

/// Up to `limit` items of a listing, following `next` cursors.
async fn collect(
    client: &Client,
    path: &str,
    filter: &FilterArgs,
    limit: usize,
) -> anyhow::Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    while items.len() < limit {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.extend_pairs(filter.pairs());
        query.append_pair("limit", &(limit - items.len()).min(1000).to_string());
        if let Some(cursor) = &after {
            query.append_pair("after", cursor);
        }
        let page: Value = client.get(&format!("{path}?{}", query.finish())).await?;
        if let Some(list) = page["items"].as_array() {
            items.extend(list.iter().cloned());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    Ok(items)
}

fn print_lines(items: &[Value]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for item in items {
        writeln!(out, "{}", serde_json::to_string(item)?)?;
    }
    Ok(())
}

async fn destinations(command: DestinationsCommand, api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let client = api.client()?;
    let (name, action) = match command {
        DestinationsCommand::List => {
            let all: Vec<Value> = client.get("/api/v1/destinations").await?;
            if api.json {
                print_lines(&all)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut shown = table(&[
                "DESTINATION",
                "KIND",
                "STATE",
                "PENDING",
                "IN FLIGHT",
                "DEAD",
                "OLDEST WAITING",
                "LAST SUCCESS",
                "LAST FAILURE",
            ]);
            for d in &all {
                let oldest = match d["oldest_pending_age_secs"].as_u64() {
                    Some(secs) => {
                        super::output::relative(0, secs as i64 * 1000).replace(" ago", "")
                    }
                    None => "-".to_owned(),
                };
                let failure = match d.get("last_failure") {
                    Some(f) if !f.is_null() => {
                        format!(
                            "{}: {}",
                            ago(f, "started_at"),
                            last_outcome(&json!({ "last_summary": f["summary"] }))
                        )
                    }
                    _ => "-".to_owned(),
                };
                shown.add_row(vec![
                    text(d, "name").into(),
                    text(d, "kind").into(),
                    state_cell(&text(d, "state")),
                    text(d, "pending").into(),
                    text(d, "in_flight").into(),
                    text(d, "dead").into(),
                    oldest.into(),
                    ago(d, "last_success_at").into(),
                    failure.into(),
                ]);
            }
            println!("{shown}");
            return Ok(ExitCode::SUCCESS);
        }
        DestinationsCommand::Pause { name } => (name, "pause"),
        DestinationsCommand::Resume { name } => (name, "resume"),
    };
    let path = format!("/api/v1/destinations/{}/{action}", segment(&name));
    let answer: Value = client.post(&path, &json!({})).await?;
    if api.json {
        println!("{answer}");
    } else if answer["paused"] == true {
        println!(
            "{name}: paused (events are still accepted; `hookrelay destinations resume {name}` delivers them)"
        );
    } else {
        println!("{name}: resumed");
    }
    Ok(ExitCode::SUCCESS)
}

async fn sources(api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let all: Vec<Value> = api.client()?.get("/api/v1/sources").await?;
    if api.json {
        print_lines(&all)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut shown = table(&["SOURCE", "PROVIDER", "ACCEPTED", "DUPLICATE", "REJECTED"]);
    for s in &all {
        let requests = s["requests"].as_object().cloned().unwrap_or_default();
        let count = |key: &str| requests.get(key).and_then(Value::as_u64).unwrap_or(0);
        let rejected: Vec<String> = requests
            .iter()
            .filter(|(k, _)| *k != "accepted" && *k != "duplicate")
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        shown.add_row(vec![
            text(s, "name"),
            text(s, "provider"),
            count("accepted").to_string(),
            count("duplicate").to_string(),
            if rejected.is_empty() {
                "-".into()
            } else {
                rejected.join(", ")
            },
        ]);
    }
    println!("{shown}");
    Ok(ExitCode::SUCCESS)
}

/// An id or name as one path segment (nothing in it can change the path).
fn segment(raw: &str) -> String {
    form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

/// Asks on the terminal; without one, refuses rather than assuming yes.
fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{question} needs confirmation: run on a terminal or pass --yes");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
