//! Routing decisions by table: events, branch/tag/project globs, JSON conditions, fan-out.
#![allow(clippy::type_complexity)] // Table tests spell out their row types.

use serde_json::json;

use super::*;

fn name(raw: &str) -> Name {
    Name::parse(raw).unwrap()
}

fn globs(patterns: &[&str]) -> Option<GlobSet> {
    Some(glob_set(&patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap())
}

fn route(source: &str, events: Option<&[&str]>, destinations: &[&str]) -> Route {
    Route {
        source: name(source),
        events: events.map(|e| e.iter().map(|s| s.to_string()).collect()),
        branches: None,
        tags: None,
        projects: None,
        when: None,
        destinations: destinations.iter().map(|d| name(d)).collect(),
    }
}

fn facts(
    event: Option<&str>,
    branch: Option<&str>,
    tag: Option<&str>,
    project: Option<&str>,
) -> Classification {
    Classification {
        event_type: event.map(str::to_owned),
        branch: branch.map(str::to_owned),
        tag: tag.map(str::to_owned),
        project: project.map(str::to_owned),
        ..Classification::default()
    }
}

fn routed(
    routes: &[Route],
    source: &str,
    class: &Classification,
    payload: Option<&Value>,
) -> Vec<String> {
    let facts = EventFacts {
        classification: class,
        payload,
    };
    destinations_for(routes, &name(source), &facts)
        .iter()
        .map(|n| n.to_string())
        .collect()
}

#[test]
fn routes_select_destinations_by_source_and_event() {
    let routes = vec![
        route(
            "gitlab",
            Some(&["Push Hook", "Tag Push Hook"]),
            &["ci", "audit"],
        ),
        route("gitlab", Some(&["merge request hook"]), &["review"]),
        route("gitlab", None, &["audit"]),
        route("other", Some(&["*"]), &["catchall"]),
    ];
    let table: &[(&str, Option<&str>, &[&str])] = &[
        ("gitlab", Some("Push Hook"), &["ci", "audit"]),
        ("gitlab", Some("push hook"), &["ci", "audit"]),
        ("gitlab", Some("Merge Request Hook"), &["review", "audit"]),
        ("gitlab", Some("Pipeline Hook"), &["audit"]),
        ("gitlab", None, &["audit"]),
        ("other", None, &["catchall"]),
        ("unrouted", Some("Push Hook"), &[]),
    ];
    for (source, event, expected) in table {
        let got = routed(&routes, source, &facts(*event, None, None, None), None);
        assert_eq!(&got, expected, "{source} {event:?}");
    }
}

#[test]
fn branch_tag_and_project_globs_filter_events() {
    let mut deploy = route("gitlab", None, &["deploy"]);
    deploy.branches = globs(&["main", "release/*"]);
    deploy.tags = globs(&["v*"]);
    let mut group = route("gitlab", None, &["group"]);
    group.projects = globs(&["platform/*"]);
    let routes = vec![deploy, group];
    let table: &[(Option<&str>, Option<&str>, Option<&str>, &[&str])] = &[
        (
            Some("main"),
            None,
            Some("platform/api"),
            &["deploy", "group"],
        ),
        (Some("release/1.2"), None, None, &["deploy"]),
        // `*` does not cross a `/`.
        (Some("release/1.2/hotfix"), None, None, &[]),
        (Some("feature/x"), None, Some("platform/api"), &["group"]),
        (None, Some("v1.0.0"), None, &["deploy"]),
        (None, Some("nightly"), None, &[]),
        (None, None, Some("platform/sub/deep"), &[]),
        (None, None, None, &[]),
    ];
    for (branch, tag, project, expected) in table {
        let class = facts(Some("Push Hook"), *branch, *tag, *project);
        assert_eq!(
            &routed(&routes, "gitlab", &class, None),
            expected,
            "{branch:?} {tag:?} {project:?}"
        );
    }
}

#[test]
fn json_conditions_combine_with_all_any_not() {
    let merged = Condition::All(vec![
        Condition::Equals {
            pointer: "/object_attributes/action".into(),
            value: json!("merge"),
        },
        Condition::Not(Box::new(Condition::In {
            pointer: "/user/username".into(),
            values: vec![json!("renovate-bot"), json!("dependabot")],
        })),
        Condition::Any(vec![
            Condition::Regex {
                pointer: "/object_attributes/title".into(),
                regex: regex::Regex::new("^(feat|fix)").unwrap(),
            },
            Condition::Exists {
                pointer: "/labels/0".into(),
                exists: true,
            },
        ]),
    ]);
    let mut on_merge = route("gitlab", None, &["notify"]);
    on_merge.when = Some(merged);
    let routes = vec![on_merge];
    let payload = |action: &str, user: &str, title: &str, labels: Value| json!({"object_attributes": {"action": action, "title": title}, "user": {"username": user}, "labels": labels});
    let table = [
        (payload("merge", "alice", "feat: x", json!([])), true),
        (payload("merge", "alice", "chore: x", json!(["ops"])), true),
        (payload("merge", "alice", "chore: x", json!([])), false),
        (payload("open", "alice", "feat: x", json!([])), false),
        (payload("merge", "dependabot", "fix: y", json!([])), false),
        (json!("not an object"), false),
    ];
    let class = facts(Some("Merge Request Hook"), None, None, None);
    for (body, expected) in table {
        let got = !routed(&routes, "gitlab", &class, Some(&body)).is_empty();
        assert_eq!(got, expected, "{body}");
    }
    // Without a payload (body was not JSON) a positive condition cannot hold.
    assert!(routed(&routes, "gitlab", &class, None).is_empty());
    let numbers = Condition::Regex {
        pointer: "/id".into(),
        regex: regex::Regex::new("^4[0-9]$").unwrap(),
    };
    assert!(numbers.holds(Some(&json!({"id": 42}))));
    assert!(!numbers.holds(Some(&json!({"id": 7}))));
}
