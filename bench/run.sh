#!/usr/bin/env bash
# Benchmark: builds release binaries and prints durable ingest vs a bare handler, side by side,
# plus forwarding throughput and latency. Env: BENCH_SECONDS (per wrk run, default 10),
# BENCH_FORWARD (backlog size, default 50000), BENCH_SOAK_SECONDS (retention soak, default 60),
# BENCH_ONLY=retention (only the retention soak), BENCH_ONLY=postgres-retention (the soak on
# PostgreSQL), BENCH_ONLY=ingest | delivery | memory | postgres | postgres-forward.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (Debian package)"
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
cargo build --release --bin hookrelay --example bench
exec target/release/examples/bench
