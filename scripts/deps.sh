#!/usr/bin/env bash
# Installs what a fresh Debian machine with Rust lacks to build and test Vecgate.
set -euo pipefail
need=()
command -v c++ >/dev/null || need+=(g++)
command -v cmake >/dev/null || need+=(cmake)
command -v redis-server >/dev/null || need+=(redis-server)
command -v etcd >/dev/null || need+=(etcd-server)
command -v promtool >/dev/null || need+=(prometheus)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
# The documents the ingest test reads (the Python tutorial in HTML).
[ -d /usr/share/doc/python3-doc/html/tutorial ] || need+=(python3-doc)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
