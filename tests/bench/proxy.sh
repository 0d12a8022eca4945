#!/usr/bin/env bash
# Egress proxy benchmark for sealgate: keep-alive HTTPS requests with one substituted header
# through sealgate's proxy against the same requests straight to the upstream and through
# mitmproxy with a substitution addon; new connections per second; added latency at low load;
# 1 against MANY secrets in the sandbox. Same client (proxy_load), same upstream (nginx),
# same concurrency, one run. See tests/bench/README.md.
#
# A measurement, not a test: it exits 0 whether or not the targets are met, and non-zero only
# when it could not measure (a tool is missing, a server did not start, the set-up failed, the
# upstream did not receive the real value, a client run failed).
#
# Environment:
#   SEALGATE_BIN                 sealgate binary (default: <repo>/build/server/sealgate)
#   PROXY_LOAD_BIN               the client (default: <repo>/build/tests/bench/proxy_load)
#   BENCH_CONCURRENCY            keep-alive connections (tunnels) per throughput row (default 400)
#   BENCH_NEWCONN_CONCURRENCY    connections in flight in the new-connection rows (default 16)
#   BENCH_SECONDS                timed seconds per run (default 3)
#   BENCH_WARMUP                 untimed seconds before each run's window (default 1)
#   BENCH_ROUNDS                 rounds over all rows; the table shows medians (default 3)
#   BENCH_SECRETS                secrets in the "many" sandbox (default 1000)
#   BENCH_ROWS                   row ids to run, in this order (default: all; see ROWS below)
#   BENCH_NGINX_WORKERS          nginx worker_processes (default 1)
#   BENCH_SG_THREADS             sealgate --threads (default 0: one event loop per core)
#   BENCH_KEEP_TMP=1             keep the temporary directories (logs, client outputs)
set -euo pipefail

START_SECONDS=$SECONDS
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

SEALGATE_BIN=${SEALGATE_BIN:-$REPO_ROOT/build/server/sealgate}
PROXY_LOAD_BIN=${PROXY_LOAD_BIN:-$REPO_ROOT/build/tests/bench/proxy_load}
CONC=${BENCH_CONCURRENCY:-400}
NEWC=${BENCH_NEWCONN_CONCURRENCY:-16}
SECS=${BENCH_SECONDS:-3}
WARMUP=${BENCH_WARMUP:-1}
ROUNDS=${BENCH_ROUNDS:-3}
MANY=${BENCH_SECRETS:-1000}
NGINX_WORKERS=${BENCH_NGINX_WORKERS:-1}
SG_THREADS=${BENCH_SG_THREADS:-0}
PY=/usr/bin/python3
PG_LOCAL=$REPO_ROOT/deploy/pg-local.sh
HOST=api.bench.test

# Bounds for every wait (seconds).
START_TIMEOUT=20     # a server must listen within this (mitmproxy also makes its CA)
STOP_TIMEOUT=10      # SIGTERM -> exit, then SIGKILL
PG_TIMEOUT=180       # deploy/pg-local.sh start/stop
RUN_SLACK=45         # a client run may take this much longer than warm-up + window
                     # (proxy_load waits at most 30 s for its N connections)
QUIET_WAIT=5         # wait at most this for the machine to be quiet before a run
SETTLE_MAX=5         # the substitution counts must stop moving within this after the runs

# ---------------------------------------------------------------- prerequisites

missing=()
for tool in nginx mitmdump openssl protoc timeout "$PY" /usr/bin/grpc_python_plugin; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    die "missing: ${missing[*]} (Debian packages: nginx mitmproxy openssl protobuf-compiler coreutils python3-grpcio protobuf-compiler-grpc; deploy/install-deps.sh bench has the rest)"
fi
# shellcheck disable=SC2012  # as deploy/pg-local.sh finds initdb
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[[ -x $PG_BIN/initdb ]] || die "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (deploy/install-deps.sh run)"
[[ -x $SEALGATE_BIN ]] || die "sealgate binary not found at $SEALGATE_BIN (run: ninja -C build, or set SEALGATE_BIN)"
[[ -x $PROXY_LOAD_BIN ]] || die "proxy_load not found at $PROXY_LOAD_BIN (run: ninja -C build, or set PROXY_LOAD_BIN)"
for v in CONC NEWC SECS WARMUP ROUNDS MANY NGINX_WORKERS SG_THREADS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((CONC >= 1 && NEWC >= 1 && SECS >= 1 && ROUNDS >= 1 && MANY >= 2 && NGINX_WORKERS >= 1)) ||
    die "BENCH_CONCURRENCY, BENCH_NEWCONN_CONCURRENCY, BENCH_SECONDS, BENCH_ROUNDS, BENCH_NGINX_WORKERS must be >= 1, BENCH_SECRETS >= 2"
# Every tunnel is two sockets in sealgate and one in each client and upstream.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) > 2 * CONC + 256)) || die "open-file limit $(ulimit -n) too low for $CONC connections"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sealgate-bench-proxy.XXXXXX")
# The cluster gets a directory of its own: as root, deploy/pg-local.sh hands it to the
# postgres user, which could not reach it inside the mode-0700 $WORK.
PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sealgate-bench-pg.XXXXXX")
PG_STARTED=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_started
    # The postmaster is a daemon (pg_ctl start), not our child: stop it by its data dir.
    if ((PG_STARTED)); then
        timeout "$PG_TIMEOUT" "$PG_LOCAL" stop "$PG_DIR" >/dev/null 2>&1 ||
            log "stopping PostgreSQL in $PG_DIR failed"
    fi
    if [[ ${BENCH_KEEP_TMP:-0} == 1 ]]; then
        log "kept temporary files in $WORK and $PG_DIR (they hold the bench secret's value)"
    else
        rm -rf "$WORK" "$PG_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }'; }
xs() { [[ $1 == n/a ]] && echo "$1" || echo "${1}x"; }  # xs RATIO: "1.23x", or "n/a"
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
met() { if "$@"; then echo "met"; else echo "NOT MET"; fi; }
kv() { sed -nE "s/.*(^| )$1=([^ ]+).*/\\2/p" <<<"$2"; }  # kv KEY LINE: the value of KEY=...

# ---------------------------------------------------------------- set-up

# Private copies, so a concurrent `ninja -C build` cannot swap a binary mid-run.
cp "$SEALGATE_BIN" "$WORK/sealgate"
cp "$PROXY_LOAD_BIN" "$WORK/proxy_load"
"$WORK/sealgate" version >/dev/null 2>&1 || die "copy of $SEALGATE_BIN does not run (being rebuilt? retry)"
LOAD=$WORK/proxy_load
SG_IDENT="$("$WORK/sealgate" version 2>&1 | head -n1), sha256 $(sha256sum "$WORK/sealgate" | cut -c1-12)"
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/.*nginx\//nginx /')
MITM_VERSION=$(mitmdump --version 2>/dev/null | awk '/^Mitmproxy:/ {print "mitmproxy " $2}')
log "work dir $WORK, cluster $PG_DIR; $(nproc) cores; $SG_IDENT; $NGINX_VERSION; $MITM_VERSION"

# The upstream's PKI: a throwaway CA and a P-256 certificate for $HOST.
PKI=$WORK/pki
mkdir -p "$PKI"
(
    cd "$PKI"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
        -days 2 -subj "/CN=sealgate bench upstream CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
        -subj "/CN=$HOST"
    printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
        "$HOST" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out server.pem
) >"$WORK/pki.log" 2>&1 || { cat "$WORK/pki.log" >&2; die "making the upstream certificates failed"; }

# The upstream: nginx, TLS, a 2-byte body; /check logs the x-api-key it received (the
# substitution check below), nothing else is logged.
NGINX_PORT=$(free_port)
NGX=$WORK/nginx
mkdir -p "$NGX"
cat >"$NGX/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections $((4 * CONC + 1024)); }
worker_rlimit_nofile $((8 * CONC + 2048));
http {
    access_log off;
    client_body_temp_path $NGX/body;
    proxy_temp_path $NGX/proxy;
    fastcgi_temp_path $NGX/fastcgi;
    uwsgi_temp_path $NGX/uwsgi;
    scgi_temp_path $NGX/scgi;
    log_format key '\$http_x_api_key';
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        server_name $HOST;
        ssl_certificate $PKI/server.pem;
        ssl_certificate_key $PKI/server.key;
        ssl_session_cache off;
        ssl_session_tickets off;
        default_type text/plain;
        location = /check { access_log $NGX/keys.log key; return 200 "ok"; }
        location / { return 200 "ok"; }
    }
}
EOF
start_bg nginx "$NGX/stdout.log" nginx -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log"
NGINX_PID=$BG_PID
wait_listening "$NGINX_PID" "$NGINX_PORT" nginx "$NGX/error.log"

# PostgreSQL and sealgate.
PG_STARTED=1
CONNINFO=$(run_bounded "$PG_TIMEOUT" "$PG_LOCAL" start "$PG_DIR" | tail -n 1) ||
    die "deploy/pg-local.sh start $PG_DIR failed"
[[ $CONNINFO == host=* ]] || die "unexpected conninfo from deploy/pg-local.sh: $CONNINFO"
PG_PID=$(head -n 1 "$PG_DIR/data/postmaster.pid")
run_bounded 120 "$WORK/sealgate" migrate --db "$CONNINFO" >"$WORK/migrate.out" 2>&1 ||
    { cat "$WORK/migrate.out" >&2; die "sealgate migrate failed"; }
run_bounded 60 "$WORK/sealgate" admin create-org bench --db "$CONNINFO" --json >"$WORK/org.json" 2>"$WORK/org.err" ||
    { cat "$WORK/org.err" >&2; die "sealgate admin create-org failed"; }
API_KEY=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["api_key"])' "$WORK/org.json") ||
    die "cannot read api_key from $WORK/org.json"
(umask 077; openssl rand -hex 32 >"$WORK/root.key")

SG_PORT=$(free_port)
PROXY_PORT=$(free_port)
SG_LOG=$WORK/sealgate.log
start_bg sealgate "$SG_LOG" "$WORK/sealgate" serve --db "$CONNINFO" --root-key-file "$WORK/root.key" \
    --data-dir "$WORK/data" --grpc-listen "127.0.0.1:$SG_PORT" --threads "$SG_THREADS" \
    --proxy-listen "127.0.0.1:$PROXY_PORT" --proxy-allow-cidr 127.0.0.0/8 \
    --proxy-resolve "$HOST:127.0.0.1" --proxy-allow-port "$NGINX_PORT" --upstream-ca "$PKI/ca.pem"
SG_PID=$BG_PID
wait_listening "$SG_PID" "$SG_PORT" sealgate "$SG_LOG"
wait_listening "$SG_PID" "$PROXY_PORT" "sealgate proxy" "$SG_LOG"

# Stores, secrets and sandboxes (grpcio).
mkdir -p "$WORK/py" "$WORK/run"
chmod 700 "$WORK/run"
protoc -I "$REPO_ROOT/proto" -I /usr/include --python_out="$WORK/py" --grpc_out="$WORK/py" \
    --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin "$REPO_ROOT"/proto/sealgate/v1/*.proto
RUN=$WORK/run
log "stores and sandboxes: 1 secret, and $MANY secrets (SetSecret x$((MANY + 1)))"
SEALGATE_API_KEY=$API_KEY run_bounded 300 "$PY" "$SCRIPT_DIR/proxy_setup.py" "$WORK/py" "127.0.0.1:$SG_PORT" \
    setup "$RUN" "$HOST" "$MANY" >"$WORK/setup.out" 2>&1 || die "grpcio set-up failed: $(cat "$WORK/setup.out")"
grep -q "^many .* secrets=$MANY proxy=127.0.0.1:$PROXY_PORT\$" "$WORK/setup.out" ||
    die "unexpected set-up output: $(cat "$WORK/setup.out")"
log "$(tr '\n' ';' <"$WORK/setup.out")"

# mitmproxy: the same upstream CA, a proxy credential of its own, the substitution addon.
MITM_PORT=$(free_port)
MITM_DIR=$WORK/mitm
mkdir -p "$MITM_DIR"
start_bg mitmdump "$WORK/mitmdump.log" mitmdump -q --listen-host 127.0.0.1 --listen-port "$MITM_PORT" \
    --set confdir="$MITM_DIR" --set ssl_verify_upstream_trusted_ca="$PKI/ca.pem" \
    --set proxyauth="$(cat "$RUN/mitm.auth")" -s "$SCRIPT_DIR/mitm_subst.py" \
    --set subst_map="$RUN/mitm.map" --set subst_resolve="$HOST:127.0.0.1"
MITM_PID=$BG_PID
wait_listening "$MITM_PID" "$MITM_PORT" mitmdump "$WORK/mitmdump.log"
[[ -s $MITM_DIR/mitmproxy-ca-cert.pem ]] || die "mitmproxy made no CA in $MITM_DIR"

# ---------------------------------------------------------------- clients

# The routes: how proxy_load reaches the upstream on each.
route_args() {  # route_args ROUTE: proxy_load arguments for direct, sg1, sgN or mitm
    local common=(--host "$HOST" --port "$NGINX_PORT")
    case $1 in
    direct) echo "${common[*]} --connect 127.0.0.1:$NGINX_PORT --header-file $RUN/direct.headers --ca $PKI/ca.pem" ;;
    sg1) echo "${common[*]} --connect 127.0.0.1:$PROXY_PORT --proxy --proxy-auth-file $RUN/one.auth --header-file $RUN/one.headers --ca $RUN/one.ca" ;;
    sgN) echo "${common[*]} --connect 127.0.0.1:$PROXY_PORT --proxy --proxy-auth-file $RUN/many.auth --header-file $RUN/many.headers --ca $RUN/many.ca" ;;
    mitm) echo "${common[*]} --connect 127.0.0.1:$MITM_PORT --proxy --proxy-auth-file $RUN/mitm.auth --header-file $RUN/one.headers --ca $MITM_DIR/mitmproxy-ca-cert.pem" ;;
    esac
}

children() { pgrep -P "$1" | paste -sd, -; }  # children PID: its child pids, comma-separated

# watch_args: proxy_load --watch groups: sealgate, mitmdump, nginx (master + workers),
# PostgreSQL (postmaster + backends; sealgate's pool and its audit writer are among them).
watch_args() {
    local ngx pg
    ngx=$NGINX_PID${NGINX_WORKER_PIDS:+,$NGINX_WORKER_PIDS}
    pg=$PG_PID
    local kids
    kids=$(children "$PG_PID")
    [[ -n $kids ]] && pg="$pg,$kids"
    echo "--watch sg=$SG_PID --watch mitm=$MITM_PID --watch nginx=$ngx --watch pg=$pg"
}
NGINX_WORKER_PIDS=$(children "$NGINX_PID")

# The upstream check: one request to /check on each route; nginx must have logged the real
# value every time (compared here, never printed), then the log is removed.
log "checking what the upstream receives on each route"
for route in direct sg1 sgN mitm; do
    # shellcheck disable=SC2046  # route_args is a word list without spaces inside words
    run_bounded 30 "$LOAD" $(route_args "$route") --path /check --requests 1 --seconds 20 \
        >"$WORK/check-$route.out" 2>&1 || die "upstream check on route $route failed: $(cat "$WORK/check-$route.out")"
    [[ $(kv bad_status "$(cat "$WORK/check-$route.out")") == 0 ]] ||
        die "upstream check on route $route: not 200: $(cat "$WORK/check-$route.out")"
done
VALUE=$(head -n 1 "$RUN/value")
n_ok=0 n_lines=0
while IFS= read -r line; do
    n_lines=$((n_lines + 1))
    [[ $line == "$VALUE" ]] && n_ok=$((n_ok + 1))
done <"$NGX/keys.log"
rm -f "$NGX/keys.log"
unset VALUE
((n_lines == 4 && n_ok == 4)) || die "upstream check: $n_ok of $n_lines requests (want 4 of 4) arrived with the real value in x-api-key"
CHECK_NOTE="upstream received the real value on all 4 routes"
log "$CHECK_NOTE"

# ---------------------------------------------------------------- rows

# Rows: id, route, mode, label. mitmproxy goes last in a round: overloaded, it works off its
# backlog for a while after the client has gone (settle below waits for that as well).
ROWS=(
    "direct_ka    direct keepalive   direct to nginx"
    "sg1_ka       sg1    keepalive   sealgate proxy, 1 secret"
    "sgN_ka       sgN    keepalive   sealgate proxy, $MANY secrets"
    "direct_new   direct newconn     direct, new connection each"
    "sg1_new      sg1    newconn     sealgate, new connection each"
    "sg1_newpool  sg1    newpool     sealgate, new conn., no Conn: close"
    "direct_new1  direct newconn1    direct, new conn., concurrency 1"
    "sg1_new1     sg1    newconn1    sealgate, new conn., concurrency 1"
    "direct_c1    direct c1          direct, concurrency 1"
    "sg1_c1       sg1    c1          sealgate, concurrency 1"
    "mitm_ka      mitm   keepalive   mitmproxy + addon"
)
if [[ -n ${BENCH_ROWS:-} ]]; then
    picked=()
    for want in $BENCH_ROWS; do
        found=0
        for row in "${ROWS[@]}"; do
            if [[ ${row%% *} == "$want" ]]; then
                picked+=("$row")
                found=1
            fi
        done
        ((found)) || die "BENCH_ROWS: no row '$want' (rows: $(printf '%s\n' "${ROWS[@]}" | awk '{printf "%s ", $1}'))"
    done
    ROWS=("${picked[@]}")
fi
declare -A OUT=() SENT=() DONE_ALL=() ERR=() ROWS_BY_ID=()
for row in "${ROWS[@]}"; do ROWS_BY_ID[${row%% *}]=$row; done
for r in sg1 sgN; do SENT[$r]=0 DONE_ALL[$r]=0; done
# The upstream check above went through each route once.
SENT[sg1]=1 SENT[sgN]=1 DONE_ALL[sg1]=1 DONE_ALL[sgN]=1
SG_CONNS=2 SG_LEAF_SET="" # 2: the upstream checks through both sandboxes

busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }

# settle: waits (bounded) until the machine is quiet, i.e. under SETTLE_BUSY cores busy over
# 0.3 s, so that no row pays for work left over from the previous one (the audit writer's
# last batches, an overloaded mitmproxy's backlog).
SETTLE_BUSY=0.3
FOREIGN_MAX=0.25     # a run with more cores busy with other processes is marked
settle() {
    local a b hz i tries=$((QUIET_WAIT * 3))
    # Once the machine has stayed busy a few times, others are at work on it: a short wait.
    ((NOT_QUIET >= 3)) && tries=3
    hz=$(getconf CLK_TCK)
    for ((i = 0; i < tries; i++)); do
        a=$(busy_ticks)
        sleep 0.3
        b=$(busy_ticks)
        awk -v d=$((b - a)) -v hz="$hz" -v max="$SETTLE_BUSY" 'BEGIN { exit !(d / hz / 0.3 < max) }' && return 0
    done
    log "machine still busy (>= $SETTLE_BUSY cores) after $((tries * 3 / 10))s of waiting; going on (other work on the machine?)"
    NOT_QUIET=$((NOT_QUIET + 1))
}
NOT_QUIET=0

run_row() {  # run_row ID ROUTE MODE ROUND
    local id=$1 route=$2 mode=$3 round=$4 out=$WORK/$1.$4.out args=() line
    case $mode in
    keepalive) args=(--concurrency "$CONC") ;;
    newconn) args=(--concurrency "$NEWC" --new-conn) ;;
    newconn1) args=(--concurrency 1 --new-conn) ;;
    newpool) args=(--concurrency "$NEWC" --new-conn --no-connection-close) ;;
    c1) args=(--concurrency 1) ;;
    esac
    settle
    # shellcheck disable=SC2046  # word lists without spaces inside words
    run_bounded $((WARMUP + SECS + RUN_SLACK)) "$LOAD" $(route_args "$route") $(watch_args) \
        "${args[@]}" --seconds "$SECS" --warmup "$WARMUP" >"$out" 2>"$out.err" ||
        die "$id: proxy_load failed: $(cat "$out" "$out.err")"
    line=$(cat "$out")
    # Cores busy with anything but this benchmark's processes during the window (others'
    # work on a shared machine; the kernel's own share is small here).
    local foreign
    foreign=$(awk -v b="$(kv cores_busy "$line")" -v c="$(kv cores_client "$line")" -v s="$(kv cores_sg "$line")" \
        -v m="$(kv cores_mitm "$line")" -v n="$(kv cores_nginx "$line")" -v p="$(kv cores_pg "$line")" \
        'BEGIN { f = b - c - s - m - n - p; printf "%.2f", f < 0 ? 0 : f }')
    line+=" foreign=$foreign"
    OUT[$id]+="$line"$'\n'
    local errors bad
    errors=$(kv errors "$line")
    bad=$(kv bad_status "$line")
    if [[ $errors != 0 || $bad != 0 ]]; then
        ERR[$id]+="round $round: $errors errors, $bad non-200 ($(head -n 3 "$out.err" | tr '\n' ' '));"
    fi
    if [[ $route == sg1 || $route == sgN ]]; then
        SENT[$route]=$((SENT[$route] + $(kv issued "$line")))
        DONE_ALL[$route]=$((DONE_ALL[$route] + $(kv total "$line")))
        SG_CONNS=$((SG_CONNS + $(kv conns "$line")))
        SG_LEAF_SET+="$(kv leaves "$line") "
    fi
    log "$id round $round: $(kv rps "$line") req/s, foreign load $foreign cores, p50 $(kv p50_us "$line") us, p99 $(kv p99_us "$line") us, setup $(kv setup_s "$line") s, errors $errors, non-200 $bad; CPU us/req client $(kv cpu_client_us "$line") sg $(kv cpu_sg_us "$line") mitm $(kv cpu_mitm_us "$line") nginx $(kv cpu_nginx_us "$line") pg $(kv cpu_pg_us "$line") busy $(kv cpu_busy_us "$line")"
}

for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round of $ROUNDS: ${WARMUP}s warm-up + ${SECS}s per row; $CONC tunnels (keep-alive rows), $NEWC (new-connection rows)"
    order=("${ROWS[@]}")
    # The 1-secret and MANY-secret rows swap places every other round, so that neither is
    # always the one that runs first.
    if ((round % 2 == 0)); then
        for i in "${!order[@]}"; do
            case ${order[$i]%% *} in
            sg1_ka) order[i]=${ROWS_BY_ID[sgN_ka]:-${order[$i]}} ;;
            sgN_ka) order[i]=${ROWS_BY_ID[sg1_ka]:-${order[$i]}} ;;
            esac
        done
    fi
    for row in "${order[@]}"; do
        read -r id route mode _ <<<"$row"
        run_row "$id" "$route" "$mode" "$round"
    done
done

# ---------------------------------------------------------------- checks

# Substitutions counted by sealgate (use_count of the secret, written by the audit writer in
# batches): at least every response the client got through that sandbox, at most every
# request it sent.
usage_counts() {
    SEALGATE_API_KEY=$API_KEY run_bounded 60 "$PY" "$SCRIPT_DIR/proxy_setup.py" "$WORK/py" \
        "127.0.0.1:$SG_PORT" usage "$RUN" >"$WORK/usage.out" 2>&1 || die "ListSecrets failed: $(cat "$WORK/usage.out")"
    cat "$WORK/usage.out"
}
prev="" cur=""
for ((i = 0; i < SETTLE_MAX * 2; i++)); do
    cur=$(usage_counts)
    [[ $cur == "$prev" ]] && break
    prev=$cur
    sleep 0.5
done
USE_NOTE=""
for r in sg1 sgN; do
    name=one
    [[ $r == sgN ]] && name=many
    used=$(sed -nE "s/^$name use_count=([0-9]+)$/\\1/p" <<<"$cur")
    if [[ -z $used ]] || ((used < DONE_ALL[$r] || used > SENT[$r])); then
        USE_NOTE+="MISMATCH: sandbox '$name' use_count=${used:-?}, want ${DONE_ALL[$r]}..${SENT[$r]}; "
    else
        USE_NOTE+="sandbox '$name': use_count $used for ${DONE_ALL[$r]} answered / ${SENT[$r]} sent; "
    fi
done
SG_WARN=$(grep -cE 'level=(warn|error)' "$SG_LOG" || true)
# sealgate logs each leaf it mints (msg=proxy_leaf_minted host=...).
SG_MINTED=$(grep -c 'msg=proxy_leaf_minted' "$SG_LOG" || true)
SG_MINTED_HOST=$(grep 'msg=proxy_leaf_minted' "$SG_LOG" | grep -c " host=$HOST " || true)
SG_NON200=$(grep 'msg=proxy_request' "$SG_LOG" | grep -vc ' status=200 ' || true)
stop_pid "$MITM_PID"
stop_pid "$SG_PID"

# ---------------------------------------------------------------- report

has() { [[ -n ${OUT[$1]:-} ]]; }
# med ID KEY: the median of KEY over the rounds of row ID ("" if the row did not run).
med() {
    has "$1" || return 0
    # shellcheck disable=SC2046  # a word list of numbers
    median $(printf '%s' "${OUT[$1]}" | sed -nE "s/.*(^| )$2=([^ ]+).*/\\2/p")
}
# runs ID: every run's req/s, "*" after those with foreign load.
runs() {
    printf '%s' "${OUT[$1]:-}" | awk -v max="$FOREIGN_MAX" '{
        r = ""; f = 0
        for (i = 1; i <= NF; i++) {
            if ($i ~ /^rps=/) r = substr($i, 5)
            if ($i ~ /^foreign=/) f = substr($i, 9) + 0
        }
        printf "%s%.0f%s", (NR > 1 ? " " : ""), r, (f >= max ? "*" : "")
    }'
}
int() { [[ -n $1 ]] && printf '%.0f' "$1" || printf 'n/a'; }
secs() { [[ -n $1 ]] && printf '%.2f s' "$1" || printf 'n/a'; }
ms() { [[ -n $1 ]] && awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }' || printf 'n/a'; }

# What proxied a row (its CPU column): sealgate, mitmproxy or nothing.
proxy_cpu() {
    case $1 in
    sg*) med "$1" cpu_sg_us ;;
    mitm*) med "$1" cpu_mitm_us ;;
    *) echo 0 ;;
    esac
}

echo
echo "== sealgate egress proxy: HTTPS GET with one substituted header (x-api-key), HTTP/1.1, upstream nginx (TLS, 2-byte body), median of $ROUNDS rounds =="
echo "   $SG_IDENT (--threads $SG_THREADS, info logging: one line per proxied request; audit trail on);"
echo "   $NGINX_VERSION (worker_processes $NGINX_WORKERS); $MITM_VERSION (mitmdump + tests/bench/mitm_subst.py); client: proxy_load (C, OpenSSL, 1 thread, epoll)"
echo "   $(nproc) cores shared by the client, the proxy, nginx and PostgreSQL (audit trail): compare ratios, not absolute figures"
echo "   keep-alive rows: $CONC tunnels/connections; new-connection rows: $NEWC in flight (or 1), each = TCP + CONNECT + 2 TLS handshakes (client-proxy, proxy-upstream) + 1 request; ${SECS}s windows after ${WARMUP}s warm-up"
printf '%-36s %9s %9s %9s  %-41s %s\n' "row" "req/s" "p50 us" "p99 us" "CPU us/req: client proxy nginx pg  total" "runs (req/s)"
declare -A TOTAL_CPU=()
for row in "${ROWS[@]}"; do
    read -r id _ _ label <<<"$row"
    has "$id" || continue
    c=$(med "$id" cpu_client_us) x=$(proxy_cpu "$id") n=$(med "$id" cpu_nginx_us) p=$(med "$id" cpu_pg_us)
    TOTAL_CPU[$id]=$(awk -v c="$c" -v x="$x" -v n="$n" -v p="$p" 'BEGIN { printf "%.1f", c + x + n + p }')
    printf '%-36s %9.0f %9.0f %9.0f  %6.1f %6.1f %6.1f %6.1f %7.1f   %s\n' "$label" "$(med "$id" rps)" \
        "$(med "$id" p50_us)" "$(med "$id" p99_us)" "$c" "$x" "$n" "$p" "${TOTAL_CPU[$id]}" "$(runs "$id")"
done
for id in "${!ERR[@]}"; do echo "   problems in $id: ${ERR[$id]}"; done
echo

# target LABEL OK-TEST... : one line; "n/a" when a row it needs did not run.
r_direct=$(ratio "$(med sg1_ka rps)" "$(med direct_ka rps)")
r_mitm=$(ratio "$(med sg1_ka rps)" "$(med mitm_ka rps)")
r_many=$(ratio "$(med sgN_ka rps)" "$(med sg1_ka rps)")
added=n/a
if has sg1_c1 && has direct_c1; then
    added=$(awk -v a="$(med sg1_c1 p50_us)" -v b="$(med direct_c1 p50_us)" 'BEGIN { printf "%.0f", a - b }')
fi
verdict() {  # verdict ge|le VALUE LIMIT
    [[ $2 == n/a ]] && { echo "n/a"; return; }
    met "$1" "$2" "$3"
}
# Leaves: distinct leaf certificates the client saw per run through sealgate (the upstream
# check above made the first; after that the cache must answer every handshake).
# shellcheck disable=SC2086  # a word list of numbers
leaves_max=$(printf '%s\n' $SG_LEAF_SET | sort -n | tail -n 1)
echo "== targets =="
printf '  %-62s %-8s (%s)\n' "keep-alive, sealgate (1 secret) >= 0.7x direct" "$(verdict ge "$r_direct" 0.7)" "$(xs "$r_direct")"
printf '  %-62s %-8s (%s)\n' "keep-alive, sealgate (1 secret) >= 10x mitmproxy" "$(verdict ge "$r_mitm" 10)" "$(xs "$r_mitm")"
printf '  %-62s %-8s (%s)\n' "keep-alive, $MANY secrets >= 0.9x 1 secret" "$(verdict ge "$r_many" 0.9)" "$(xs "$r_many")"
printf '  %-62s %-8s (%s us: p50 %s vs %s us)\n' "added p50 latency at concurrency 1 <= 100 us" "$(verdict le "$added" 100)" \
    "$added" "$(int "$(med sg1_c1 p50_us)")" "$(int "$(med direct_c1 p50_us)")"
if [[ -n $leaves_max ]]; then
    printf '  %-62s %-8s (%s leaf minted for %s over %s handshakes through sealgate, %s in all; the client saw at most %s distinct leaf per run)\n' \
        "a repeated host mints no certificate" "$(if ((SG_MINTED_HOST <= 1)) && le "$leaves_max" 1; then echo met; else echo "NOT MET"; fi)" \
        "$SG_MINTED_HOST" "$HOST" "$SG_CONNS" "$SG_MINTED" "$leaves_max"
fi
# The same comparisons from CPU time alone: how many requests the 2 cores could serve if
# nothing but this work ran. Less exposed to a shared machine than the rates.
echo "   the same from CPU time per request alone (total column; what the cores could serve if nothing else ran): sealgate/direct $(xs "$(ratio "${TOTAL_CPU[direct_ka]:-0}" "${TOTAL_CPU[sg1_ka]:-0}")"), sealgate/mitmproxy $(xs "$(ratio "${TOTAL_CPU[mitm_ka]:-0}" "${TOTAL_CPU[sg1_ka]:-0}")"), $MANY/1 secret $(xs "$(ratio "${TOTAL_CPU[sg1_ka]:-0}" "${TOTAL_CPU[sgN_ka]:-0}")")"
echo
if has sg1_new || has sg1_new1; then
    echo "   new connections (TCP + CONNECT + 2 TLS handshakes + 1 request): sealgate $(int "$(med sg1_new rps)")/s with $NEWC in flight (direct $(int "$(med direct_new rps)")/s: $(xs "$(ratio "$(med sg1_new rps)" "$(med direct_new rps)")"));"
    has sg1_newpool && echo "   without \"Connection: close\" (the client still closes after one request; sealgate may reuse an idle upstream connection from its pool): sealgate $(int "$(med sg1_newpool rps)")/s with $NEWC in flight; nginx CPU per new connection $(int "$(med sg1_newpool cpu_nginx_us)") us (with the header: $(int "$(med sg1_new cpu_nginx_us)") us)"
    echo "     one at a time, p50 $(ms "$(med sg1_new1 p50_us)") ms per connection through sealgate, $(ms "$(med direct_new1 p50_us)") ms direct; CPU per new connection through sealgate ($NEWC in flight): sealgate $(int "$(med sg1_new cpu_sg_us)") us, client $(int "$(med sg1_new cpu_client_us)") us, nginx $(int "$(med sg1_new cpu_nginx_us)") us, PostgreSQL $(int "$(med sg1_new cpu_pg_us)") us"
fi
echo "   for the record, OpenComputer's Go proxy on this kind of machine: ~2.6k keep-alive req/s with 400 tunnels, 2.7 ms per new connection"
if has sg1_ka || has mitm_ka; then
    echo "   time to set up $CONC tunnels (median): sealgate $(secs "$(med sg1_ka setup_s)"), mitmproxy $(secs "$(med mitm_ka setup_s)"), direct $(secs "$(med direct_ka setup_s)")"
fi
n_foreign=0
for id in "${!OUT[@]}"; do
    n_foreign=$((n_foreign + $(runs "$id" | tr ' ' '\n' | grep -c '\*' || true)))
done
((n_foreign == 0)) || echo "   *: $n_foreign runs had other processes using >= $FOREIGN_MAX cores (the machine's busy time minus this benchmark's processes): their rates are low; the CPU-per-request ratios above hold better"
((NOT_QUIET == 0)) || echo "   WARNING: $NOT_QUIET runs started while the machine was busy (>= $SETTLE_BUSY cores) after waiting for it to be quiet"
echo "   checks: $CHECK_NOTE; ${USE_NOTE}sealgate warn/error log lines: $SG_WARN; proxy_request lines with a status other than 200: $SG_NON200"
echo
echo "finished in $((SECONDS - START_SECONDS)) s"
