#!/usr/bin/env bash
# Starts a 3-node doozerd cluster on loopback (fsync on, data in a temp dir), runs dzbench
# (one client's latency, then N concurrent clients' throughput, 100-byte sets), stops it.
# Usage: scripts/bench.sh [CLIENTS] [SECS]   (NO_BUILD=1 skips the build; BIN= picks binaries;
# EXTRA="--flag v" is passed to every node; STATS=1 prints each node's storage-thread stats:
# commits, batches merged, records, slots, commands, time per commit)
set -euo pipefail
CLIENTS=${1:-64}
SECS=${2:-10}
cd "$(dirname "$0")/.."
[ -n "${NO_BUILD:-}" ] || cargo build --release -p doozerd --bins
BIN=${BIN:-target/release}
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

ADDR=""
LOG=info
[ -z "${STATS:-}" ] || LOG=info,doozerd::storage=debug
start() { # n args...  (sets ADDR; not in a subshell, so PIDS keeps the pid for cleanup)
  local n=$1; shift
  RUST_LOG=${RUST_LOG:-$LOG} "$BIN/doozerd" --data-dir "$TMP/n$n" -l 127.0.0.1:0 "$@" ${EXTRA:-} \
    >"$TMP/n$n.out" 2>"$TMP/n$n.log" &
  PIDS+=($!)
  for _ in $(seq 200); do
    if [ -s "$TMP/n$n.out" ]; then ADDR=$(awk '{print $5; exit}' "$TMP/n$n.out"); return; fi
    sleep 0.05
  done
  echo "node $n did not start" >&2; cat "$TMP/n$n.log" >&2; exit 1
}
start 0; A0=$ADDR
start 1 -a "$A0"; A1=$ADDR
start 2 -a "$A0"; A2=$ADDR
# Wait until all three are voters in force (the alpha window after the claims has passed).
inforce() { grep "voters in force" "$TMP/n$1.log" | tail -1 | grep -q "n=3"; }
for _ in $(seq 600); do
  if inforce 0 && inforce 1 && inforce 2; then break; fi
  sleep 0.05
done
echo "cluster: $A0 $A1 $A2; load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN/dzbench" --addr "$A0" --addr "$A1" --addr "$A2" --clients "$CLIENTS" --secs "$SECS" --size 100
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${STATS:-}" ]; then
  sleep 5.5 # the storage thread logs its counters every 5 s
  for n in 0 1 2; do
    grep "storage stats" "$TMP/n$n.log" | tail -3 | sed "s/.*storage stats/node $n:/"
  done
fi
