#!/usr/bin/env bash
# A worker pool on one channel: CONSUMERS connections with RDY 1 each (as the prime workers
# or any job queue), one publisher pacing RATE single PUBs per second (bench_latency). Prints
# nsqd's CPU time per message (utime+stime from /proc/<pid>/stat over the run) and the
# publish -> deliver latency. This is where waking every idle consumer per publish (a
# thundering herd) shows: CPU per message grows with the number of idle consumers.
#
#   bash scripts/bench-worker-pool.sh                 # builds release nsqd + bench_latency
#   NSQD_BIN=/path/to/nsqd SKIP_BUILD=1 bash scripts/bench-worker-pool.sh
#
# Environment: CONSUMERS=100 RATE=20000 RUNFOR=10s TCP_PORT=4350 HTTP_PORT=4351
#              NSQD_BIN (default target/release/nsqd; Go's nsqd works too)
# Traffic stays on 127.0.0.1; only the nsqd started here is signalled, by PID.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
CONSUMERS="${CONSUMERS:-100}"
RATE="${RATE:-20000}"
RUNFOR="${RUNFOR:-10s}"
TCP_PORT="${TCP_PORT:-4350}"
HTTP_PORT="${HTTP_PORT:-4351}"
NSQD_BIN="${NSQD_BIN:-$TARGET/release/nsqd}"
TICK="$(getconf CLK_TCK)"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p nsqd -p nsq-bench --bin nsqd --bin bench_latency)
fi
ulimit -n 4096 2>/dev/null || true

PID=""
DATA="$(mktemp -d -t nsq-pool.XXXXXX)"
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
  fi
  rm -rf "$DATA"
}
trap cleanup EXIT

"$NSQD_BIN" --tcp-address="127.0.0.1:$TCP_PORT" --http-address="127.0.0.1:$HTTP_PORT" \
  --data-path="$DATA" --log-level=warn >"$DATA/nsqd.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$HTTP_PORT/ping" >/dev/null 2>&1 && break
  sleep 0.1
done
c0=$(awk '{print $14 + $15}' "/proc/$PID/stat")
"$TARGET/release/bench_latency" --nsqd-tcp-address="127.0.0.1:$TCP_PORT" \
  --topic=pool_bench --channel=workers --consumers="$CONSUMERS" --rdy=1 \
  --rate="$RATE" --runfor="$RUNFOR" --size=100 | tee "$DATA/out.txt"
c1=$(awk '{print $14 + $15}' "/proc/$PID/stat")
sent=$(sed -n 's/.*published \([0-9]*\) msgs.*/\1/p' "$DATA/out.txt")
python3 - "$sent" "$c0" "$c1" "$TICK" "$CONSUMERS" <<'PY'
import sys
sent, c0, c1, tick, n = map(int, sys.argv[1:])
cpu = (c1 - c0) / tick
print(f"[worker-pool] {n} consumers, RDY 1: nsqd CPU {cpu:.2f} s for {sent} msgs "
      f"= {cpu * 1e9 / sent:.0f} ns/msg")
PY
