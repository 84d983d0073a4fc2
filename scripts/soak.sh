#!/usr/bin/env bash
# Soak: mixed load against one release server for a long time, reporting per interval
# the throughput and latency of gated actions (Evaluate + Record, 1 in 16 a logged
# DENY), the server's RSS, open file descriptors, threads, and the database and WAL
# sizes, plus an `audit verify` at the end. Flat is the goal. Not run by CI.
#
#   scripts/soak.sh [MINUTES=30] [RATE=500] [INTERVAL_SECONDS=60]
#
# A fixed offered rate (not a closed loop) so that the figures show drift, not the
# noise of a shared machine. Control-plane reads (budgets, halts, approvals, agents,
# audit query) run between intervals, as an operator's console would.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arbiter-target}"
MINUTES="${1:-30}"
RATE="${2:-500}"
INTERVAL="${3:-60}"

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
  - {name: bench-session, scope: session, period: lifetime, max_usd: "1000000"}
YAML

ARBITER_METRICS__LISTEN=127.0.0.1:0 ARBITER_CONSOLE__LISTEN=off "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" \
  --policy "$WORK/policy.yaml" > "$WORK/stdout" 2> "$WORK/stderr" &
PID=$!
for _ in $(seq 1 100); do
  ADDR="$(sed -n 's/^arbiter listening on //p' "$WORK/stdout" | head -n1)"
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "${ADDR:-}" ] || { cat "$WORK/stderr" >&2; echo "server did not start" >&2; exit 1; }
URL="http://$ADDR"
DB="$WORK/data/arbiter.db"

size() { stat -c %s "$1" 2>/dev/null || echo 0; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "command: scripts/soak.sh $MINUTES $RATE $INTERVAL   (load generator and server share the machine)"
echo "| minute | gated actions/s | p50 ms | p99 ms | errors | RSS MiB | fds | threads | DB MiB | WAL MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|"
START=$(date +%s)
END=$((START + MINUTES * 60))
while [ "$(date +%s)" -lt "$END" ]; do
  OUT="$("$BIN" bench --addr "$URL" --target mixed --rate "$RATE" --concurrency 64 \
    --duration "$INTERVAL" --warmup 0 --json)"
  for cmd in "budget bench-agent" "halts" "approvals list" "agents" "audit query --limit 100"; do
    # shellcheck disable=SC2086
    "$BIN" $cmd --addr "$URL" > /dev/null
  done
  field() { echo "$OUT" | sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }
  RSS_KB="$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")"
  FDS="$(ls "/proc/$PID/fd" | wc -l)"
  THREADS="$(awk '/Threads/ {print $2}' "/proc/$PID/status")"
  MIN="$(awk -v s="$(( $(date +%s) - START ))" 'BEGIN { printf "%.1f", s / 60 }')"
  printf '| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$MIN" "$(field throughput)" \
    "$(field p50_ms)" "$(field p99_ms)" "$(field errors)" "$(mib $((RSS_KB * 1024)))" "$FDS" "$THREADS" \
    "$(mib "$(size "$DB")")" "$(mib "$(size "$DB-wal")")"
done
echo
# Verifying a long soak's log takes minutes: give the call the time it needs.
"$BIN" audit verify --addr "$URL" --timeout 3600
kill -TERM "$PID"
wait "$PID" || true
echo "after a clean stop: WAL $(mib "$(size "$DB-wal")") MiB, DB $(mib "$(size "$DB")") MiB"
