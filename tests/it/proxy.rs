//! A TCP forwarder between hookrelay and a real broker that a test can cut: `down()` closes
//! every connection through it and refuses new ones (as a broker that went away), `up()`
//! lets them through again. The broker itself keeps running for the other tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub addr: SocketAddr,
    /// Cancelled when the proxy goes down: ends every connection of that period.
    period: Arc<Mutex<Option<CancellationToken>>>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let period = Arc::new(Mutex::new(Some(CancellationToken::new())));
        let stop = CancellationToken::new();
        let (accepting, stopping) = (period.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    _ = stopping.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(_) => continue,
                    },
                };
                let Some(up) = accepting.lock().unwrap().clone() else {
                    drop(client); // down: the connection closes at once
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = up.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        Proxy { addr, period, stop }
    }

    /// Closes every connection through the proxy and refuses new ones until [`Proxy::up`].
    pub fn down(&self) {
        if let Some(up) = self.period.lock().unwrap().take() {
            up.cancel();
        }
    }

    pub fn up(&self) {
        let mut period = self.period.lock().unwrap();
        if period.is_none() {
            *period = Some(CancellationToken::new());
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
        self.stop.cancel();
    }
}
