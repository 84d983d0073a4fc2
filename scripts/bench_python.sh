#!/usr/bin/env bash
# Python `evaluate` round trips against the Rust client's, on the same release server in
# the same run (SPEC §10: Python within 1.3x of Rust). Results go to docs/benchmarks.md.
#
#   PYTHON=path/to/python scripts/bench_python.sh [DURATION_SECONDS]
#
# PYTHON must have a release build of the package installed:
#   maturin build --release --manifest-path client-py/Cargo.toml --out dist && pip install dist/*.whl
# ARBITER_BIN overrides the server binary (default: a release build of this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c "import arbiter" || { echo "install the arbiter package into $PYTHON first" >&2; exit 1; }

. scripts/lib/bench_server.sh

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "command: scripts/bench_python.sh $DURATION   (clients and server share the machine)"
rust() { "$ARBITER_BIN" bench --addr "http://$ADDR" --target evaluate --duration "$DURATION" --warmup 2 --json "$@"; }
py() { "$PYTHON" client-py/bench/evaluate.py --addr "$ADDR" --duration "$DURATION" --warmup 2 "$@"; }
for conc in 1 16; do
  echo "rust  c=$conc: $(rust --concurrency "$conc")"
  echo "sync  c=$conc: $(py --mode sync --concurrency "$conc")"
  echo "async c=$conc: $(py --mode async --concurrency "$conc")"
done
