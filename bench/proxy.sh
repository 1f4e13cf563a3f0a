#!/usr/bin/env bash
# The proxy-overhead benchmark (tests/benches/proxy.rs): wrk against one shardd directly,
# vecgate and nginx in front of it, the embedded default, and vecgate over 3 shards, in one
# run, printing ratios to the direct shard. Installs nginx and wrk when missing. Knobs:
# BENCH_N, BENCH_DIM, BENCH_SECONDS, BENCH_ROUNDS, BENCH_CONNECTIONS, BENCH_LIMIT.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
exec cargo bench --locked -p e2e --bench proxy
