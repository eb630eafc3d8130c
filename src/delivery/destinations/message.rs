//! What broker destinations publish besides the body: a subject, topic, routing key or stream
//! name from a template of the event's fields, and the message's headers (hookrelay's ids and
//! the original headers chosen to travel on). Pure: each broker applies its own escaping.

use crate::delivery::Outbound;
use crate::store::StoredRequest;

/// The fields an event's values are named by, in templates and command arguments.
pub const FIELDS: &[&str] = &[
    "ref",
    "branch",
    "tag",
    "project",
    "commit_before",
    "commit_after",
    "sender",
    "event_type",
    "source",
    "event_id",
    "delivery_id",
];

/// One field's value for this delivery; `None` when the event has none.
pub fn field(name: &str, request: &StoredRequest, delivery_id: &str) -> Option<String> {
    let class = &request.classification;
    match name {
        "ref" => class.git_ref.clone(),
        "branch" => class.branch.clone(),
        "tag" => class.tag.clone(),
        "project" => class.project.clone(),
        "commit_before" => class.commit_before.clone(),
        "commit_after" => class.commit_after.clone(),
        "sender" => class.sender.clone(),
        "event_type" => class.event_type.clone(),
        "source" => Some(request.source.as_str().to_owned()),
        "event_id" => Some(request.event_id.as_str().to_owned()),
        "delivery_id" => Some(delivery_id.to_owned()),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(String),
}

/// `gitlab.{project}.{event_type}`: literal text with `{field}`s (`{{` and `}}` for braces).
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(format!("{{{name} is not closed (write {{{{ for a brace)"));
                    }
                    if !FIELDS.contains(&name.as_str()) {
                        return Err(format!(
                            "unknown field {{{name}}}; known: {}",
                            FIELDS.join(", ")
                        ));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(name));
                }
                '}' => return Err("a lone } (write }} for a brace)".to_owned()),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        if parts.is_empty() {
            return Err("is empty".to_owned());
        }
        Ok(Self { parts })
    }

    /// The text for one delivery: each field's value passed through `clean` (the broker's
    /// escaping), a missing or empty one written as `_`.
    pub fn render(
        &self,
        request: &StoredRequest,
        delivery_id: &str,
        clean: impl Fn(&str) -> String,
    ) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(name) => match field(name, request, delivery_id) {
                    Some(value) if !value.is_empty() => out.push_str(&clean(&value)),
                    _ => out.push('_'),
                },
            }
        }
        out
    }

    /// Whether the template is literal text only (no field).
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }
}

/// Replaces every character `bad` refuses (and control characters) by `_`.
pub fn replace_chars(value: &str, bad: impl Fn(char) -> bool) -> String {
    value
        .chars()
        .map(|c| if bad(c) || c.is_control() { '_' } else { c })
        .collect()
}

/// The message's headers: hookrelay's ids first, then the original headers chosen to travel
/// on (`forward`, else the source provider's defaults), values that are not UTF-8 left out.
pub fn headers(
    outbound: &Outbound<'_>,
    forward: Option<&[String]>,
    defaults: &super::ForwardDefaults,
) -> Vec<(String, String)> {
    let request = outbound.request;
    // The names the HTTP destination sends, so a consumer reads one set whatever the transport.
    let mut out = vec![
        ("webhook-id".to_owned(), outbound.delivery_id.to_owned()),
        (
            "webhook-timestamp".to_owned(),
            (crate::domain::now_millis() / 1000).to_string(),
        ),
        (
            "x-hookrelay-event-id".to_owned(),
            request.event_id.as_str().to_owned(),
        ),
        (
            "x-hookrelay-attempt".to_owned(),
            outbound.attempt.to_string(),
        ),
        (
            "x-hookrelay-source".to_owned(),
            request.source.as_str().to_owned(),
        ),
    ];
    if let Some(event_type) = &request.event_type {
        out.push(("x-hookrelay-event-type".to_owned(), event_type.clone()));
    }
    if let Some(content_type) = &request.content_type {
        out.push(("content-type".to_owned(), content_type.clone()));
    }
    let forward: &[String] = match forward {
        Some(list) => list,
        None => defaults
            .get(&request.source)
            .map(Vec::as_slice)
            .unwrap_or_default(),
    };
    for (name, value) in &request.headers {
        if forward.iter().any(|f| f.eq_ignore_ascii_case(name))
            && let Ok(value) = std::str::from_utf8(value)
        {
            out.push((name.to_ascii_lowercase(), value.to_owned()));
        }
    }
    out
}

/// A short, printable excerpt of a broker's answer or error for the attempt's record.
pub fn detail_text(text: &str) -> String {
    let mut out: String = text.chars().take(500).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_refuse() {
        let table: &[(&str, Result<(), &str>)] = &[
            ("gitlab.{project}.{event_type}", Ok(())),
            ("plain", Ok(())),
            ("a{{b}}", Ok(())),
            ("x.{nope}", Err("unknown field {nope}")),
            ("x}", Err("a lone }")),
            ("a.{project", Err("{project is not closed")),
            ("", Err("is empty")),
        ];
        for (text, expected) in table {
            match (Template::parse(text), expected) {
                (Ok(_), Ok(())) => {}
                (Err(err), Err(start)) => assert!(err.starts_with(start), "{text}: {err}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(Template::parse("a{{b}}").unwrap().literal(), Some("a{b}"));
    }

    #[test]
    fn bad_characters_become_underscores() {
        assert_eq!(
            replace_chars("group/app.v2 *>\n", |c| ".*> /".contains(c)),
            "group_app_v2____"
        );
    }
}
