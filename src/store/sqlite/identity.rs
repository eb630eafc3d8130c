//! The database file's identity: the single-server lock is taken on the file itself (its
//! inode, whatever path or symlink leads to it), and the writer checks before every commit
//! that the files it writes are still the ones at the path, so deleting or replacing them
//! under a running server stops it acknowledging instead of losing what it acknowledges.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// Opens (creating if needed) and locks the database file. The lock is `flock` on the file's
/// own inode: a second path, a symlink or a deleted lock file cannot get around it. SQLite's
/// own locks are POSIX record locks, a separate mechanism, so the two never interfere.
pub fn lock_database(path: &Path) -> Result<File, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|err| StoreError::Backend(format!("cannot open {}: {err}", path.display())))?;
    file.try_lock().map_err(|_| {
        StoreError::Unavailable(format!(
            "another hookrelay server is using {} (the file is locked)",
            path.display()
        ))
    })?;
    Ok(file)
}

/// Keeps the WAL file (at most `journal_size_limit` of it) when the last connection closes,
/// so its space stays ours across restarts.
pub fn persist_wal(conn: &rusqlite::Connection) {
    let mut on: std::ffi::c_int = 1;
    // SAFETY: the handle is valid while `conn` lives; PERSIST_WAL reads one int.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut on as *mut std::ffi::c_int).cast(),
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        tracing::warn!(rc, "could not keep the WAL file across restarts");
    }
}

/// A file's device and inode.
pub type Identity = (u64, u64);

fn identity(path: &Path) -> std::io::Result<Identity> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// The database and WAL files as opened.
pub struct Files {
    database: PathBuf,
    database_id: Identity,
    wal: PathBuf,
    wal_id: Option<Identity>,
}

impl Files {
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        Ok(Self {
            database_id: identity(path)?,
            database: path.to_owned(),
            wal_id: identity(&wal).ok(),
            wal,
        })
    }

    pub fn wal_path(&self) -> &Path {
        &self.wal
    }

    /// The WAL file as first seen (it exists once the first transaction ran).
    pub fn wal_id(&self) -> Option<Identity> {
        self.wal_id
    }

    /// Whether the files at the paths are still the ones being written. The WAL exists once
    /// the first transaction ran and is never deleted while the store is open.
    pub fn check(&mut self) -> Result<(), String> {
        let moved = |what: &Path| {
            format!(
                "{} was deleted or replaced while in use; restart hookrelay to open the store again",
                what.display()
            )
        };
        match identity(&self.database) {
            Ok(id) if id == self.database_id => {}
            _ => return Err(moved(&self.database)),
        }
        match (identity(&self.wal).ok(), self.wal_id) {
            (Some(now), Some(then)) if now != then => Err(moved(&self.wal)),
            (None, Some(_)) => Err(moved(&self.wal)),
            (now, _) => {
                self.wal_id = self.wal_id.or(now);
                Ok(())
            }
        }
    }
}
