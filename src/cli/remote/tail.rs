//! `hookrelay tail`: follows `/api/v1/stream`, one line per new event or delivery change.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::{ApiArgs, FilterArgs};
use crate::cli::output::text;
use crate::domain::format_millis;

#[derive(Args)]
pub struct TailArgs {
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    api: ApiArgs,
}

pub async fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let client = args.api.client()?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.extend_pairs(args.filter.pairs());
    let path = format!("/api/v1/stream?{}", query.finish());
    let json = args.api.json;
    let mut out = std::io::stdout().lock();
    client
        .follow(&path, |kind, data| {
            let Ok(value) = serde_json::from_str::<Value>(data) else {
                return true;
            };
            let line = match (json, kind) {
                (true, _) => {
                    let mut value = value;
                    if let Value::Object(map) = &mut value {
                        map.insert("type".into(), kind.into());
                    }
                    value.to_string()
                }
                (false, "event") => event_line(&value),
                (false, "delivery") => format!(
                    "{}  {}  {} -> {}  {}",
                    format_millis(crate::domain::now_millis()),
                    text(&value, "id"),
                    text(&value, "event_id"),
                    text(&value, "destination"),
                    text(&value, "state"),
                ),
                (false, "gap") => "(more events arrived than the stream shows at once: \
                                   `hookrelay events list` has them all)"
                    .to_owned(),
                (false, _) => return true,
            };
            // A closed pipe (`| head`) ends the tail quietly.
            writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

fn event_line(event: &Value) -> String {
    let git_ref = match text(event, "branch").as_str() {
        "-" => text(event, "tag"),
        branch => branch.to_owned(),
    };
    let deliveries: Vec<String> = event["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| format!("{}:{}", text(d, "destination"), text(d, "state")))
        .collect();
    let received = event["received_at"].as_i64().map(format_millis);
    format!(
        "{}  {}  {}  {}  {}  {}  {}",
        received.unwrap_or_else(|| "-".into()),
        text(event, "id"),
        text(event, "source"),
        text(event, "event_type"),
        git_ref,
        text(event, "project"),
        deliveries.join(" "),
    )
}
