#!/usr/bin/env bash
# Durable mode: does creating many channels on a topic stall its publishers?
#
#   bash scripts/bench-channel-create.sh      # SKIP_BUILD=1 to use target/release as is
#
# Starts nsqd with --mem-queue-size=0 (every message through the topic log; each channel's
# journal creation costs two fsyncs) on a data dir under the repository's target/, then runs
# bench_writer (200 B, MPUB 200) on topic sub_bench for RUNFOR twice: once alone, once while
# NUM channels are created on the same topic over HTTP, one after another. Prints both runs'
# MPUB latency percentiles and how long the creations took. Loopback only; only the nsqd
# started here is signalled, by PID.
#
# Environment: RUNFOR=10s NUM=1000 TCP_PORT=4350 HTTP_PORT=4351
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
RUNFOR="${RUNFOR:-10s}"
NUM="${NUM:-1000}"
TCP_PORT="${TCP_PORT:-4350}"
HTTP_PORT="${HTTP_PORT:-4351}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p nsqd -p nsq-bench)
fi
DATA="$(mktemp -d -p "${CARGO_TARGET_DIR:-$ROOT/target}" bench-channels.XXXXXX)"
PID=""
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" || true
    for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
  fi
  rm -rf "$DATA"
}
trap cleanup EXIT

"$BIN/nsqd" --tcp-address="127.0.0.1:$TCP_PORT" --http-address="127.0.0.1:$HTTP_PORT" \
  --data-path="$DATA" --mem-queue-size=0 --log-level=warn >"$DATA.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$HTTP_PORT/ping" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/topic/create?topic=sub_bench" >/dev/null
curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/channel/create?topic=sub_bench&channel=ch" >/dev/null

writer() {
  timeout 120 "$BIN/bench_writer" --nsqd-tcp-address="127.0.0.1:$TCP_PORT" --runfor="$RUNFOR" \
    --size=200 --batch-size=200 2>&1 | grep -E 'duration|round trip|p99' | sed "s/^/# $1: /"
}

writer "alone"
# Drain what the first run queued so both runs start from the same depth.
curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/channel/empty?topic=sub_bench&channel=ch" >/dev/null
(
  start=$(date +%s.%N)
  for i in $(seq 1 "$NUM"); do
    curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/channel/create?topic=sub_bench&channel=c$i" >/dev/null
  done
  end=$(date +%s.%N)
  python3 -c "import sys; print(f'# {sys.argv[1]} channels created in {float(sys.argv[3]) - float(sys.argv[2]):.1f} s')" "$NUM" "$start" "$end"
) &
CREATOR=$!
writer "with $NUM channel creations"
wait "$CREATOR"
rm -f "$DATA.log"
