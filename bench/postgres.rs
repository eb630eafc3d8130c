//! (f) PostgreSQL beside SQLite in one run: durable ingest with 1, 2 and 3 replicas on one
//! database (WAL flushes per accepted event from `pg_stat_wal`, to show the group commit),
//! and a stored backlog forwarded by 1 and 3 replicas.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{self, Process, WrkResult, run_wrk, write_wrk_script};
use crate::{
    ONE_LOAD_CLIENT, RETENTION_SOAK, TOKEN, relay_config, relay_config_on, soak, soak_seconds,
};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema of the bench database for one measurement, dropped after.
struct Schema {
    admin: tokio_postgres::Client,
    name: String,
    url: String,
}

impl Schema {
    async fn fresh(admin: tokio_postgres::Client, base: &str, label: &str) -> anyhow::Result<Self> {
        let name = format!("hr_bench_{label}");
        admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .await?;
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{name}");
        Ok(Self { admin, name, url })
    }

    async fn wal_syncs(&self) -> anyhow::Result<i64> {
        Ok(self
            .admin
            .query_one("SELECT wal_sync FROM pg_stat_wal", &[])
            .await?
            .get(0))
    }

    async fn drop(self) -> anyhow::Result<tokio_postgres::Client> {
        self.admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .await?;
        Ok(self.admin)
    }
}

/// `BENCH_POSTGRES` (or the local default) and an admin connection to it; `None`, said
/// with the reason, when it cannot be reached (the part named `part` is then skipped).
async fn bench_database(part: &str) -> Option<(String, tokio_postgres::Client)> {
    let base = std::env::var("BENCH_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.into());
    match connect(&base).await {
        Ok(admin) => Some((base, admin)),
        Err(err) => {
            println!("\n{part}: skipped, {base} unreachable ({err}); set BENCH_POSTGRES");
            None
        }
    }
}

async fn connect(base: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn start_replicas(
    relay_bin: &Path,
    dir: &Path,
    label: &str,
    count: usize,
    config: &str,
) -> anyhow::Result<Vec<Process>> {
    (0..count)
        .map(|i| {
            let path = dir.join(format!("{label}-{i}.toml"));
            let config = format!(
                "{config}\n[api]\nsocket = \"{}\"\n",
                dir.join(format!("{label}-{i}.sock")).display()
            );
            std::fs::write(&path, config)?;
            Process::start(
                relay_bin,
                &[
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--config",
                    path.to_str().unwrap(),
                ],
                dir,
                &format!("{label}-{i}"),
            )
        })
        .collect()
}

/// wrk against every replica at once, the connections split between them; the sum of the
/// rates and the worst p99.
fn wrk_all(
    replicas: &[Process],
    script: &Path,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<WrkResult> {
    let each = (connections / replicas.len()).max(1);
    // Around all the runs at once: each run's own figure would count the others' too.
    let client_cpu_before = support::children_cpu_time();
    let runs: Vec<anyhow::Result<WrkResult>> = std::thread::scope(|scope| {
        let handles: Vec<_> = replicas
            .iter()
            .map(|replica| {
                let url = format!("{}/hooks/gitlab", replica.url);
                scope.spawn(move || run_wrk(&url, script, each, seconds))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("wrk thread"))
            .collect()
    });
    let mut total = WrkResult {
        requests: 0,
        client_cpu: support::children_cpu_time().saturating_sub(client_cpu_before),
        requests_per_sec: 0.0,
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        non_2xx: 0,
    };
    for run in runs {
        let run = run?;
        total.requests += run.requests;
        total.requests_per_sec += run.requests_per_sec;
        total.p50 = total.p50.max(run.p50);
        total.p99 = total.p99.max(run.p99);
        total.non_2xx += run.non_2xx;
    }
    Ok(total)
}

/// CPU time around one ingest run: the replicas', the database server's and wrk's.
struct CpuSpent {
    relays: Duration,
    database: Duration,
}

impl CpuSpent {
    fn start(replicas: &[Process]) -> Self {
        CpuSpent {
            relays: replicas.iter().map(Process::cpu_time).sum(),
            database: support::processes_cpu_time("postgres"),
        }
    }

    /// "relay + db + wrk ≤ the rate the cores could carry at that cost".
    fn per_request(&self, replicas: &[Process], result: &WrkResult) -> String {
        let per = |spent: Duration| support::micros_each(spent, result.requests);
        let relays = per(replicas.iter().map(Process::cpu_time).sum::<Duration>() - self.relays);
        let database = per(support::processes_cpu_time("postgres") - self.database);
        let client = per(result.client_cpu);
        let bound = support::cores_allow(relays + database + client);
        format!("{relays:.0} + {database:.0} + {client:.0} ≤ {bound:.0}/s")
    }
}

pub async fn compare(
    relay_bin: &Path,
    dir: &Path,
    body: &str,
    sink: &support::Sink,
    seconds: u64,
    forward_count: usize,
) -> anyhow::Result<()> {
    let Some((base, mut admin)) = bench_database("postgres").await else {
        return Ok(());
    };
    let server = ONE_LOAD_CLIENT;
    println!();
    println!(
        "postgres ({base}): ingest with the destination paused, wrk split across the replicas; WAL flushes from pg_stat_wal"
    );
    println!(
        "{:>6}  {:>22}  {:>9} {:>9}  {:>8}  {:>12}  {:>7}  {:>38}",
        "conns",
        "store",
        "req/s",
        "p99",
        "÷sqlite",
        "WAL flushes",
        "non-2xx",
        "CPU µs/request: relay + db + wrk"
    );
    // `BENCH_ONLY=postgres-forward`: the forwarding part alone (to profile it).
    let connection_counts: &[usize] = match std::env::var("BENCH_ONLY").as_deref() {
        Ok("postgres-forward") => &[],
        _ => &[32, 256],
    };
    for &connections in connection_counts {
        let script = write_wrk_script(dir, body, TOKEN, &format!("pg{connections}"))?;
        let sqlite_config = relay_config(
            &dir.join(format!("pg-sqlite-{connections}.db")),
            &sink.url,
            true,
            server,
            Some(64),
        );
        let sqlite = start_replicas(
            relay_bin,
            dir,
            &format!("sqlite{connections}"),
            1,
            &sqlite_config,
        )?;
        let spent = CpuSpent::start(&sqlite);
        let on_sqlite = wrk_all(&sqlite, &script, connections, seconds)?;
        let cpu = spent.per_request(&sqlite, &on_sqlite);
        sqlite.into_iter().for_each(Process::stop);
        println!(
            "{:>6}  {:>22}  {:>9.0} {:>9}  {:>8}  {:>12}  {:>7}  {:>38}",
            connections,
            "sqlite",
            on_sqlite.requests_per_sec,
            support::ms(on_sqlite.p99),
            "1.00",
            "-",
            on_sqlite.non_2xx,
            cpu
        );
        for replicas in [1usize, 2, 3] {
            let schema =
                Schema::fresh(admin, &base, &format!("ingest{connections}x{replicas}")).await?;
            let config = relay_config_on(&schema.url, &sink.url, true, server, Some(64));
            let running = start_replicas(
                relay_bin,
                dir,
                &format!("pg{connections}x{replicas}"),
                replicas,
                &config,
            )?;
            let before = schema.wal_syncs().await?;
            let spent = CpuSpent::start(&running);
            let result = wrk_all(&running, &script, connections, seconds)?;
            let cpu = spent.per_request(&running, &result);
            let flushes = schema.wal_syncs().await? - before;
            running.into_iter().for_each(Process::stop);
            let accepted = result.requests.saturating_sub(result.non_2xx).max(1);
            println!(
                "{:>6}  {:>22}  {:>9.0} {:>9}  {:>8.2}  {:>12}  {:>7}  {:>38}",
                connections,
                format!(
                    "postgres, {replicas} replica{}",
                    if replicas == 1 { "" } else { "s" }
                ),
                result.requests_per_sec,
                support::ms(result.p99),
                result.requests_per_sec / on_sqlite.requests_per_sec,
                format!("{:.3}/event", flushes as f64 / accepted as f64),
                result.non_2xx,
                cpu
            );
            admin = schema.drop().await?;
        }
    }
    println!(
        "  targets (issue 14): postgres ingest >= 0.5 x sqlite; p99 at 32 connections < 20 ms; < 0.1 WAL flushes per event at 32 connections"
    );

    println!("postgres: a backlog of {forward_count} stored events forwarded to an instant sink");
    let sqlite_db = dir.join("pg-forward-sqlite.db");
    let sqlite_rate = forward(relay_bin, dir, sink, body, forward_count, 1, &|paused| {
        relay_config(&sqlite_db, &sink.url, paused, server, None)
    })
    .await?;
    println!("  sqlite:                 {sqlite_rate:>7.0} deliveries/s");
    for replicas in [1usize, 3] {
        let schema = Schema::fresh(admin, &base, &format!("forward{replicas}")).await?;
        let url = schema.url.clone();
        let rate = forward(
            relay_bin,
            dir,
            sink,
            body,
            forward_count,
            replicas,
            &|paused| relay_config_on(&url, &sink.url, paused, server, None),
        )
        .await?;
        println!(
            "  postgres, {replicas} replica{}:   {rate:>7.0} deliveries/s   (target >= 5000/s)",
            if replicas == 1 { " " } else { "s" }
        );
        admin = schema.drop().await?;
    }
    Ok(())
}

/// Stores `count` events with the destination paused, then starts `replicas` forwarding
/// and times the drain.
async fn forward(
    relay_bin: &Path,
    dir: &Path,
    sink: &support::Sink,
    body: &str,
    count: usize,
    replicas: usize,
    config: &dyn Fn(bool) -> String,
) -> anyhow::Result<f64> {
    let label = format!("forward{replicas}-{}", support::micros_now());
    let loader = start_replicas(relay_bin, dir, &format!("{label}-load"), 1, &config(true))?;
    support::post_many(&loader[0].url, body, TOKEN, count, 64).await?;
    loader.into_iter().for_each(Process::stop);
    sink.reset();
    let started = Instant::now();
    let running = start_replicas(relay_bin, dir, &label, replicas, &config(false))?;
    let drained = sink.wait_for(count as u64, Duration::from_secs(180)).await;
    let seconds = started.elapsed().as_secs_f64();
    running.into_iter().for_each(Process::stop);
    if !drained {
        println!(
            "  (did not drain within 180 s: {} of {count})",
            sink.count()
        );
    }
    Ok(sink.count() as f64 / seconds)
}

/// Tables (with their TOAST) and indexes of one schema, in bytes.
const SCHEMA_SIZE: &str = "SELECT COALESCE(SUM(pg_table_size(c.oid)), 0)::bigint,
        COALESCE(SUM(pg_indexes_size(c.oid)), 0)::bigint
   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = $1 AND c.relkind = 'r'";

/// (g) retention on PostgreSQL: the schema's size under the soak's steady load, with the
/// default retention and with succeeded deliveries pruned after 5 s, side by side; then what
/// autovacuum did (dead rows left, runs), which decides whether freed space is reused.
pub async fn retention(
    relay_bin: &Path,
    dir: &Path,
    body: &str,
    sink_url: &str,
) -> anyhow::Result<()> {
    let Some((base, mut admin)) = bench_database("postgres retention").await else {
        return Ok(());
    };
    // Without autovacuum nothing retention deletes is ever reused, whatever hookrelay does
    // (the relay warns about it at start). Production servers run it; so does this soak.
    let autovacuum: String = admin
        .query_one("SELECT current_setting('autovacuum')", &[])
        .await?
        .get(0);
    let switched_on = autovacuum != "on";
    if switched_on {
        for statement in [
            "ALTER SYSTEM SET autovacuum = on",
            "ALTER SYSTEM SET autovacuum_naptime = '10s'",
            "SELECT pg_reload_conf()",
        ] {
            admin.batch_execute(statement).await?;
        }
    }
    let seconds = soak_seconds();
    let rate = 300;
    let load = soak::Load {
        body,
        token: TOKEN,
        rate,
        seconds,
    };
    let mut runs = Vec::new();
    for (label, retention) in [("pgkept", ""), ("pgpruned", RETENTION_SOAK)] {
        let schema = Schema::fresh(admin, &base, label).await?;
        let config = relay_config_on(&schema.url, sink_url, false, ONE_LOAD_CLIENT, Some(64));
        let size = || async {
            let row = schema.admin.query_one(SCHEMA_SIZE, &[&schema.name]).await?;
            Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
        };
        let samples = soak::run(relay_bin, dir, &(config + retention), label, &load, size).await?;
        let vacuum = schema
            .admin
            .query_one(
                "SELECT COALESCE(SUM(n_live_tup), 0)::bigint, COALESCE(SUM(n_dead_tup), 0)::bigint,
                        COALESCE(SUM(autovacuum_count + vacuum_count), 0)::bigint
                   FROM pg_stat_user_tables WHERE schemaname = $1",
                &[&schema.name],
            )
            .await?;
        let (live, dead, vacuums): (i64, i64, i64) = (vacuum.get(0), vacuum.get(1), vacuum.get(2));
        runs.push((samples, live, dead, vacuums));
        admin = schema.drop().await?;
    }
    if switched_on {
        for statement in [
            "ALTER SYSTEM RESET autovacuum",
            "ALTER SYSTEM RESET autovacuum_naptime",
            "SELECT pg_reload_conf()",
        ] {
            admin.batch_execute(statement).await?;
        }
    }
    println!();
    println!(
        "retention on postgres ({base}): {rate} events/s for {seconds} s, delivered at once; tables (with TOAST) + indexes"
    );
    if switched_on {
        println!(
            "  (autovacuum was off on this server: turned on with autovacuum_naptime = 10s for the soak, as the README advises, and reset after)"
        );
    }
    soak::print(&runs[0].0, &runs[1].0, "idx");
    for ((_, live, dead, vacuums), label) in runs.iter().zip(["default", "pruned"]) {
        println!(
            "  {label}: {live} live and {dead} dead rows at the end, {vacuums} (auto)vacuum runs on its tables"
        );
    }
    Ok(())
}
