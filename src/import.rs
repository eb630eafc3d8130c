//! `hookrelay import adnanh`: an adnanh/webhook hooks file as a hookrelay config. Pure:
//! hooks in, TOML text and the list of what could not be carried over out.

use serde_json::Value;
use toml::{Table, Value as Toml};

/// The converted config and, by name, everything that was not mapped.
pub struct Imported {
    pub toml: String,
    pub unmapped: Vec<String>,
}

/// Hook keys with no hookrelay counterpart: hookrelay answers before it runs anything.
const NOT_SUPPORTED: &[(&str, &str)] = &[
    (
        "response-message",
        "hookrelay answers with its own JSON (event id, deliveries)",
    ),
    ("response-headers", "hookrelay answers with its own headers"),
    (
        "success-http-response-code",
        "hookrelay answers 202 once the event is stored",
    ),
    (
        "trigger-rule-mismatch-http-response-code",
        "events no route takes are stored and answered 2xx, as GitLab needs",
    ),
    (
        "include-command-output-in-response",
        "not supported: hookrelay answers before running the command (the output is on the attempt: `hookrelay deliveries show`)",
    ),
    (
        "include-command-output-in-response-on-error",
        "not supported: the output is on the attempt",
    ),
    ("incoming-payload-content-type", "not supported"),
    ("parse-parameters-as-json", "not supported"),
    (
        "trigger-signature-soft-failures",
        "not supported: a bad signature is always refused",
    ),
];

pub fn from_adnanh(hooks: &Value) -> Result<Imported, String> {
    let hooks = hooks.as_array().ok_or("a hooks file is a list of hooks")?;
    let (mut sources, mut destinations, mut routes) = (Table::new(), Table::new(), Vec::new());
    let mut unmapped = Vec::new();
    for (index, hook) in hooks.iter().enumerate() {
        let Some(id) = hook.get("id").and_then(Value::as_str) else {
            unmapped.push(format!("hooks[{index}]: no id, skipped"));
            continue;
        };
        if crate::domain::Name::parse(id).is_err() {
            unmapped.push(format!(
                "{id}: not usable as a source name (letters, digits, - and _), skipped"
            ));
            continue;
        }
        let Some(command) = hook.get("execute-command").and_then(Value::as_str) else {
            unmapped.push(format!("{id}: no execute-command, skipped"));
            continue;
        };
        let mut hook_unmapped = Vec::new();
        let mut note = |what: String| hook_unmapped.push(format!("{id}: {what}"));
        for (key, why) in NOT_SUPPORTED {
            if hook.get(*key).is_some() {
                note(format!("{key}: {why}"));
            }
        }
        if let Some(methods) = hook.get("http-methods").and_then(Value::as_array)
            && methods
                .iter()
                .any(|m| !m.as_str().is_some_and(|m| m.eq_ignore_ascii_case("post")))
        {
            note("http-methods: hookrelay accepts POST only".into());
        }
        let mut rules = Rules::default();
        if let Some(rule) = hook.get("trigger-rule") {
            rules.top_level(rule, &mut note);
        }
        let mut source = Table::new();
        source.insert(
            "provider".into(),
            rules.provider.unwrap_or("generic").into(),
        );
        if let Some(secret) = rules.secret {
            source.insert("secret".into(), secret.into());
        }
        if let Some(auth) = rules.auth {
            source.insert("auth".into(), Toml::Table(auth));
        }
        if !rules.allow_ips.is_empty() {
            source.insert("allow_ips".into(), rules.allow_ips.into());
        }
        let mut destination = Table::new();
        destination.insert("kind".into(), "command".into());
        let mut argv = vec![Toml::from(command)];
        for (i, arg) in list(hook, "pass-arguments-to-command").iter().enumerate() {
            match value(arg) {
                Ok(v) => argv.push(v),
                Err(why) => note(format!("pass-arguments-to-command[{i}]: {why}")),
            }
        }
        destination.insert("argv".into(), argv.into());
        if let Some(dir) = hook
            .get("command-working-directory")
            .and_then(Value::as_str)
        {
            destination.insert("working_dir".into(), dir.into());
        }
        let mut env = Table::new();
        for (i, arg) in list(hook, "pass-environment-to-command").iter().enumerate() {
            match (env_name(arg), value(arg)) {
                (Some(name), Ok(v)) => drop(env.insert(name, v)),
                (_, Err(why)) => note(format!("pass-environment-to-command[{i}]: {why}")),
                (None, Ok(_)) => note(format!("pass-environment-to-command[{i}]: no name")),
            }
        }
        for (i, file) in list(hook, "pass-file-to-command").iter().enumerate() {
            match (file.get("source").and_then(Value::as_str), env_name(file)) {
                (Some("entire-payload"), Some(name)) => {
                    let mut body = Table::new();
                    body.insert("body_file".into(), true.into());
                    env.insert(name, Toml::Table(body));
                }
                _ => note(format!(
                    "pass-file-to-command[{i}]: only the entire payload can be passed as a file"
                )),
            }
        }
        if !env.is_empty() {
            destination.insert("env".into(), Toml::Table(env));
        }
        // adnanh/webhook passes its own environment on; hookrelay does not unless told.
        destination.insert("inherit_env".into(), true.into());
        let mut route = Table::new();
        route.insert("source".into(), id.into());
        route.insert("destinations".into(), vec![Toml::from(id)].into());
        if !rules.events.is_empty() {
            route.insert("events".into(), rules.events.into());
        }
        match rules.conditions.len() {
            0 => {}
            1 => drop(route.insert("when".into(), rules.conditions.remove(0))),
            _ => {
                let mut all = Table::new();
                all.insert("all".into(), rules.conditions.into());
                route.insert("when".into(), Toml::Table(all));
            }
        }
        sources.insert(id.into(), Toml::Table(source));
        destinations.insert(id.into(), Toml::Table(destination));
        routes.push(Toml::Table(route));
        unmapped.extend(hook_unmapped);
    }
    if sources.is_empty() {
        return Err("no hook could be imported".into());
    }
    // Sources, then destinations, then routes, as a person would write them.
    let section = |key: &str, value: Toml| {
        let mut table = Table::new();
        table.insert(key.into(), value);
        toml::to_string(&table).map_err(|err| err.to_string())
    };
    let text = [
        section("sources", Toml::Table(sources))?,
        section("destinations", Toml::Table(destinations))?,
        section("routes", routes.into())?,
    ]
    .join("\n");
    Ok(Imported {
        toml: format!(
            "# Imported from an adnanh/webhook hooks file by `hookrelay import adnanh`.\n\
             # Secrets are written as they were; consider \"env:NAME\" (see README).\n\n{text}"
        ),
        unmapped,
    })
}

fn list<'a>(hook: &'a Value, key: &str) -> &'a [Value] {
    hook.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// An adnanh `{ source, name }` reference as a hookrelay value.
fn value(arg: &Value) -> Result<Toml, String> {
    let name = arg.get("name").and_then(Value::as_str).unwrap_or_default();
    let mut table = Table::new();
    match arg.get("source").and_then(Value::as_str) {
        Some("string") => return Ok(name.into()),
        Some("payload") => drop(table.insert("pointer".into(), pointer(name).into())),
        Some("entire-payload") => drop(table.insert("pointer".into(), "".into())),
        Some("header") => drop(table.insert("header".into(), name.into())),
        Some(other) => return Err(format!("source {other:?} is not supported")),
        None => return Err("no source".into()),
    }
    Ok(Toml::Table(table))
}

fn env_name(arg: &Value) -> Option<String> {
    match arg.get("envname").and_then(Value::as_str) {
        Some(name) => Some(name.to_owned()),
        None => arg
            .get("name")
            .and_then(Value::as_str)
            .map(|n| format!("HOOK_{n}")),
    }
}

/// adnanh's dotted names (`repository.owner.name`, `commits.0.id`) as a JSON pointer.
fn pointer(name: &str) -> String {
    name.split('.')
        .map(|part| format!("/{}", part.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// What a trigger rule turns into: the source's credential, its allowed addresses, the
/// route's event types and payload conditions.
#[derive(Default)]
struct Rules {
    provider: Option<&'static str>,
    secret: Option<String>,
    auth: Option<Table>,
    allow_ips: Vec<Toml>,
    events: Vec<Toml>,
    conditions: Vec<Toml>,
}

impl Rules {
    /// Credentials and address checks only at the top (alone or under `and`): elsewhere
    /// they cannot become a source's settings.
    fn top_level(&mut self, rule: &Value, note: &mut impl FnMut(String)) {
        let parts: Vec<&Value> = match rule.get("and").and_then(Value::as_array) {
            Some(all) => all.iter().collect(),
            None => vec![rule],
        };
        for part in parts {
            if let Some(found) = part.get("match")
                && self.credential(found, note)
            {
                continue;
            }
            match condition(part) {
                Ok(Some(cond)) => self.conditions.push(cond),
                Ok(None) => {}
                Err(why) => note(format!("trigger-rule: {why}")),
            }
        }
    }

    /// Takes a credential, address or event-type match; false when it is none of those.
    fn credential(&mut self, found: &Value, note: &mut impl FnMut(String)) -> bool {
        let (kind, from, name) = parts(found);
        let name = name.to_ascii_lowercase();
        let text = |key: &str| found.get(key).and_then(Value::as_str).map(str::to_owned);
        let mut set = |rules: &mut Rules, provider, secret: Option<String>, auth: Option<Table>| {
            if rules.provider.is_some() {
                note(format!(
                    "trigger-rule: a second credential ({kind} on {name}) was not mapped"
                ));
            } else {
                (rules.provider, rules.secret, rules.auth) = (Some(provider), secret, auth);
            }
        };
        match (kind, from, name.as_str()) {
            ("ip-whitelist", _, _) => {
                if let Some(range) = text("ip-range") {
                    self.allow_ips.push(range.into());
                }
                true
            }
            ("value", Some("header"), "x-gitlab-token") => {
                set(self, "gitlab", text("value"), None);
                true
            }
            ("value", Some("header"), "x-gitlab-event" | "x-github-event" | "x-gitea-event") => {
                if let Some(event) = text("value") {
                    self.events.push(event.into());
                }
                true
            }
            (
                "payload-hmac-sha1"
                | "payload-hash-sha1"
                | "payload-hmac-sha256"
                | "payload-hash-sha256",
                Some("header"),
                "x-hub-signature" | "x-hub-signature-256",
            ) => {
                set(self, "github", text("secret"), None);
                true
            }
            (
                "payload-hmac-sha1" | "payload-hmac-sha256" | "payload-hmac-sha512",
                Some("header"),
                header,
            ) => {
                let mut auth = Table::new();
                auth.insert("type".into(), "hmac".into());
                auth.insert("header".into(), header.into());
                auth.insert(
                    "algorithm".into(),
                    kind.trim_start_matches("payload-hmac-").into(),
                );
                set(self, "generic", text("secret"), Some(auth));
                true
            }
            ("value", Some("header"), header) => {
                let mut auth = Table::new();
                auth.insert("type".into(), "token".into());
                auth.insert("header".into(), header.into());
                set(self, "generic", text("value"), Some(auth));
                true
            }
            ("value", Some("url"), param) => {
                let mut auth = Table::new();
                auth.insert("type".into(), "query".into());
                auth.insert("param".into(), param.into());
                set(self, "generic", text("value"), Some(auth));
                true
            }
            _ => false,
        }
    }
}

/// A `match`'s type, and the source and name of the value it looks at.
fn parts(found: &Value) -> (&str, Option<&str>, &str) {
    fn text(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str)
    }
    let parameter = found.get("parameter");
    (
        text(found.get("type")).unwrap_or_default(),
        text(parameter.and_then(|p| p.get("source"))),
        text(parameter.and_then(|p| p.get("name"))).unwrap_or_default(),
    )
}

/// A payload match (or and/or/not of them) as a route condition; `Err` says what is not
/// expressible.
fn condition(rule: &Value) -> Result<Option<Toml>, String> {
    let many = |key: &str, list: &Vec<Value>| -> Result<Option<Toml>, String> {
        let parts: Vec<Toml> = list
            .iter()
            .map(condition)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        let mut table = Table::new();
        table.insert(key.into(), parts.into());
        Ok(Some(Toml::Table(table)))
    };
    if let Some(all) = rule.get("and").and_then(Value::as_array) {
        return many("all", all);
    }
    if let Some(any) = rule.get("or").and_then(Value::as_array) {
        return many("any", any);
    }
    if let Some(inner) = rule.get("not") {
        let mut table = Table::new();
        match condition(inner)? {
            Some(cond) => drop(table.insert("not".into(), cond)),
            None => return Ok(None),
        }
        return Ok(Some(Toml::Table(table)));
    }
    let found = rule
        .get("match")
        .ok_or("a rule that is not and/or/not/match")?;
    let (kind, from, name) = parts(found);
    if from != Some("payload") {
        return Err(format!(
            "a {kind} match on {from:?} {name:?} inside and/or/not cannot be mapped (route conditions look at the payload)"
        ));
    }
    let mut table = Table::new();
    table.insert("pointer".into(), pointer(name).into());
    match (kind, found.get("value"), found.get("regex")) {
        ("value", Some(Value::String(v)), _) => {
            drop(table.insert("equals".into(), v.clone().into()))
        }
        ("regex", _, Some(Value::String(r))) => {
            drop(table.insert("regex".into(), r.clone().into()))
        }
        _ => return Err(format!("a {kind} match on the payload cannot be mapped")),
    }
    Ok(Some(Toml::Table(table)))
}
