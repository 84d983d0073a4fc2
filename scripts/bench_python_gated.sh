#!/usr/bin/env bash
# The Python gated action (evaluate + record) and the client's own cost (Ping through
# the Python clients next to the Rust client's), on one release server in one run.
# Results go to docs/benchmarks.md ("The gated action from Python").
#
#   PYTHONS="a=path/to/python b=path/to/other/python" scripts/bench_python_gated.sh [DURATION] [ROUNDS]
#
# Each PYTHONS entry is label=interpreter, each with a release build of the package:
#   maturin build --release --manifest-path client-py/Cargo.toml --out dist && pip install dist/*.whl
# Two entries compare two builds of the package: every row runs for each of them back to
# back, the order swapped each round (a b, b a, ...), so drift on a shared machine falls
# on both. ROWS selects rows by label (see the loop at the end). ARBITER_BIN overrides
# the server binary (default: a release build of this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-5}"
ROUNDS="${2:-3}"
read -r -a PYS <<< "${PYTHONS:-py=python3}"
for entry in "${PYS[@]}"; do
  "${entry#*=}" -c "import arbiter" || { echo "install the arbiter package into ${entry#*=} first" >&2; exit 1; }
done

. scripts/lib/bench_server.sh

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: PYTHONS=\"${PYTHONS:-py=python3}\" scripts/bench_python_gated.sh $DURATION $ROUNDS"
rust() { "$ARBITER_BIN" bench --addr "http://$ADDR" --duration "$DURATION" --warmup 2 --json "$@"; }
py() { "$1" client-py/bench/gated.py --addr "$ADDR" --duration "$DURATION" --warmup 2 "${@:2}"; }

# One row: the Rust client first when it has a counterpart, then each package build.
# ROWS="ping-1 ping-32" runs only those rows (default: all).
row() {
  local round="$1" label="$2" rust_args="$3"
  shift 3
  [ -z "${ROWS:-}" ] || [[ " $ROWS " == *" $label "* ]] || return 0
  [ -n "$rust_args" ] && echo "round=$round client=rust $label $(rust $rust_args)"
  local order=("${PYS[@]}")
  if [ $((round % 2)) -eq 0 ]; then
    order=()
    for ((i = ${#PYS[@]} - 1; i >= 0; i--)); do order+=("${PYS[i]}"); done
  fi
  for entry in "${order[@]}"; do
    echo "round=$round client=${entry%%=*} $label $(py "${entry#*=}" "$@")"
  done
}

for entry in "${PYS[@]}"; do
  echo "client=${entry%%=*} prepare $("${entry#*=}" client-py/bench/gated.py --row prepare)"
done
for round in $(seq 1 "$ROUNDS"); do
  row "$round" "ping-1" "--target ping --concurrency 1" --row ping-async --tasks 1
  row "$round" "ping-sync-1" "" --row ping-sync
  row "$round" "ping-32" "--target ping --concurrency 32" --row ping-async --tasks 32
  row "$round" "evaluate-1" "--target evaluate --concurrency 1" --row evaluate-async --tasks 1
  row "$round" "evaluate-sync-1" "" --row evaluate-sync
  row "$round" "gated-sync-1" "--target mixed --concurrency 1" --row gated-sync
  row "$round" "gated-async-32" "--target mixed --concurrency 32" --row gated-async --tasks 32
done
