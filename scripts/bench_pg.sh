#!/usr/bin/env bash
# Evaluate on PostgreSQL with 1 and 3 replicas, same load generator and policy as
# scripts/bench.sh, on a throwaway cluster (scripts/pg-cluster.sh: fsync off, like the
# embedded default's synchronous=NORMAL it survives a crash of Arbiter, not of the
# machine). Results go to stdout as the rows used in docs/benchmarks.md.
#
#   scripts/bench_pg.sh [DURATION_SECONDS] [CONCURRENCY] [budget|nobudget]
#
# `nobudget` drops the budget from the policy, which separates the cost of the
# database-side budget admission (a read of the budget's counter row, checked against
# the caps under the sequencer lock) from the rest of the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arbiter-target}"
DURATION="${1:-10}"
CONC="${2:-32}"
BUDGET="${3:-budget}"

# ARBITER_BIN measures a given binary instead (e.g. an older build, to compare two
# versions in one session on the same machine).
if [ -n "${ARBITER_BIN:-}" ]; then
  BIN="$ARBITER_BIN"
else
  cargo build --release --bin arbiter --locked >&2
  BIN="$CARGO_TARGET_DIR/release/arbiter"
fi
WORK="$(mktemp -d)"
chmod 755 "$WORK"   # the cluster runs as the postgres user
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/pg-cluster.sh stop "$WORK/pg" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/policy.yaml" <<'YAML'
version: 1
agents:
  - id: bench-agent
    tools: {allow: ["bench_tool"]}
budgets:
  - {name: bench-daily, scope: agent, period: day, max_usd: "1000000"}
YAML
if [ "$BUDGET" = "nobudget" ]; then
  sed -i '/^budgets:/,$d' "$WORK/policy.yaml"
fi

BASE="$(scripts/pg-cluster.sh start "$WORK/pg")"
"$BIN" migrate --database "$BASE" >&2

# Starts replica N; every replica shares the key files of replica 1.
start() {
  local n="$1"
  mkdir -p "$WORK/r$n"
  if [ "$n" != 1 ]; then cp -a "$WORK/r1/keys" "$WORK/r$n/keys"; fi
  ARBITER_METRICS__LISTEN=off ARBITER_CONSOLE__LISTEN=off "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/r$n" \
    --database "$BASE" --policy "$WORK/policy.yaml" > "$WORK/r$n.out" 2> "$WORK/r$n.err" &
  PIDS+=("$!")
  for _ in $(seq 1 150); do
    ADDR="$(sed -n 's/^arbiter listening on //p' "$WORK/r$n.out" | head -n1)"
    [ -n "$ADDR" ] && break
    sleep 0.2
  done
  [ -n "${ADDR:-}" ] || { cat "$WORK/r$n.err" >&2; echo "replica $n did not start" >&2; exit 1; }
  echo "http://$ADDR" > "$WORK/r$n.url"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "command: scripts/bench_pg.sh $DURATION $CONC $BUDGET   (PostgreSQL, replicas and load generator share the machine)"
run() { "$BIN" bench --duration "$DURATION" --warmup 2 --target evaluate "$@"; }

start 1
echo "-- 1 replica"
run --addr "$(cat "$WORK/r1.url")" --concurrency "$CONC"
run --addr "$(cat "$WORK/r1.url")" --concurrency 1

start 2
start 3
echo "-- 3 replicas, one load generator each ($((CONC / 3)) clients each, run at the same time)"
LOADS=()
for n in 1 2 3; do
  run --addr "$(cat "$WORK/r$n.url")" --concurrency "$((CONC / 3))" > "$WORK/bench$n.txt" &
  LOADS+=("$!")
done
for p in "${LOADS[@]}"; do wait "$p"; done
for n in 1 2 3; do sed "s/^/replica $n: /" "$WORK/bench$n.txt"; done
"$BIN" audit verify --addr "$(cat "$WORK/r2.url")"
