#!/usr/bin/env bash
# Replicated topics (issue 14): what does replication cost a publisher?
#
#   bash scripts/bench-replication.sh      # SKIP_BUILD=1 to use target/release as is
#
# Starts three nsqd members of one replication cluster on loopback (--node-id 1..3,
# --raft-address/--raft-peers, default flags otherwise, data dirs under target/), creates topic
# `rep` with replicas=3 and a plain topic `plain` on the same nodes, gives each a channel with
# a bench_reader consumer on the node that serves it (the leader for `rep`), and runs
# bench_writer (200 B, MPUB 200, one connection per core) for RUNFOR: `plain` on the leader,
# `rep` on the leader, `rep` through a follower (forwarded). Prints each run's msg/s, MPUB
# round-trip percentiles and the nsqd CPU time per published message, summed over all three
# members (utime+stime from /proc/<pid>/stat). Loopback only; only the processes started here
# are signalled, by PID.
#
# Environment: RUNFOR=10s BASE_PORT=4450 (uses BASE_PORT .. BASE_PORT+8)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
RUNFOR="${RUNFOR:-10s}"
BASE="${BASE_PORT:-4450}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p nsqd -p nsq-bench)
fi
PARENT="${CARGO_TARGET_DIR:-$ROOT/target}"
DATA="$(mktemp -d -p "$PARENT" bench-replication.XXXXXX)"
PIDS=()
READERS=()
cleanup() {
  for p in "${READERS[@]}" "${PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then kill -TERM "$p" 2>/dev/null || true; fi
  done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$DATA"
}
trap cleanup EXIT

tcp() { echo $((BASE + 3 * ($1 - 1))); }
http() { echo $((BASE + 3 * ($1 - 1) + 1)); }
raft() { echo $((BASE + 3 * ($1 - 1) + 2)); }

for id in 1 2 3; do
  peers=""
  for j in 1 2 3; do
    [ "$j" = "$id" ] && continue
    peers="${peers:+$peers,}$j@127.0.0.1:$(raft "$j")"
  done
  mkdir -p "$DATA/n$id"
  "$BIN/nsqd" --node-id="$id" --tcp-address="127.0.0.1:$(tcp "$id")" \
    --http-address="127.0.0.1:$(http "$id")" --raft-address="127.0.0.1:$(raft "$id")" \
    --raft-peers="$peers" --data-path="$DATA/n$id" --log-level=warn >"$DATA/n$id.log" 2>&1 &
  PIDS+=("$!")
done
for id in 1 2 3; do
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$(http "$id")/ping" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
curl -sf -X POST "http://127.0.0.1:$(http 1)/topic/create?topic=rep&replicas=3" >/dev/null
LEADER=""
for _ in $(seq 1 100); do
  for id in 1 2 3; do
    if curl -sf "http://127.0.0.1:$(http "$id")/topic/replication?topic=rep" | grep -q '"active":true'; then
      LEADER=$id
    fi
  done
  [ -n "$LEADER" ] && break
  sleep 0.1
done
[ -n "$LEADER" ] || { echo "no leader for rep" >&2; exit 1; }
FOLLOWER=$(( LEADER % 3 + 1 ))
echo "# leader: node $LEADER, follower used: node $FOLLOWER"

cpu_ticks() {
  local total=0
  for p in "${PIDS[@]}"; do
    # fields 14 and 15 of /proc/<pid>/stat (after the parenthesised command name)
    set -- $(sed 's/^.*) //' "/proc/$p/stat")
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

reader_for() { # topic node
  "$BIN/bench_reader" --nsqd-tcp-address="127.0.0.1:$(tcp "$2")" --topic="$1" --channel=ch \
    --runfor=600s --size=200 --rdy=2500 >/dev/null 2>&1 &
  READERS+=("$!")
}

run() { # label topic node
  local before after out msgs
  before=$(cpu_ticks)
  out=$(timeout 120 "$BIN/bench_writer" --nsqd-tcp-address="127.0.0.1:$(tcp "$3")" --topic="$2" \
    --runfor="$RUNFOR" --size=200 --batch-size=200 2>&1)
  after=$(cpu_ticks)
  msgs=$(echo "$out" | sed -n 's/.*published \([0-9]*\) msgs.*/\1/p')
  echo "$out" | grep -E 'msg/s|p99' | sed "s/^/# $1: /"
  awk -v t=$((after - before)) -v hz="$HZ" -v n="$msgs" -v l="$1" \
    'BEGIN { if (n > 0) printf "# %s: nsqd CPU (all 3 members) %.0f ns per published message\n", l, t / hz * 1e9 / n }'
}

curl -sf -X POST "http://127.0.0.1:$(http "$LEADER")/topic/create?topic=plain" >/dev/null
curl -sf -X POST "http://127.0.0.1:$(http "$LEADER")/channel/create?topic=plain&channel=ch" >/dev/null
reader_for plain "$LEADER"
reader_for rep "$LEADER"
sleep 1
run "plain, on the leader node" plain "$LEADER"
run "replicated x3, via the leader" rep "$LEADER"
run "replicated x3, via a follower" rep "$FOLLOWER"
curl -sf "http://127.0.0.1:$(http "$LEADER")/topic/replication?topic=rep"; echo
