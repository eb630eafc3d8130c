//! The accept loop and connection handling: hyper with a timer, so a client that sends no
//! request head (or stays idle between requests) is cut off after `header_read_timeout`;
//! at most `max_connections` open connections, at most `max_per_client` from one address;
//! request heads bounded in size, so header memory is at most connections x that bound.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::tls::TlsAcceptor;

const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 5\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// The peer address of a connection, for `ConnectInfo`.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_per_client: usize,
    /// From accepting a connection (or finishing a response) to a whole request head.
    pub header_read_timeout: Duration,
    /// Request line plus headers, in bytes; larger heads get 431.
    pub max_header_bytes: usize,
    /// How long requests in progress may finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Proxies every sender's connection comes through: not capped per client.
    pub uncapped: Vec<ipnet::IpNet>,
}

/// Serves `app` until `shutdown`, then lets requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let stats = crate::telemetry::get();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = Arc::new(ClientCounts::default());
    let connections = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        // The read buffer also holds body chunks; hyper's minimum is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192) + 8192);
    loop {
        // Past the cap, clients wait in the kernel's backlog instead of costing memory here.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let ip = peer.ip().to_canonical();
        let cap = if limits.uncapped.iter().any(|net| net.contains(&ip)) {
            usize::MAX
        } else {
            limits.max_per_client
        };
        let Some(client_slot) = per_client.take(ip, cap) else {
            stats
                .connections_refused
                .get_or_create(&crate::telemetry::Reason {
                    reason: "per_client".into(),
                })
                .inc();
            tracing::debug!(client = %peer.ip(), "connection refused: too many from this address");
            // A best-effort answer (plain HTTP only), never waited for: closed right after.
            if tls.is_none() {
                let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            }
            continue;
        };
        // Responses are written whole; waiting for more data only adds latency.
        let _ = stream.set_nodelay(true);
        let (app, http, shutdown, tls) = (app.clone(), http.clone(), shutdown.clone(), tls.clone());
        let timeout = limits.header_read_timeout;
        connections.spawn(async move {
            stats.connections_open.inc();
            serve_connection(stream, peer, app, http, tls, timeout, shutdown).await;
            stats.connections_open.dec();
            drop((slot, client_slot));
        });
    }
    connections.close();
    // Requests in progress get the grace period; slow uploads do not hold up the exit.
    if tokio::time::timeout(limits.shutdown_grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still in progress after the grace period were dropped");
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    http: hyper::server::conn::http1::Builder,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // Where axum's `ConnectInfo` extractor looks for the peer.
        request.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
        // A router is always ready, so it can be called without `poll_ready`.
        tower_service::Service::call(&mut app.clone(), request.map(axum::body::Body::new))
    });
    match tls {
        None => {
            drive(
                http.serve_connection(TokioIo::new(stream), service),
                shutdown,
            )
            .await
        }
        Some(tls) => {
            // The handshake counts against the same deadline as a request head.
            let accepted = tokio::time::timeout(handshake_timeout, tls.accept(stream)).await;
            match accepted {
                Ok(Ok(stream)) => {
                    drive(
                        http.serve_connection(TokioIo::new(stream), service),
                        shutdown,
                    )
                    .await
                }
                Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

pub(super) async fn drive<I, S>(
    connection: hyper::server::conn::http1::Connection<I, S>,
    shutdown: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = axum::body::Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            // Finishes the request in progress, if any, then closes.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Open connections per client address.
#[derive(Default)]
struct ClientCounts(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its address until dropped.
struct ClientSlot {
    counts: Arc<ClientCounts>,
    address: IpAddr,
}

impl ClientCounts {
    fn take(self: &Arc<Self>, address: IpAddr, max: usize) -> Option<ClientSlot> {
        let address = address.to_canonical();
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(address).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            counts: self.clone(),
            address,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}
