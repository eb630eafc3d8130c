//! The disk's floor for durable ingest, written for the bench: an HTTP handler that appends
//! each body to one file and answers only after an `fdatasync` that covers it, with every
//! request waiting at that moment sharing one sync (group commit). Nothing is parsed,
//! verified or indexed: no durable receiver can beat it on this disk. The SQLite floor is the
//! same handler committing each batch to one table instead.

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
    serve(queue).await
}

/// The floor for SQLite itself, written for the bench: the same handler, but each batch of
/// bodies is inserted into one table (no indexes) of a WAL database with `synchronous=FULL`
/// and committed once (group commit). What hookrelay adds above SQLite is the gap to this.
pub async fn sqlite_floor_server(path: PathBuf) -> anyhow::Result<()> {
    let (queue, waiting) = std::sync::mpsc::channel::<Pending>();
    let mut conn = rusqlite::Connection::open(&path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE bodies (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")?;
    std::thread::spawn(move || {
        while let Ok(first) = waiting.recv() {
            let mut batch = vec![first];
            batch.extend(waiting.try_iter());
            let tx = conn.transaction().expect("a floor transaction");
            {
                let mut insert = tx
                    .prepare_cached("INSERT INTO bodies (body) VALUES (?1)")
                    .expect("the floor's insert");
                for (body, _) in &batch {
                    insert
                        .execute([&body[..]])
                        .expect("inserting into the floor");
                }
            }
            tx.commit().expect("committing the floor's batch");
            for (_, done) in batch {
                let _ = done.send(());
            }
        }
    });
    serve(queue).await
}

/// Answers 202 once the writer says the body is synced.
async fn serve(queue: std::sync::mpsc::Sender<Pending>) -> anyhow::Result<()> {
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
