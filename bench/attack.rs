//! Legitimate senders' answer latency while strangers attack the front door: silent
//! sockets (slowloris) and trickling uploads, side by side with the same load unattacked.
//! Attackers connect from 127.0.0.1, the real sender from 127.0.0.2.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const SENDER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

pub struct Answers {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub ok: usize,
    pub failed: usize,
}

#[derive(Clone, Copy)]
pub enum Attack {
    None,
    /// This many sockets kept open without a request head, reconnecting when cut off.
    SilentSockets(usize),
    /// This many uploads declaring 1 MB, then sending a byte every 500 ms.
    Trickles(usize),
}

impl Attack {
    pub fn label(&self) -> String {
        match self {
            Attack::None => "no attack".into(),
            Attack::SilentSockets(n) => format!("{n} silent sockets"),
            Attack::Trickles(n) => format!("{n} trickling uploads"),
        }
    }
}

async fn connect(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    socket.connect(to).await
}

fn start(attack: Attack, to: SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinSet<()> {
    let mut attackers = tokio::task::JoinSet::new();
    let (count, trickle) = match attack {
        Attack::None => (0, false),
        Attack::SilentSockets(n) => (n, false),
        Attack::Trickles(n) => (n, true),
    };
    for _ in 0..count {
        let stop = stop.clone();
        attackers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut stream) = connect(ATTACKER, to).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if trickle {
                    let head = "POST /hooks/github HTTP/1.1\r\nhost: x\r\nx-github-event: push\r\nx-hub-signature-256: sha256=00\r\ncontent-length: 1000000\r\n\r\n";
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        continue;
                    }
                }
                let mut buffer = [0u8; 512];
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if trickle && stream.write_all(b"x").await.is_err() {
                        break;
                    }
                    match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buffer)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) => break, // answered (408, 503): reconnect
                        Err(_) => {}
                    }
                }
            }
        });
    }
    attackers
}

/// Posts `rate` requests a second for `seconds` from the real sender while `attack` runs.
pub async fn measure(
    base: &str,
    body: &str,
    token: &str,
    attack: Attack,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Answers> {
    let address: SocketAddr = base.trim_start_matches("http://").parse()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = start(attack, address, stop.clone());
    // Let the attack take hold before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let client = reqwest::Client::builder()
        .local_address(IpAddr::V4(SENDER))
        .timeout(Duration::from_secs(15))
        .build()?;
    let total = (rate * seconds) as usize;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..total {
        ticker.tick().await;
        let request =
            super::support::push_request(&client, base, body, token, &format!("attack-{n}"));
        requests.spawn(async move {
            let sent = Instant::now();
            let ok = request.send().await.is_ok_and(|r| r.status().is_success());
            (ok, sent.elapsed())
        });
    }
    let mut samples = Vec::new();
    let mut failed = 0;
    while let Some(result) = requests.join_next().await {
        let (ok, took) = result?;
        if ok {
            samples.push(took);
        } else {
            failed += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    attackers.abort_all();
    let (p50, p99, max) = super::support::quantiles(&mut samples);
    Ok(Answers {
        p50,
        p99,
        max,
        ok: samples.len(),
        failed,
    })
}
