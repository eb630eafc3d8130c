//! Faults under the store: a full disk (a real small filesystem), database files deleted
//! under a running server, a second server reaching the same file by another path.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;

/// A 24 MiB tmpfs, unmounted when dropped. Needs root (CI runs as root).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(SmallDisk(at.to_owned()));
        }
        let why = "cannot mount a tmpfs (needs root) for the full-disk test";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        println!("skipped: {why}");
        None
    }

    /// Writes a file until the filesystem refuses more.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0xa5u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn post_status(client: &reqwest::Client, relay: &Relay, n: usize) -> reqwest::Response {
    post_push(client, relay, push_body(n) + &" ".repeat(16 * 1024), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_means_503_then_recovery_with_nothing_acknowledged_lost() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk")) else {
        return;
    };
    let sink = Sink::start().await;
    let store = disk.0.join("hookrelay.db");
    let text = config(dir.path(), &sink.url, "paused = true").replace(
        &dir.path().join("hookrelay.db").display().to_string(),
        &store.display().to_string(),
    );
    let mut relay = Relay::child(dir.path(), &text);
    let client = reqwest::Client::new();
    let mut acknowledged = 0;
    for n in 0..20 {
        assert_eq!(post_status(&client, &relay, n).await.status(), 202);
        acknowledged += 1;
    }
    let filler = disk.fill();
    // Whatever still fits in space the store already owns is stored; then 503.
    let mut refused = None;
    for n in 20..2000 {
        let response = post_status(&client, &relay, n).await;
        match response.status().as_u16() {
            202 => acknowledged += 1,
            503 => {
                refused = Some(response);
                break;
            }
            other => panic!("answer {other} on a full disk"),
        }
    }
    let refused = refused.expect("a full disk never refused an event");
    assert!(refused.headers().contains_key("retry-after"));
    let ready = reqwest::get(format!("{}/readyz", relay.url)).await.unwrap();
    assert_eq!(ready.status(), 503, "readyz said ready on a full disk");

    // A restart with the disk still full: the server starts and answers 503, no exit loop.
    relay.kill();
    let mut relay = Relay::child(dir.path(), &text);
    let healthy = reqwest::get(format!("{}/healthz", relay.url))
        .await
        .unwrap();
    assert_eq!(healthy.status(), 200);
    let response = post_status(&client, &relay, 5000).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));

    // Space returns: the same server recovers by itself.
    std::fs::remove_file(filler).unwrap();
    assert_eq!(post_status(&client, &relay, 5001).await.status(), 202);
    acknowledged += 1;
    let ready = reqwest::get(format!("{}/readyz", relay.url)).await.unwrap();
    assert_eq!(ready.status(), 200);

    // Every acknowledged event is in the store after one more restart.
    relay.kill();
    let relay = Relay::child(dir.path(), &text);
    let listed = relay.cli(&["deliveries", "list", "--limit", "100000", "--json"]);
    let stored = String::from_utf8(listed.stdout).unwrap().lines().count();
    assert_eq!(stored, acknowledged, "acknowledged events went missing");
    println!("full disk: {acknowledged} acknowledged, {stored} stored");
}

#[tokio::test]
async fn deleting_the_database_under_a_running_server_stops_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let relay = Relay::child(dir.path(), &config(dir.path(), &sink.url, ""));
    let client = reqwest::Client::new();
    assert_eq!(
        post_push(&client, &relay, push_body(1), None)
            .await
            .status(),
        202
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("hookrelay.db{suffix}")));
    }
    let response = post_push(&client, &relay, push_body(2), None).await;
    assert_eq!(
        response.status(),
        503,
        "an event was acknowledged into a deleted file"
    );
    let ready = reqwest::get(format!("{}/readyz", relay.url)).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(relay.log().contains("deleted or replaced"));
}

#[tokio::test]
async fn a_second_server_cannot_reach_the_store_through_a_symlink_or_a_lock_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let text = config(dir.path(), &sink.url, "");
    let _first = Relay::start(dir.path(), &text);
    let database = dir.path().join("hookrelay.db");
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&database, &link).unwrap();
    // The usual "stale lock" cleanup first: there is no lock file to remove any more.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "lock") {
            std::fs::remove_file(path).unwrap();
        }
    }
    for store in [&link, &database] {
        let second = text.replace(
            &database.display().to_string(),
            &store.display().to_string(),
        );
        let log = serve_refused(dir.path(), "second.toml", &second);
        assert!(log.contains("another hookrelay server"), "{log}");
    }
}
