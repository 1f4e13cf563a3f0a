#!/usr/bin/env bash
# Builds and runs the main job: vecgate's embedded default, one binary with a built-in shard,
# serving the Qdrant-compatible API on 127.0.0.1:6333 (admin and metrics on 127.0.0.1:9901) with
# its data in ./data. Extra arguments go to vecgate (see `vecgate --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
exec cargo run --locked --release -p vecgate -- "$@"
