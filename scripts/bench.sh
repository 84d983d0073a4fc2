#!/usr/bin/env bash
# Evaluate (full pipeline, durable audit, embedded SQLite) against the empty Ping RPC,
# served by the same release binary in the same run. Results go to stdout as the
# table used in docs/benchmarks.md.
#
#   scripts/bench.sh [DURATION_SECONDS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONC="${2:-32}"

# ARBITER_BIN measures a given binary instead (e.g. an older build, to compare two
# versions in one session on the same machine).
. scripts/lib/bench_server.sh
BIN="$ARBITER_BIN"
URL="http://$ADDR"

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "command: scripts/bench.sh $DURATION $CONC   (load generator and server share the machine)"
run() { "$BIN" bench --addr "$URL" --duration "$DURATION" --warmup 2 "$@"; }
run --target ping --concurrency "$CONC"
EVAL="$(run --target evaluate --concurrency "$CONC" --json)"
echo "$EVAL" | sed 's/^/evaluate closed: /'
TPUT="$(echo "$EVAL" | sed -n 's/.*"throughput":\([0-9.]*\).*/\1/p')"
HALF="$(python3 -c "print(max(1, int(float('$TPUT') / 2)))")"
run --target evaluate --concurrency 256 --rate "$HALF"
run --target evaluate --concurrency 1
# What one Evaluate costs the server, from /proc around a run without warm-up (so every
# request the server served is counted): CPU time, context switches of all its threads,
# bytes it wrote (WAL, pages, temp files).
proc_sample() {
  local ticks switches
  ticks="$(awk '{print $14 + $15}' "/proc/$PID/stat")"
  switches="$(cat /proc/"$PID"/task/*/status | awk '/ctxt_switches/ {n += $2} END {print n}')"
  echo "$ticks $switches $(awk '/^write_bytes/ {print $2}' "/proc/$PID/io")"
}
per_evaluate() {
  local before after out ok
  before="$(proc_sample)"
  out="$("$BIN" bench --addr "$URL" --duration 5 --warmup 0 --target evaluate --concurrency "$1" --json)"
  after="$(proc_sample)"
  ok="$(echo "$out" | sed -n 's/.*"ok":\([0-9]*\).*/\1/p')"
  python3 - "$1" "$ok" $before $after <<'PY'
import os, sys
conc, ok = sys.argv[1], int(sys.argv[2])
t0, s0, w0, t1, s1, w1 = map(int, sys.argv[3:9])
tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
print(f"per evaluate, {conc} client(s), {ok} requests: server CPU {(t1 - t0) * tick_us / ok:.0f} us, "
      f"context switches {(s1 - s0) / ok:.1f}, bytes written {(w1 - w0) / ok / 1024:.1f} KiB")
PY
}
per_evaluate 1
per_evaluate 32
ENTRIES="$(sqlite3 "$WORK/data/arbiter.db" 'select count(*) from audit_entries' 2>/dev/null || echo '?')"
echo "audit entries written: $ENTRIES"
