#!/usr/bin/env bash
# Runs the HNSW benchmark (shardd's engine vs hnswlib, same vectors, same run) and prints a
# markdown table. Creates bench/.venv from bench/requirements.txt on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x bench/.venv/bin/python ]; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install --quiet -r bench/requirements.txt
fi
exec cargo bench --locked -p shardd --bench hnsw
