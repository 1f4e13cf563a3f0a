#!/usr/bin/env bash
# Starts a local cluster in the foreground: one shardd per replica URL of the config
# (config/local-3x2.toml: 3 shards x 2 replicas on 127.0.0.1:7001-7006) and vecgate with that
# config. Ctrl-C (or SIGTERM) stops everything and exits 0.
#
# A shardd that dies (try `kill -9` on one) stays down while the rest keeps serving: reads fail
# over to its peer, and the writes it misses are kept as hints and replayed once it is back.
# The script prints the command that restarts it. If vecgate itself exits, the script stops
# the shards and exits with vecgate's status.
#
# Environment: CONFIG (default config/local-3x2.toml), DATA (default ./data: shard data in
# DATA/shard-PORT, logs in DATA/shard-PORT.log), BIN_DIR (use binaries from there instead of
# building release ones).
set -uo pipefail
cd "$(dirname "$0")/.."
config=${CONFIG:-config/local-3x2.toml}
data=${DATA:-data}
if [ -z "${BIN_DIR:-}" ]; then
  scripts/deps.sh || exit 1
  cargo build --locked --release --bins || exit 1
  target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  BIN_DIR=${target:-target}/release
fi
# Replica URLs only (`url = "..."` outside comments), not other addresses such as etcd's.
ports=$(sed 's/#.*//' "$config" | grep -o 'url *= *"http://127\.0\.0\.1:[0-9]*' | sed 's/.*://' | sort -un)
if [ -z "$ports" ]; then
  echo "cluster.sh: $config lists no replica on 127.0.0.1; nothing to start" >&2
  exit 1
fi
mkdir -p "$data"

declare -A shard_pids
router_pid=
stop() {
  trap - INT TERM
  echo "stopping the cluster"
  kill -TERM ${router_pid:+"$router_pid"} "${shard_pids[@]}" 2>/dev/null
  wait
  exit "${1:-0}"
}
trap 'stop 0' INT TERM

for port in $ports; do
  "$BIN_DIR/shardd" --listen "127.0.0.1:$port" --data-dir "$data/shard-$port" \
    >/dev/null 2>>"$data/shard-$port.log" &
  shard_pids[$port]=$!
done
for port in $ports; do
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    if ! kill -0 "${shard_pids[$port]}" 2>/dev/null; then
      echo "shardd on 127.0.0.1:$port exited at start; see $data/shard-$port.log:" >&2
      tail -n 5 "$data/shard-$port.log" >&2
      stop 1
    fi
    sleep 0.1
  done
done
echo "shards up on 127.0.0.1 ports $(echo $ports | tr ' ' ','); data and logs in $data/shard-PORT(.log)"

"$BIN_DIR/vecgate" --config "$config" &
router_pid=$!

while true; do
  wait -n -p ended
  status=$?
  if [ -z "${ended:-}" ]; then
    continue
  fi
  if [ "$ended" = "$router_pid" ]; then
    echo "vecgate exited with status $status; stopping the shards" >&2
    router_pid=
    stop "$status"
  fi
  for port in "${!shard_pids[@]}"; do
    if [ "${shard_pids[$port]}" = "$ended" ]; then
      unset "shard_pids[$port]"
      echo "shardd on 127.0.0.1:$port exited (status $status); the cluster keeps serving from its peers." >&2
      echo "  restart it with: $BIN_DIR/shardd --listen 127.0.0.1:$port --data-dir $data/shard-$port" >&2
    fi
  done
done
