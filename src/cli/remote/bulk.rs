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
    /// While following, give up when the job shows no progress for this long (the server
    /// may be down; the job continues when it is back).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    stall_timeout: Duration,
    #[command(flatten)]
    api: ApiArgs,
}

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
            false => println!("job {job} started: `hookrelay jobs follow {job}` follows it"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let follow = super::jobs::Follow {
        json: args.api.json,
        stall_timeout: args.stall_timeout,
    };
    follow.report(&client, &job).await
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
