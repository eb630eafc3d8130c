//! A broker's Maximum Packet Size: a message over it is a dead letter saying so at once, and
//! the connection (with the other deliveries on it) carries on. A Mosquitto of its own, on a
//! free port, with a 4 KiB limit.

use std::process::{Child, Command, Stdio};

use crate::harness::*;
use crate::mqtt::{deliveries, mqtt_config};

struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto_with_a_4k_limit() -> Option<Mosquitto> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_packet_size 4096\n"),
    )
    .unwrap();
    let child = match Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            let message = format!("cannot run mosquitto ({err}); .ci/run installs it");
            assert!(std::env::var_os("CI").is_none(), "{message}");
            eprintln!("skipped: {message}");
            return None;
        }
    };
    Some(Mosquitto {
        child,
        port,
        _dir: dir,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_brokers_maximum_is_dead_at_once_and_the_others_go_on() {
    let Some(broker) = mosquitto_with_a_4k_limit() else {
        return;
    };
    eventually("the private mosquitto to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", broker.port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let destination = format!(
        "url = \"mqtt://127.0.0.1:{}\"\ntopic = \"limits/{{source}}\"",
        broker.port
    );
    let relay = Relay::start(dir.path(), &mqtt_config(dir.path(), &destination));
    let client = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        let request = client.post(relay.hook_url("anything")).body(body).send();
        async move { assert_eq!(request.await.unwrap().status(), 202) }
    };
    // Connected (the broker's CONNACK says its limit), then one too large, then one more.
    post(b"small".to_vec()).await;
    eventually("the first delivery", || async {
        deliveries(&relay)
            .iter()
            .any(|d| d["state"] == "succeeded")
            .then_some(())
    })
    .await;
    post(vec![b'x'; 10_000]).await;
    post(b"small again".to_vec()).await;
    let all = eventually(
        "the large one dead and the small ones delivered",
        || async {
            let all = deliveries(&relay);
            let dead = all.iter().filter(|d| d["state"] == "dead").count();
            let succeeded = all.iter().filter(|d| d["state"] == "succeeded").count();
            (dead == 1 && succeeded == 2).then_some(all)
        },
    )
    .await;
    let dead = all.iter().find(|d| d["state"] == "dead").unwrap();
    assert_eq!(dead["attempts"], 1, "{dead}");
    assert_eq!(dead["last_summary"], "too large", "{dead}");
}
