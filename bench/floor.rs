//! The disk's floor for durable ingest, written for the bench: an HTTP handler that appends
//! each body to one file and answers only after an `fdatasync` that covers it, with every
//! request waiting at that moment sharing one sync (group commit). Nothing is parsed,
//! verified or indexed: no durable receiver can beat it on this disk.

use std::io::Write as _;
use std::path::PathBuf;

use tokio::sync::oneshot;

type Pending = (axum::body::Bytes, oneshot::Sender<()>);

pub async fn floor_server(path: PathBuf) -> anyhow::Result<()> {
    let (queue, waiting) = std::sync::mpsc::channel::<Pending>();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    std::thread::spawn(move || {
        while let Ok(first) = waiting.recv() {
            let mut batch = vec![first];
            batch.extend(waiting.try_iter());
            for (body, _) in &batch {
                let written = file
                    .write_all(&(body.len() as u32).to_le_bytes())
                    .and_then(|()| file.write_all(body));
                written.expect("appending to the floor's file");
            }
            file.sync_data().expect("fdatasync of the floor's file");
            for (_, done) in batch {
                let _ = done.send(());
            }
        }
    });
    let app = axum::Router::new().route(
        "/hooks/{source}",
        axum::routing::post(move |body: axum::body::Bytes| {
            let queue = queue.clone();
            async move {
                let (done, synced) = oneshot::channel();
                if queue.send((body, done)).is_err() || synced.await.is_err() {
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "{}");
                }
                (axum::http::StatusCode::ACCEPTED, "{}")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    axum::serve(listener, app).await?;
    Ok(())
}
