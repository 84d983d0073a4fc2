# Sourced by scripts/bench.sh, bench_python.sh and bench_python_gated.sh: one
# `arbiter serve` on a fresh data directory with the bench policy (`bench-agent` may call
# `bench_tool` under a daily per-agent USD budget), stopped and removed on exit.
#
# In:  ARBITER_BIN (optional: measure that binary; otherwise a release build of this tree).
# Out: ARBITER_BIN, WORK (the temporary directory), PID (the server), ADDR (host:port).

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arbiter-target}"
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

# Metrics on a free port and the console off: a run binds no fixed port.
ARBITER_METRICS__LISTEN=127.0.0.1:0 ARBITER_CONSOLE__LISTEN=off "$ARBITER_BIN" serve \
  --listen 127.0.0.1:0 --data-dir "$WORK/data" --policy "$WORK/policy.yaml" \
  > "$WORK/stdout" 2> "$WORK/stderr" &
PID=$!
for _ in $(seq 1 100); do
  ADDR="$(sed -n 's/^arbiter listening on //p' "$WORK/stdout" | head -n1)"
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "${ADDR:-}" ] || { cat "$WORK/stderr" >&2; echo "server did not start" >&2; exit 1; }
