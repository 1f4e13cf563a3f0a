#!/usr/bin/env bash
# The text-query benchmark (tests/benches/text_search.rs): /v1/search with text through the
# built-in embedder, micro-batching on against off, in one run. Fetches the model and installs
# wrk when missing. Knobs: BENCH_N, BENCH_SECONDS, BENCH_ROUNDS, BENCH_CONNECTIONS.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
bench/tools.sh
exec cargo bench --locked -p e2e --bench text_search
