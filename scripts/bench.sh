#!/usr/bin/env bash
# Starts a 3-node doozerd cluster on loopback (fsync on, data in a temp dir), runs dzbench
# (one client's latency, then N concurrent clients' throughput, 100-byte sets), stops it.
# Usage: scripts/bench.sh [CLIENTS] [SECS]   (NO_BUILD=1 skips the build; BIN= picks binaries;
# EXTRA="--flag v" is passed to every node; EVERY=S prints the rate every S seconds, with the slowest set of each window and when it was sent;
# SINGLE=S runs the one-client phase for S seconds instead of SECS; STATS=1 prints each
# node's storage-thread stats: commits, batches merged, records, slots, commands, time per
# commit; STATS_LINES=N shows the last N 5-second windows, default 3; KEEP_LOGS=DIR keeps the
# nodes' logs there; CPUS=1.2 runs the nodes and the load generator in a cgroup limited to that
# many CPUs, a stand-in for a slower or busier host: it needs a writable cgroup file system).
# After the concurrent phase it prints the nodes' CPU time per set and how busy the machine was.
set -euo pipefail
CLIENTS=${1:-64}
SECS=${2:-10}
cd "$(dirname "$0")/.."
[ -n "${NO_BUILD:-}" ] || cargo build --release -p doozerd --bins
BIN=${BIN:-target/release}
TMP=$(mktemp -d)
PIDS=()
CG=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null
  if [ -n "$CG" ]; then
    echo $$ >"$CG_HOME/cgroup.procs" 2>/dev/null || true
    rmdir "$CG" 2>/dev/null || true
  fi
  if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS" && cp "$TMP"/*.log "$KEEP_LOGS"/; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# CPUS: a cgroup with a CPU quota (10 ms period) holding this shell, so every process started
# from here on (nodes, dzbench) shares that quota.
if [ -n "${CPUS:-}" ]; then
  quota=$(awk -v c="$CPUS" 'BEGIN { q = int(c * 10000); if (q < 1000) exit 1; print q }') ||
    { echo "CPUS=$CPUS: want a number of CPUs, at least 0.1" >&2; exit 1; }
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then # cgroup v2
    CG_ROOT=/sys/fs/cgroup
    CG_HOME=$CG_ROOT$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)
    echo +cpu >"$CG_ROOT/cgroup.subtree_control" 2>/dev/null || true
    CG=$CG_ROOT/dzbench.$$
    mkdir "$CG" && echo "$quota 10000" >"$CG/cpu.max"
  else # cgroup v1
    CG_ROOT=/sys/fs/cgroup/cpu
    CG_HOME=$CG_ROOT$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ {print $3}' /proc/self/cgroup)
    CG=$CG_ROOT/dzbench.$$
    mkdir "$CG" && echo 10000 >"$CG/cpu.cfs_period_us" && echo "$quota" >"$CG/cpu.cfs_quota_us"
  fi 2>/dev/null || { echo "CPUS: cannot set up a cgroup under $CG_ROOT (needs root)" >&2; exit 1; }
  echo $$ >"$CG/cgroup.procs"
  echo "limited to $CPUS CPUs (cgroup $CG)"
fi

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
# CPU time (user + system, in clock ticks) of the nodes, and of the machine's busy time.
node_ticks() { local t=0; for p in "${PIDS[@]}"; do t=$((t + $(cut -d' ' -f14 /proc/$p/stat) + $(cut -d' ' -f15 /proc/$p/stat))); done; echo $t; }
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
"$BIN/dzbench" --addr "$A0" --addr "$A1" --addr "$A2" --clients "$CLIENTS" --secs "$SECS" --size 100 --every "${EVERY:-0}" \
  --single-secs "${SINGLE:-$SECS}" |
  while IFS= read -r line; do
    case "$line" in
    starting*) c0=$(node_ticks); b0=$(busy_ticks); t0=$(date +%s%N) ;;
    "$CLIENTS clients:"*)
      echo "$line"
      c1=$(node_ticks); b1=$(busy_ticks); t1=$(date +%s%N)
      sets=$(echo "$line" | awk '{print $3}')
      # The work the nodes did per set, which the rate alone does not show.
      awk -v c="$((c1 - c0))" -v b="$((b1 - b0))" -v n="$sets" -v hz="$(getconf CLK_TCK)" \
        -v ns="$((t1 - t0))" -v cpus="$(nproc)" 'BEGIN {
          printf "nodes CPU: %.1f us per set; machine busy %.0f%% of %d CPUs\n",
            c / hz * 1e6 / n, b / hz / (ns / 1e9) / cpus * 100, cpus }' ;;
    *) echo "$line" ;;
    esac
  done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${STATS:-}" ]; then
  sleep 5.5 # the storage thread logs its counters every 5 s
  for n in 0 1 2; do
    grep "storage stats" "$TMP/n$n.log" | tail -"${STATS_LINES:-3}" | sed "s/.*storage stats/node $n:/"
  done
fi
