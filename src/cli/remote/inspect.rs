//! `events list|show` and `deliveries list|show`: tables for people, JSON lines for scripts.

use std::process::ExitCode;

use serde_json::Value;

use super::{ApiArgs, ListShow, collect, print_lines, segment};
use crate::cli::output::{
    absolute, ago, last_outcome, printable, printable_block, state_cell, table, text,
};

pub async fn events(command: ListShow, api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let client = api.client()?;
    match command {
        ListShow::List { filter, limit } => {
            let items = collect(&client, "/api/v1/events", &filter, limit).await?;
            if api.json {
                print_lines(&items)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut shown = table(&[
                "EVENT",
                "RECEIVED",
                "SOURCE",
                "TYPE",
                "REF",
                "PROJECT",
                "DELIVERIES",
            ]);
            for event in &items {
                let deliveries: Vec<String> = event["deliveries"]
                    .as_array()
                    .map(|all| {
                        all.iter()
                            .map(|d| format!("{}:{}", text(d, "destination"), text(d, "state")))
                            .collect()
                    })
                    .unwrap_or_default();
                let git_ref = match text(event, "branch").as_str() {
                    "-" => text(event, "tag"),
                    branch => branch.to_owned(),
                };
                shown.add_row(vec![
                    text(event, "id"),
                    ago(event, "received_at"),
                    text(event, "source"),
                    text(event, "event_type"),
                    git_ref,
                    text(event, "project"),
                    deliveries.join(" "),
                ]);
            }
            println!("{shown}");
            if items.is_empty() {
                eprintln!("no events match");
            }
        }
        ListShow::Show { id } => {
            let event: Value = client
                .get(&format!("/api/v1/events/{}", segment(&id)))
                .await?;
            if api.json {
                println!("{}", serde_json::to_string_pretty(&event)?);
                return Ok(ExitCode::SUCCESS);
            }
            for (label, field) in [
                ("event", "id"),
                ("source", "source"),
                ("type", "event_type"),
                ("ref", "ref"),
                ("project", "project"),
                ("sender", "sender"),
                ("commits", "commit_after"),
                ("from", "remote_addr"),
            ] {
                println!("{label:<10} {}", text(&event, field));
            }
            println!("{:<10} {}", "received", absolute(&event, "received_at"));
            println!("\nheaders");
            for header in event["headers"].as_array().into_iter().flatten() {
                println!("  {}: {}", text(header, "name"), text(header, "value"));
            }
            println!("\nbody ({} bytes)", event["body_bytes"]);
            match (&event["body_json"], event["body"].as_str()) {
                (Value::Null, Some(body)) => println!("{}", printable_block(body, "")),
                (Value::Null, None) => println!("(binary; --json shows it as base64)"),
                (json, _) => {
                    for line in serde_json::to_string_pretty(json)?.lines() {
                        println!("{}", printable(line));
                    }
                }
            }
            let mut shown = table(&["DELIVERY", "DESTINATION", "STATE"]);
            for delivery in event["deliveries"].as_array().into_iter().flatten() {
                shown.add_row(vec![
                    text(delivery, "id").into(),
                    text(delivery, "destination").into(),
                    state_cell(&text(delivery, "state")),
                ]);
            }
            println!("\n{shown}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn deliveries(command: ListShow, api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let client = api.client()?;
    match command {
        ListShow::List { filter, limit } => {
            let items = collect(&client, "/api/v1/deliveries", &filter, limit).await?;
            if api.json {
                print_lines(&items)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut shown = table(&[
                "DELIVERY",
                "STATE",
                "DESTINATION",
                "SOURCE",
                "TYPE",
                "ATTEMPTS",
                "CREATED",
                "NEXT",
                "LAST",
            ]);
            for d in &items {
                let next = match d["state"].as_str() {
                    Some("pending") => ago(d, "due_at"),
                    _ => "-".to_owned(),
                };
                shown.add_row(vec![
                    text(d, "id").into(),
                    state_cell(&text(d, "state")),
                    text(d, "destination").into(),
                    text(d, "source").into(),
                    text(d, "event_type").into(),
                    text(d, "attempts").into(),
                    ago(d, "created_at").into(),
                    next.into(),
                    last_outcome(d).into(),
                ]);
            }
            println!("{shown}");
            if items.is_empty() {
                eprintln!("no deliveries match");
            }
        }
        ListShow::Show { id } => {
            let found: Value = client
                .get(&format!("/api/v1/deliveries/{}", segment(&id)))
                .await?;
            if api.json {
                println!("{}", serde_json::to_string_pretty(&found)?);
                return Ok(ExitCode::SUCCESS);
            }
            let d = &found["delivery"];
            for (label, field) in [
                ("delivery", "id"),
                ("event", "event_id"),
                ("source", "source"),
                ("type", "event_type"),
                ("destination", "destination"),
                ("state", "state"),
                ("dead reason", "dead_reason"),
            ] {
                println!("{label:<12} {}", text(d, field));
            }
            println!("{:<12} {}", "created", absolute(d, "created_at"));
            if d["state"] == "pending" {
                println!("{:<12} {}", "next try", absolute(d, "due_at"));
            }
            let mut attempts = table(&["#", "STARTED", "DURATION", "VERDICT", "OUTCOME", "ERROR"]);
            let mut excerpts = Vec::new();
            for a in found["attempts"].as_array().into_iter().flatten() {
                attempts.add_row(vec![
                    text(a, "number"),
                    ago(a, "started_at"),
                    format!("{} ms", text(a, "duration_ms")),
                    text(a, "verdict"),
                    text(a, "summary"),
                    text(a, "error"),
                ]);
                if let Some(excerpt) = a["response_excerpt"].as_str() {
                    excerpts.push(format!(
                        "  #{}\n{}",
                        text(a, "number"),
                        printable_block(excerpt, "    ")
                    ));
                }
            }
            println!("\n{attempts}");
            if !excerpts.is_empty() {
                println!("\nresponses");
                println!("{}", excerpts.join("\n"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
