//! `kind = "command"` settings and their validation: argv, where values come from, environment,
//! user and group, exit codes, output bounds.

use std::time::Duration;

use serde::Deserialize;

use std::collections::BTreeMap;

use super::{ArgValue, CommandTarget, FIELDS, InheritEnv};
use crate::settings::{Checker, RawSize, parse_duration_in, parse_size};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommand {
    pub argv: Option<Vec<RawValue>>,
    pub shell: Option<bool>,
    pub working_dir: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, RawValue>,
    pub inherit_env: Option<RawInherit>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// `"body"`: the raw body on stdin; `"none"` (default): empty stdin.
    pub stdin: Option<String>,
    #[serde(default)]
    pub permanent_exit_codes: Vec<i32>,
    pub kill_grace: Option<String>,
    pub output_limit: Option<RawSize>,
}

/// A value as written: a literal, or a table naming where it comes from.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawValue {
    Text(String),
    From(RawSourceOfValue),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSourceOfValue {
    pub pointer: Option<String>,
    pub header: Option<String>,
    pub field: Option<String>,
    pub body_file: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawInherit {
    All(bool),
    Names(Vec<String>),
}

fn value(c: &mut Checker, location: String, raw: &RawValue) -> Option<ArgValue> {
    let from = match raw {
        RawValue::Text(text) => return Some(ArgValue::Literal(text.clone())),
        RawValue::From(from) => from,
    };
    let chosen = [
        from.pointer.as_ref().map(|p| ArgValue::Pointer(p.clone())),
        from.header
            .as_ref()
            .map(|h| ArgValue::Header(h.to_ascii_lowercase())),
        from.field.as_ref().map(|f| ArgValue::Field(f.clone())),
        (from.body_file == Some(true)).then_some(ArgValue::BodyFile),
    ];
    let mut chosen = chosen.into_iter().flatten();
    match (chosen.next(), chosen.next()) {
        (Some(ArgValue::Pointer(p)), None) if !(p.is_empty() || p.starts_with('/')) => {
            c.error(location, format!("pointer {p:?} must start with /"));
            None
        }
        (Some(ArgValue::Field(f)), None) if !FIELDS.contains(&f.as_str()) => {
            c.error(
                location,
                format!("unknown field {f:?}; known: {}", FIELDS.join(", ")),
            );
            None
        }
        (Some(value), None) => Some(value),
        _ => {
            c.error(
                location,
                "give exactly one of pointer, header, field or body_file = true",
            );
            None
        }
    }
}

/// A user or group by number or by name (looked up in /etc/passwd or /etc/group).
fn id_of(file: &str, name: &str) -> Result<u32, String> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    let table =
        std::fs::read_to_string(file).map_err(|err| format!("cannot read {file}: {err}"))?;
    table
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&name))
        .and_then(|fields| fields.get(2)?.parse().ok())
        .ok_or_else(|| format!("no {name:?} in {file}"))
}

pub(in crate::delivery::destinations) fn validate(
    c: &mut Checker,
    location: &str,
    raw: &RawCommand,
) -> Option<CommandTarget> {
    let argv: Vec<Option<ArgValue>> = match &raw.argv {
        Some(argv) if !argv.is_empty() => argv
            .iter()
            .enumerate()
            .map(|(i, v)| value(c, format!("{location}.argv[{i}]"), v))
            .collect(),
        _ => {
            c.error(
                format!("{location}.argv"),
                "a command destination needs argv = [\"program\", ...]",
            );
            return None;
        }
    };
    if !matches!(argv.first(), Some(Some(ArgValue::Literal(_))) | None) {
        c.error(
            format!("{location}.argv[0]"),
            "the program must be written literally",
        );
    }
    let shell = raw.shell.unwrap_or(false);
    if shell {
        c.warn(
            format!("{location}.shell"),
            "runs argv[0] with /bin/sh -c: event values still arrive only as $1, $2, ..., but quote them in the script (\"$1\")",
        );
    }
    let env: Vec<Option<(String, ArgValue)>> = raw
        .env
        .iter()
        .map(|(name, v)| value(c, format!("{location}.env.{name}"), v).map(|v| (name.clone(), v)))
        .collect();
    let inherit_env = match &raw.inherit_env {
        None | Some(RawInherit::All(false)) => InheritEnv::Nothing,
        Some(RawInherit::All(true)) => InheritEnv::All,
        Some(RawInherit::Names(names)) => InheritEnv::Names(names.clone()),
    };
    let user = raw
        .user
        .as_deref()
        .and_then(|u| c.check(format!("{location}.user"), id_of("/etc/passwd", u)));
    let group = raw
        .group
        .as_deref()
        .and_then(|g| c.check(format!("{location}.group"), id_of("/etc/group", g)));
    let stdin_body = match raw.stdin.as_deref() {
        None | Some("none") => false,
        Some("body") => true,
        Some(other) => {
            c.error(
                format!("{location}.stdin"),
                format!("{other:?}: use \"body\" or \"none\""),
            );
            false
        }
    };
    let kill_grace = match &raw.kill_grace {
        Some(text) => c.check(
            format!("{location}.kill_grace"),
            parse_duration_in(text, Duration::from_millis(10), Duration::from_secs(600)),
        ),
        None => Some(Duration::from_secs(5)),
    };
    let output_limit = match &raw.output_limit {
        Some(size) => c.check(format!("{location}.output_limit"), parse_size(size)),
        None => Some(64 * 1024),
    };
    Some(CommandTarget {
        argv: argv.into_iter().collect::<Option<_>>()?,
        shell,
        working_dir: raw.working_dir.as_ref().map(Into::into),
        env: env.into_iter().collect::<Option<_>>()?,
        inherit_env,
        user,
        group,
        stdin_body,
        permanent_exit_codes: raw.permanent_exit_codes.clone(),
        kill_grace: kill_grace?,
        output_limit: output_limit? as usize,
    })
}
