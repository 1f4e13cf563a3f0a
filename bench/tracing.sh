#!/usr/bin/env bash
# The tracing-overhead benchmark (tests/benches/tracing.rs): wrk through vecgate -> 3 shardd with
# span export off, on for every trace and on for 10%, in one run, printing ratios to "off".
# Installs wrk when missing. Knobs: BENCH_N, BENCH_DIM, BENCH_SECONDS, BENCH_ROUNDS,
# BENCH_CONNECTIONS, BENCH_LIMIT.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
bench/tools.sh
exec cargo bench --locked -p e2e --bench tracing
