#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy, unit tests and end-to-end tests on real processes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
