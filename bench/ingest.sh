#!/usr/bin/env bash
# The ingest benchmark (router/benches/ingest.rs): `vecgate ingest` of the Python tutorial
# (Debian's python3-doc, installed by scripts/deps.sh) through 3 shards with the built-in
# embedder, against the same chunks embedded alone, in one run. Knobs: BENCH_DOCS, BENCH_ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
exec cargo bench --locked -p vecgate --bench ingest
