//! `format = "slack" | "discord"`: the body an HTTP destination sends to a chat tool instead
//! of the event's own. A notification (source `hookrelay`) says its `text`; any other event
//! a line naming what it is. Text from senders and destinations is escaped so it cannot
//! mention, link or format.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::store::StoredRequest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The event's body as received (the default).
    #[default]
    Raw,
    /// `{"text": ..., "mrkdwn": false, ...}`: Slack incoming webhooks, Mattermost, Rocket.Chat.
    Slack,
    /// `{"content": ..., "allowed_mentions": {"parse": []}}`: Discord webhooks.
    Discord,
}

impl Format {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "raw" => Ok(Format::Raw),
            "slack" => Ok(Format::Slack),
            "discord" => Ok(Format::Discord),
            other => Err(format!(
                "unknown format {other:?}; use \"raw\" (the event's body), \"slack\" (also Mattermost, Rocket.Chat) or \"discord\""
            )),
        }
    }

    /// The body to send in place of the event's, `None` for `raw`.
    pub fn body(self, request: &StoredRequest) -> Option<Bytes> {
        if self == Format::Raw {
            return None;
        }
        let text = line(request);
        let body = match self {
            Format::Raw => return None,
            Format::Slack => json!({
                "text": slack_escape(&text),
                "mrkdwn": false,
                "unfurl_links": false,
                "unfurl_media": false,
            }),
            Format::Discord => json!({
                "content": truncate(&discord_escape(&text), 1900),
                "allowed_mentions": { "parse": [] },
            }),
        };
        Some(Bytes::from(body.to_string()))
    }
}

/// What the message says: a notification's own `text`, else the event in a line.
fn line(request: &StoredRequest) -> String {
    if request.source.as_str() == crate::notify::SOURCE
        && let Ok(body) = serde_json::from_slice::<Value>(&request.body)
        && let Some(text) = body.get("text").and_then(Value::as_str)
    {
        return format!("hookrelay: {text}");
    }
    let class = &request.classification;
    let mut line = format!(
        "{} {}",
        request.source.as_str(),
        class.event_type.as_deref().unwrap_or("event")
    );
    if let Some(project) = &class.project {
        line.push_str(&format!(" on {project}"));
    }
    if let Some(branch) = class.branch.as_ref().or(class.tag.as_ref()) {
        line.push_str(&format!(" ({branch})"));
    }
    if let Some(sender) = &class.sender {
        line.push_str(&format!(" by {sender}"));
    }
    line.push_str(&format!(" [{}]", request.event_id.as_str()));
    line
}

/// Slack reads `<...>` as links and mentions (`<!channel>`), `&` as an entity; Mattermost
/// and Rocket.Chat read `@channel`: a zero-width joiner after `@` keeps the text readable
/// and inert.
fn slack_escape(text: &str) -> String {
    unlinked(&one_line(text))
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('@', "@\u{2060}")
}

/// Discord pings nobody with `allowed_mentions` empty; markdown and links are escaped.
fn discord_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in unlinked(&one_line(text)).chars() {
        if "\\*_~`|>[]()<#@:".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A word joiner inside `://` keeps a URL from sender text readable but not a link.
fn unlinked(text: &str) -> String {
    text.replace("://", ":/\u{2060}/")
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_text_cannot_mention_link_or_break_lines() {
        let hostile = "deploy <!channel> @here <https://evil|click> & *bold*\nnext";
        assert_eq!(
            slack_escape(hostile),
            "deploy &lt;!channel&gt; @\u{2060}here &lt;https:/\u{2060}/evil|click&gt; &amp; *bold* next"
        );
        let discord = discord_escape(hostile);
        assert!(discord.contains("\\@here"), "{discord}");
        assert!(discord.contains("\\*bold\\*"), "{discord}");
        assert!(!discord.contains('\n'));
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert!(Format::parse("teams").is_err());
    }
}
