#!/usr/bin/env bash
# Starts a local cluster in the foreground: six shardd daemons (3 shards x 2 replicas) on
# 127.0.0.1:7001-7006 and vecgate on 127.0.0.1:6333 (admin 9901) with config/local-3x2.toml.
# Data goes to ./data. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --locked --release --bins
mkdir -p data
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for port in 7001 7002 7003 7004 7005 7006; do
  target/release/shardd --listen "127.0.0.1:$port" --data-dir "data/shard-$port" >/dev/null 2>"data/shard-$port.log" &
  pids+=($!)
done
target/release/vecgate --config config/local-3x2.toml &
pids+=($!)
wait -n
