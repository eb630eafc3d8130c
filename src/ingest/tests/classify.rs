//! Classification of real payload shapes (from the senders' documentation) and dedup keys.
#![allow(clippy::type_complexity)] // Table tests spell out their row types.

use super::super::*;
use super::*;

#[test]
fn real_payload_shapes_classify() {
    let s = |v: &str| Some(v.to_owned());
    // (provider, event header, fixture, event, action, branch, tag, project, sender)
    type Row = (
        ProviderKind,
        (&'static str, &'static str),
        &'static str,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let table: Vec<Row> = vec![
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Push Hook"),
            "gitlab/push.json",
            s("Push Hook"),
            None,
            s("master"),
            None,
            s("mike/diaspora"),
            s("jsmith"),
        ),
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Tag Push Hook"),
            "gitlab/tag_push.json",
            s("Tag Push Hook"),
            None,
            None,
            s("v1.0.0"),
            s("jsmith/example"),
            s("jsmith"),
        ),
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Merge Request Hook"),
            "gitlab/merge_request.json",
            s("Merge Request Hook"),
            s("open"),
            s("master"),
            None,
            s("gitlabhq/gitlab-test"),
            s("root"),
        ),
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Note Hook"),
            "gitlab/note.json",
            s("Note Hook"),
            s("create"),
            None,
            None,
            s("gitlab-org/gitlab-test"),
            s("root"),
        ),
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Pipeline Hook"),
            "gitlab/pipeline.json",
            s("Pipeline Hook"),
            None,
            s("main"),
            None,
            s("gitlab-org/gitlab-test"),
            s("root"),
        ),
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Job Hook"),
            "gitlab/job.json",
            s("Job Hook"),
            None,
            s("gitlab-script-trigger"),
            None,
            None,
            None,
        ),
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Release Hook"),
            "gitlab/release.json",
            s("Release Hook"),
            s("create"),
            None,
            s("v1.1"),
            s("gitlab-org/release-webhook-example"),
            None,
        ),
        (
            ProviderKind::Gitlab,
            ("x-gitlab-event", "Member Hook"),
            "gitlab/member.json",
            s("Member Hook"),
            None,
            None,
            None,
            None,
            s("test_user"),
        ),
        (
            ProviderKind::Github,
            ("x-github-event", "ping"),
            "github/ping.json",
            s("ping"),
            None,
            None,
            None,
            s("octocat/Hello-World"),
            s("octocat"),
        ),
        (
            ProviderKind::Github,
            ("x-github-event", "push"),
            "github/push.json",
            s("push"),
            None,
            s("main"),
            None,
            s("octocat/Hello-World"),
            s("octocat"),
        ),
        (
            ProviderKind::Github,
            ("x-github-event", "pull_request"),
            "github/pull_request.json",
            s("pull_request"),
            s("opened"),
            s("master"),
            None,
            s("Codertocat/Hello-World"),
            s("Codertocat"),
        ),
        (
            ProviderKind::Gitea,
            ("x-gitea-event", "push"),
            "gitea/push.json",
            s("push"),
            None,
            s("develop"),
            None,
            s("gitea/webhooks"),
            s("gitea"),
        ),
    ];
    for (kind, (header, value), file, event, action, branch, tag, project, sender) in table {
        let got = classify(kind, &[(header, value.to_owned())], &fixture(file));
        assert_eq!(
            (
                got.event_type,
                got.action,
                got.branch,
                got.tag,
                got.project,
                got.sender
            ),
            (event, action, branch, tag, project, sender),
            "{file}"
        );
    }
    let push = classify(
        ProviderKind::Gitlab,
        &[("x-gitlab-event", "Push Hook".into())],
        &fixture("gitlab/push.json"),
    );
    assert_eq!(
        push.commit_before.as_deref(),
        Some("95790bf891e76fee5e1747ab589903a6a1f80f22")
    );
    assert_eq!(
        push.commit_after.as_deref(),
        Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
    );
    assert_eq!(push.git_ref.as_deref(), Some("refs/heads/master"));
}

#[test]
fn dedup_keys_come_from_each_senders_delivery_id() {
    let table: Vec<(ProviderKind, Vec<(&str, String)>, Option<&str>)> = vec![
        (
            ProviderKind::Gitlab,
            vec![
                ("idempotency-key", "k1".into()),
                ("webhook-id", "w1".into()),
            ],
            Some("k1"),
        ),
        (
            ProviderKind::Gitlab,
            vec![("webhook-id", "w1".into())],
            Some("w1"),
        ),
        (
            ProviderKind::Gitlab,
            vec![
                ("x-gitlab-webhook-uuid", "u".into()),
                ("x-gitlab-event-uuid", "e".into()),
            ],
            None,
        ),
        (
            ProviderKind::Github,
            vec![("x-github-delivery", "72d3162e".into())],
            Some("72d3162e"),
        ),
        (
            ProviderKind::Gitea,
            vec![("x-gitea-delivery", "g-1".into())],
            Some("g-1"),
        ),
        (
            ProviderKind::Gitea,
            vec![("x-forgejo-delivery", "f-1".into())],
            Some("f-1"),
        ),
        (
            ProviderKind::Bitbucket,
            vec![("x-request-uuid", "b-1".into())],
            Some("b-1"),
        ),
        (
            ProviderKind::Standard,
            vec![("webhook-id", "msg_1".into())],
            Some("msg_1"),
        ),
        (
            ProviderKind::Generic,
            vec![("idempotency-key", "x".into())],
            Some("x"),
        ),
    ];
    for (kind, pairs, expected) in table {
        let got = classify(kind, &pairs, b"{}");
        assert_eq!(got.dedup_key.as_deref(), expected, "{kind:?} {pairs:?}");
    }
    let bitbucket = classify(
        ProviderKind::Bitbucket,
        &[("x-event-key", "repo:push".into())],
        br#"{"push":{"changes":[{"new":{"type":"tag","name":"v2","target":{"hash":"bbb"}},"old":{"target":{"hash":"aaa"}}}]},"repository":{"full_name":"team/repo"},"actor":{"nickname":"dev"}}"#,
    );
    assert_eq!(bitbucket.tag.as_deref(), Some("v2"));
    assert_eq!(bitbucket.action.as_deref(), Some("push"));
    assert_eq!(bitbucket.commit_before.as_deref(), Some("aaa"));
    let standard = classify(ProviderKind::Standard, &[], br#"{"type":"invoice.paid"}"#);
    assert_eq!(standard.event_type.as_deref(), Some("invoice.paid"));
}

#[test]
fn form_encoded_github_deliveries_classify_like_json_ones() {
    let json = fixture("github/push.json");
    let form = format!(
        "payload={}",
        form_urlencoded::byte_serialize(&json).collect::<String>()
    );
    let pairs = [
        ("x-github-event", "push".to_owned()),
        (
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        ),
    ];
    let from_form = classify(ProviderKind::Github, &pairs, form.as_bytes());
    let from_json = classify(ProviderKind::Github, &pairs[..1], &json);
    assert_eq!(from_form, from_json);
    assert_eq!(from_form.branch.as_deref(), Some("main"));
}
