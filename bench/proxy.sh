#!/usr/bin/env bash
# The proxy-overhead benchmark (tests/benches/proxy.rs): wrk against one shardd directly,
# vecgate and nginx in front of it, the embedded default, and vecgate over 3 shards, in one
# run, printing ratios to the direct shard. Installs nginx and wrk when missing. Knobs:
# BENCH_N, BENCH_DIM, BENCH_SECONDS, BENCH_ROUNDS, BENCH_CONNECTIONS, BENCH_LIMIT.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
bench/tools.sh
exec cargo bench --locked -p e2e --bench proxy
