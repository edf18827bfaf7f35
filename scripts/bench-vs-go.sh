#!/usr/bin/env bash
# nsqd CPU time per message, nsq-rs against Go nsqd 1.3.0, in the same run on this machine,
# with NSQ's own bench tools (Go's bench_writer / bench_reader from shared/reference).
#
#   bash scripts/bench-vs-go.sh          # builds nsqd (release) unless SKIP_BUILD=1
#
# For each nsqd (Go first, then ours; one at a time, same flags, fresh data dir):
#   start it with --mem-queue-size=100000000 (everything in memory, as NSQ's bench.sh),
#   create topic sub_bench / channel ch over HTTP, run bench_writer (200 B, MPUB 200) for
#   RUNFOR, then bench_reader (RDY 2500) for RUNFOR, and read the nsqd process's utime+stime
#   from /proc/<pid>/stat around each phase. Messages are counted from nsqd's own /stats
#   (topic message_count; consumed = published - depth - in flight).
# Prints msg/s and nsqd CPU ns per message for publish, consume and both, and the ratio.
# Traffic stays on 127.0.0.1; only the nsqd processes started here are signalled, by PID.
#
# Environment: RUNFOR=10s SIZE=200 BATCH_SIZE=200 RDY=2500 REPEAT=1 TCP_PORT=4250
#              HTTP_PORT=4251 GO_DIR=../shared/reference/go-nsq-1.3.0-linux-amd64
# A/B mode: AB_FLAGS="--e2e-processing-latency-percentile=0.99" compares nsq-rs without
# those flags ("nsq-rs", first of each pair) against nsq-rs with them ("nsq-rs+flags"),
# instead of Go against nsq-rs; the ratio line then reads flags / plain.
# A/B mode for a topic policy: AB_TOPIC_CONFIG='{"dedup_window":"10m"}' compares nsq-rs
# against nsq-rs whose topic sub_bench got that JSON (POST /topic/config) after creation
# ("nsq-rs+config"). Both runs then publish with nsq-rs's bench_writer --unique (built
# here), since Go's bench_writer sends identical bodies, which a dedup window would drop.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GO_DIR="${GO_DIR:-$ROOT/../shared/reference/go-nsq-1.3.0-linux-amd64}"
RUNFOR="${RUNFOR:-10s}"
SIZE="${SIZE:-200}"
BATCH_SIZE="${BATCH_SIZE:-200}"
RDY="${RDY:-2500}"
REPEAT="${REPEAT:-1}"
TCP_PORT="${TCP_PORT:-4250}"
HTTP_PORT="${HTTP_PORT:-4251}"
RS_NSQD="${CARGO_TARGET_DIR:-$ROOT/target}/release/nsqd"
TICK="$(getconf CLK_TCK)"

for f in nsqd bench_writer bench_reader; do
  if [ ! -x "$GO_DIR/$f" ]; then
    echo "bench-vs-go: NOT RUN: $GO_DIR/$f is missing (Go NSQ 1.3.0 reference binaries)" >&2
    exit 2
  fi
done
RS_WRITER="${CARGO_TARGET_DIR:-$ROOT/target}/release/bench_writer"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p nsqd)
  if [ -n "${AB_TOPIC_CONFIG:-}" ]; then
    (cd "$ROOT" && cargo build --release -p nsq-bench --bin bench_writer)
  fi
fi

PID=""
DATA=""
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
  fi
  [ -n "$DATA" ] && rm -rf "$DATA"
  PID=""; DATA=""
}
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

stats() {
  curl -s "http://127.0.0.1:$HTTP_PORT/stats?format=json&topic=sub_bench" | python3 -c '
import json, sys
d = json.load(sys.stdin)
d = d.get("data", d)
t = [t for t in d["topics"] if t["topic_name"] == "sub_bench"][0]
c = [c for c in t["channels"] if c["channel_name"] == "ch"][0]
print(t["message_count"], c["depth"] + c["in_flight_count"])
if "dedup" in t:
    print("# dedup:", json.dumps(t["dedup"]), file=sys.stderr)'
}

run_one() { # name binary [extra flags...]; TOPIC_CONFIG=JSON posts it to sub_bench
  local name="$1" bin="$2"
  shift 2
  DATA="$(mktemp -d -t nsq-vs-go.XXXXXX)"
  "$bin" --tcp-address="127.0.0.1:$TCP_PORT" --http-address="127.0.0.1:$HTTP_PORT" \
    --data-path="$DATA" --mem-queue-size=100000000 "$@" >"$DATA.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$HTTP_PORT/ping" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/topic/create?topic=sub_bench" >/dev/null
  curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/channel/create?topic=sub_bench&channel=ch" >/dev/null
  if [ -n "${TOPIC_CONFIG:-}" ]; then
    echo "# $name topic config: $(curl -sf -X POST -d "$TOPIC_CONFIG" "http://127.0.0.1:$HTTP_PORT/topic/config?topic=sub_bench")" >&2
  fi
  local writer=("$GO_DIR/bench_writer")
  if [ -n "${AB_TOPIC_CONFIG:-}" ]; then
    writer=("$RS_WRITER" --unique)
  fi
  local c0 c1 c2 pub left
  c0=$(cpu_ticks "$PID")
  timeout 120 "${writer[@]}" --nsqd-tcp-address="127.0.0.1:$TCP_PORT" \
    --runfor="$RUNFOR" --size="$SIZE" --batch-size="$BATCH_SIZE" 2>&1 | grep -E 'duration' | sed "s/^/# $name writer: /" >&2
  c1=$(cpu_ticks "$PID")
  read -r pub left < <(stats)
  timeout 120 "$GO_DIR/bench_reader" --nsqd-tcp-address="127.0.0.1:$TCP_PORT" \
    --runfor="$RUNFOR" --size="$SIZE" --rdy="$RDY" 2>&1 | grep -E 'duration' | sed "s/^/# $name reader: /" >&2
  c2=$(cpu_ticks "$PID")
  local pub2 left2
  read -r pub2 left2 < <(stats)
  local sub=$((pub2 - left2))
  rm -f "$DATA.log"
  cleanup
  # ns of nsqd CPU per message: ticks * 1e9 / TICK / messages
  python3 - "$name" "$pub" "$sub" "$c0" "$c1" "$c2" "$TICK" <<'EOF'
import sys
name, pub, sub, c0, c1, c2, tick = sys.argv[1], *map(int, sys.argv[2:])
ns = lambda ticks, n: ticks * 1e9 / tick / n if n else float("nan")
print(f"{name}\t{pub}\t{sub}\t{ns(c1 - c0, pub):.0f}\t{ns(c2 - c1, sub):.0f}\t{ns(c2 - c0, pub + sub):.0f}")
EOF
}

echo "# runfor=$RUNFOR size=$SIZE batch=$BATCH_SIZE rdy=$RDY, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
printf 'nsqd\tpublished\tconsumed\tpub ns/msg\tsub ns/msg\ttotal ns/msg\n'
rows=()
for i in $(seq 1 "$REPEAT"); do
  if [ -n "${AB_TOPIC_CONFIG:-}" ]; then
    go=$(run_one "nsq-rs" "$RS_NSQD"); echo "$go"
    rs=$(TOPIC_CONFIG="$AB_TOPIC_CONFIG" run_one "nsq-rs+config" "$RS_NSQD"); echo "$rs"
  elif [ -n "${AB_FLAGS:-}" ]; then
    # shellcheck disable=SC2086 # AB_FLAGS is a list of flags
    go=$(run_one "nsq-rs" "$RS_NSQD"); echo "$go"
    rs=$(run_one "nsq-rs+flags" "$RS_NSQD" $AB_FLAGS); echo "$rs"
  else
    go=$(run_one "go-1.3.0" "$GO_DIR/nsqd"); echo "$go"
    rs=$(run_one "nsq-rs" "$RS_NSQD"); echo "$rs"
  fi
  rows+=("$go" "$rs")
done
printf '%s\n' "${rows[@]}" | python3 -c '
import sys
rows = [l.split("\t") for l in sys.stdin.read().splitlines()]
for i in range(0, len(rows), 2):
    g, r = rows[i], rows[i + 1]
    label = {"nsq-rs+flags": "with flags / without", "nsq-rs+config": "with topic config / without"}.get(r[0], "nsq-rs / Go nsqd")
    print(f"# run {i // 2 + 1}: {label} CPU per message: publish {float(r[3]) / float(g[3]):.2f}x, consume {float(r[4]) / float(g[4]):.2f}x, both {float(r[5]) / float(g[5]):.2f}x")'
