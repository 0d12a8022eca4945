#!/usr/bin/env bash
# A whole sealgate cluster on this machine, in one directory, for trying failover and for the
# cluster tests (tests/cluster): SPEC §6's "several stateless gateway nodes behind an HTTP/2
# load balancer, one PostgreSQL cluster".
#
#   deploy/local-cluster.sh up DIR            create (first time) and start everything
#   deploy/local-cluster.sh down DIR          stop everything started here (safe to repeat)
#   deploy/local-cluster.sh status DIR        what runs (exit 0 if everything does)
#   deploy/local-cluster.sh env DIR           print DIR/cluster.env (addresses, ports, paths)
#   deploy/local-cluster.sh stop-primary DIR [fast|immediate]   stop the PostgreSQL primary
#   deploy/local-cluster.sh promote DIR       promote the replica (waits until it writes)
#   deploy/local-cluster.sh stop-node DIR N   SIGTERM gateway node N (1-3), bounded wait
#   deploy/local-cluster.sh start-node DIR N  start gateway node N again
#
# What runs, all on loopback:
#   - PostgreSQL 15: a primary (DIR/pg1) and a streaming replica (DIR/pg2, pg_basebackup -R,
#     user "replicator"). Both listen on Unix sockets only (DIR/pgN/socket, listen_addresses
#     ''), so trust authentication reaches no one but root and postgres. Synchronous
#     replication is set on the primary's command line only (synchronous_standby_names='*',
#     synchronous_commit=on): an acknowledged commit is on the replica, and a promoted replica
#     does not wait for a standby it lacks.
#   - `sealgate migrate`, then three gateway nodes (`sealgate serve`, h2c on their own ports,
#     --threads 2), with one root key (DIR/root.key) and one proxy CA (made by node 1, copied
#     into DIR/node2 and DIR/node3). Their --db lists both PostgreSQL servers with
#     target_session_attrs=read-write, so they follow a promotion without a restart. Node 1
#     also runs the egress proxy (--proxy-allow-cidr 127.0.0.0/8, plus the words of
#     $SEALGATE_CLUSTER_PROXY_FLAGS, remembered for later starts); nodes 2 and 3 advertise
#     node 1's proxy in sandboxes.
#     Extra flags for every node: $SEALGATE_CLUSTER_NODE_FLAGS.
#   - nginx in front (DIR/nginx): HTTP/2 cleartext listener, grpc_pass to the three nodes.
#     A request nginx could not deliver (connect refused, reset before any response) moves to
#     the next node only when that is safe: `grpc_next_upstream error timeout` without
#     non_idempotent, since every gRPC call is a POST and a SetSecret sent twice makes two
#     versions. What nginx cannot retry, the client may (UNAVAILABLE; a retry policy for its
#     idempotent calls).
#
# `up` waits (bounded) until every node and nginx answer grpc.health.v1, then, the first time,
# creates an organization and writes its API key to DIR/api-key (mode 0600; never printed) and
# its id to DIR/org-id. Addresses go to DIR/cluster.env (KEY=value lines, shell-sourceable).
#
# Binaries: $SEALGATE_BIN (default build/server/sealgate), $SEALCTL_BIN (default: sealctl in
# the same build dir's client/). As root, PostgreSQL runs as the `postgres` user.
set -euo pipefail

usage() {
  echo "usage: $0 up|down|status|env|stop-primary|promote|stop-node|start-node DIR [ARG]" >&2
  exit 2
}

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || usage
shift 2

repo=$(cd "$(dirname "$0")/.." && pwd)
sealgate=${SEALGATE_BIN:-$repo/build/server/sealgate}
sealctl=${SEALCTL_BIN:-$(dirname "$(dirname "$sealgate")")/client/sealctl}
pgbin=/usr/lib/postgresql/15/bin
[ -x "$pgbin/initdb" ] || pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)

START_WAIT_S=${SEALGATE_CLUSTER_START_WAIT:-60}
STOP_GRACE_S=${SEALGATE_CLUSTER_STOP_GRACE:-10}

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
envfile=$dir/cluster.env

say() { echo "local-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# --- ports and the environment file ----------------------------------------------------------

# N free TCP ports on 127.0.0.1 (bound all at once, so they differ; released before use).
free_ports() {
  /usr/bin/python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

load_env() {
  [ -f "$envfile" ] || die "$envfile not found: run '$0 up $dir' first"
  # shellcheck disable=SC1090
  . "$envfile"
}

write_env() {
  local ports
  read -r -a ports <<<"$(free_ports 7)"
  local pg1=${ports[0]} pg2=${ports[1]}
  local tmp=$envfile.tmp
  {
    echo "CLUSTER_DIR=$dir"
    echo "PG_PRIMARY_DATA=$dir/pg1/data"
    echo "PG_PRIMARY_SOCKET=$dir/pg1/socket"
    echo "PG_PRIMARY_PORT=$pg1"
    echo "PG_REPLICA_DATA=$dir/pg2/data"
    echo "PG_REPLICA_SOCKET=$dir/pg2/socket"
    echo "PG_REPLICA_PORT=$pg2"
    # Both servers, the writable one wins: a reconnect after a promotion finds the new primary.
    echo "SEALGATE_DB='host=$dir/pg1/socket,$dir/pg2/socket port=$pg1,$pg2 dbname=sealgate" \
      "user=sealgate target_session_attrs=read-write connect_timeout=3'"
    echo "NODE1_GRPC=127.0.0.1:${ports[2]}"
    echo "NODE2_GRPC=127.0.0.1:${ports[3]}"
    echo "NODE3_GRPC=127.0.0.1:${ports[4]}"
    echo "NODE1_PROXY=127.0.0.1:${ports[5]}"
    echo "NGINX_GRPC=127.0.0.1:${ports[6]}"
    echo "ROOT_KEY_FILE=$dir/root.key"
    echo "API_KEY_FILE=$dir/api-key"
    echo "ORG_ID_FILE=$dir/org-id"
  } >"$tmp"
  mv "$tmp" "$envfile"
}

# --- processes ---------------------------------------------------------------------------------

# Is pid file $1's process alive and running a command line that contains $2?
alive() {
  local pidfile=$1 want=$2 pid
  [ -f "$pidfile" ] || return 1
  pid=$(head -n 1 "$pidfile" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$want"
}

# Sends TERM to pid file $1's process (if it is still $2), waits up to STOP_GRACE_S, then
# KILL; removes the pid file.
stop_pid() {
  local pidfile=$1 want=$2 what=$3 pid i
  if alive "$pidfile" "$want"; then
    pid=$(head -n 1 "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_GRACE_S * 10; i++)); do
      alive "$pidfile" "$want" || break
      sleep 0.1
    done
    if alive "$pidfile" "$want"; then
      say "$what (pid $pid) did not stop within ${STOP_GRACE_S}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        alive "$pidfile" "$want" || break
        sleep 0.1
      done
    fi
  fi
  rm -f "$pidfile"
}

# Polls "$@" until it succeeds, at most $1 seconds. Returns its last status.
wait_for() {
  local seconds=$1 i
  shift
  for ((i = 0; i < seconds * 10; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  "$@" >/dev/null 2>&1
}

health() { "$sealctl" health --addr "$1" --deadline 2; }

# --- PostgreSQL --------------------------------------------------------------------------------

pg_running() { as_pg "$pgbin/pg_ctl" -D "$1" status >/dev/null 2>&1; }

psql_primary() {
  # Session-level synchronous_commit=local: set-up statements run before any standby is
  # attached must not wait for one.
  PGOPTIONS='-c synchronous_commit=local' "$pgbin/psql" -h "$PG_PRIMARY_SOCKET" \
    -p "$PG_PRIMARY_PORT" -U sealgate -d postgres -XtAq -v ON_ERROR_STOP=1 "$@"
}

start_primary() {
  pg_running "$PG_PRIMARY_DATA" && return 0
  as_pg "$pgbin/pg_ctl" -D "$PG_PRIMARY_DATA" -l "$dir/pg1/postgresql.log" -w -t 60 \
    -o "-c synchronous_standby_names='*' -c synchronous_commit=on" start >/dev/null ||
    { tail -n 20 "$dir/pg1/postgresql.log" >&2; die "the primary did not start"; }
}

start_replica() {
  pg_running "$PG_REPLICA_DATA" && return 0
  as_pg "$pgbin/pg_ctl" -D "$PG_REPLICA_DATA" -l "$dir/pg2/postgresql.log" -w -t 60 start \
    >/dev/null || { tail -n 20 "$dir/pg2/postgresql.log" >&2; die "the replica did not start"; }
}

init_postgres() {
  local d
  for d in pg1 pg2; do
    mkdir -p "$dir/$d"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/$d"
    as_pg mkdir -p "$dir/$d/socket"
    as_pg chmod 700 "$dir/$d/socket"
  done
  if [ -f "$PG_REPLICA_DATA/PG_VERSION" ] && [ ! -f "$PG_REPLICA_DATA/standby.signal" ]; then
    # The replica was promoted (a failover): it is the primary now, alone. The old primary
    # stays down (it would be a second primary; rejoining it takes pg_rewind).
    say "the replica was promoted: starting it alone, not the old primary"
    start_replica
    return 0
  fi
  if [ ! -f "$PG_PRIMARY_DATA/PG_VERSION" ]; then
    as_pg "$pgbin/initdb" -D "$PG_PRIMARY_DATA" -U sealgate --auth=trust --encoding=UTF8 \
      --no-locale >"$dir/pg1/initdb.log" 2>&1 || { cat "$dir/pg1/initdb.log" >&2; exit 1; }
    {
      echo "listen_addresses = ''"
      echo "unix_socket_directories = '$PG_PRIMARY_SOCKET'"
      echo "unix_socket_permissions = 0700"
      echo "port = $PG_PRIMARY_PORT"
      echo "fsync = on"
      echo "wal_level = replica"
      echo "max_wal_senders = 5"
      echo "wal_keep_size = 256MB"
      echo "hot_standby = on"
    } | as_pg tee -a "$PG_PRIMARY_DATA/postgresql.conf" >/dev/null
  fi
  start_primary
  if ! psql_primary -c "SELECT 1 FROM pg_roles WHERE rolname = 'replicator'" | grep -q 1; then
    psql_primary -c "CREATE ROLE replicator WITH REPLICATION LOGIN"
  fi
  if ! psql_primary -c "SELECT 1 FROM pg_database WHERE datname = 'sealgate'" | grep -q 1; then
    psql_primary -c "CREATE DATABASE sealgate"
  fi
  if [ ! -f "$PG_REPLICA_DATA/PG_VERSION" ]; then
    as_pg "$pgbin/pg_basebackup" -D "$PG_REPLICA_DATA" -h "$PG_PRIMARY_SOCKET" \
      -p "$PG_PRIMARY_PORT" -U replicator -R -X stream -c fast \
      >"$dir/pg2/basebackup.log" 2>&1 || { cat "$dir/pg2/basebackup.log" >&2; exit 1; }
    # The copied configuration names the primary's socket and port: later lines win.
    {
      echo "# the replica's own (local-cluster.sh)"
      echo "unix_socket_directories = '$PG_REPLICA_SOCKET'"
      echo "port = $PG_REPLICA_PORT"
    } | as_pg tee -a "$PG_REPLICA_DATA/postgresql.conf" >/dev/null
  fi
  start_replica
  # Until the replica streams as the synchronous standby, a commit on the primary would wait.
  local i
  for ((i = 0; i < START_WAIT_S * 10; i++)); do
    if psql_primary -c "SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'" |
      grep -q 1; then
      return 0
    fi
    sleep 0.1
  done
  die "the replica did not attach as a synchronous standby within ${START_WAIT_S}s"
}

# --- gateway nodes -----------------------------------------------------------------------------

start_node() {
  local n=$1 addr_var=NODE${1}_GRPC
  local addr=${!addr_var}
  local nd=$dir/node$n
  alive "$nd/pid" "--data-dir $nd/data" && return 0
  mkdir -p "$nd"
  chmod 700 "$nd"
  local flags=(serve --db "$SEALGATE_DB" --root-key-file "$ROOT_KEY_FILE" --data-dir "$nd/data"
    --grpc-listen "$addr" --threads 2)
  if [ "$n" -eq 1 ]; then
    flags+=(--proxy-listen "$NODE1_PROXY" --proxy-allow-cidr 127.0.0.0/8)
    # The flags of the last `up` when none are given now (a start-node 1 after a stop).
    local extra
    if [ -n "${SEALGATE_CLUSTER_PROXY_FLAGS+set}" ]; then
      extra=$SEALGATE_CLUSTER_PROXY_FLAGS
      printf '%s\n' "$extra" >"$nd/proxy-flags"
    else
      extra=$(cat "$nd/proxy-flags" 2>/dev/null || true)
    fi
    # shellcheck disable=SC2206
    [ -n "$extra" ] && flags+=($extra)
  else
    flags+=(--proxy-advertise "$NODE1_PROXY")
  fi
  # shellcheck disable=SC2206
  [ -n "${SEALGATE_CLUSTER_NODE_FLAGS:-}" ] && flags+=($SEALGATE_CLUSTER_NODE_FLAGS)
  "$sealgate" "${flags[@]}" </dev/null >>"$nd/server.log" 2>&1 &
  echo $! >"$nd/pid"
}

wait_node() {
  local n=$1 addr_var=NODE${1}_GRPC
  wait_for "$START_WAIT_S" health "${!addr_var}" ||
    { tail -n 20 "$dir/node$n/server.log" >&2; die "node $n did not answer health checks"; }
}

# --- nginx -------------------------------------------------------------------------------------

write_nginx_conf() {
  local nx=$dir/nginx
  mkdir -p "$nx/tmp"
  cat >"$nx/nginx.conf" <<EOF
# Generated by deploy/local-cluster.sh.
daemon on;
user root;
worker_processes 1;
pid $nx/nginx.pid;
error_log $nx/error.log warn;

events { worker_connections 1024; }

http {
  # Which node served each call (\$upstream_addr lists every node tried, in order).
  log_format calls '\$time_iso8601 \$request_uri \$status upstream=\$upstream_addr '
                   'upstream_status=\$upstream_status time=\$request_time';
  access_log $nx/access.log calls;
  client_body_temp_path $nx/tmp/body;
  proxy_temp_path $nx/tmp/proxy;
  fastcgi_temp_path $nx/tmp/fastcgi;
  uwsgi_temp_path $nx/tmp/uwsgi;
  scgi_temp_path $nx/tmp/scgi;

  upstream sealgate {
    # A node that fails is left alone for 2 s (passive health check).
    server ${NODE1_GRPC} max_fails=1 fail_timeout=2s;
    server ${NODE2_GRPC} max_fails=1 fail_timeout=2s;
    server ${NODE3_GRPC} max_fails=1 fail_timeout=2s;
    keepalive 16;
    keepalive_timeout 60s;       # below the nodes' --idle-timeout (300 s): nginx closes first
    keepalive_requests 100000;
  }

  server {
    listen ${NGINX_GRPC} http2;
    http2_max_concurrent_streams 256;
    client_max_body_size 8m;

    location / {
      grpc_pass grpc://sealgate;
      grpc_connect_timeout 1s;
      grpc_read_timeout 60s;
      grpc_send_timeout 60s;
      # Only what is safe to send twice: a request that never reached a node (connect
      # refused or timed out; a connection reset before the request was sent). gRPC calls are
      # POSTs, so without non_idempotent nginx never resends one a node may have executed.
      # (unavailable/http_503 are HTTP statuses: a gRPC UNAVAILABLE travels in grpc-status.)
      grpc_next_upstream error timeout;
      grpc_next_upstream_tries 3;
      grpc_next_upstream_timeout 5s;
    }
  }
}
EOF
}

start_nginx() {
  local nx=$dir/nginx
  alive "$nx/nginx.pid" nginx && return 0
  write_nginx_conf
  nginx -c "$nx/nginx.conf" -p "$nx" -t >"$nx/configtest.log" 2>&1 ||
    { cat "$nx/configtest.log" >&2; die "nginx rejected its configuration"; }
  nginx -c "$nx/nginx.conf" -p "$nx" </dev/null >>"$nx/stdout.log" 2>&1 ||
    { tail -n 20 "$nx/error.log" >&2; die "nginx did not start"; }
  wait_for "$START_WAIT_S" health "$NGINX_GRPC" ||
    { tail -n 20 "$nx/error.log" >&2; die "nginx did not pass health checks through"; }
}

# --- commands ----------------------------------------------------------------------------------

cmd_up() {
  [ -x "$sealgate" ] || die "$sealgate not found (build it, or set SEALGATE_BIN)"
  [ -x "$sealctl" ] || die "$sealctl not found (build it, or set SEALCTL_BIN)"
  [ -x "$pgbin/initdb" ] || die "PostgreSQL server binaries not found"
  command -v nginx >/dev/null || die "nginx not found"
  # Private, but as root PostgreSQL runs as postgres, which must be able to pass through.
  if [ "$(id -u)" -eq 0 ]; then chmod 711 "$dir"; else chmod 700 "$dir"; fi
  [ -f "$envfile" ] || write_env
  load_env

  init_postgres
  if [ ! -f "$ROOT_KEY_FILE" ]; then
    (umask 077 && openssl rand -hex 32 >"$ROOT_KEY_FILE")
  fi
  "$sealgate" migrate --db "$SEALGATE_DB" >"$dir/migrate.log" 2>&1 ||
    { cat "$dir/migrate.log" >&2; die "sealgate migrate failed"; }

  # Node 1 makes the proxy CA at its first start; the others get a copy of the same pair.
  start_node 1
  wait_node 1
  local n
  for n in 2 3; do
    mkdir -p "$dir/node$n/data"
    chmod 700 "$dir/node$n" "$dir/node$n/data"
    local f
    for f in proxy-ca.key proxy-ca.pem; do
      cmp -s "$dir/node1/data/$f" "$dir/node$n/data/$f" ||
        cp -p "$dir/node1/data/$f" "$dir/node$n/data/$f"
    done
    start_node "$n"
  done
  wait_node 2
  wait_node 3
  start_nginx

  if [ ! -s "$API_KEY_FILE" ]; then
    local out
    out=$("$sealgate" admin create-org cluster --db "$SEALGATE_DB" --json 2>"$dir/admin.log") ||
      { cat "$dir/admin.log" >&2; die "sealgate admin create-org failed"; }
    (umask 077 && printf '%s' "$out" | /usr/bin/python3 -c \
      'import json,sys; print(json.load(sys.stdin)["api_key"])' >"$API_KEY_FILE.tmp" &&
      mv "$API_KEY_FILE.tmp" "$API_KEY_FILE")
    printf '%s' "$out" | /usr/bin/python3 -c \
      'import json,sys; print(json.load(sys.stdin)["org_id"])' >"$ORG_ID_FILE"
  fi
  say "up: nginx $NGINX_GRPC, nodes $NODE1_GRPC $NODE2_GRPC $NODE3_GRPC, proxy $NODE1_PROXY"
  say "    API key in $API_KEY_FILE, addresses in $envfile"
}

cmd_down() {
  [ -f "$envfile" ] || return 0
  load_env
  stop_pid "$dir/nginx/nginx.pid" nginx nginx
  local n
  for n in 1 2 3; do
    stop_pid "$dir/node$n/pid" "--data-dir $dir/node$n/data" "node $n"
  done
  local data
  for data in "$PG_PRIMARY_DATA" "$PG_REPLICA_DATA"; do
    [ -f "$data/PG_VERSION" ] || continue
    if pg_running "$data"; then
      as_pg "$pgbin/pg_ctl" -D "$data" -m fast -w -t "$STOP_GRACE_S" stop >/dev/null 2>&1 ||
        as_pg "$pgbin/pg_ctl" -D "$data" -m immediate -w -t "$STOP_GRACE_S" stop \
          >/dev/null 2>&1 || true
    fi
    if pg_running "$data" && [ -f "$data/postmaster.pid" ]; then
      local pid
      pid=$(head -n 1 "$data/postmaster.pid")
      say "PostgreSQL in $data (pid $pid) did not stop: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

cmd_status() {
  load_env
  local ok=0 n
  report() { printf '%-10s %s\n' "$1" "$2"; }
  for data in "$PG_PRIMARY_DATA" "$PG_REPLICA_DATA"; do
    local name=pg1
    [ "$data" = "$PG_REPLICA_DATA" ] && name=pg2
    if pg_running "$data"; then
      local role=primary
      [ -f "$data/standby.signal" ] && role=standby
      report "$name" "running ($role)"
    elif [ "$name" = pg1 ] && [ -f "$PG_REPLICA_DATA/PG_VERSION" ] &&
      [ ! -f "$PG_REPLICA_DATA/standby.signal" ]; then
      report "$name" "stopped (the replica was promoted in its place)"
    else
      report "$name" "stopped"
      ok=1
    fi
  done
  for n in 1 2 3; do
    local v=NODE${n}_GRPC
    if alive "$dir/node$n/pid" "--data-dir $dir/node$n/data" && health "${!v}" >/dev/null 2>&1; then
      report "node$n" "serving ${!v}"
    else
      report "node$n" "down"
      ok=1
    fi
  done
  if alive "$dir/nginx/nginx.pid" nginx && health "$NGINX_GRPC" >/dev/null 2>&1; then
    report nginx "serving $NGINX_GRPC"
  else
    report nginx "down"
    ok=1
  fi
  return $ok
}

case "$cmd" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
env)
  [ -f "$envfile" ] || die "$envfile not found"
  cat "$envfile"
  ;;
stop-primary)
  load_env
  mode=${1:-fast}
  case "$mode" in fast | immediate | smart) ;; *) usage ;; esac
  as_pg "$pgbin/pg_ctl" -D "$PG_PRIMARY_DATA" -m "$mode" -w -t 30 stop >/dev/null
  ;;
promote)
  load_env
  as_pg "$pgbin/pg_ctl" -D "$PG_REPLICA_DATA" -w -t 30 promote >/dev/null
  ;;
stop-node)
  load_env
  [[ "${1:-}" =~ ^[123]$ ]] || usage
  stop_pid "$dir/node$1/pid" "--data-dir $dir/node$1/data" "node $1"
  ;;
start-node)
  load_env
  [[ "${1:-}" =~ ^[123]$ ]] || usage
  start_node "$1"
  wait_node "$1"
  ;;
*) usage ;;
esac
