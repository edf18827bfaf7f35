#!/usr/bin/env bash
# Refreshes the UI screenshots kept in crates/nsqadmin/docs/*.png (shown by the READMEs).
#
#   bash crates/nsqadmin/docs/update-screenshots.sh
#
# Runs the browser test (tests/it/browser.rs: a live nsqlookupd + 2 nsqds, headless Debian
# Chromium driven by Playwright) with NSQADMIN_SCREENSHOTS_DIR pointing here. The test itself
# writes to target/tmp by default, so an ordinary test run never touches the tracked PNGs.
# Needs /usr/bin/chromium, Node.js, and `npm ci` in crates/nsqadmin/e2e (done below).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
crate="$(dirname "$here")"
command -v chromium >/dev/null || [ -x /usr/bin/chromium ] \
  || { echo "chromium not found: apt-get install chromium" >&2; exit 1; }
if [ ! -f "$crate/e2e/node_modules/playwright-core/package.json" ]; then
  timeout -k 30 600 npm --prefix "$crate/e2e" ci --no-audit --no-fund --loglevel=error
fi
cd "$crate"
# CI=true makes a missing prerequisite a failure instead of a skip.
CI=true NSQADMIN_SCREENSHOTS_DIR="$here" timeout -k 30 900 \
  cargo test -p nsqadmin --test it -- --exact browser::browser_pages_actions_dead_node_and_screenshots
ls -l "$here"/*.png
