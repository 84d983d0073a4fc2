#!/usr/bin/env bash
# The property and random-input campaign at a larger size than scripts/test.sh runs it
# (issue 14). scripts/test.sh already runs every property test (256 cases each; fewer
# for the slow ones) and the gRPC random-input run (1200 requests) on each backend.
#
#   scripts/campaign.sh [PROPTEST_CASES] [RANDOM_REQUESTS]
#
# Defaults: 4096 cases per property, 20000 random requests on SQLite. A failing
# property prints its minimal input (and proptest stores it under
# server/proptest-regressions/, which is committed so it is replayed first); a failing
# random run prints ARBITER_RANDOM_SEED=… to replay it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arbiter-target}"
CASES="${1:-4096}"
REQUESTS="${2:-20000}"

cargo build --workspace --bins --locked
echo "==> property tests, $CASES cases each"
PROPTEST_CASES="$CASES" cargo test -p arbiter-server --lib --locked props
echo "==> gRPC random-input run, $REQUESTS requests"
ARBITER_RANDOM_REQUESTS="$REQUESTS" cargo test -p arbiter-e2e --locked -- random_input --nocapture
