#!/usr/bin/env bash
# Client benchmark: unary GetSecretStore (and Health/Check) from libsealgate's C client
# (client_bench.c: N threads, one sg_channel) against the same calls from Python grpcio
# (client_py.py: one grpc channel, N threads or N asyncio coroutines), against one sealgate
# with its database, in the same run. See tests/bench/README.md.
#
# A measurement, not a test: it exits 0 whether or not the target (C >= 3x Python) is met,
# and non-zero only when it could not measure (PostgreSQL or sealgate did not start, a client
# failed, ...).
#
# Environment:
#   SEALGATE_BIN         sealgate binary (default: <repo>/build/server/sealgate)
#   CLIENT_BENCH_BIN     the C load generator (default: <repo>/build/tests/bench/client_bench);
#                        libsealgate.so.0 is taken from ../../client next to it
#   BENCH_THREADS        calls outstanding on the one channel, per client (default 16)
#   BENCH_DURATION       timed seconds per run (default 3)
#   BENCH_WARMUP         untimed seconds at the start of every run (default 1)
#   BENCH_ROUNDS         rounds over all rows; the table shows medians (default 3)
#   BENCH_KEEP_TMP=1     keep the temporary directories (logs, client outputs)
set -euo pipefail

START_SECONDS=$SECONDS
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

SEALGATE_BIN=${SEALGATE_BIN:-$REPO_ROOT/build/server/sealgate}
CLIENT_BENCH_BIN=${CLIENT_BENCH_BIN:-$REPO_ROOT/build/tests/bench/client_bench}
THREADS=${BENCH_THREADS:-16}
DURATION=${BENCH_DURATION:-3}
WARMUP=${BENCH_WARMUP:-1}
ROUNDS=${BENCH_ROUNDS:-3}
PY=/usr/bin/python3
PG_LOCAL=$REPO_ROOT/deploy/pg-local.sh
TARGET_RATIO=3

# Bounds for every wait (seconds).
START_TIMEOUT=15 # sealgate must listen within this
STOP_TIMEOUT=10  # SIGTERM -> exit, then SIGKILL
PG_TIMEOUT=180   # deploy/pg-local.sh start/stop
RUN_SLACK=30     # a client run may take this much longer than warm-up + duration

for tool in protoc openssl timeout "$PY" /usr/bin/grpc_python_plugin; do
    command -v "$tool" >/dev/null || die "missing tool: $tool (deploy/install-deps.sh bench)"
done
[[ -x $SEALGATE_BIN ]] || die "sealgate binary not found at $SEALGATE_BIN (run: ninja -C build, or set SEALGATE_BIN)"
[[ -x $CLIENT_BENCH_BIN ]] || die "client_bench not found at $CLIENT_BENCH_BIN (run: ninja -C build, or set CLIENT_BENCH_BIN)"
LIBSEALGATE=$(dirname "$CLIENT_BENCH_BIN")/../../client/libsealgate.so.0
[[ -e $LIBSEALGATE ]] || die "libsealgate.so.0 not found at $LIBSEALGATE"
[[ -f /usr/share/grpc-proto/grpc/health/v1/health.proto ]] || die "missing /usr/share/grpc-proto (grpc-proto)"
for v in THREADS DURATION WARMUP ROUNDS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((THREADS >= 1 && THREADS <= 1024 && DURATION >= 1 && ROUNDS >= 1)) ||
    die "BENCH_THREADS must be 1..1024, BENCH_DURATION and BENCH_ROUNDS >= 1"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sealgate-bench-client.XXXXXX")
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

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
met() { if "$@"; then echo "met"; else echo "NOT MET"; fi; }
per_second() { awk -v a="$1" -v s="$DURATION" 'BEGIN { printf "%.2f", a < 0 ? -1 : a / s }'; }
field() { sed -nE "s/.*(^| )$1=([^ ]+).*/\\2/p" <<<"$2"; } # field KEY LINE

# ---------------------------------------------------------------- set-up

# Private copies, so a concurrent `ninja -C build` cannot swap a binary mid-run. The copy of
# client_bench finds the copy of libsealgate through LD_LIBRARY_PATH (its RUNPATH comes
# after it).
cp "$SEALGATE_BIN" "$WORK/sealgate"
cp "$CLIENT_BENCH_BIN" "$WORK/client_bench"
cp "$LIBSEALGATE" "$WORK/libsealgate.so.0"
SEALGATE_SRC_BIN=$SEALGATE_BIN
SEALGATE_BIN=$WORK/sealgate
"$SEALGATE_BIN" version >/dev/null 2>&1 || die "copy of $SEALGATE_SRC_BIN does not run (being rebuilt? retry)"
LD_LIBRARY_PATH=$WORK ldd "$WORK/client_bench" | grep -q "libsealgate.so.0 => $WORK/" ||
    die "the copy of client_bench does not load the copy of libsealgate"

SG_IDENT="$("$SEALGATE_BIN" version 2>&1 | head -n1), sha256 $(sha256sum "$SEALGATE_BIN" | cut -c1-12)"
LIB_IDENT="libsealgate sha256 $(sha256sum "$WORK/libsealgate.so.0" | cut -c1-12)"
GRPCIO=$("$PY" -c 'import grpc, google.protobuf as p; print("grpcio", grpc.__version__, "protobuf", p.__version__)')
log "work dir $WORK, cluster $PG_DIR; $(nproc) cores; $SG_IDENT; $LIB_IDENT; $GRPCIO"

PG_STARTED=1
CONNINFO=$(run_bounded "$PG_TIMEOUT" "$PG_LOCAL" start "$PG_DIR" | tail -n 1) ||
    die "deploy/pg-local.sh start $PG_DIR failed"
[[ $CONNINFO == host=* ]] || die "unexpected conninfo from deploy/pg-local.sh: $CONNINFO"
log "PostgreSQL: $CONNINFO"

# sealgate: schema, an organization with an API key, a root key, the server.
run_bounded 120 "$SEALGATE_BIN" migrate --db "$CONNINFO" >"$WORK/migrate.out" 2>&1 ||
    { cat "$WORK/migrate.out" >&2; die "sealgate migrate failed"; }
run_bounded 60 "$SEALGATE_BIN" admin create-org bench --db "$CONNINFO" --json >"$WORK/org.json" 2>"$WORK/org.err" ||
    { cat "$WORK/org.err" >&2; die "sealgate admin create-org failed"; }
API_KEY=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["api_key"])' "$WORK/org.json") ||
    die "cannot read api_key from $WORK/org.json"
export SEALGATE_API_KEY=$API_KEY # both clients read it from the environment
(umask 077; openssl rand -hex 32 >"$WORK/root.key")

SG_PORT=$(free_port)
SG_LOG=$WORK/sealgate.log
# --rate-limit 0: the benchmark measures the server, not the per-key limit (default 1000/s).
start_bg sealgate "$SG_LOG" "$SEALGATE_BIN" serve --db "$CONNINFO" --root-key-file "$WORK/root.key" --data-dir "$WORK/data" \
    --rate-limit 0 \
    --grpc-listen "127.0.0.1:$SG_PORT"
SG_PID=$BG_PID
wait_listening "$SG_PID" "$SG_PORT" sealgate "$SG_LOG"

# grpcio: the sealgate stubs (on sys.path) and health_pb2 (loaded by path, see
# health_check.py); then the store both clients read, made by stores_client.py.
mkdir -p "$WORK/py" "$WORK/pyhealth"
protoc -I "$REPO_ROOT/proto" -I /usr/include --python_out="$WORK/py" --grpc_out="$WORK/py" \
    --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin "$REPO_ROOT"/proto/sealgate/v1/*.proto
protoc -I /usr/share/grpc-proto --python_out="$WORK/pyhealth" grpc/health/v1/health.proto
HEALTH_PB2=$WORK/pyhealth/grpc/health/v1/health_pb2.py
run_bounded 60 "$PY" "$SCRIPT_DIR/stores_client.py" "$WORK/py" "127.0.0.1:$SG_PORT" \
    setup "$WORK" BENCH_SECRET 32 >"$WORK/setup.out" 2>&1 ||
    die "grpcio set-up failed: $(cat "$WORK/setup.out")"
STORE_ID=$(sed -nE 's/^store_id=([^ ]+) version=1$/\1/p' "$WORK/setup.out")
[[ -n $STORE_ID ]] || die "unexpected set-up output: $(cat "$WORK/setup.out")"
log "store $STORE_ID"

# ---------------------------------------------------------------- rows

# Row name: method (get | health) and client (c | pyt: grpcio threads | pya: grpcio asyncio).
ROWS=(get_c get_pyt get_pya health_c health_pyt health_pya)
declare -A RPS=() CPU_US=() CLIENT_CORES=() SERVER_CORES=() BUSY_CORES=() ERRORS=()
for row in "${ROWS[@]}"; do ERRORS[$row]=0; done

# run_row ROW ROUND: one run of one client; appends its figures to the row's lists.
run_row() {
    local row=$1 round=$2 out=$WORK/$1.$2.out method cmd line
    method=${row%_*}
    [[ $method == get ]] && method=get-store
    local common=(--target "127.0.0.1:$SG_PORT" --method "$method" --threads "$THREADS"
        --seconds "$DURATION" --warmup "$WARMUP" --watch-pid "$SG_PID")
    [[ $method == get-store ]] && common+=(--store-id "$STORE_ID")
    case ${row##*_} in
    c) cmd=(env LD_LIBRARY_PATH="$WORK" "$WORK/client_bench" "${common[@]}") ;;
    pyt) cmd=("$PY" "$SCRIPT_DIR/client_py.py" --stubs "$WORK/py" --health-pb2 "$HEALTH_PB2" --mode threads "${common[@]}") ;;
    pya) cmd=("$PY" "$SCRIPT_DIR/client_py.py" --stubs "$WORK/py" --health-pb2 "$HEALTH_PB2" --mode asyncio "${common[@]}") ;;
    esac
    run_bounded $((WARMUP + DURATION + RUN_SLACK)) "${cmd[@]}" >"$out" 2>&1 ||
        { cat "$out" >&2; die "$row: client failed or timed out"; }
    line=$(grep -E '^client=' "$out" | tail -n 1)
    [[ -n $line ]] || { cat "$out" >&2; die "$row: no result line"; }
    RPS[$row]+="$(field calls_per_s "$line") "
    CPU_US[$row]+="$(field cpu_us_per_call "$line") "
    CLIENT_CORES[$row]+="$(per_second "$(field cpu_s "$line")") "
    SERVER_CORES[$row]+="$(per_second "$(field server_cpu_s "$line")") "
    BUSY_CORES[$row]+="$(per_second "$(field machine_busy_s "$line")") "
    ERRORS[$row]=$((ERRORS[$row] + $(field errors "$line")))
    log "round $round $row: $line"
}

# Other work on the machine takes cores from all rows alike; the table says how much there was.
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round of $ROUNDS: ${WARMUP}s warm-up + ${DURATION}s per row, $THREADS outstanding calls"
    for row in "${ROWS[@]}"; do run_row "$row" "$round"; done
done
stop_pid "$SG_PID"
SG_WARNINGS=$(grep -cE 'level=(warn|error)' "$SG_LOG" || true)

# ---------------------------------------------------------------- report

declare -A LABEL=(
    [get_c]="GetSecretStore, C libsealgate (threads)"
    [get_pyt]="GetSecretStore, Python grpcio threads"
    [get_pya]="GetSecretStore, Python grpcio asyncio"
    [health_c]="Health/Check, C libsealgate (threads)"
    [health_pyt]="Health/Check, Python grpcio threads"
    [health_pya]="Health/Check, Python grpcio asyncio"
)
declare -A MED=() MED_US=()
echo
echo "== unary calls on one channel (one HTTP/2 connection), $THREADS outstanding calls, ${DURATION}s per run after ${WARMUP}s warm-up, median of $ROUNDS rounds =="
echo "   $(nproc) cores shared by the client, sealgate and PostgreSQL (load average before round 1: $LOADAVG)"
echo "   $SG_IDENT (info logging); $LIB_IDENT; $GRPCIO"
printf '%-40s %9s %9s %8s %8s %8s  %s\n' "row" "calls/s" "cli us/c" "cli cpu" "srv cpu" "busy" "notes"
# shellcheck disable=SC2086  # word lists of numbers
for row in "${ROWS[@]}"; do
    MED[$row]=$(median ${RPS[$row]})
    MED_US[$row]=$(median ${CPU_US[$row]})
    note="runs: $(printf '%.0f ' ${RPS[$row]})"
    ((ERRORS[$row] == 0)) || note="${ERRORS[$row]} ERRORS; $note"
    printf '%-40s %9.0f %9.1f %8.2f %8.2f %8.2f  %s\n' "${LABEL[$row]}" "${MED[$row]}" "${MED_US[$row]}" \
        "$(median ${CLIENT_CORES[$row]})" "$(median ${SERVER_CORES[$row]})" "$(median ${BUSY_CORES[$row]})" "$note"
done
echo "   cli us/c: client CPU time per call (all its threads); cli cpu, srv cpu, busy: cores used by the"
echo "   client, by sealgate and by the whole machine (of $(nproc)) over the timed window; every response checked"

# Python's figure is its better shape (threads or asyncio), per method.
best_py() { if ge "${MED[${1}_pyt]}" "${MED[${1}_pya]}"; then echo "${1}_pyt"; else echo "${1}_pya"; fi; }
PY_GET=$(best_py get)
PY_HEALTH=$(best_py health)
r_get=$(ratio "${MED[get_c]}" "${MED[$PY_GET]}")
r_health=$(ratio "${MED[health_c]}" "${MED[$PY_HEALTH]}")
echo
echo "== target =="
printf '  %-62s %-8s (%sx)\n' "GetSecretStore calls/s: C >= ${TARGET_RATIO}x Python (${LABEL[$PY_GET]##*grpcio })" \
    "$(met ge "$r_get" "$TARGET_RATIO")" "$r_get"
printf '  (Health/Check calls/s: C %sx Python %s; client CPU per call, Python / C: GetSecretStore %sx, Health/Check %sx;\n' \
    "$r_health" "${LABEL[$PY_HEALTH]##*grpcio }" "$(ratio "${MED_US[$PY_GET]}" "${MED_US[get_c]}")" \
    "$(ratio "${MED_US[$PY_HEALTH]}" "${MED_US[health_c]}")"
printf '   sealgate warn/error log lines: %s)\n' "$SG_WARNINGS"
echo
echo "finished in $((SECONDS - START_SECONDS)) s"
