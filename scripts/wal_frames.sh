#!/usr/bin/env bash
# Where an embedded commit's writes go: WAL frames (4 KiB pages) per commit, attributed
# to the table or index each page belongs to. Snapshots of the database and its WAL are
# taken while Evaluates run (see below); the frames since the WAL last restarted are
# read from their headers and mapped to b-trees with SQLite's `dbstat`.
#
#   scripts/wal_frames.sh [SECONDS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-4}"
CONC="${2:-1}"

. scripts/lib/bench_server.sh
"$ARBITER_BIN" bench --addr "http://$ADDR" --duration "$DURATION" --warmup 0 \
  --target evaluate --concurrency "$CONC" > /dev/null &
LOAD=$!
# A WAL restarts whenever a checkpoint has caught up (every 100 ms or so under load),
# so one copy holds only a few commits: copy it every 0.1 s over the second half of
# the run; frames seen in more than one copy count once.
sleep "$(python3 -c "print(max(1.0, $DURATION / 2))")"
SNAPS=()
for i in $(seq 1 15); do
  mkdir -p "$WORK/snap/$i"
  cp "$WORK/data/arbiter.db" "$WORK/snap/$i/a.db"
  cp "$WORK/data/arbiter.db-wal" "$WORK/snap/$i/a.db-wal" 2>/dev/null || true
  SNAPS+=("$WORK/snap/$i/a.db")
  sleep 0.1
done
wait "$LOAD"
python3 scripts/lib/wal_frames.py "$CONC" "${SNAPS[@]}"
