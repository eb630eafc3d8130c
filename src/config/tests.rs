//! Config parsing and validation tests: every error names where it is.

use super::*;
use crate::domain::Ordering;

const VALID: &str = r#"
[server]
listen = "127.0.0.1:0"
store = "sqlite:///tmp/x.db"

[sources.gitlab]
provider = "gitlab"
secrets = ["old-token", "new-token"]
max_body = "1MiB"

[destinations.ci]
url = "http://127.0.0.1:9/hook"
allow_private_network = true
timeout = "5s"
ordering = "fifo"
retry = { initial_delay = "1s", max_attempts = 5 }

[[routes]]
source = "gitlab"
events = ["Push Hook"]
destinations = ["ci"]
"#;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, "test.toml", Vec::<(String, String)>::new())
}

#[test]
fn a_valid_file_becomes_typed_config() {
    let config = parse(VALID).unwrap();
    let source = &config.sources["gitlab"];
    assert_eq!(source.credentials.secrets.len(), 2);
    assert_eq!(source.max_body_bytes, 1024 * 1024);
    let ci = &config.destinations["ci"];
    assert_eq!(ci.ordering, Ordering::Fifo);
    assert_eq!(ci.retry.max_attempts, 5);
    assert_eq!(ci.retry.initial_delay, Duration::from_secs(1));
    assert_eq!(config.routes[0].destinations[0].as_str(), "ci");
}

#[test]
fn every_error_is_reported_with_its_location() {
    let text = r#"
[server]
listen = "nowhere"

[sources.gitlab]
provider = "gitlob"
secret = "env:HOOKRELAY_TEST_UNSET_VARIABLE"

[destinations.ci]
url = "ftp://example"
concurrency = 0

[[routes]]
source = "gitlab"
destinations = ["ci", "missing"]
"#;
    let errors = parse(text).unwrap_err();
    let locations: Vec<&str> = errors.errors.iter().map(|e| e.location.as_str()).collect();
    for expected in [
        "server.listen",
        "sources.gitlab.provider",
        "sources.gitlab.secret",
        "destinations.ci.url",
        "destinations.ci.concurrency",
        "routes[0].destinations[1]",
    ] {
        assert!(
            locations.contains(&expected),
            "{expected} missing from {locations:?}"
        );
    }
    let shown = errors.to_string();
    assert!(shown.contains("test.toml"), "{shown}");
    assert!(shown.contains("HOOKRELAY_TEST_UNSET_VARIABLE"), "{shown}");
}

#[test]
fn syntax_and_unknown_keys_report_a_line() {
    let errors = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
    let shown = errors.to_string();
    assert!(shown.contains("line 3"), "{shown}");
    assert!(shown.contains("lisen"), "{shown}");
    let errors = parse("[server\n").unwrap_err();
    assert!(errors.to_string().contains("line 1"), "{errors}");
}

#[test]
fn environment_overrides_win_over_the_file() {
    let env = vec![(
        "HOOKRELAY_SERVER__LISTEN".to_owned(),
        "127.0.0.1:4567".to_owned(),
    )];
    let config = Config::parse(VALID, "test.toml", env).unwrap();
    assert_eq!(config.server.listen.port(), 4567);
}

#[test]
fn debug_output_never_shows_secrets() {
    let config = parse(VALID).unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("old-token"), "{shown}");
    assert!(!shown.contains("new-token"), "{shown}");
}

#[test]
fn source_options_are_checked_with_locations_and_risks_are_warned() {
    let text = r#"
[sources.signed]
provider = "gitlab"
signing_secrets = ["whsec_%%%"]
require_signature = true
allow_ips = ["10.0.0.0/33", "192.0.2.1"]

[sources.open]
provider = "github"

[sources.querytoken]
provider = "generic"
secret = "t"
auth = { type = "query", param = "token" }

[sources.badauth]
provider = "github"
secret = "t"
auth = { type = "token", header = "x-token" }

[sources.nosecret]
provider = "generic"
auth = { type = "basic", username = "u" }
"#;
    let errors = parse(text).unwrap_err();
    let locations: Vec<&str> = errors.errors.iter().map(|e| e.location.as_str()).collect();
    for expected in [
        "sources.signed.signing_secrets[0]",
        "sources.signed.allow_ips[0]",
        "sources.signed.require_signature",
        "sources.badauth.auth",
        "sources.nosecret.auth",
    ] {
        assert!(
            locations.contains(&expected),
            "{expected} missing from {locations:?}"
        );
    }
    let fixed = text
        .replace("whsec_%%%", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .replace("10.0.0.0/33", "10.0.0.0/8")
        .replace("[sources.badauth]\nprovider = \"github\"\nsecret = \"t\"\nauth = { type = \"token\", header = \"x-token\" }\n", "")
        .replace("[sources.nosecret]\nprovider = \"generic\"\nauth = { type = \"basic\", username = \"u\" }\n", "");
    let config = parse(&fixed).unwrap();
    let warned: Vec<&str> = config
        .warnings
        .iter()
        .map(|w| w.location.as_str())
        .collect();
    assert_eq!(warned, ["sources.open", "sources.querytoken.auth"]);
    assert_eq!(
        config.sources["signed"].allow_ips.as_ref().unwrap().len(),
        2
    );
}

#[test]
fn settings_that_would_stall_or_open_the_server_are_refused() {
    let text = r#"
[server]
body_read_timeout = "0s"
max_inflight_body = "10MiB"

[sources.gitlab]
provider = "gitlab"
secret = "t"
max_body = 0
allow_ips = []
public_keys = ["whpk_AAAA"]

[sources.gh]
provider = "github"
signing_secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
max_body = "11MiB"

[destinations.ci]
url = "http://127.0.0.1:9/x"
timeout = "0s"
forward_headers = ["X-Custom", "Host", "bad header"]
retry = { initial_delay = "10s", max_delay = "1s" }

[[routes]]
source = "gitlab"
when = { pointer = "/ref", regex = 5 }
destinations = ["ci"]
"#;
    let errors = parse(text).unwrap_err();
    let locations: Vec<&str> = errors.errors.iter().map(|e| e.location.as_str()).collect();
    for expected in [
        "server.body_read_timeout",
        "sources.gitlab.max_body",
        "sources.gitlab.allow_ips",
        "sources.gitlab.public_keys",
        "sources.gh.signing_secrets",
        "sources.gh.max_body",
        "destinations.ci.timeout",
        "destinations.ci.forward_headers[1]",
        "destinations.ci.forward_headers[2]",
        "destinations.ci.retry.max_delay",
        "routes[0].when.regex",
    ] {
        assert!(
            locations.contains(&expected),
            "{expected} missing from {locations:?}"
        );
    }
}

#[test]
fn a_gitlab_source_with_only_a_signing_secret_requires_signatures() {
    let text = r#"
[sources.gitlab]
provider = "gitlab"
signing_secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
"#;
    let config = parse(text).unwrap();
    assert!(config.sources["gitlab"].credentials.require_signature);
    let opened = parse(&format!("{text}require_signature = false\n")).unwrap();
    assert!(!opened.sources["gitlab"].credentials.require_signature);
    assert_eq!(
        opened.warnings[0].location,
        "sources.gitlab.require_signature"
    );
}

#[test]
fn a_destination_pointing_at_our_own_hooks_is_refused() {
    let text = r#"
[server]
listen = "0.0.0.0:8080"

[destinations.loop]
url = "http://localhost:8080/hooks/gitlab"
allow_private_network = true

[destinations.other_port]
url = "http://127.0.0.1:9000/hooks/gitlab"
allow_private_network = true
"#;
    let errors = parse(text).unwrap_err();
    let locations: Vec<&str> = errors.errors.iter().map(|e| e.location.as_str()).collect();
    assert_eq!(locations, ["destinations.loop.url"]);
}

#[test]
fn a_timestamp_tolerance_the_dedup_window_cannot_cover_is_refused() {
    let text = |tolerance: &str| {
        format!(
            "[sources.std]\nprovider = \"standard\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\ntimestamp_tolerance = \"{tolerance}\"\n"
        )
    };
    assert!(parse(&text("1day")).is_ok());
    let errors = parse(&text("2days")).unwrap_err();
    assert_eq!(errors.errors[0].location, "sources.std.timestamp_tolerance");
    assert!(errors.errors[0].message.contains("dedup window"));
}
