//! The API on a local unix socket: no token, because only users the socket file's
//! permissions (0600, the server's own user) admit can connect, as with Docker's socket.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A bound socket, removed from the file system when serving ends.
pub struct ApiSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ApiSocket {
    /// Binds `path`, replacing a stale socket file but never a live server's.
    pub async fn bind(path: &Path) -> anyhow::Result<Self> {
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                anyhow::bail!(
                    "another server already serves the API on {} (api.socket)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .map_err(|err| anyhow::anyhow!("cannot replace stale {}: {err}", path.display()))?;
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let listener = UnixListener::bind(path).map_err(|err| {
            anyhow::anyhow!("cannot listen on {} (api.socket): {err}", path.display())
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves `app` until `shutdown`; requests in progress then finish.
    pub async fn serve(self, app: Router, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        tracing::warn!(error = %err, "api socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let app = app.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                        tower_service::Service::call(
                            &mut app.clone(),
                            request.map(axum::body::Body::new),
                        )
                    });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                crate::http::server::drive(connection, shutdown).await;
            });
        }
        tracker.close();
        tracker.wait().await;
        let _ = std::fs::remove_file(&self.path);
    }
}
