//! What the console shows of untrusted bytes, as plain data for the templates to escape: a
//! JSON tree, a hex dump, text with invisible characters made visible, a shell-safe curl
//! command, relative times, a line comparison.

use crate::domain::UnixMillis;

/// Text from outside with control characters (but line breaks and tabs) and bidirectional
/// overrides shown as escapes, so nothing in it can hide or reorder what is around it.
pub fn visible(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if c.is_control() || is_bidi_control(c) => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One line of a JSON tree: opening a container, a value, or closing one. The template
/// writes `<details>` for containers, so the tree folds without JavaScript.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeNode {
    pub open: bool,
    pub close: bool,
    /// The member name or `[index]`; empty at the top.
    pub key: String,
    /// A value (as JSON text), or `{…}`/`[…]` with its size for a container.
    pub value: String,
    /// `str`, `num`, `bool`, `null`, `obj`: the CSS class.
    pub class: &'static str,
}

/// Containers deeper than this, or nodes past this count, show as their JSON text.
const MAX_DEPTH: usize = 24;
const MAX_NODES: usize = 5_000;

pub fn json_tree(value: &serde_json::Value) -> Vec<TreeNode> {
    let mut nodes = Vec::new();
    walk(value, String::new(), 0, &mut nodes);
    nodes
}

fn walk(value: &serde_json::Value, key: String, depth: usize, nodes: &mut Vec<TreeNode>) {
    use serde_json::Value;
    let leaf = |value: String, class| TreeNode {
        open: false,
        close: false,
        key: visible(&key),
        value,
        class,
    };
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(n, v)| (format!("[{n}]"), v))
            .collect(),
        Value::String(_) => return nodes.push(leaf(visible(&value.to_string()), "str")),
        Value::Number(n) => return nodes.push(leaf(n.to_string(), "num")),
        Value::Bool(b) => return nodes.push(leaf(b.to_string(), "bool")),
        Value::Null => return nodes.push(leaf("null".into(), "null")),
    };
    if depth >= MAX_DEPTH || nodes.len() >= MAX_NODES {
        return nodes.push(leaf(visible(&value.to_string()), "str"));
    }
    let shape = match value {
        Value::Array(_) => format!("[…] {} items", children.len()),
        _ => format!("{{…}} {} keys", children.len()),
    };
    nodes.push(TreeNode {
        open: true,
        ..leaf(shape, "obj")
    });
    for (child_key, child) in children {
        walk(child, child_key, depth + 1, nodes);
    }
    nodes.push(TreeNode {
        open: false,
        close: true,
        key: String::new(),
        value: String::new(),
        class: "obj",
    });
}

/// `offset  hex bytes  ascii`, 16 bytes a line, at most `limit` bytes.
pub fn hex_dump(bytes: &[u8], limit: usize) -> String {
    let mut out = String::new();
    for (line, chunk) in bytes[..bytes.len().min(limit)].chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!(
            "{:08x}  {:<47}  {ascii}\n",
            line * 16,
            hex.join(" ")
        ));
    }
    if bytes.len() > limit {
        out.push_str(&format!(
            "… {} more bytes (download the body)\n",
            bytes.len() - limit
        ));
    }
    out
}

/// A word for the shell: single-quoted, or `$'…'` with escapes when it holds bytes a
/// terminal would act on; either way a hostile value stays one inert argument.
pub fn shell_word(text: &str) -> String {
    let plain = text
        .chars()
        .all(|c| c == '\n' || c == '\t' || !(c.is_control() || is_bidi_control(c)));
    if plain {
        return format!("'{}'", text.replace('\'', r"'\''"));
    }
    let mut out = String::from("$'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            c if c.is_control() || is_bidi_control(c) => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{byte:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Headers a replayed request must not copy: the transport's own, and credentials (stored
/// masked anyway).
fn left_out(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "connection"
            | "transfer-encoding"
            | "accept-encoding"
            | "authorization"
            | "cookie"
            | "x-gitlab-token"
            | "proxy-authorization"
    ) || [
        "signature",
        "token",
        "secret",
        "hmac",
        "api-key",
        "apikey",
        "password",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// The event as a curl command posting it to `$HOOKRELAY_URL/hooks/<source>`: credentials
/// and signatures left out (a replay through hookrelay's own API keeps them valid).
pub fn curl(source: &str, headers: &[(String, String)], body: &[u8]) -> String {
    let mut lines = vec![format!(
        "curl -X POST \"$HOOKRELAY_URL\"/hooks/{}",
        shell_word(source)
    )];
    for (name, value) in headers.iter().filter(|(name, _)| !left_out(name)) {
        lines.push(format!("  -H {}", shell_word(&format!("{name}: {value}"))));
    }
    // `--data-raw`, not `--data-binary`: curl reads a file for an argument that starts with
    // `@`, and a body of `@/home/op/.ssh/id_rsa` would post that file.
    let body = String::from_utf8_lossy(body);
    lines.push(format!("  --data-raw {}", shell_word(&body)));
    lines.join(" \\\n")
}

/// "12 s ago", "3 min ago", "in 40 s".
pub fn ago(at: UnixMillis, now: UnixMillis) -> String {
    let secs = (now - at) / 1000;
    let (future, secs) = (secs < 0, secs.unsigned_abs());
    let amount = match secs {
        0..=2 => return "just now".to_owned(),
        3..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// One bar of a chart: a minute's count of one kind, stacked on the kinds before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub x: u32,
    pub y: f32,
    pub height: f32,
    /// `ok`, `bad` or `off`: the CSS class that colours it.
    pub class: &'static str,
}

pub const CHART_HEIGHT: f32 = 32.0;
/// Pixels per minute in the chart's own coordinates (60 minutes: 180 wide).
const STEP: u32 = 3;

/// Stacked bars per minute for `series` (class, counts per minute, oldest first), scaled to
/// the busiest minute.
pub fn bars(series: &[(&'static str, Vec<u64>)]) -> Vec<Bar> {
    let minutes = series
        .iter()
        .map(|(_, counts)| counts.len())
        .max()
        .unwrap_or(0);
    let total = |minute: usize| -> u64 {
        series
            .iter()
            .map(|(_, counts)| counts.get(minute).copied().unwrap_or(0))
            .sum()
    };
    let busiest = (0..minutes).map(total).max().unwrap_or(0).max(1) as f32;
    let mut out = Vec::new();
    for minute in 0..minutes {
        let mut top = CHART_HEIGHT;
        for (class, counts) in series {
            let count = counts.get(minute).copied().unwrap_or(0);
            if count == 0 {
                continue;
            }
            let height = (count as f32 / busiest * CHART_HEIGHT).max(1.0);
            top -= height;
            out.push(Bar {
                x: minute as u32 * STEP,
                y: top.max(0.0),
                height,
                class,
            });
        }
    }
    out
}

/// One row of a side-by-side comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    pub label: String,
    pub left: String,
    pub right: String,
    pub differs: bool,
}

pub fn compare(rows: Vec<(&str, String, String)>) -> Vec<Compared> {
    rows.into_iter()
        .map(|(label, left, right)| Compared {
            label: label.to_owned(),
            differs: left != right,
            left: visible(&left),
            right: visible(&right),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_value_stays_one_inert_shell_word() {
        let table = [
            "plain",
            "it's",
            "'; rm -rf ~; '",
            "$(touch /tmp/pwned) `id` ${HOME} \\ \"",
            "line\nbreak\ttab",
            "escape \u{1b}]0;title\u{7} bell",
            "bidi \u{202e}txt.exe",
            "",
        ];
        for value in table {
            let word = shell_word(value);
            let out = std::process::Command::new("bash")
                .args(["-c", &format!("printf %s {word}")])
                .output()
                .unwrap();
            assert!(out.status.success(), "{word}");
            assert_eq!(String::from_utf8(out.stdout).unwrap(), value, "{word}");
        }
        assert!(shell_word("a\u{1b}b").starts_with("$'"));
    }

    #[test]
    fn curl_leaves_credentials_out() {
        let headers = vec![
            ("X-Gitlab-Token".to_owned(), "[redacted]".to_owned()),
            ("X-Hub-Signature-256".to_owned(), "sha256=ab".to_owned()),
            ("X-Gitlab-Event".to_owned(), "Push Hook".to_owned()),
            ("Content-Length".to_owned(), "2".to_owned()),
        ];
        let command = curl("gitlab", &headers, b"{}");
        assert!(
            command.contains("-H 'X-Gitlab-Event: Push Hook'"),
            "{command}"
        );
        assert!(
            !command.contains("redacted") && !command.contains("sha256"),
            "{command}"
        );
        assert!(!command.contains("Content-Length"), "{command}");
        assert!(command.ends_with("--data-raw '{}'"), "{command}");
        let file = curl("gitlab", &[], b"@/etc/passwd");
        assert!(file.ends_with("--data-raw '@/etc/passwd'"), "{file}");
    }

    #[test]
    fn a_tree_opens_and_closes_each_container_and_shows_values_as_json() {
        let value = serde_json::json!({"a": [1, "x<y"], "b": null});
        let tree = json_tree(&value);
        let shape: Vec<String> = tree
            .iter()
            .map(|n| match (n.open, n.close) {
                (true, _) => format!("open {} {}", n.key, n.value),
                (_, true) => "close".into(),
                _ => format!("{}={}", n.key, n.value),
            })
            .collect();
        assert_eq!(
            shape,
            [
                "open  {…} 2 keys",
                "open a […] 2 items",
                "[0]=1",
                "[1]=\"x<y\"",
                "close",
                "b=null",
                "close"
            ]
        );
    }

    #[test]
    fn bars_stack_per_minute_and_scale_to_the_busiest() {
        let chart = bars(&[("ok", vec![0, 3, 1]), ("bad", vec![0, 1, 0])]);
        let shape: Vec<(u32, &str, f32)> = chart.iter().map(|b| (b.x, b.class, b.height)).collect();
        assert_eq!(shape, [(3, "ok", 24.0), (3, "bad", 8.0), (6, "ok", 8.0)]);
        assert_eq!(chart[1].y, 0.0, "the busiest minute fills the chart");
        assert!(bars(&[("ok", vec![0; 60])]).is_empty());
    }

    #[test]
    fn invisible_characters_become_visible() {
        assert_eq!(visible("a\u{202e}b\u{1b}c\nd"), "a\\u{202e}b\\u{1b}c\nd");
        assert_eq!(ago(0, 12_000), "12 s ago");
        assert_eq!(ago(0, 3 * 3_600_000), "3 h ago");
        assert_eq!(ago(40_000, 0), "in 40 s");
        assert!(hex_dump(b"\x00\x01AB", 100).starts_with("00000000  00 01 41 42"));
    }
}
