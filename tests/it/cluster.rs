//! A PostgreSQL cluster of a test's own (initdb in a temporary directory, run as the
//! `postgres` user), for tests that stop the database or change how it listens.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::free_port;

/// A PostgreSQL cluster for one test, stopped and removed at the end.
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    options: String,
}

impl Cluster {
    /// `None` (with the reason printed) when this machine cannot run one and `CI` is unset.
    pub fn create() -> Option<Cluster> {
        Self::create_with(|_| String::new())
    }

    /// A cluster started with the server options `options` gives for its directory (and
    /// `pg_hba.conf` as written there, if the closure wrote one).
    pub fn create_with(options: impl FnOnce(&std::path::Path) -> String) -> Option<Cluster> {
        let unavailable = |why: String| {
            let message = format!("no private PostgreSQL cluster: {why}");
            assert!(std::env::var_os("CI").is_none(), "{message}");
            eprintln!("skipped: {message}");
            None
        };
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.path().join("bin"))
                    .collect()
            })
            .unwrap_or_default();
        versions.sort();
        let Some(bin) = versions.pop().filter(|bin| bin.join("initdb").exists()) else {
            return unavailable(
                "no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)".into(),
            );
        };
        let dir = tempfile::tempdir().unwrap();
        let owned = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        if !owned.is_ok_and(|s| s.success()) {
            return unavailable("cannot give a directory to the postgres user (needs root)".into());
        }
        let port = free_port().port();
        let mut cluster = Cluster {
            bin,
            dir,
            port,
            options: String::new(),
        };
        let init = cluster.as_postgres(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        if !init {
            return unavailable("initdb failed".into());
        }
        cluster.options = options(cluster.dir.path());
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(cluster.dir.path())
            .status();
        assert!(cluster.start(), "the private cluster did not start");
        Some(cluster)
    }

    /// The directory the cluster's files (and a test's certificates) live in.
    pub fn dir_path(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) -> bool {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn start(&self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 {}",
            self.port,
            self.dir.path().display(),
            self.options
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        )
    }

    pub fn stop(&self) -> bool {
        self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
    }

    /// `sql`'s rows, one line each (fields separated by `|`), through `psql`.
    pub fn query(&self, sql: &str) -> String {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-d",
                "postgres",
            ])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?poll_interval_ms=250",
            self.port
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
