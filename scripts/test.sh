#!/usr/bin/env bash
# Runs the whole test suite: the README's "run all tests" command, also used by CI (.ci/run).
#
#   bash scripts/test.sh            # from anywhere inside the repository
#
# Steps (each bounded in time and announced; setup/build failures stop at once, test-suite
# failures are collected so every suite runs, and the script then exits non-zero):
#   1. interop deps: .venv-interop/ with interop/python/requirements.txt (pynsq) and
#      `npm ci` in interop/node (nsqjs), and `npm ci` in crates/nsqadmin/e2e (Playwright for
#      nsqadmin's browser test); each is skipped when already up to date;
#   2. cargo build --workspace --all-targets;
#   3. cargo nextest run --workspace (+ cargo test --doc --workspace), or cargo test --workspace
#      when cargo-nextest is not installed;
#   2b. lints: cargo fmt --check, cargo clippy -D warnings, cargo machete (each NOT RUN, and
#      said so, when its tool is missing);
#   4. scripts/fuzz-smoke.sh: every fuzz target for FUZZ_SECONDS (10) when cargo-fuzz is installed.
# Tests that need Debian's prometheus package (promtool; the Prometheus server) skip that part
# outside CI when it is missing, and are then listed as NOT RUN (under CI=true they fail).
# Extra arguments are passed to the test runner (e.g. a test name filter).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

log() { printf '==> [scripts/test.sh] %s\n' "$*" >&2; }
die() { printf '==> [scripts/test.sh] ERROR: %s\n' "$*" >&2; exit 1; }

# run SECONDS DESCRIPTION CMD... : runs CMD with a time limit and a loud failure message.
run() {
  local secs="$1" what="$2"; shift 2
  local start=$SECONDS rc=0
  log "$what: $*"
  timeout -k 30 "$secs" "$@" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    die "$what: timed out after ${secs}s"
  elif [ "$rc" -ne 0 ]; then
    die "$what: failed with exit code $rc"
  fi
  log "$what: done in $((SECONDS - start))s"
}

# run_test SECONDS DESCRIPTION CMD... : like run, but a failure is recorded and the script
# carries on (so one run reports every failing suite), exiting non-zero at the end.
FAILED=()
run_test() {
  local secs="$1" what="$2"; shift 2
  local start=$SECONDS rc=0
  log "$what: $*"
  timeout -k 30 "$secs" "$@" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    log "FAILED: $what: timed out after ${secs}s"; FAILED+=("$what (timeout)")
  elif [ "$rc" -ne 0 ]; then
    log "FAILED: $what: exit code $rc"; FAILED+=("$what")
  else
    log "$what: passed in $((SECONDS - start))s"
  fi
}

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# ------------------------------------------------------------------------------------------
# 1a. Python interop dependencies (pynsq) in .venv-interop
# ------------------------------------------------------------------------------------------
VENV="$ROOT/.venv-interop"
REQS="$ROOT/interop/python/requirements.txt"
command -v python3 >/dev/null || die "python3 not found (needed for the pynsq interop test)"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  rm -rf "$VENV"
  run 300 "create Python venv $VENV" python3 -m venv "$VENV"
fi
PY_STAMP="$VENV/.nsq-rs-requirements.sha256"
PY_WANT="$(hash_of "$REQS")-$("$VENV/bin/python" -c 'import sys; print(sys.version)' | tr -d ' \n')"
if [ -f "$PY_STAMP" ] && [ "$(cat "$PY_STAMP")" = "$PY_WANT" ] \
    && "$VENV/bin/python" -c 'import nsq, tornado' 2>/dev/null; then
  log "Python interop deps already installed ($VENV)"
else
  run 900 "pip install interop/python/requirements.txt" \
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQS"
  "$VENV/bin/python" -c 'import nsq, tornado; print("pynsq", nsq.__version__, "tornado", tornado.version)' \
    || die "pynsq does not import after installation"
  printf '%s' "$PY_WANT" > "$PY_STAMP"
fi

# ------------------------------------------------------------------------------------------
# 1b. Node interop dependencies (nsqjs) via npm ci
# ------------------------------------------------------------------------------------------
NODE_DIR="$ROOT/interop/node"
command -v node >/dev/null || die "node not found (needed for the nsqjs interop test)"
command -v npm >/dev/null || die "npm not found (needed for the nsqjs interop test)"
NODE_STAMP="$NODE_DIR/node_modules/.nsq-rs-lock.sha256"
NODE_WANT="$(hash_of "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json")-$(node --version)"
if [ -f "$NODE_STAMP" ] && [ "$(cat "$NODE_STAMP")" = "$NODE_WANT" ] \
    && [ -f "$NODE_DIR/node_modules/nsqjs/package.json" ]; then
  log "Node interop deps already installed ($NODE_DIR/node_modules)"
else
  run 900 "npm ci in interop/node" \
    npm --prefix "$NODE_DIR" ci --no-audit --no-fund --loglevel=error
  (cd "$NODE_DIR" && node -e 'require("nsqjs"); console.log("nsqjs", require("nsqjs/package.json").version)') \
    || die "nsqjs does not load after npm ci"
  printf '%s' "$NODE_WANT" > "$NODE_STAMP"
fi

# ------------------------------------------------------------------------------------------
# 1c. nsqadmin's browser-test driver (playwright-core, which launches the system chromium)
# ------------------------------------------------------------------------------------------
E2E_DIR="$ROOT/crates/nsqadmin/e2e"
E2E_STAMP="$E2E_DIR/node_modules/.nsq-rs-lock.sha256"
E2E_WANT="$(hash_of "$E2E_DIR/package.json" "$E2E_DIR/package-lock.json")-$(node --version)"
if [ -f "$E2E_STAMP" ] && [ "$(cat "$E2E_STAMP")" = "$E2E_WANT" ] \
    && [ -f "$E2E_DIR/node_modules/playwright-core/package.json" ]; then
  log "nsqadmin e2e deps already installed ($E2E_DIR/node_modules)"
else
  run 900 "npm ci in crates/nsqadmin/e2e" \
    npm --prefix "$E2E_DIR" ci --no-audit --no-fund --loglevel=error
  (cd "$E2E_DIR" && node -e 'require("playwright-core"); console.log("playwright-core", require("playwright-core/package.json").version)') \
    || die "playwright-core does not load after npm ci"
  printf '%s' "$E2E_WANT" > "$E2E_STAMP"
fi

# ------------------------------------------------------------------------------------------
# 2. Build everything (so the test phase's time is spent testing)
# ------------------------------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found"
run 3600 "cargo build" cargo build --workspace --all-targets

# ------------------------------------------------------------------------------------------
# 2b. Lints: formatting, clippy (warnings are errors), unused dependencies. A failure is
#     recorded like a failing suite; a missing tool is reported as NOT RUN, never as passed.
# ------------------------------------------------------------------------------------------
NOT_RUN=()
if cargo fmt --version >/dev/null 2>&1; then
  run_test 300 "cargo fmt --check" cargo fmt --all --check
else
  log "NOT RUN: cargo fmt --check (rustfmt is not installed: rustup component add rustfmt)"
  NOT_RUN+=("cargo fmt --check")
fi
if cargo clippy --version >/dev/null 2>&1; then
  run_test 1800 "cargo clippy" cargo clippy --workspace --all-targets --quiet -- -D warnings
else
  log "NOT RUN: cargo clippy (clippy is not installed: rustup component add clippy)"
  NOT_RUN+=("cargo clippy")
fi
if cargo machete --version >/dev/null 2>&1; then
  run_test 300 "cargo machete (unused dependencies)" cargo machete
else
  log "NOT RUN: cargo machete (not installed: cargo install cargo-machete; .ci/run installs it)"
  NOT_RUN+=("cargo machete")
fi

# ------------------------------------------------------------------------------------------
# 3. Tests
# ------------------------------------------------------------------------------------------
# The Prometheus tests skip themselves (loudly) outside CI when their binaries are missing:
# count those parts as not run here, never as passed. Under CI=true they fail instead.
if [ "${CI:-}" != "true" ]; then
  if ! command -v "${NSQ_PROMTOOL:-promtool}" >/dev/null 2>&1; then
    log "NOT RUN: promtool check of nsqd's /metrics (promtool missing: apt-get install prometheus)"
    NOT_RUN+=("promtool check metrics")
  fi
  if [ ! -x "${NSQ_PROMETHEUS:-/usr/bin/prometheus}" ]; then
    log "NOT RUN: Prometheus scrape test (prometheus missing: apt-get install prometheus)"
    NOT_RUN+=("Prometheus scrape test")
  fi
fi
# The network-namespace partition test (crates/nsqd/tests/it/netns.rs) needs root and
# `ip netns`; without them it returns after saying NOT RUN, so count it here as not run.
probe="nsqrs-probe-$$"
if [ "$(id -u)" -ne 0 ] || ! ip netns add "$probe" >/dev/null 2>&1; then
  log "NOT RUN: replicated-topic partition test in network namespaces (needs root and iproute2's ip netns)"
  NOT_RUN+=("netns partition test")
else
  ip netns del "$probe" >/dev/null 2>&1 || true
fi
if cargo nextest --version >/dev/null 2>&1; then
  run_test 2700 "cargo nextest run" cargo nextest run --workspace --no-fail-fast "$@"
  run_test 1200 "doc tests" cargo test --doc --workspace --no-fail-fast
else
  log "cargo-nextest not installed; using cargo test"
  run_test 2700 "cargo test" cargo test --workspace --no-fail-fast "$@"
fi

# ------------------------------------------------------------------------------------------
# 4. Fuzz smoke: every cargo-fuzz target for a few seconds (stable toolchain, no sanitizer).
#    The committed corpora are also replayed by each decoder crate's tests above.
# ------------------------------------------------------------------------------------------
if command -v cargo-fuzz >/dev/null 2>&1; then
  run_test 2400 "fuzz smoke" bash scripts/fuzz-smoke.sh "${FUZZ_SECONDS:-10}"
else
  log "NOT RUN: fuzz smoke (cargo-fuzz is not installed; .ci/run installs it; or: cargo install cargo-fuzz)"
  NOT_RUN+=("fuzz smoke")
fi

if [ "${#NOT_RUN[@]}" -gt 0 ]; then
  log "NOT RUN (counted as not run, not as passed): ${NOT_RUN[*]}"
fi
if [ "${#FAILED[@]}" -gt 0 ]; then
  die "test failures in: ${FAILED[*]}"
fi
if [ "${#NOT_RUN[@]}" -gt 0 ]; then
  log "all tests that ran passed; ${#NOT_RUN[@]} step(s) not run (see above)"
else
  log "all tests passed"
fi
