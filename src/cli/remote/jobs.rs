//! `jobs list` and `jobs follow`: bulk jobs as the server records them, and following one
//! to its end (a progress bar, then a summary), surviving a server restart under it.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

use super::{ApiArgs, ago, segment, table, text};

const POLL: Duration = Duration::from_millis(250);

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Bulk replays and cancels, newest first, with their progress.
    List,
    /// Follow one job until it ends, then print its summary.
    Follow {
        /// The job (job_...), as `replay` or `jobs list` shows it.
        id: String,
        /// Give up when the job shows no progress for this long.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        stall_timeout: Duration,
    },
    /// Stop a running job: no further batch runs; what it changed stays changed.
    Cancel {
        /// The job (job_...).
        id: String,
    },
}

pub async fn run(command: JobsCommand, api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let client = api.client()?;
    match command {
        JobsCommand::List => {
            let jobs: Vec<Value> = client.get("/api/v1/jobs").await?;
            if api.json {
                super::print_lines(&jobs)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut shown = table(&[
                "JOB",
                "ACTION",
                "STATE",
                "MATCHED",
                "CHANGED",
                "SUCCEEDED",
                "FAILED",
                "CREATED",
                "ERROR",
            ]);
            for job in &jobs {
                shown.add_row(vec![
                    text(job, "id"),
                    text(&job["scope"], "action"),
                    text(job, "state"),
                    text(job, "matched"),
                    text(job, "changed"),
                    text(job, "succeeded"),
                    text(job, "failed"),
                    ago(job, "created_at"),
                    text(job, "error"),
                ]);
            }
            println!("{shown}");
            if jobs.is_empty() {
                eprintln!("no jobs");
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Cancel { id } => {
            let job: Value = client
                .post(
                    &format!("/api/v1/jobs/{}/cancel", segment(&id)),
                    &Value::Null,
                )
                .await?;
            match api.json {
                true => println!("{job}"),
                false => println!(
                    "cancelled {}: it had changed {} of {}",
                    text(&job, "id"),
                    job["changed"],
                    job["matched"]
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Follow { id, stall_timeout } => {
            let follow = Follow {
                json: api.json,
                stall_timeout,
            };
            follow.report(&client, &id).await
        }
    }
}

/// How a job is followed.
pub struct Follow {
    pub json: bool,
    pub stall_timeout: Duration,
}

/// How following a job ended.
enum FollowEnd {
    /// Changed everything it matched and (for a replay) every replayed delivery has an outcome.
    Done,
    Failed(String),
    /// An operator stopped it.
    Cancelled,
    /// Nothing moved for the stall timeout; why, as far as the CLI can tell.
    Stalled(String),
}

impl Follow {
    /// Follows the job to its end and prints the summary; fails (exit 1) when the job failed
    /// or stalled, saying which.
    pub async fn report(
        &self,
        client: &crate::client::Client,
        job: &str,
    ) -> anyhow::Result<ExitCode> {
        let (finished, end) = self.follow(client, job).await?;
        if let FollowEnd::Cancelled = end {
            eprintln!(
                "job {job} was cancelled after changing {} of {}",
                finished["changed"], finished["matched"]
            );
            return Ok(ExitCode::FAILURE);
        }
        let action = finished["scope"]["action"].as_str().unwrap_or("replay");
        if self.json {
            println!("{finished}");
        } else {
            let changed = finished["changed"].as_u64().unwrap_or(0);
            match action {
                "replay" => println!(
                    "replayed {changed}: {} succeeded, {} failed again",
                    finished["succeeded"], finished["failed"]
                ),
                _ => println!("cancelled {changed}"),
            }
        }
        match end {
            FollowEnd::Done => Ok(ExitCode::SUCCESS),
            FollowEnd::Cancelled => Ok(ExitCode::FAILURE),
            FollowEnd::Failed(reason) => {
                eprintln!("job {job} failed: {reason}");
                Ok(ExitCode::FAILURE)
            }
            FollowEnd::Stalled(why) => {
                eprintln!(
                    "job {job} made no progress for {}: {why}; it stays recorded and continues while a server runs (`hookrelay jobs follow {job}`)",
                    humantime::format_duration(self.stall_timeout)
                );
                Ok(ExitCode::FAILURE)
            }
        }
    }

    /// Polls the job until it has changed everything it matched and (for a replay) every
    /// replayed delivery was attempted, with a progress bar on a terminal; until it failed;
    /// or until nothing moved for the stall timeout (answers that do not come count as no
    /// move, so a server restarting under the job is waited for).
    async fn follow(
        &self,
        client: &crate::client::Client,
        job: &str,
    ) -> anyhow::Result<(Value, FollowEnd)> {
        let path = format!("/api/v1/jobs/{}", segment(job));
        let mut last: Value = client.get(&path).await?;
        let replay = last["scope"]["action"] == "replay";
        let bar = indicatif::ProgressBar::new(last["matched"].as_u64().unwrap_or(0));
        if self.json {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let paused = paused_destination(client, &last).await;
        let mut moved = tokio::time::Instant::now();
        loop {
            let job = match client.get::<Value>(&path).await {
                Ok(job) => job,
                Err(err) => {
                    if moved.elapsed() >= self.stall_timeout {
                        bar.abandon();
                        return Ok((last, FollowEnd::Stalled(err.to_string())));
                    }
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            if progress(&job) != progress(&last) {
                moved = tokio::time::Instant::now();
            }
            last = job;
            let job = &last;
            match replay {
                true => {
                    let outcomes = job["succeeded"].as_u64().unwrap_or(0)
                        + job["failed"].as_u64().unwrap_or(0);
                    bar.set_position(outcomes);
                    bar.set_message(format!(
                        "{} succeeded, {} failed again",
                        job["succeeded"], job["failed"]
                    ));
                }
                false => bar.set_position(job["changed"].as_u64().unwrap_or(0)),
            }
            if job["state"] == "cancelled" {
                bar.abandon();
                return Ok((last, FollowEnd::Cancelled));
            }
            if job["state"] == "failed" {
                bar.abandon();
                let reason = text(job, "error");
                return Ok((last, FollowEnd::Failed(reason)));
            }
            let waiting = job["waiting"].as_u64().unwrap_or(0);
            let settled = !replay || waiting == 0 || paused.is_some();
            if job["state"] == "finished" && settled {
                bar.finish_and_clear();
                if let Some(name) = paused {
                    eprintln!(
                        "{name} is paused: the replayed deliveries wait for `hookrelay destinations resume {name}`"
                    );
                }
                return Ok((last, FollowEnd::Done));
            }
            if moved.elapsed() >= self.stall_timeout {
                bar.abandon();
                let why = match job["state"] == "finished" {
                    true => format!("{waiting} replayed deliveries still wait for an attempt"),
                    false => "the server is up but the job did not move".to_owned(),
                };
                return Ok((last, FollowEnd::Stalled(why)));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// What counts as a job moving.
fn progress(job: &Value) -> [String; 5] {
    ["changed", "succeeded", "failed", "waiting", "state"].map(|key| job[key].to_string())
}

/// The job's destination, when it is paused (its replays would wait indefinitely).
async fn paused_destination(client: &crate::client::Client, job: &Value) -> Option<String> {
    let name = job["scope"]["filter"]["destination"].as_str()?;
    let all: Vec<Value> = client.get("/api/v1/destinations").await.ok()?;
    all.iter()
        .any(|d| d["name"] == name && d["state"] == "paused")
        .then(|| name.to_owned())
}
