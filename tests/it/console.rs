//! The web console from outside: its security rules over plain HTTP (headers, sign-in,
//! same-origin, form tokens, scopes, escaping, downloads), and the whole journey in a real
//! browser (`tests/browser/console.mjs`: Debian's chromium driven by playwright-core).

use std::path::Path;
use std::process::Command;

use crate::api::{ADMIN_TOKEN, READ_TOKEN, api_section};
use crate::harness::*;

/// Whether node, the npm packages and chromium are there; in CI they must be.
fn browser_ready() -> bool {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let installed = dir.join("node_modules/playwright-core").exists()
        && dir.join("node_modules/axe-core").exists();
    let chromium = Path::new("/usr/bin/chromium").exists();
    if installed && chromium {
        return true;
    }
    let why = "the browser tests need /usr/bin/chromium (apt-get install chromium) and \
               `npm ci --prefix tests/browser`";
    if std::env::var_os("CI").is_some() {
        panic!("the console's browser tests cannot run in CI: {why}");
    }
    println!("skipping the console's browser tests: {why}");
    false
}

#[tokio::test]
async fn the_console_in_a_real_browser() {
    if !browser_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (api, sink) = (free_port(), free_port());
    let text = config(
        dir.path(),
        &format!("http://{sink}/hook"),
        "retry = { initial_delay = \"200ms\", max_attempts = 2 }",
    ) + &api_section(api);
    let relay = Relay::child(dir.path(), &text);
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console.mjs");
    let hook = relay.hook_url("gitlab");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .env("CONSOLE", format!("http://{api}"))
            .env("HOOK", hook)
            .env("SECRET", TOKEN)
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("READ_TOKEN", READ_TOKEN)
            .env("SINK_PORT", sink.port().to_string())
            .env("HOOKRELAY_BIN", binary())
            .env("SHOTS", &shots)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success() && stdout.contains("all console checks passed"),
        "the browser journey failed:\n{stdout}\n{stderr}"
    );
    let log = relay.log();
    assert!(log.contains("console: signed in"), "sign-ins are logged");
    assert!(
        !log.contains(ADMIN_TOKEN) && !log.contains(READ_TOKEN),
        "a token reached the log"
    );
}

/// A browser-like client for the console over plain HTTP: no redirects followed, the
/// session cookie carried by hand.
struct Console {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
    form_token: String,
}

impl Console {
    fn new(listen: std::net::SocketAddr) -> Console {
        Console {
            base: format!("http://{listen}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
            form_token: String::new(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }

    async fn post(
        &self,
        path: &str,
        origin: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.unwrap()
    }

    async fn sign_in(&mut self, token: &str) {
        let origin = self.base.clone();
        let answer = self
            .post("/ui/login", Some(&origin), &[("token", token)])
            .await;
        assert_eq!(answer.status(), 303);
        let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert!(
            !cookie.contains("Secure"),
            "plain HTTP cannot keep a Secure cookie: {cookie}"
        );
        self.cookie = Some(cookie.split(';').next().unwrap().to_owned());
        let page = self.get("/ui/events").await.text().await.unwrap();
        let marker = "name=\"form_token\" value=\"";
        let start = page.find(marker).expect("a form token on the page") + marker.len();
        self.form_token = page[start..start + 64].to_owned();
    }
}

fn security_headers(response: &reqwest::Response) {
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(!csp.contains("unsafe-"), "{csp}");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["referrer-policy"], "no-referrer");
}

#[tokio::test]
async fn the_console_signs_in_refuses_other_origins_and_escapes_what_senders_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let api = free_port();
    let text = config(dir.path(), &sink.url, "paused = true") + &api_section(api);
    let mut relay = Relay::start(dir.path(), &text);
    let client = reqwest::Client::new();
    let hostile =
        r#"{"object_kind":"push","user_username":"<script>alert(1)</script></textarea>"}"#;
    let accepted: serde_json::Value = post_push(&client, &relay, hostile.to_owned(), None)
        .await
        .json()
        .await
        .unwrap();
    let event = accepted["event_id"].as_str().unwrap().to_owned();
    let delivery = relay.cli(&["deliveries", "list", "--json"]);
    let delivery: serde_json::Value =
        serde_json::from_slice(delivery.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let delivery = delivery["id"].as_str().unwrap().to_owned();

    let mut admin = Console::new(api);
    let origin = admin.base.clone();
    let signed_out = admin.get("/ui/events").await;
    assert_eq!(signed_out.status(), 303);
    assert_eq!(signed_out.headers()["location"], "/ui/login");
    security_headers(&signed_out);
    let no_origin = admin
        .post("/ui/login", None, &[("token", ADMIN_TOKEN)])
        .await;
    assert_eq!(
        no_origin.status(),
        403,
        "a sign-in with no origin is refused"
    );
    let wrong = admin
        .post(
            "/ui/login",
            Some(&origin),
            &[("token", "not-a-token-at-all")],
        )
        .await;
    assert_eq!(wrong.status(), 401);
    assert!(!wrong.text().await.unwrap().contains("not-a-token-at-all"));
    admin.sign_in(ADMIN_TOKEN).await;

    for page in [
        "/ui/events".to_owned(),
        "/ui/events?state=pending&source=gitlab&since=1h".to_owned(),
        "/ui/events?sender=jsmith&ref=main&project=group%2Fapp".to_owned(),
        format!("/ui/events/{event}"),
        format!("/ui/deliveries/{delivery}/compare"),
        "/ui/destinations".to_owned(),
        "/ui/sources".to_owned(),
        "/ui/jobs".to_owned(),
        "/ui/bulk?action=replay&state=pending".to_owned(),
    ] {
        let answer = admin.get(&page).await;
        assert_eq!(answer.status(), 200, "{page}");
        security_headers(&answer);
        let html = answer.text().await.unwrap();
        assert!(
            !html.contains("<script>alert"),
            "{page} has the payload's markup"
        );
        assert!(!html.contains(ADMIN_TOKEN), "{page} shows the token");
    }
    let page = admin
        .get(&format!("/ui/events/{event}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62;&#60;/textarea&#62;"),
        "escaped as text"
    );
    assert!(
        page.contains("class=\"replay\""),
        "an admin sees the replay button"
    );
    let searched = admin
        .get("/ui/events?contains=%3Cscript%3Ealert")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        searched.contains(&format!("row-{event}")),
        "a body search finds the event"
    );
    let missed = admin
        .get("/ui/events?contains=nowhere-at-all")
        .await
        .text()
        .await
        .unwrap();
    assert!(!missed.contains(&format!("row-{event}")));
    // Another site (another port of this host counts) may link here, not fetch from here.
    let fetched = admin
        .http
        .get(format!("{}/ui/events?contains=secret", admin.base))
        .header("cookie", admin.cookie.as_deref().unwrap())
        .header("sec-fetch-site", "same-site")
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 403);
    let linked = admin
        .http
        .get(format!("{}/ui/events", admin.base))
        .header("cookie", admin.cookie.as_deref().unwrap())
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(linked.status(), 200, "a shared link opens");
    let bad_filter = admin.get("/ui/events?since=yesterday").await;
    assert_eq!(bad_filter.status(), 400);
    assert!(bad_filter.text().await.unwrap().contains("since: expected"));

    let download = admin.get(&format!("/ui/events/{event}/body")).await;
    assert_eq!(
        download.headers()["content-type"],
        "application/octet-stream"
    );
    assert!(
        download.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert!(
        download.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("sandbox")
    );
    assert_eq!(download.bytes().await.unwrap(), hostile.as_bytes());

    // A change needs this origin and this session's form token.
    let replay = format!("/ui/deliveries/{delivery}/replay");
    let form_token = admin.form_token.clone();
    let form = [("form_token", form_token.as_str()), ("back", "/ui/events")];
    assert_eq!(
        admin
            .post(&replay, Some("http://evil.example"), &form)
            .await
            .status(),
        403
    );
    assert_eq!(admin.post(&replay, None, &form).await.status(), 403);
    let stale = [
        ("form_token", "0".repeat(64)),
        ("back", "/ui/events".into()),
    ];
    let stale: Vec<(&str, &str)> = stale.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        admin.post(&replay, Some(&origin), &stale).await.status(),
        403
    );
    let done = admin.post(&replay, Some(&origin), &form).await;
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], "/ui/events");
    let elsewhere = [
        ("form_token", form_token.as_str()),
        ("back", "https://evil.example/"),
    ];
    let kept_home = admin.post(&replay, Some(&origin), &elsewhere).await;
    assert_eq!(
        kept_home.headers()["location"],
        "/ui/events",
        "no redirect off the console"
    );

    // A read-only session sees no button and may not change anything.
    let mut reader = Console::new(api);
    reader.sign_in(READ_TOKEN).await;
    let page = reader
        .get(&format!("/ui/events/{event}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains("class=\"replay\""));
    let form = [("form_token", reader.form_token.as_str())];
    let refused = reader
        .post("/ui/destinations/sink/resume", Some(&origin), &form)
        .await;
    assert_eq!(refused.status(), 403);

    // Sessions are kept in the store: a restart (or another replica) knows them.
    drop(relay);
    relay = Relay::start(dir.path(), &text);
    // A new client: the old server's pooled connections went with it.
    admin.http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("{}/ui/events", admin.base);
    let cookie = admin.cookie.clone().unwrap();
    let status = eventually_saying("the restarted console answers", || {
        let request = admin.http.get(&url).header("cookie", &cookie).send();
        async move {
            match request.await {
                Ok(answer) => Ok(answer.status().as_u16()),
                Err(err) => Err(err.to_string()),
            }
        }
    })
    .await;
    assert_eq!(status, 200, "the session outlives a restart");
    let _ = &relay;

    // Signing out ends the session for good.
    let form = [("form_token", admin.form_token.as_str())];
    let out = admin.post("/ui/logout", Some(&origin), &form).await;
    assert_eq!(out.status(), 303);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(admin.get("/ui/events").await.status(), 303);
    assert_eq!(
        admin.post(&replay, Some(&origin), &form).await.status(),
        401
    );
}

#[test]
fn every_console_action_is_an_api_operation_and_no_template_skips_escaping() {
    let doc = serde_json::to_value(hookrelay::http::api::openapi()).unwrap();
    let operations: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str().map(str::to_owned))
        .collect();
    for (method, route, operation) in hookrelay::http::console::ACTIONS {
        assert!(
            operations.iter().any(|o| o == operation),
            "{method} {route} calls {operation}, which is not an API operation"
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(root.join("templates/console")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("|safe") && !text.contains("| safe"),
            "{} turns escaping off",
            path.display()
        );
        assert!(
            !text.contains("style=") && !text.contains("<script>"),
            "{} has inline code or style",
            path.display()
        );
    }
    let script = std::fs::read_to_string(root.join("assets/console/app.js")).unwrap();
    for banned in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "eval(",
        "new Function",
        "document.write",
    ] {
        assert!(!script.contains(banned), "app.js uses {banned}");
    }
}
