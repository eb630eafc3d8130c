//! `replay` and `cancel`: one delivery by id, or a bulk change by filter with a dry-run
//! count, confirmation, a progress bar until every replayed delivery has an outcome, and
//! a summary.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

use super::{ApiArgs, FilterArgs, confirm, segment, text};

#[derive(Args)]
pub struct BulkArgs {
    /// One delivery (dlv_...); without it, the filters choose.
    id: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    yes: bool,
    /// Only count (and show a few examples).
    #[arg(long)]
    dry_run: bool,
    /// Start the job and return without following it.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    api: ApiArgs,
}

const POLL: Duration = Duration::from_millis(250);

pub async fn run(args: BulkArgs, action: &str) -> anyhow::Result<ExitCode> {
    let client = args.api.client()?;
    if let Some(id) = &args.id {
        if !args.filter.is_empty() {
            anyhow::bail!("give a delivery id or filters, not both");
        }
        crate::domain::DeliveryId::parse(id)?;
        let path = format!("/api/v1/deliveries/{}/{action}", segment(id));
        let answer: Value = client.post(&path, &json!({})).await?;
        match args.api.json {
            true => println!("{answer}"),
            false => println!("{id}: {}", text(&answer, "state")),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.filter.is_empty() {
        anyhow::bail!("give a delivery id, or filters such as --state dead --destination NAME");
    }
    let path = format!("/api/v1/bulk/{action}");
    let filter = args.filter.as_json();
    let dry: Value = client
        .post(&path, &json!({ "filter": filter, "dry_run": true }))
        .await?;
    let count = dry["count"].as_u64().unwrap_or(0);
    if args.dry_run || count == 0 {
        match args.api.json {
            true => println!("{dry}"),
            false => describe(&dry, action, count),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.api.json {
        describe(&dry, action, count);
    }
    if !args.yes && !confirm(&format!("{} {count} deliveries?", capitalised(action)))? {
        eprintln!("nothing changed");
        return Ok(ExitCode::FAILURE);
    }
    let started: Value = client
        .post(
            &path,
            &json!({ "filter": filter, "snapshot": dry["snapshot"] }),
        )
        .await?;
    let job = started["id"].as_str().unwrap_or_default().to_owned();
    if args.no_wait {
        match args.api.json {
            true => println!("{started}"),
            false => println!("job {job} started: `hookrelay` polls it at /api/v1/jobs/{job}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let finished = follow(&client, &job, action, &args).await?;
    if args.api.json {
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
        if let Some(error) = finished["error"].as_str() {
            eprintln!("the job stopped early: {error}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(dry: &Value, action: &str, count: u64) {
    let as_of = crate::domain::format_millis(dry["as_of"].as_i64().unwrap_or(0));
    eprintln!("{count} deliveries to {action} (those existing at {as_of})");
    for example in dry["examples"].as_array().into_iter().flatten() {
        eprintln!(
            "  {}  {}  {}  {}",
            text(example, "id"),
            text(example, "destination"),
            text(example, "state"),
            text(example, "event_type")
        );
    }
}

fn capitalised(action: &str) -> String {
    let mut chars = action.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Polls the job until it has changed everything it matched and (for a replay) every
/// replayed delivery was attempted, with a progress bar on a terminal.
async fn follow(
    client: &crate::client::Client,
    job: &str,
    action: &str,
    args: &BulkArgs,
) -> anyhow::Result<Value> {
    let path = format!("/api/v1/jobs/{}", segment(job));
    let first: Value = client.get(&path).await?;
    let bar = indicatif::ProgressBar::new(first["matched"].as_u64().unwrap_or(0));
    if args.api.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let paused = paused_destination(client, args).await;
    loop {
        let job: Value = client.get(&path).await?;
        let done_changing = !job["finished_at"].is_null();
        let outcomes = job["succeeded"].as_u64().unwrap_or(0) + job["failed"].as_u64().unwrap_or(0);
        match action {
            "replay" => {
                bar.set_position(outcomes);
                bar.set_message(format!(
                    "{} succeeded, {} failed again",
                    job["succeeded"], job["failed"]
                ));
            }
            _ => bar.set_position(job["changed"].as_u64().unwrap_or(0)),
        }
        let waiting = job["waiting"].as_u64().unwrap_or(0);
        let settled = action != "replay" || waiting == 0 || paused.is_some();
        if done_changing && settled {
            bar.finish_and_clear();
            if let Some(name) = paused {
                eprintln!(
                    "{name} is paused: the replayed deliveries wait for `hookrelay destinations resume {name}`"
                );
            }
            return Ok(job);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The filter's destination, when it is paused (its replays would wait indefinitely).
async fn paused_destination(client: &crate::client::Client, args: &BulkArgs) -> Option<String> {
    let name = args.filter.destination.as_ref()?;
    let all: Vec<Value> = client.get("/api/v1/destinations").await.ok()?;
    all.iter()
        .any(|d| d["name"] == name.as_str() && d["state"] == "paused")
        .then(|| name.clone())
}
