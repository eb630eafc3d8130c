//! The command line outside the server: config check explains every error.

use crate::harness::*;

#[test]
fn config_check_accepts_the_shipped_example_and_locates_every_error() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hookrelay.toml");
    let output = std::process::Command::new(binary())
        .args(["config", "check", example])
        .env("GITLAB_WEBHOOK_TOKEN", "example-token")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[sources.gitlab]\nprovider = \"gitlob\"\n\n[[routes]]\nsource = \"gitlab\"\ndestinations = [\"nowhere\"]\n",
    )
    .unwrap();
    let output = std::process::Command::new(binary())
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(errors.contains("sources.gitlab.provider"), "{errors}");
    assert!(errors.contains("routes[0].destinations[0]"), "{errors}");
    assert!(errors.contains("bad.toml"), "{errors}");
}

#[test]
fn serve_refuses_a_bad_config_instead_of_starting_half_working() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookrelay.toml");
    std::fs::write(&path, "[server]\nlisten = \"not an address\"\n").unwrap();
    let output = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("server.listen"));
}
