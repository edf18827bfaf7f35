#!/usr/bin/env bash
# A short fuzz run of every cargo-fuzz target (the CI fuzz smoke; long runs are in
# docs/FUZZING.md). Works on the stable toolchain: `-s none` needs no sanitizer, so no nightly.
#
#   bash scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]     # default 5
#
# New inputs go to a temporary directory (the committed corpus is only read), so the tree
# stays clean. Exits non-zero if any target finds a crash; the crashing input is left in
# fuzz/artifacts/<target>/ and its path printed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
SECS="${1:-5}"
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2; exit 2; }
targets=$(cargo fuzz list)
echo "==> [fuzz-smoke] building $(echo "$targets" | wc -l) targets"
timeout -k 30 1800 cargo fuzz build -s none
failed=()
for t in $targets; do
  tmp=$(mktemp -d -t "fuzz-$t.XXXXXX")
  seeds=()
  [ -d "corpus/$t" ] && seeds+=("corpus/$t")
  [ -d "regressions/$t" ] && seeds+=("regressions/$t")
  if timeout -k 30 $((SECS + 120)) cargo fuzz run -s none "$t" "$tmp" "${seeds[@]}" -- \
      -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$tmp.log" 2>&1; then
    echo "==> [fuzz-smoke] $t: $(grep -m1 '^stat::number_of_executed_units' "$tmp.log" | awk '{print $2}') executions, no crash"
  else
    echo "==> [fuzz-smoke] $t: FAILED"; tail -n 30 "$tmp.log"; failed+=("$t")
  fi
  rm -rf "$tmp" "$tmp.log"
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "==> [fuzz-smoke] crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "==> [fuzz-smoke] all targets ran ${SECS}s without a crash"
