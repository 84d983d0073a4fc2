#!/usr/bin/env bash
# The SQLite WAL under sustained load: Evaluate at the closed-loop maximum for
# DURATION seconds against one release server, the WAL's size sampled every
# 0.5 s (max and last), the load's p50/p99, then the WAL left after a clean stop
# (SIGTERM). The bound it checks by eye: ≤ 64 MiB at all times, none after the stop
# (ARCHITECTURE.md, store room). Not run by CI.
#
#   scripts/wal.sh [DURATION_SECONDS=60] [CONCURRENCY=32]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arbiter-target}"
DURATION="${1:-60}"
CONC="${2:-32}"

if [ -n "${ARBITER_BIN:-}" ]; then
  BIN="$ARBITER_BIN"
else
  cargo build --release --bin arbiter --locked >&2
  BIN="$CARGO_TARGET_DIR/release/arbiter"
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

"$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" --policy "$WORK/policy.yaml" \
  > "$WORK/stdout" 2> "$WORK/stderr" &
PID=$!
for _ in $(seq 1 100); do
  ADDR="$(sed -n 's/^arbiter listening on //p' "$WORK/stdout" | head -n1)"
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "${ADDR:-}" ] || { cat "$WORK/stderr" >&2; echo "server did not start" >&2; exit 1; }

DB="$WORK/data/arbiter.db"
size() { stat -c %s "$1" 2>/dev/null || echo 0; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "command: scripts/wal.sh $DURATION $CONC   (load generator and server share the machine)"
"$BIN" bench --addr "http://$ADDR" --target evaluate --concurrency "$CONC" \
  --duration "$DURATION" --warmup 0 --json > "$WORK/bench.json" &
LOAD=$!
MAX=0
SAMPLES=0
while kill -0 "$LOAD" 2>/dev/null; do
  W="$(size "$DB-wal")"
  [ "$W" -gt "$MAX" ] && MAX="$W"
  SAMPLES=$((SAMPLES + 1))
  sleep 0.5
done
wait "$LOAD"
echo "load: $(cat "$WORK/bench.json")"
echo "WAL during the run: max $(mib "$MAX") MiB over $SAMPLES samples, at the end $(mib "$(size "$DB-wal")") MiB; DB $(mib "$(size "$DB")") MiB"
kill -TERM "$PID"
wait "$PID" || true
echo "after a clean stop: WAL $(mib "$(size "$DB-wal")") MiB, DB $(mib "$(size "$DB")") MiB"
