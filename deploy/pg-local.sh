#!/usr/bin/env bash
# A private PostgreSQL cluster in a directory of its own: no system service, no port on the
# network (a Unix socket inside the directory), trust authentication for the socket only.
# Used by deploy/run.sh (the embedded default) and by the tests.
#
#   deploy/pg-local.sh start DIR [postgres -c settings, e.g. log_statement=all]
#   deploy/pg-local.sh stop DIR
#   deploy/pg-local.sh conninfo DIR
#
# `start` creates the cluster on first use (database "sealgate", superuser "sealgate"), starts
# it, waits until it answers, and prints the connection string. PostgreSQL refuses to run as
# root: as root, the cluster belongs to the `postgres` user and runs as it.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|conninfo DIR [setting=value ...]" >&2; exit 2; }
shift 2

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bin/initdb" ] || { echo "$0: PostgreSQL server binaries not found (apt-get install postgresql-15)" >&2; exit 1; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
data=$dir/data
sock=$dir/socket
port=5432 # only names the socket file; nothing listens on TCP

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

conninfo() {
  echo "host=$sock port=$port dbname=sealgate user=sealgate"
}

case "$cmd" in
start)
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    as_owner mkdir -p "$sock"
    as_owner "$bin/initdb" -D "$data" -U sealgate --auth=trust --encoding=UTF8 --no-locale \
      >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    {
      echo "listen_addresses = ''"
      echo "unix_socket_directories = '$sock'"
      echo "port = $port"
      echo "unix_socket_permissions = 0700"
      echo "fsync = on"
      echo "synchronous_commit = on"
    } | as_owner tee -a "$data/postgresql.conf" >/dev/null
  fi
  opts=""
  for setting in "$@"; do
    opts="$opts -c $setting"
  done
  if ! as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_owner "$bin/pg_ctl" -D "$data" -l "$dir/postgresql.log" -w -t 60 -o "$opts" start \
      >/dev/null || { tail -n 20 "$dir/postgresql.log" >&2; exit 1; }
  fi
  if ! "$bin/psql" -h "$sock" -p "$port" -U sealgate -d postgres -XtAc \
      "SELECT 1 FROM pg_database WHERE datname = 'sealgate'" | grep -q 1; then
    "$bin/psql" -h "$sock" -p "$port" -U sealgate -d postgres -Xqc "CREATE DATABASE sealgate"
  fi
  conninfo
  ;;
stop)
  if [ -f "$data/PG_VERSION" ]; then
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
  fi
  ;;
conninfo)
  conninfo
  ;;
*)
  echo "usage: $0 start|stop|conninfo DIR [setting=value ...]" >&2
  exit 2
  ;;
esac
