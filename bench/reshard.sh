#!/usr/bin/env bash
# The resharding benchmark (tests/benches/reshard.rs): a third shard added by reload to a live
# 2-shard cluster; time to move and search latency during the move against before it.
# Knobs: BENCH_N, BENCH_DIM, BENCH_SECONDS, BENCH_THREADS.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
exec cargo bench --locked -p e2e --bench reshard
