#!/usr/bin/env bash
# Builds and runs the main job: one shard daemon on 127.0.0.1:6333 with its data in ./data.
# Extra arguments go to shardd (see `shardd --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
exec cargo run --locked --release -p shardd -- --listen 127.0.0.1:6333 --data-dir ./data "$@"
