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
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arbiter-target}"
DURATION="${1:-10}"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c "import arbiter" || { echo "install the arbiter package into $PYTHON first" >&2; exit 1; }

if [ -z "${ARBITER_BIN:-}" ]; then
  cargo build --release --bin arbiter --locked >&2
  ARBITER_BIN="$CARGO_TARGET_DIR/release/arbiter"
fi
WORK="$(mktemp -d)"
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT

cat > "$WORK/policy.yaml" <<'YAML'
version: 1
agents:
  - id: bench-agent
    tools: {allow: ["bench_tool"]}
budgets:
  - {name: bench-daily, scope: agent, period: day, max_usd: "1000000"}
YAML

"$ARBITER_BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" --policy "$WORK/policy.yaml" \
  > "$WORK/stdout" 2> "$WORK/stderr" &
PID=$!
for _ in $(seq 1 100); do
  ADDR="$(sed -n 's/^arbiter listening on //p' "$WORK/stdout" | head -n1)"
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "${ADDR:-}" ] || { cat "$WORK/stderr" >&2; echo "server did not start" >&2; exit 1; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "command: scripts/bench_python.sh $DURATION   (clients and server share the machine)"
rust() { "$ARBITER_BIN" bench --addr "http://$ADDR" --target evaluate --duration "$DURATION" --warmup 2 --json "$@"; }
py() { "$PYTHON" client-py/bench/evaluate.py --addr "$ADDR" --duration "$DURATION" --warmup 2 "$@"; }
for conc in 1 16; do
  echo "rust  c=$conc: $(rust --concurrency "$conc")"
  echo "sync  c=$conc: $(py --mode sync --concurrency "$conc")"
  echo "async c=$conc: $(py --mode async --concurrency "$conc")"
done
