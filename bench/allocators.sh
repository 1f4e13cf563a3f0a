#!/usr/bin/env bash
# The allocator comparison: builds vecgate with mimalloc (the default), jemalloc and glibc's
# malloc, then runs the proxy benchmark's query workload against all three in the same rounds
# (tests/benches/proxy.rs with BENCH_ALLOCATORS). Same knobs as bench/proxy.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
builds=$(mktemp -d)
trap 'rm -rf "$builds"' EXIT
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
variants=()
for variant in "mimalloc:" "jemalloc:--no-default-features --features jemalloc" "glibc:--no-default-features"; do
  label=${variant%%:*}
  echo "building vecgate with $label"
  # shellcheck disable=SC2086 # the flags are words
  cargo build --locked --release --quiet -p vecgate ${variant#*:}
  cp "$target/release/vecgate" "$builds/vecgate-$label"
  variants+=("$label=$builds/vecgate-$label")
done
BENCH_ALLOCATORS="${variants[*]}" bench/proxy.sh
