#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests, from the installed binaries; never a
# system-wide one. Trust authentication on 127.0.0.1 only, data in a temporary directory.
#
#   scripts/pg-cluster.sh start DIR   initdb + start on a free port; prints the base URL
#                                     (also written to DIR/url)
#   scripts/pg-cluster.sh stop DIR    fast shutdown, then removes DIR
#   scripts/pg-cluster.sh pause DIR   fast shutdown, keeping the data (outage tests)
#   scripts/pg-cluster.sh crash DIR   immediate stop (no checkpoint, like a crash; the next
#                                     start runs WAL recovery), keeping the data
#   scripts/pg-cluster.sh resume DIR  start again on the same port
set -euo pipefail

PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
cmd="${1:?usage: pg-cluster.sh start|stop|pause|crash|resume DIR}"
dir="${2:?usage: pg-cluster.sh start|stop|pause|crash|resume DIR}"

# PostgreSQL refuses to run as root: run it as the postgres user then.
as_pg() {
  if [ "$(id -u)" = "0" ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_ctl_run() {
  local port
  port="$(cat "$dir/port")"
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
    -o "-k $dir -p $port -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" "$@"
}

case "$cmd" in
  start)
    [ -x "$PG_BIN/initdb" ] || { echo "error: no PostgreSQL binaries (initdb) found" >&2; exit 1; }
    mkdir -p "$dir"
    if [ "$(id -u)" = "0" ]; then chown postgres "$dir"; fi
    as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' >"$dir/port"
    pg_ctl_run start >/dev/null
    echo "postgres://postgres@127.0.0.1:$(cat "$dir/port")/postgres" | tee "$dir/url"
    ;;
  pause)
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  crash)
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
    ;;
  resume)
    pg_ctl_run start >/dev/null
    ;;
  stop)
    if [ -d "$dir/data" ]; then
      as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: pg-cluster.sh start|stop|pause|crash|resume DIR" >&2
    exit 2
    ;;
esac
