//! Console sessions: found by key until their idle or absolute end, moved on by use (never
//! past the absolute end), gone at sign-out, and ended ones forgotten.

use super::Backend;
use crate::store::ConsoleSession;

fn session(key: &str, idle_until: i64, expires_at: i64) -> ConsoleSession {
    ConsoleSession {
        key: key.into(),
        token_name: "ops".into(),
        token_digest: "ab".repeat(32),
        scope: "admin".into(),
        form_token: "f".repeat(64),
        created_at: 100,
        idle_until,
        expires_at,
    }
}

pub async fn sessions_end_when_idle_expired_or_signed_out(backend: &Backend) {
    let store = backend.store();
    store
        .create_session(session("k1", 200, 1_000), 100)
        .await
        .unwrap();
    store
        .create_session(session("k2", 200, 1_000), 100)
        .await
        .unwrap();
    let found = store.session("k1", 150).await.unwrap();
    assert_eq!(found, Some(session("k1", 200, 1_000)));
    assert_eq!(
        store.session("k1", 200).await.unwrap(),
        None,
        "idle too long"
    );
    store.touch_session("k1", 5_000).await.unwrap();
    let touched = store.session("k1", 900).await.unwrap().unwrap();
    assert_eq!(touched.idle_until, 1_000, "never past the absolute end");
    assert_eq!(
        store.session("k1", 1_000).await.unwrap(),
        None,
        "past the absolute end"
    );
    store.end_session("k2").await.unwrap();
    assert_eq!(store.session("k2", 150).await.unwrap(), None, "signed out");
    assert_eq!(store.session("nobody", 150).await.unwrap(), None);
    // A later sign-in forgets the ended ones; a live one stays.
    store
        .create_session(session("k3", 3_000, 9_000), 100)
        .await
        .unwrap();
    store
        .create_session(session("k4", 3_000, 9_000), 2_000)
        .await
        .unwrap();
    assert!(store.session("k3", 2_500).await.unwrap().is_some());
}
