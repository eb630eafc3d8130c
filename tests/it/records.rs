//! An attempt's record is never lost silently: the worker hands it to the store without
//! waiting, so a crash between the destination's answer and the record's commit must repeat
//! the attempt (at-least-once, the same `webhook-id`), never leave it done-but-unrecorded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::harness::*;

/// A destination answering every request 200 that, once armed with a pid, kills that
/// process (`SIGKILL`) right after writing its answer: the relay has the answer, and no
/// time to commit its record.
struct KillingSink {
    url: String,
    /// The `webhook-id` of every request, in arrival order.
    seen: Arc<Mutex<Vec<String>>>,
    armed: Arc<AtomicU32>,
}

impl KillingSink {
    fn start() -> KillingSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/deliver", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let armed = Arc::new(AtomicU32::new(0));
        let (seen_by_thread, armed_by_thread) = (seen.clone(), armed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (seen, armed) = (seen_by_thread.clone(), armed_by_thread.clone());
                std::thread::spawn(move || answer(stream, &seen, &armed));
            }
        });
        KillingSink { url, seen, armed }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(stream: std::net::TcpStream, seen: &Mutex<Vec<String>>, armed: &AtomicU32) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let (mut length, mut id) = (0usize, String::new());
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "webhook-id" => id = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock().unwrap().push(id);
        let written = writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        if written.and_then(|()| writer.flush()).is_err() {
            return;
        }
        let pid = armed.swap(0, Ordering::SeqCst);
        if pid != 0 {
            // SAFETY: sending a signal has no memory effects in this process.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_answer_and_its_record_repeats_the_attempt_with_the_same_webhook_id() {
    // The kill races the record's commit (microseconds against a commit): in the rare run
    // where the commit wins, nothing was lost and the scenario is tried again.
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let sink = KillingSink::start();
        let extra = "retry = { initial_delay = \"100ms\", max_delay = \"200ms\" }";
        let text = config(dir.path(), &sink.url, extra);
        let mut relay = Relay::child(dir.path(), &text);
        sink.armed.store(relay.pid(), Ordering::SeqCst);
        let client = reqwest::Client::new();
        // Delivery starts once the event is committed, while its answer waits for the WAL
        // flush: the kill may come before the 202 reaches us. The event is committed
        // either way (a killed process loses nothing the kernel has).
        let answer = send_push(&client, &relay.hook_url("gitlab"), 1, None).await;
        match answer {
            Ok(response) => assert!(response.status().is_success(), "{}", response.status()),
            Err(err) => assert!(err.is_request(), "{err}"),
        }
        let killed = eventually("the sink to kill the relay", || {
            let exited = relay.try_exited();
            async move { exited.then_some(()) }
        });
        killed.await;
        let stored = stored_deliveries(dir.path());
        assert_eq!(stored.len(), 1, "{stored:?}");
        if stored[0] == ("succeeded".to_owned(), 1) {
            println!("round {round}: the record committed before the kill; trying again");
            continue;
        }
        assert_eq!(
            stored[0],
            ("in_flight".to_owned(), 0),
            "the attempt was answered but its record is not there: the delivery must still be held, to be repeated"
        );
        let relay = Relay::child(dir.path(), &text);
        let out = wait_for_state(&relay, "succeeded", 1).await;
        let seen = sink.seen();
        assert_eq!(
            seen.len(),
            2,
            "the unrecorded attempt is repeated once: {seen:?}"
        );
        assert!(!seen[0].is_empty(), "every attempt carries a webhook-id");
        assert_eq!(seen[0], seen[1], "a repeat carries the same webhook-id");
        let delivery: serde_json::Value =
            serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(delivery["id"], seen[0].as_str(), "{delivery}");
        return;
    }
    panic!("in 5 rounds the record always committed before the kill: the window was never caught");
}
