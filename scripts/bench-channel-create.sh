#!/usr/bin/env bash
# Durable mode: does creating many channels on a topic stall its publishers?
#
#   bash scripts/bench-channel-create.sh      # SKIP_BUILD=1 to use target/release as is
#
# Starts nsqd with --mem-queue-size=0 (every message through the topic log; each channel's
# journal creation costs two fsyncs) on a data dir under the repository's target/, then runs
# bench_writer (200 B, MPUB 200) on topic sub_bench for RUNFOR three times: with one channel;
# while NUM channels are created on the same topic over HTTP, one after another; and again
# once those NUM channels exist (so the cost of handing each batch to NUM+1 channels is told
# apart from the cost of creating them). Prints each run's MPUB latency percentiles and how
# long the creations took. Channels are emptied between runs. Loopback only; only the nsqd
# started here is signalled, by PID.
#
# Environment: RUNFOR=10s NUM=1000 TCP_PORT=4350 HTTP_PORT=4351 DATA_PARENT=<dir for the data
# dir> (default target/; /dev/shm tells disk stalls apart from nsqd's own)
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
DATA="$(mktemp -d -p "${DATA_PARENT:-${CARGO_TARGET_DIR:-$ROOT/target}}" bench-channels.XXXXXX)"
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
# One keep-alive HTTP connection from one process, so the creator costs the machine little
# (a curl per channel forks a process each time and competes with the publishers for CPU).
python3 - "$HTTP_PORT" "$NUM" <<'PY' &
import http.client, sys, time
port, num = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
start = time.monotonic()
slowest = 0.0
for i in range(1, num + 1):
    t = time.monotonic()
    c.request("POST", f"/channel/create?topic=sub_bench&channel=c{i}")
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
    slowest = max(slowest, time.monotonic() - t)
print(f"# {num} channels created in {time.monotonic() - start:.1f} s (slowest {slowest * 1000:.1f} ms)")
PY
CREATOR=$!
writer "with $NUM channel creations"
wait "$CREATOR"
for i in $(seq 0 "$NUM"); do
  c="c$i"; [ "$i" = 0 ] && c=ch
  curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/channel/empty?topic=sub_bench&channel=$c" >/dev/null
done
writer "with $NUM channels already there"
# Empty again so the stop has little to export.
for i in $(seq 0 "$NUM"); do
  c="c$i"; [ "$i" = 0 ] && c=ch
  curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/channel/empty?topic=sub_bench&channel=$c" >/dev/null
done
rm -f "$DATA.log"
