//! How the CLI shows things: aligned tables (colour only on a terminal), relative times,
//! and text from outside made safe for a terminal.

use comfy_table::{Cell, Color, Table, presets};
use serde_json::Value;

use crate::domain::{format_millis, now_millis};

/// Text that came from outside (payload fields, destinations' answers) made safe for a
/// terminal: control characters, escape sequences among them, are shown escaped instead of
/// being interpreted.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Multi-line text from outside (a command's output, a response body) as a block: its line
/// breaks kept, every other control character escaped as `printable` does, and every line
/// indented by `indent`, so nothing in it can pass for the CLI's own less indented lines.
pub fn printable_block(text: &str, indent: &str) -> String {
    text.trim_end_matches(['\r', '\n'])
        .split('\n')
        .map(|line| {
            format!(
                "{indent}{}",
                printable(line.strip_suffix('\r').unwrap_or(line))
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A borderless table with aligned columns; styling only when stdout is a terminal.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(header.iter().map(|h| Cell::new(h).fg(Color::DarkGrey)));
    table
}

/// A JSON field as printable text; `-` when absent.
pub fn text(value: &Value, field: &str) -> String {
    match value.get(field) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => printable(s),
        Some(other) => printable(&other.to_string()),
    }
}

/// "3m ago", "in 40s", from epoch milliseconds in a JSON field.
pub fn ago(value: &Value, field: &str) -> String {
    match value.get(field).and_then(Value::as_i64) {
        Some(at) => relative(at, now_millis()),
        None => "-".to_owned(),
    }
}

pub fn relative(at: i64, now: i64) -> String {
    let (delta, future) = if at > now {
        (at - now, true)
    } else {
        (now - at, false)
    };
    let secs = delta / 1000;
    let span = match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    };
    match (secs, future) {
        (0, _) => "now".to_owned(),
        (_, true) => format!("in {span}"),
        (_, false) => format!("{span} ago"),
    }
}

pub fn absolute(value: &Value, field: &str) -> String {
    match value.get(field).and_then(Value::as_i64) {
        Some(at) => format!("{} ({})", format_millis(at), relative(at, now_millis())),
        None => "-".to_owned(),
    }
}

/// A delivery state, coloured by what it means.
pub fn state_cell(state: &str) -> Cell {
    let colour = match state {
        "succeeded" | "healthy" => Color::Green,
        "dead" | "failing" | "not_configured" => Color::Red,
        "pending" | "in_flight" | "paused" => Color::Yellow,
        _ => Color::Reset,
    };
    Cell::new(state).fg(colour)
}

/// The last outcome of a delivery as its destination summed it up (`HTTP 503`, `exit 0`,
/// `timeout`); `-` before its first attempt.
pub fn last_outcome(delivery: &Value) -> String {
    match delivery.get("last_summary") {
        Some(Value::String(summary)) if !summary.is_empty() => printable(summary),
        _ => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_from_payloads_are_not_printed_raw() {
        assert_eq!(
            printable("push\u{1b}]0;owned\u{7}\r\nok é"),
            "push\\u{1b}]0;owned\\u{7}\\r\\nok é"
        );
    }

    #[test]
    fn a_block_keeps_its_lines_indented_and_escapes_the_rest() {
        assert_eq!(
            printable_block(
                "--- stdout ---\ndeployed\u{1b}[2J main\r\n\n  #2 fake\n\n",
                "    "
            ),
            "    --- stdout ---\n    deployed\\u{1b}[2J main\n    \n      #2 fake"
        );
    }

    #[test]
    fn times_read_as_people_say_them() {
        let now = 1_000_000_000;
        for (at, shown) in [
            (now, "now"),
            (now - 42_000, "42s ago"),
            (now - 3 * 60_000, "3m ago"),
            (now - 5 * 3_600_000, "5h ago"),
            (now - 2 * 86_400_000, "2d ago"),
            (now + 90_000, "in 1m"),
        ] {
            assert_eq!(relative(at, now), shown);
        }
    }
}
