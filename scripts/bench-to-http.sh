#!/usr/bin/env bash
# nsq_to_http throughput to a local HTTP(S) endpoint (BENCHMARKS.md, "nsq_to_http: keep-alive
# and HTTPS"), loopback only, bounded by N messages.
#
#   scripts/bench-to-http.sh NSQD NSQ_TO_HTTP HTTP_SINK [http|https] [N]
#
# Per run: a fresh nsqd (own data dir, free ports), N messages of 100 bytes published with one
# /mpub into topic `bench` (channel `nsq_to_http` created first), the sink
# (`cargo build --release -p nsq-http-client --features testing --example http_sink`) on a free
# port, then `nsq_to_http --post=<sink>/in -n 100 --status-every=0` (+ the sink's CA with
# https). The sink prints requests/s from its first request to its Nth and how many TCP
# connections carried them. Only the processes this script starts are signalled, by PID.
set -euo pipefail

NSQD="$1"
TOOL="$2"
SINK="$3"
SCHEME="${4:-http}"
N="${5:-20000}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$NSQD" --tcp-address=127.0.0.1:0 --http-address=127.0.0.1:0 --data-path="$WORK" \
    --mem-queue-size=100000 >"$WORK/nsqd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    grep -q "HTTP: listening on" "$WORK/nsqd.log" && grep -q "TCP: listening on" "$WORK/nsqd.log" && break
    sleep 0.05
done
HTTP=$(grep -o "HTTP: listening on [0-9.:]*" "$WORK/nsqd.log" | awk '{print $4}')
TCP=$(grep -o "TCP: listening on [0-9.:]*" "$WORK/nsqd.log" | awk '{print $4}')
curl -sf -X POST "http://$HTTP/topic/create?topic=bench" >/dev/null
curl -sf -X POST "http://$HTTP/channel/create?topic=bench&channel=nsq_to_http" >/dev/null
python3 -c "import sys; sys.stdout.write('\n'.join('%0100d' % i for i in range($N)))" >"$WORK/body"
curl -sf -X POST --data-binary @"$WORK/body" "http://$HTTP/mpub?topic=bench" >/dev/null

"$SINK" "$N" "$SCHEME" >"$WORK/sink.out" &
SINK_PID=$!
PIDS+=($SINK_PID)
for _ in $(seq 100); do grep -q listening "$WORK/sink.out" && break; sleep 0.05; done
URL=$(awk '/listening/ {print $2}' "$WORK/sink.out")
CA=()
if [ "$SCHEME" = https ]; then
    CA=("--http-client-tls-root-ca-file=$(awk '/listening/ {print $4}' "$WORK/sink.out")")
fi
"$TOOL" --topic=bench --nsqd-tcp-address="$TCP" --post="$URL/in" -n 100 --status-every=0 \
    "${CA[@]}" 2>"$WORK/tool.err" &
PIDS+=($!)
wait "$SINK_PID" || true
tail -n 1 "$WORK/sink.out"
