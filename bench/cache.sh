#!/usr/bin/env bash
# The result-cache benchmark (tests/benches/cache.rs): L1 hits against nginx `return 200` with
# the same bytes, latency by tier, and a Zipf query mix with and without the cache and writes,
# over one shardd and a real redis-server, in one run. Installs nginx, wrk and redis-server when
# missing. Knobs: BENCH_N, BENCH_DIM, BENCH_SECONDS, BENCH_ROUNDS, BENCH_CONNECTIONS,
# BENCH_LIMIT, BENCH_DISTINCT.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
bench/tools.sh
exec cargo bench --locked -p e2e --bench cache
