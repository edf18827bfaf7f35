#!/usr/bin/env bash
# Runs the nsq-rs benchmark suite on loopback and prints a summary.
#
# Order (each step bounded by `timeout`):
#   1. tcp_ceiling          raw loopback TCP with the same client loops (the baseline)
#   2. bench_writer         then bench_reader, as NSQ's bench.sh: topic sub_bench, channel ch
#                           (created first over HTTP so the writer's messages reach it);
#                           then again with default flags, so the queue spills to disk
#   3. bench_mem            on a fresh nsqd, with 1 and then 2 channels
#   4. bench_topics         on a fresh nsqd: 10,000 idle topics
#   5. bench_channels       only with BENCH_CHANNELS=1 (needs ulimit -n > NUM_CHANNELS)
#
# Environment (all optional):
#   NSQD_TCP_PORT=4150 NSQD_HTTP_PORT=4151   loopback ports nsqd listens on
#   RUNFOR=10s SIZE=200 BATCH_SIZE=200 RDY=2500
#   MEM_COUNT=1000000 MEM_SIZE=100           bench_mem
#   TOPICS_NUM=10000 IDLE=10s                bench_topics
#   BENCH_CHANNELS=0 NUM_CHANNELS=10000      bench_channels
#   SKIP_BUILD=1                             use already built release binaries
#   CARGO_TARGET_DIR                         where the release binaries are
#   RESULTS_DIR                              where logs go (default: a new temp dir)
#
# Only the nsqd processes this script starts are ever signalled, by PID.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TCP_PORT="${NSQD_TCP_PORT:-4150}"
HTTP_PORT="${NSQD_HTTP_PORT:-4151}"
TCP_ADDR="127.0.0.1:${TCP_PORT}"
HTTP_ADDR="127.0.0.1:${HTTP_PORT}"
RUNFOR="${RUNFOR:-10s}"
SIZE="${SIZE:-200}"
BATCH_SIZE="${BATCH_SIZE:-200}"
RDY="${RDY:-2500}"
MEM_COUNT="${MEM_COUNT:-1000000}"
MEM_SIZE="${MEM_SIZE:-100}"
TOPICS_NUM="${TOPICS_NUM:-10000}"
IDLE="${IDLE:-10s}"
BENCH_CHANNELS="${BENCH_CHANNELS:-0}"
NUM_CHANNELS="${NUM_CHANNELS:-10000}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
RESULTS_DIR="${RESULTS_DIR:-$(mktemp -d -t nsq-bench.XXXXXX)}"
mkdir -p "$RESULTS_DIR"
RESULTS="$RESULTS_DIR/results.txt"
: >"$RESULTS"

NSQD_PID=""
NSQD_DATA=""
NSQD_RUN=0
FAILED=0

log() { echo "# $*" >&2; }

stop_nsqd() {
    if [[ -n "$NSQD_PID" ]]; then
        if kill -0 "$NSQD_PID" 2>/dev/null; then
            kill -TERM "$NSQD_PID" 2>/dev/null || true
            for _ in $(seq 1 100); do
                kill -0 "$NSQD_PID" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$NSQD_PID" 2>/dev/null; then
                log "nsqd $NSQD_PID did not exit on SIGTERM, sending SIGKILL"
                kill -KILL "$NSQD_PID" 2>/dev/null || true
            fi
        fi
        wait "$NSQD_PID" 2>/dev/null || true
        NSQD_PID=""
    fi
    if [[ -n "$NSQD_DATA" ]]; then
        rm -rf "$NSQD_DATA"
        NSQD_DATA=""
    fi
}

cleanup() {
    local rc=$?
    stop_nsqd
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start_nsqd() {
    NSQD_RUN=$((NSQD_RUN + 1))
    for p in "$TCP_PORT" "$HTTP_PORT"; do
        if port_busy "$p"; then
            echo "port $p is already in use; set NSQD_TCP_PORT/NSQD_HTTP_PORT" >&2
            exit 1
        fi
    done
    NSQD_DATA="$(mktemp -d -t nsq-bench-data.XXXXXX)"
    local logf="$RESULTS_DIR/nsqd-$NSQD_RUN.log"
    # Arguments, if any, replace the default --mem-queue-size=100000000 (NSQ's bench.sh also
    # runs nsqd with a memory queue large enough that nothing spills).
    local args=("$@")
    [[ ${#args[@]} -gt 0 ]] || args=(--mem-queue-size=100000000)
    "$BIN/nsqd" "${args[@]}" \
        --tcp-address="$TCP_ADDR" --http-address="$HTTP_ADDR" \
        --data-path="$NSQD_DATA" >"$logf" 2>&1 &
    NSQD_PID=$!
    local deadline=$((SECONDS + 15))
    while ((SECONDS < deadline)); do
        if curl -fsS -m 2 "http://$HTTP_ADDR/ping" >/dev/null 2>&1; then
            log "nsqd started (pid $NSQD_PID, log $logf)"
            return 0
        fi
        if ! kill -0 "$NSQD_PID" 2>/dev/null; then
            echo "nsqd exited during startup; log:" >&2
            cat "$logf" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "nsqd did not answer /ping within 15s; log:" >&2
    cat "$logf" >&2
    exit 1
}

http_post() {
    curl -fsS -m 30 -X POST "http://$HTTP_ADDR$1" >/dev/null
}

# Runs a tool with a time bound, teeing its output into the results file.
run() {
    local limit="$1"
    shift
    echo "\$ $(basename "$1") ${*:2}" | tee -a "$RESULTS"
    if ! timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$RESULTS"; then
        echo "!! $(basename "$1") failed or timed out" | tee -a "$RESULTS"
        FAILED=1
    fi
    echo | tee -a "$RESULTS"
}

# Seconds in a Go duration like 10s / 1m / 500ms (rounded up), for timeouts.
secs() {
    local d="$1"
    if [[ "$d" =~ ^([0-9]+)(\.[0-9]+)?s$ ]]; then
        echo $((BASH_REMATCH[1] + 1))
    elif [[ "$d" =~ ^([0-9]+)m$ ]]; then
        echo $((BASH_REMATCH[1] * 60))
    elif [[ "$d" =~ ^[0-9]+(ms|us|ns)$ ]]; then
        echo 1
    else
        echo 600
    fi
}

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -p nsqd -p nsq-bench)
fi
for b in nsqd tcp_ceiling bench_writer bench_reader bench_mem bench_topics bench_channels; do
    [[ -x "$BIN/$b" ]] || { echo "missing $BIN/$b" >&2; exit 1; }
done

RF=$(secs "$RUNFOR")
log "results in $RESULTS_DIR; $(nproc) cores; runfor $RUNFOR, size $SIZE, batch $BATCH_SIZE"

# 1. Ceiling.
run $((2 * RF + 30)) "$BIN/tcp_ceiling" --runfor="$RUNFOR" --size="$SIZE" --batch-size="$BATCH_SIZE" --rdy="$RDY"

# 2. Writer then reader against one nsqd, as NSQ's bench.sh.
start_nsqd
http_post "/topic/create?topic=sub_bench"
http_post "/channel/create?topic=sub_bench&channel=ch"
run $((RF + 30)) "$BIN/bench_writer" --nsqd-tcp-address="$TCP_ADDR" --runfor="$RUNFOR" --size="$SIZE" --batch-size="$BATCH_SIZE"
run $((RF + 30)) "$BIN/bench_reader" --nsqd-tcp-address="$TCP_ADDR" --runfor="$RUNFOR" --size="$SIZE" --channel=ch --rdy="$RDY"
curl -fsS -m 30 "http://$HTTP_ADDR/stats?format=json&topic=sub_bench" >"$RESULTS_DIR/stats-sub_bench.json" || true
stop_nsqd

# 2b. The same with Go's default flags (--mem-queue-size=10000, --sync-every=2500): the writer
#     runs with no consumer, so everything beyond 10,000 messages spills to the topic log and
#     the reader then drains it from disk.
start_nsqd --mem-queue-size=10000
http_post "/topic/create?topic=sub_bench"
http_post "/channel/create?topic=sub_bench&channel=ch"
echo "# default flags: spilling to disk" | tee -a "$RESULTS"
run $((RF + 30)) "$BIN/bench_writer" --nsqd-tcp-address="$TCP_ADDR" --runfor="$RUNFOR" --size="$SIZE" --batch-size="$BATCH_SIZE"
curl -fsS -m 30 "http://$HTTP_ADDR/stats?format=json&topic=sub_bench" >"$RESULTS_DIR/stats-spill-before.json" || true
echo "nsqd RSS with the queue spilled: $(awk '/VmRSS/ {print $2, $3}' /proc/$NSQD_PID/status)" | tee -a "$RESULTS"
run $((RF + 30)) "$BIN/bench_reader" --nsqd-tcp-address="$TCP_ADDR" --runfor="$RUNFOR" --size="$SIZE" --channel=ch --rdy="$RDY"
stop_nsqd

# 3. Memory per queued message, fresh nsqd each time.
for ch in 1 2; do
    start_nsqd
    run 300 "$BIN/bench_mem" --nsqd-tcp-address="$TCP_ADDR" --nsqd-http-address="$HTTP_ADDR" \
        --pid="$NSQD_PID" --channels="$ch" --count="$MEM_COUNT" --size="$MEM_SIZE" --batch-size="$BATCH_SIZE"
    stop_nsqd
done

# 4. Idle topics.
start_nsqd
run $(($(secs "$IDLE") + 300)) "$BIN/bench_topics" --nsqd-http-address="$HTTP_ADDR" --pid="$NSQD_PID" \
    --num="$TOPICS_NUM" --idle="$IDLE"
stop_nsqd

# 5. Optional: many subscriptions.
if [[ "$BENCH_CHANNELS" == 1 ]]; then
    start_nsqd
    run $((RF + 120)) "$BIN/bench_channels" --nsqd-tcp-address="$TCP_ADDR" --num="$NUM_CHANNELS" \
        --runfor="$RUNFOR" --pid="$NSQD_PID"
    stop_nsqd
fi

echo
echo "================ summary ($(nproc) cores, $(date -u '+%Y-%m-%d %H:%M:%S') UTC) ================"
grep -E 'duration:|\] (pub|sub) (sent|received)|round trip|\] (published|consumed|channel drained)|per message|idle .* CPU|RSS|created|/stats|subscribed|failed' "$RESULTS" || true
echo "full output: $RESULTS"
exit "$FAILED"
