#!/usr/bin/env bash
# Store benchmark for sealgate: GetSecretStore against `pgbench -S` and SetSecret against a
# pgbench single-row upsert, on the same PostgreSQL, at the same concurrency. See
# tests/bench/README.md.
#
# A measurement, not a test: it exits 0 whether or not the targets are met, and non-zero only
# when it could not measure (PostgreSQL or sealgate did not start, the grpcio set-up failed,
# h2load or pgbench failed, ...).
#
# Environment:
#   SEALGATE_BIN          sealgate binary (default: <repo>/build/server/sealgate)
#   BENCH_CONCURRENCY     outstanding requests: h2load -c N -m 1, pgbench -c N (default 16)
#   BENCH_DURATION        seconds per timed run: h2load -D, pgbench -T (default 7)
#   BENCH_WARMUP          seconds per row of the untimed warm-up pass before round 1 (default 2)
#   BENCH_ROUNDS          rounds over all rows; the table shows medians (default 3)
#   BENCH_PGBENCH_SCALE   pgbench -i -s (default 10)
#   BENCH_VALUE_BYTES     size of the secret value / of the upserted bytea (default 32)
#   BENCH_POOL_SIZE       sealgate --db-pool-size (default 0: sealgate's default, 2 per loop)
#   BENCH_KEEP_TMP=1      keep the temporary directories (logs, outputs, the stopped cluster)
set -euo pipefail

START_SECONDS=$SECONDS
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

SEALGATE_BIN=${SEALGATE_BIN:-$REPO_ROOT/build/server/sealgate}
CONC=${BENCH_CONCURRENCY:-16}
DURATION=${BENCH_DURATION:-7}
WARMUP=${BENCH_WARMUP:-2}
ROUNDS=${BENCH_ROUNDS:-3}
SCALE=${BENCH_PGBENCH_SCALE:-10}
VALUE_BYTES=${BENCH_VALUE_BYTES:-32}
POOL_SIZE=${BENCH_POOL_SIZE:-0}
PY=/usr/bin/python3
PG_LOCAL=$REPO_ROOT/deploy/pg-local.sh
SECRET_NAME=BENCH_SECRET
GET_PATH=/sealgate.v1.SecretStoreService/GetSecretStore
SET_PATH=/sealgate.v1.SecretService/SetSecret
H2LOAD_ARGS=(-c "$CONC" -m 1 -t 1)
PGBENCH_ARGS=(-c "$CONC" -j 1)

# Bounds for every wait (seconds).
START_TIMEOUT=15     # sealgate must listen within this
STOP_TIMEOUT=10      # SIGTERM -> exit, then SIGKILL
PG_TIMEOUT=180       # deploy/pg-local.sh start/stop, pgbench -i
RUN_SLACK=60         # an h2load/pgbench run may take this much longer than its duration
SETTLE_MAX=5         # the sealgate log must stop growing within this after a run


for tool in h2load protoc openssl timeout "$PY" /usr/bin/grpc_python_plugin; do
    command -v "$tool" >/dev/null || die "missing tool: $tool (deploy/install-deps.sh bench)"
done
# shellcheck disable=SC2012  # as deploy/pg-local.sh finds initdb: the newest installed major
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
PGBENCH=$PG_BIN/pgbench
PSQL=$PG_BIN/psql
[[ -x $PGBENCH && -x $PSQL ]] || die "pgbench/psql not found under /usr/lib/postgresql/*/bin (deploy/install-deps.sh bench)"
[[ -x $SEALGATE_BIN ]] || die "sealgate binary not found at $SEALGATE_BIN (run: ninja -C build, or set SEALGATE_BIN)"
for v in CONC DURATION WARMUP ROUNDS SCALE VALUE_BYTES POOL_SIZE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((CONC >= 1 && DURATION >= 1 && ROUNDS >= 1 && SCALE >= 1)) || die "BENCH_CONCURRENCY, BENCH_DURATION, BENCH_ROUNDS, BENCH_PGBENCH_SCALE must be >= 1"
((VALUE_BYTES >= 1 && VALUE_BYTES <= 65536)) || die "BENCH_VALUE_BYTES must be 1..65536"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sealgate-bench-stores.XXXXXX")
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
        log "kept temporary files in $WORK and $PG_DIR"
    else
        rm -rf "$WORK" "$PG_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers


psql_db() {  # psql_db DB SQL...: one psql per call, stops on the first error; prints tuples
    local db=$1 sql args=()
    shift
    for sql in "$@"; do args+=(-c "$sql"); done
    run_bounded "$PG_TIMEOUT" "$PSQL" "$PG_CONNINFO_BASE dbname=$db" -XtAq -v ON_ERROR_STOP=1 "${args[@]}"
}

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
# shellcheck disable=SC2086  # $1 is a word list of numbers
runs_note() { echo "runs: $(printf '%.0f ' $1)"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
met() { if "$@"; then echo "met"; else echo "NOT MET"; fi; }

# ---------------------------------------------------------------- sealgate log

# The log is written with one write(2) per line, so it can be read while sealgate runs.
log_lines() { wc -l <"$SG_LOG"; }

log_settle() {  # wait (bounded) until the log has stopped growing: in-flight calls are logged
    local prev cur i same=0
    prev=$(log_lines)
    for ((i = 0; i < SETTLE_MAX * 10; i++)); do
        sleep 0.1
        cur=$(log_lines)
        if [[ $cur == "$prev" ]]; then
            ((++same >= 3)) && return 0
        else
            same=0
        fi
        prev=$cur
    done
    log "sealgate log still growing ${SETTLE_MAX}s after the run"
}

# log_status_counts FROM_LINE METHOD_PATH: "OK ABORTED CANCELLED OTHER" among the rpc lines of
# METHOD_PATH after line FROM_LINE.
log_status_counts() {
    tail -n +$(($1 + 1)) "$SG_LOG" | awk -v m="method=$2" '
        / msg=rpc / && index($0, " " m " ") {
            s = ""
            for (i = 1; i <= NF; i++) if ($i ~ /^status=/) s = substr($i, 8)
            if (s == "OK") ok++; else if (s == "ABORTED") ab++; else if (s == "CANCELLED") ca++; else other++
        }
        END { printf "%d %d %d %d\n", ok, ab, ca, other }'
}

# ---------------------------------------------------------------- runs

# h2load_run NAME PATH BODY SECONDS: one h2load run against sealgate (C connections, one
# stream each), then the statuses sealgate logged for it. Sets H2_RPS, H2_DONE, H2_STARTED,
# H2_PROBLEM ("" if h2load saw nothing wrong) and LOG_OK, LOG_ABORTED, LOG_CANCELLED,
# LOG_OTHER (this run's rpc lines of that method).
h2load_run() {
    local name=$1 path=$2 body=$3 secs=$4 out=$WORK/$1.h2load from failed errored tmo two_xx
    from=$(log_lines)
    run_bounded $((secs + RUN_SLACK)) h2load "${H2LOAD_ARGS[@]}" -D "$secs" \
        -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $API_KEY" \
        -d "$body" "http://127.0.0.1:$SG_PORT$path" >"$out" 2>&1 || {
        cat "$out" >&2
        die "$name: h2load failed or timed out"
    }
    H2_RPS=$(awk '/^finished in/ {for (i = 1; i <= NF; i++) if ($(i+1) == "req/s,") {print $i; exit}}' "$out")
    [[ -n $H2_RPS ]] || { cat "$out" >&2; die "$name: cannot parse h2load output"; }
    read -r _ H2_STARTED H2_DONE failed errored tmo < <(awk '/^requests:/ {print $2, $4, $6, $10, $12, $14}' "$out")
    two_xx=$(awk '/^status codes:/ {print $3}' "$out")
    H2_PROBLEM=""
    if [[ $failed != 0 || $errored != 0 || $tmo != 0 || $two_xx != "$H2_DONE" ]]; then
        H2_PROBLEM="h2load: $failed failed, $errored errored, $tmo timeout, $two_xx 2xx of $H2_DONE (see $out)"
    fi
    log_settle
    read -r LOG_OK LOG_ABORTED LOG_CANCELLED LOG_OTHER < <(log_status_counts "$from" "$path")
}

# pgbench_run NAME SECONDS ARGS...: one pgbench run on the bench database (C clients, one
# thread). Sets PG_TPS, PG_TX (transactions processed), PG_PROBLEM.
pgbench_run() {
    local name=$1 secs=$2 out=$WORK/$1.pgbench failed
    shift 2
    run_bounded $((secs + RUN_SLACK)) "$PGBENCH" -h "$PG_SOCK" -p "$PG_PORT" -U "$PG_USER" \
        "${PGBENCH_ARGS[@]}" -T "$secs" "$@" bench >"$out" 2>&1 || {
        cat "$out" >&2
        die "$name: pgbench failed or timed out"
    }
    PG_TPS=$(awk '/^tps = / {print $3; exit}' "$out")
    PG_TX=$(awk -F': ' '/^number of transactions actually processed/ {print $2; exit}' "$out")
    failed=$(awk '/^number of failed transactions/ {print $5; exit}' "$out")
    [[ -n $PG_TPS && -n $PG_TX ]] || { cat "$out" >&2; die "$name: cannot parse pgbench output"; }
    PG_TX=${PG_TX%%/*}
    PG_PROBLEM=""
    [[ ${failed:-0} == 0 ]] || PG_PROBLEM="$failed failed transactions (see $out)"
}

upsert_versions() {  # upsert_versions FIRST LAST: sum(version) of bench_secrets rows FIRST..LAST
    psql_db bench "SELECT coalesce(sum(version), 0) FROM bench_secrets WHERE store_id BETWEEN $1 AND $2"
}

secret_version() {
    SEALGATE_API_KEY=$API_KEY run_bounded 60 "$PY" "$SCRIPT_DIR/stores_client.py" "$WORK/py" \
        "127.0.0.1:$SG_PORT" version "$STORE_ID" "$SECRET_NAME" >"$WORK/version.out" 2>&1 ||
        die "ListSecrets failed: $(cat "$WORK/version.out")"
    cat "$WORK/version.out"
}

# ---------------------------------------------------------------- set-up

# Run a private copy of sealgate so a concurrent `ninja -C build` cannot swap the binary.
cp "$SEALGATE_BIN" "$WORK/sealgate"
SEALGATE_SRC_BIN=$SEALGATE_BIN
SEALGATE_BIN=$WORK/sealgate
"$SEALGATE_BIN" version >/dev/null 2>&1 || die "copy of $SEALGATE_SRC_BIN does not run (being rebuilt? retry)"

# The binary's identity goes into the table: the build under test may change between runs.
SG_IDENT="$("$SEALGATE_BIN" version 2>&1 | head -n1), sha256 $(sha256sum "$SEALGATE_BIN" | cut -c1-12)"
log "work dir $WORK, cluster $PG_DIR; $(nproc) cores; $(h2load --version | head -n1); $("$PGBENCH" --version); $SG_IDENT from $SEALGATE_SRC_BIN"

# PostgreSQL: a private cluster, database "sealgate" for sealgate, "bench" for pgbench.
PG_STARTED=1
CONNINFO=$(run_bounded "$PG_TIMEOUT" "$PG_LOCAL" start "$PG_DIR" | tail -n 1) ||
    die "deploy/pg-local.sh start $PG_DIR failed"
[[ $CONNINFO == host=* ]] || die "unexpected conninfo from deploy/pg-local.sh: $CONNINFO"
PG_SOCK=$(sed -E 's/.*host=([^ ]+).*/\1/' <<<"$CONNINFO")
PG_PORT=$(sed -E 's/.*port=([^ ]+).*/\1/' <<<"$CONNINFO")
PG_USER=$(sed -E 's/.*user=([^ ]+).*/\1/' <<<"$CONNINFO")
PG_CONNINFO_BASE="host=$PG_SOCK port=$PG_PORT user=$PG_USER"
log "PostgreSQL: $CONNINFO"
psql_db postgres "CREATE DATABASE bench" >/dev/null
for db in sealgate bench; do
    settings=$(psql_db "$db" "SELECT current_setting('synchronous_commit') || ' ' || current_setting('fsync')")
    [[ $settings == "on on" ]] || die "database $db: synchronous_commit/fsync are '$settings', want 'on on'"
done
PG_VERSION=$(psql_db postgres "SHOW server_version" | awk '{print $1}')

log "pgbench -i -s $SCALE bench"
run_bounded "$PG_TIMEOUT" "$PGBENCH" -h "$PG_SOCK" -p "$PG_PORT" -U "$PG_USER" -i -q -s "$SCALE" bench \
    >"$WORK/pgbench-init.out" 2>&1 || { cat "$WORK/pgbench-init.out" >&2; die "pgbench -i failed"; }

# The upsert table: row 0 is the one every client hits (like sealgate's SetSecret loop on one
# name), rows 1..C are one per client. All exist before timing, so every run is updates only,
# like SetSecret on a secret that already has version 1.
psql_db bench \
    "CREATE TABLE bench_secrets (store_id int, name text, version bigint NOT NULL,
         value bytea NOT NULL, updated_at timestamptz NOT NULL, PRIMARY KEY (store_id, name))" \
    "INSERT INTO bench_secrets SELECT g, '$SECRET_NAME', 1, '\\x00', now() FROM generate_series(0, $CONC) g" \
    "VACUUM ANALYZE bench_secrets" >/dev/null
# VALUE_BYTES random bytes, fresh each transaction: 32 per sha256(), as many as needed.
value_expr="sha256(random()::text::bytea)"
for ((i = 32; i < VALUE_BYTES; i += 32)); do value_expr="$value_expr || sha256(random()::text::bytea)"; done
value_expr="substring($value_expr from 1 for $VALUE_BYTES)"
upsert_sql() {  # upsert_sql KEY_EXPR
    printf '%s\n' "INSERT INTO bench_secrets AS s (store_id, name, version, value, updated_at) VALUES ($1, '$SECRET_NAME', 1, $value_expr, now()) ON CONFLICT (store_id, name) DO UPDATE SET version = s.version + 1, value = EXCLUDED.value, updated_at = now();"
}
upsert_sql 0 >"$WORK/upsert_one_row.sql"
upsert_sql ":client_id + 1" >"$WORK/upsert_own_row.sql"

# sealgate: schema, an organization with an API key, a root key, the server.
run_bounded 120 "$SEALGATE_BIN" migrate --db "$CONNINFO" >"$WORK/migrate.out" 2>&1 ||
    { cat "$WORK/migrate.out" >&2; die "sealgate migrate failed"; }
run_bounded 60 "$SEALGATE_BIN" admin create-org bench --db "$CONNINFO" --json >"$WORK/org.json" 2>"$WORK/org.err" ||
    { cat "$WORK/org.err" >&2; die "sealgate admin create-org failed"; }
API_KEY=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["api_key"])' "$WORK/org.json") ||
    die "cannot read api_key from $WORK/org.json"
(umask 077; openssl rand -hex 32 >"$WORK/root.key")

SG_PORT=$(free_port)
SG_LOG=$WORK/sealgate.log
# --rate-limit 0: the benchmark measures the server, not the per-key limit (default 1000/s).
start_bg sealgate "$SG_LOG" "$SEALGATE_BIN" serve --db "$CONNINFO" --root-key-file "$WORK/root.key" --data-dir "$WORK/data" \
    --rate-limit 0 \
    --grpc-listen "127.0.0.1:$SG_PORT" --db-pool-size "$POOL_SIZE"
SG_PID=$BG_PID
wait_listening "$SG_PID" "$SG_PORT" sealgate "$SG_LOG"

# grpcio: stubs, a store with one secret (version 1), the h2load request bodies.
mkdir -p "$WORK/py"
protoc -I "$REPO_ROOT/proto" -I /usr/include --python_out="$WORK/py" --grpc_out="$WORK/py" \
    --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin "$REPO_ROOT"/proto/sealgate/v1/*.proto
SEALGATE_API_KEY=$API_KEY run_bounded 60 "$PY" "$SCRIPT_DIR/stores_client.py" "$WORK/py" \
    "127.0.0.1:$SG_PORT" setup "$WORK" "$SECRET_NAME" "$VALUE_BYTES" >"$WORK/setup.out" 2>&1 ||
    die "grpcio set-up failed: $(cat "$WORK/setup.out")"
STORE_ID=$(sed -nE 's/^store_id=([^ ]+) version=1$/\1/p' "$WORK/setup.out")
[[ -n $STORE_ID ]] || die "unexpected set-up output: $(cat "$WORK/setup.out")"
log "store $STORE_ID, secret $SECRET_NAME at version 1 (grpcio: CreateSecretStore, SetSecret, GetSecretStore OK)"
VERSION_START=$(secret_version)

# ---------------------------------------------------------------- rows

ROWS=(sg_get pg_select pg_select_prep sg_set pg_upsert_one pg_upsert_own)
declare -A RUNS=() PROBLEMS=() TOTAL=()
for k in get_ok get_cancelled get_bad get_done get_started set_ok set_aborted set_cancelled set_other set_done \
    set_started one_tx one_ver own_tx own_ver; do
    TOTAL[$k]=0
done
SET_OK_RUNS=""
SET_ABORT_PCTS=""

problem() { PROBLEMS[$1]+="${PROBLEMS[$1]:+; }$2"; }

# run_row ROW SECONDS TIMED: one run of one row; TIMED=1 records it.
run_row() {
    local row=$1 secs=$2 timed=$3 name=$1 before after finished pct ok_rate
    ((timed)) || name="$row-warmup"
    case $row in
    sg_get)
        h2load_run "$name" "$GET_PATH" "$WORK/get.grpc" "$secs"
        [[ -n $H2_PROBLEM ]] && problem "$row" "$H2_PROBLEM"
        TOTAL[get_ok]=$((TOTAL[get_ok] + LOG_OK))
        TOTAL[get_cancelled]=$((TOTAL[get_cancelled] + LOG_CANCELLED))
        TOTAL[get_bad]=$((TOTAL[get_bad] + LOG_ABORTED + LOG_OTHER))
        TOTAL[get_done]=$((TOTAL[get_done] + H2_DONE))
        TOTAL[get_started]=$((TOTAL[get_started] + H2_STARTED))
        ((timed)) && RUNS[$row]+="$H2_RPS "
        log "$name: $H2_RPS req/s; log: $LOG_OK OK, $LOG_CANCELLED CANCELLED, $((LOG_ABORTED + LOG_OTHER)) other for $H2_DONE done / $H2_STARTED started"
        ;;
    sg_set)
        h2load_run "$name" "$SET_PATH" "$WORK/set.grpc" "$secs"
        [[ -n $H2_PROBLEM ]] && problem "$row" "$H2_PROBLEM"
        TOTAL[set_ok]=$((TOTAL[set_ok] + LOG_OK))
        TOTAL[set_aborted]=$((TOTAL[set_aborted] + LOG_ABORTED))
        TOTAL[set_cancelled]=$((TOTAL[set_cancelled] + LOG_CANCELLED))
        TOTAL[set_other]=$((TOTAL[set_other] + LOG_OTHER))
        TOTAL[set_done]=$((TOTAL[set_done] + H2_DONE))
        TOTAL[set_started]=$((TOTAL[set_started] + H2_STARTED))
        # Calls that got an answer (CANCELLED: still in flight when h2load stopped).
        finished=$((LOG_OK + LOG_ABORTED + LOG_OTHER))
        pct=$(awk -v a="$LOG_ABORTED" -v f="$finished" 'BEGIN { printf "%.1f", f ? 100 * a / f : 0 }')
        ok_rate=$(awk -v r="$H2_RPS" -v o="$LOG_OK" -v f="$finished" 'BEGIN { printf "%.2f", f ? r * o / f : 0 }')
        if ((timed)); then
            RUNS[$row]+="$H2_RPS "
            SET_OK_RUNS+="$ok_rate "
            SET_ABORT_PCTS+="$pct "
        fi
        log "$name: $H2_RPS req/s, $ok_rate OK/s; log: $LOG_OK OK, $LOG_ABORTED ABORTED ($pct%), $LOG_CANCELLED CANCELLED, $LOG_OTHER other for $H2_DONE done / $H2_STARTED started"
        ;;
    pg_select | pg_select_prep)
        if [[ $row == pg_select ]]; then
            pgbench_run "$name" "$secs" -S
        else
            pgbench_run "$name" "$secs" -S -M prepared
        fi
        [[ -n $PG_PROBLEM ]] && problem "$row" "$PG_PROBLEM"
        ((timed)) && RUNS[$row]+="$PG_TPS "
        log "$name: $PG_TPS tx/s ($PG_TX transactions)"
        ;;
    pg_upsert_one | pg_upsert_own)
        local script=upsert_one_row.sql first=0 last=0 key=one
        if [[ $row == pg_upsert_own ]]; then
            script=upsert_own_row.sql first=1 last=$CONC key=own
        fi
        before=$(upsert_versions "$first" "$last")
        pgbench_run "$name" "$secs" -n -f "$WORK/$script"
        after=$(upsert_versions "$first" "$last")
        [[ -n $PG_PROBLEM ]] && problem "$row" "$PG_PROBLEM"
        TOTAL[${key}_tx]=$((TOTAL[${key}_tx] + PG_TX))
        TOTAL[${key}_ver]=$((TOTAL[${key}_ver] + after - before))
        ((timed)) && RUNS[$row]+="$PG_TPS "
        log "$name: $PG_TPS tx/s ($PG_TX transactions, versions +$((after - before)))"
        ;;
    esac
}

if ((WARMUP > 0)); then
    log "warm-up pass: ${WARMUP}s per row"
    for row in "${ROWS[@]}"; do run_row "$row" "$WARMUP" 0; done
fi
for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round of $ROUNDS: ${DURATION}s per row, concurrency $CONC"
    for row in "${ROWS[@]}"; do run_row "$row" "$DURATION" 1; done
done

VERSION_END=$(secret_version)
stop_pid "$SG_PID"

# ---------------------------------------------------------------- checks

# GetSecretStore: every call h2load completed was answered OK. Calls still in flight when a
# run stopped (started - done of them) are logged OK or CANCELLED, or not at all if they
# never left h2load.
note="log: ${TOTAL[get_ok]} OK, ${TOTAL[get_cancelled]} CANCELLED (in flight at stop) for ${TOTAL[get_done]} done / ${TOTAL[get_started]} started (warm-up incl.)"
if ((TOTAL[get_bad] != 0 || TOTAL[get_ok] < TOTAL[get_done] ||
    TOTAL[get_ok] + TOTAL[get_cancelled] > TOTAL[get_started])); then
    note="$note MISMATCH (${TOTAL[get_bad]} not OK)"
fi
GET_NOTE=$note

# SetSecret: the version advanced once per OK call; a call cancelled by h2load's stop may
# still have committed, so up to CANCELLED more.
ver_delta=$((VERSION_END - VERSION_START))
set_answered=$((TOTAL[set_ok] + TOTAL[set_aborted] + TOTAL[set_other]))
note="log: ${TOTAL[set_ok]} OK, ${TOTAL[set_aborted]} ABORTED, ${TOTAL[set_cancelled]} CANCELLED (in flight at stop), ${TOTAL[set_other]} other; version +$ver_delta"
if ((ver_delta < TOTAL[set_ok] || ver_delta > TOTAL[set_ok] + TOTAL[set_cancelled])); then
    note="$note MISMATCH (want ${TOTAL[set_ok]}..$((TOTAL[set_ok] + TOTAL[set_cancelled])))"
fi
if ((TOTAL[set_other] != 0 || set_answered < TOTAL[set_done] ||
    set_answered + TOTAL[set_cancelled] > TOTAL[set_started])); then
    note="$note MISMATCH (answered $set_answered for ${TOTAL[set_done]} done / ${TOTAL[set_started]} started)"
fi
SET_NOTE=$note
ABORT_PCT_ALL=$(awk -v a="${TOTAL[set_aborted]}" -v f="$set_answered" 'BEGIN { printf "%.1f", f ? 100 * a / f : 0 }')

for key in one own; do
    if ((TOTAL[${key}_tx] != TOTAL[${key}_ver])); then
        problem "pg_upsert_$key" "MISMATCH: versions +${TOTAL[${key}_ver]} for ${TOTAL[${key}_tx]} transactions"
    fi
done

# Anything sealgate logged at warn or error level.
SG_WARNINGS=$(grep -cE 'level=(warn|error)' "$SG_LOG" || true)

# ---------------------------------------------------------------- report

# shellcheck disable=SC2086  # word lists of numbers
{
    GET_RPS=$(median ${RUNS[sg_get]})
    SEL_TPS=$(median ${RUNS[pg_select]})
    SELP_TPS=$(median ${RUNS[pg_select_prep]})
    SET_RPS=$(median ${RUNS[sg_set]})
    SET_OK=$(median $SET_OK_RUNS)
    ONE_TPS=$(median ${RUNS[pg_upsert_one]})
    OWN_TPS=$(median ${RUNS[pg_upsert_own]})
}
pnote() { local p=${PROBLEMS[$1]:-}; echo "${p:+$p; }"; }

echo
echo "== sealgate stores vs pgbench, PostgreSQL $PG_VERSION (synchronous_commit=on, fsync=on), $CONC outstanding requests each, ${DURATION}s per run, median of $ROUNDS rounds, $(nproc) cores shared by all =="
echo "   h2load ${H2LOAD_ARGS[*]} -D $DURATION (h2c 127.0.0.1)   pgbench ${PGBENCH_ARGS[*]} -T $DURATION (Unix socket)"
echo "   $SG_IDENT, --db-pool-size $POOL_SIZE; pgbench -i -s $SCALE; secret value $VALUE_BYTES bytes"
printf '%-46s %10s  %s\n' "row" "req|tx/s" "notes"
print_row() { printf '%-46s %10.0f  %s\n' "$1" "$2" "$3"; }
print_row "sealgate GetSecretStore" "$GET_RPS" "$(pnote sg_get)$GET_NOTE; $(runs_note "${RUNS[sg_get]}")"
print_row "pgbench -S (select by primary key)" "$SEL_TPS" "$(pnote pg_select)$(runs_note "${RUNS[pg_select]}")"
print_row "pgbench -S -M prepared (reference)" "$SELP_TPS" "$(pnote pg_select_prep)$(runs_note "${RUNS[pg_select_prep]}")"
print_row "sealgate SetSecret, all answers" "$SET_RPS" "$(pnote sg_set)$SET_NOTE; $(runs_note "${RUNS[sg_set]}")"
# shellcheck disable=SC2086  # word list of numbers
print_row "sealgate SetSecret, status=OK only" "$SET_OK" "ABORTED share per run: $(printf '%s%% ' $SET_ABORT_PCTS)(all runs: $ABORT_PCT_ALL%); $(runs_note "$SET_OK_RUNS")"
print_row "pgbench upsert, one row for all clients" "$ONE_TPS" "$(pnote pg_upsert_one)versions +${TOTAL[one_tx]} = transactions; $(runs_note "${RUNS[pg_upsert_one]}")"
print_row "pgbench upsert, own row per client (ref.)" "$OWN_TPS" "$(pnote pg_upsert_own)versions +${TOTAL[own_tx]} = transactions; $(runs_note "${RUNS[pg_upsert_own]}")"
echo
r_get=$(ratio "$GET_RPS" "$SEL_TPS")
r_set=$(ratio "$SET_OK" "$ONE_TPS")
echo "== targets =="
printf '  %-58s %-8s (%sx)\n' "GetSecretStore >= 0.80x pgbench -S" "$(met ge "$r_get" 0.8)" "$r_get"
printf '  %-58s %-8s (%sx)\n' "SetSecret (status=OK) >= 0.80x pgbench upsert, one row" "$(met ge "$r_set" 0.8)" "$r_set"
printf '  (reference: GetSecretStore %sx pgbench -S -M prepared; SetSecret all answers %sx, OK %sx the own-row upsert;\n' \
    "$(ratio "$GET_RPS" "$SELP_TPS")" "$(ratio "$SET_RPS" "$ONE_TPS")" "$(ratio "$SET_OK" "$OWN_TPS")"
printf '   SetSecret answered ABORTED (gave up on write contention): %s%% of answered calls; sealgate warn/error log lines: %s)\n' \
    "$ABORT_PCT_ALL" "$SG_WARNINGS"
echo
echo "finished in $((SECONDS - START_SECONDS)) s"
