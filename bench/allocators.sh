#!/usr/bin/env bash
# The allocator comparison: builds shardd and vecgate with mimalloc (the default), jemalloc and
# glibc's malloc, then runs the proxy benchmark's query workload against every build in the same
# rounds (tests/benches/proxy.rs with BENCH_ALLOCATORS). Same knobs as bench/proxy.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
builds=$(mktemp -d)
trap 'rm -rf "$builds"' EXIT
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
variants=()
for variant in "mimalloc:" "jemalloc:--no-default-features --features jemalloc" "glibc:--no-default-features"; do
  label=${variant%%:*}
  echo "building shardd and vecgate with $label"
  mkdir "$builds/$label"
  for package in shardd vecgate; do
    # shellcheck disable=SC2086 # the flags are words
    cargo build --locked --release --quiet -p "$package" ${variant#*:}
    cp "$target/release/$package" "$builds/$label/"
  done
  variants+=("$label=$builds/$label")
done
BENCH_ALLOCATORS="${variants[*]}" bench/proxy.sh
