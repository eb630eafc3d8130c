//! A destination that takes requests and never answers (attempts in flight, timeouts).

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::harness::PATIENCE;

/// A destination that reads request heads, records their event ids, and never answers.
pub struct Hanging {
    pub url: String,
    seen: Arc<Mutex<Vec<String>>>,
    arrived: Arc<Notify>,
}

impl Hanging {
    pub async fn start() -> Hanging {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/deliver", listener.local_addr().unwrap());
        let (seen, arrived) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Notify::new()));
        let (record, notify) = (seen.clone(), arrived.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (record, notify) = (record.clone(), notify.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = vec![0; 64 * 1024];
                    let mut recorded = false;
                    // Reads (and drops) everything, answers nothing.
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 {
                            return;
                        }
                        if recorded {
                            continue;
                        }
                        head.extend_from_slice(&buffer[..n]);
                        let text = String::from_utf8_lossy(&head);
                        if let Some(end) = text.find("\r\n\r\n") {
                            let id = text[..end]
                                .lines()
                                .find_map(|l| l.strip_prefix("x-hookrelay-event-id: "))
                                .unwrap_or("?")
                                .to_owned();
                            record.lock().unwrap().push(id);
                            notify.notify_waiters();
                            recorded = true;
                        }
                    }
                });
            }
        });
        Hanging { url, seen, arrived }
    }

    /// Event ids of the requests received so far, in arrival order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until `count` requests arrived; panics after [`PATIENCE`].
    pub async fn wait_for(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let arrived = self.arrived.notified();
            if self.seen.lock().unwrap().len() >= count {
                return;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("hanging destination: only {:?}", self.seen());
            }
        }
    }
}
