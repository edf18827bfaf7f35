#!/usr/bin/env bash
# Measures the prime job queue's throughput (numbers checked per second) with 1, 2 and N
# workers (N = physical cores), each run on a fresh nsqd.
#
#   cargo build --release -p nsqd -p nsq-primes
#   crates/nsq-primes/scripts/throughput.sh [END] [TARGET_DIR]
#
# END defaults to 1000000 (π = 78498, checked by the tally).
set -euo pipefail
END=${1:-1000000}
BIN=${2:-target}/release
case "$END" in
  100000) EXPECT=9592 ;; 1000000) EXPECT=78498 ;; 10000000) EXPECT=664579 ;; *) EXPECT= ;;
esac
CORES=$(grep -E '^(physical id|core id)' /proc/cpuinfo | paste - - | sort -u | wc -l)
[ "$CORES" -gt 0 ] || CORES=$(nproc)

run() {
  local workers=$1 dir port log
  dir=$(mktemp -d)
  log=$dir/nsqd.log
  "$BIN/nsqd" --tcp-address=127.0.0.1:0 --http-address=127.0.0.1:0 --data-path="$dir" 2>"$log" &
  local nsqd=$!
  for _ in $(seq 100); do grep -q 'TCP: listening on' "$log" && break; sleep 0.05; done
  port=$(grep -o 'TCP: listening on [0-9.:]*' "$log" | awk '{print $4}')
  "$BIN/nsq-primes" produce --nsqd-tcp-address="$port" --end="$END" 2>/dev/null
  "$BIN/nsq-primes" tally --nsqd-tcp-address="$port" --end="$END" ${EXPECT:+--expect=$EXPECT} \
      --status-every=0 >"$dir/tally.out" &
  local tally=$!
  "$BIN/nsq-primes" work --nsqd-tcp-address="$port" --workers="$workers" 2>/dev/null &
  local work=$!
  wait "$tally"
  kill -TERM "$work"; wait "$work" || true
  kill -TERM "$nsqd"; wait "$nsqd" || true
  printf '%2s worker(s): %s\n' "$workers" "$(grep '^throughput' "$dir/tally.out")"
  grep -E '^(range|OK)' "$dir/tally.out" | sed 's/^/              /'
  rm -rf "$dir"
}

echo "range 1..=$END, $CORES physical core(s), $(nproc) logical"
for w in $(printf '%s\n' 1 2 "$CORES" | sort -nu); do run "$w"; done
