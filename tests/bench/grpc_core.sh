#!/usr/bin/env bash
# Core gRPC benchmark for sealgate: unary throughput against grpc C++ and
# nghttpd, and memory per idle HTTP/2 connection. See tests/bench/README.md.
#
# A measurement, not a test: it exits 0 whether or not the targets are met,
# and non-zero only when it could not measure (a server did not start, a
# gRPC server did not answer SERVING, h2load failed, ...).
#
# Environment:
#   SEALGATE_BIN         sealgate binary (default: <repo>/build/server/sealgate)
#   BENCH_REQUESTS       h2load -n per throughput row (default 200000)
#   BENCH_WARMUP         untimed h2load requests before each timed run (default 2000)
#   BENCH_ROUNDS         rounds over the four servers; the table shows medians (default 3)
#   BENCH_IDLE_CONNS     connections for the memory rows (default 5000)
#   BENCH_CACHE_DIR      where the grpc C++ server is built (default <repo>/build/bench)
#   BENCH_NGHTTPD_WORKERS  nghttpd -n (default: number of cores)
#   BENCH_KEEP_TMP=1     keep the temporary directory (logs, h2load output)
set -euo pipefail

START_SECONDS=$SECONDS
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
# shellcheck source=tests/bench/lib.sh
source "$SCRIPT_DIR/lib.sh"

SEALGATE_BIN=${SEALGATE_BIN:-$REPO_ROOT/build/server/sealgate}
REQUESTS=${BENCH_REQUESTS:-200000}
WARMUP=${BENCH_WARMUP:-2000}
ROUNDS=${BENCH_ROUNDS:-3}
IDLE_CONNS=${BENCH_IDLE_CONNS:-5000}
CACHE_DIR=${BENCH_CACHE_DIR:-$REPO_ROOT/build/bench}
NCPU=$(nproc)
NGHTTPD_WORKERS=${BENCH_NGHTTPD_WORKERS:-$NCPU}
H2LOAD_ARGS=(-c 16 -m 32 -t 1)
GRPC_HEADERS=(-H 'content-type: application/grpc' -H 'te: trailers')
HEALTH_PATH=/grpc.health.v1.Health/Check
HEALTH_PROTO_ROOT=/usr/share/grpc-proto
HEALTH_PROTO=grpc/health/v1/health.proto
PY=/usr/bin/python3

# Bounds for every wait (seconds).
START_TIMEOUT=15       # a server must listen within this
STOP_TIMEOUT=10        # SIGTERM -> exit, then SIGKILL
H2LOAD_TIMEOUT=${BENCH_H2LOAD_TIMEOUT:-600}
BUILD_TIMEOUT=900
IDLE_TIMEOUT=180       # idle_conns.py must have all connections up within this
SETTLE_MAX=15          # RSS must stop moving within this (else: last reading)


for tool in h2load nghttpd protoc g++ pkg-config timeout "$PY"; do
    command -v "$tool" >/dev/null || die "missing tool: $tool"
done
[[ -x $SEALGATE_BIN ]] || die "sealgate binary not found at $SEALGATE_BIN (run: ninja -C build, or set SEALGATE_BIN)"
[[ $REQUESTS =~ ^[0-9]+$ && $REQUESTS -ge 16 ]] || die "BENCH_REQUESTS must be an integer >= 16"
[[ $IDLE_CONNS =~ ^[0-9]+$ ]] || die "BENCH_IDLE_CONNS must be an integer"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sealgate-bench.XXXXXX")
# sealgate needs its database even for Health/Check: a private cluster, in a directory of
# its own (as root, deploy/pg-local.sh hands it to the postgres user, which could not reach it
# inside the mode-0700 $WORK).
PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sealgate-bench-pg.XXXXXX")
PG_LOCAL=$REPO_ROOT/deploy/pg-local.sh
PG_STARTED=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_started
    if ((PG_STARTED)); then
        timeout 60 "$PG_LOCAL" stop "$PG_DIR" >/dev/null 2>&1 || log "stopping PostgreSQL failed"
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

# Raise the fd limit for everything started from here (sealgate holds one
# fd per connection; root may raise the hard limit).
want_fds=$((IDLE_CONNS + 1024))
if (($(ulimit -n) < want_fds)); then
    ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
(($(ulimit -n) >= IDLE_CONNS + 64)) || die "fd limit $(ulimit -n) too low for $IDLE_CONNS connections"


start_sealgate() {  # start_sealgate NAME PORT [extra flags...]; sets BG_PID
    local name=$1 port=$2
    shift 2
    start_bg "$name" "$WORK/$name.log" \
        "$SEALGATE_BIN" serve --grpc-listen "127.0.0.1:$port" --db "$DB" \
        --root-key-file "$WORK/root.key" --data-dir "$WORK/data" "$@"
    wait_listening "$BG_PID" "$port" "$name" "$WORK/$name.log"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
count_ok() { grep -c 'status=OK' "$1" || true; }

verify_serving() {  # verify_serving NAME PORT: one real grpcio call must say SERVING
    local name=$1 port=$2 out
    if ! run_bounded 30 "$PY" "$SCRIPT_DIR/health_check.py" "$HEALTH_PB2" "127.0.0.1:$port" 10 \
        >"$WORK/$name.check" 2>&1; then
        die "$name: grpcio Health/Check did not return SERVING: $(cat "$WORK/$name.check")"
    fi
    out=$(cat "$WORK/$name.check")
    [[ $out == SERVING ]] || die "$name: unexpected grpcio output: $out"
    log "$name: grpcio Health/Check -> $out"
}

# h2load_run NAME URL [h2load args...]: warm-up, then the timed run.
# Sets H2_RPS and H2_NOTE; the timed output is kept in $WORK/NAME.h2load.
h2load_run() {
    local name=$1 url=$2 out=$WORK/$1.h2load warm succeeded failed errored
    shift 2
    warm=$WARMUP
    ((warm > REQUESTS)) && warm=$REQUESTS
    if ((warm > 0)); then
        run_bounded "$H2LOAD_TIMEOUT" h2load "${H2LOAD_ARGS[@]}" -n "$warm" "$@" "$url" \
            >"$WORK/$name.warmup.h2load" 2>&1 || {
            cat "$WORK/$name.warmup.h2load" >&2
            die "$name: h2load warm-up failed"
        }
    fi
    log "$name: h2load ${H2LOAD_ARGS[*]} -n $REQUESTS $url"
    run_bounded "$H2LOAD_TIMEOUT" h2load "${H2LOAD_ARGS[@]}" -n "$REQUESTS" "$@" "$url" >"$out" 2>&1 || {
        cat "$out" >&2
        die "$name: h2load failed or timed out (${H2LOAD_TIMEOUT}s)"
    }
    H2_RPS=$(awk '/^finished in/ {for (i = 1; i <= NF; i++) if ($(i+1) == "req/s,") {print $i; exit}}' "$out")
    [[ -n $H2_RPS ]] || { cat "$out" >&2; die "$name: cannot parse h2load output"; }
    read -r succeeded failed errored < <(awk '/^requests:/ {print $8, $10, $12}' "$out")
    local two_xx
    two_xx=$(awk '/^status codes:/ {print $3}' "$out")
    H2_NOTE="$succeeded/$REQUESTS ok"
    if [[ $succeeded != "$REQUESTS" || $failed != 0 || $errored != 0 || $two_xx != "$REQUESTS" ]]; then
        H2_NOTE="$H2_NOTE, $failed failed, $errored errored, ${two_xx} 2xx (CHECK $out)"
    fi
    log "$name: $H2_RPS req/s ($H2_NOTE)"
}

ROW_NAMES=()
ROW_RPS=()
ROW_NOTES=()
add_row() { ROW_NAMES+=("$1"); ROW_RPS+=("$2"); ROW_NOTES+=("$3"); }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

# ---------------------------------------------------------------- set-up

# Run a private copy of sealgate so a concurrent `ninja -C build` cannot swap
# the binary mid-run (all rows then measure the same build).
cp "$SEALGATE_BIN" "$WORK/sealgate"
SEALGATE_SRC_BIN=$SEALGATE_BIN
SEALGATE_BIN=$WORK/sealgate
"$SEALGATE_BIN" version >/dev/null 2>&1 || die "copy of $SEALGATE_SRC_BIN does not run (being rebuilt? retry)"

PG_STARTED=1
DB=$(timeout 120 "$PG_LOCAL" start "$PG_DIR") || die "could not start PostgreSQL"
"$SEALGATE_BIN" migrate --db "$DB" >/dev/null || die "sealgate migrate failed"
(umask 077 && openssl rand -hex 32 >"$WORK/root.key")

log "work dir $WORK; $NCPU cores; $(h2load --version | head -n1); $("$SEALGATE_BIN" version 2>&1 | head -n1) from $SEALGATE_SRC_BIN"
log "fd limit $(ulimit -n); h2load ${H2LOAD_ARGS[*]} -n $REQUESTS (warm-up $WARMUP)"

# gRPC request body: 5-byte message prefix (uncompressed, length 0) + an
# empty HealthCheckRequest.
BODY=$WORK/health_check.grpc
printf '\x00\x00\x00\x00\x00' >"$BODY"

# health_pb2 for the grpcio check (loaded by path, see health_check.py).
mkdir -p "$WORK/py"
protoc -I "$HEALTH_PROTO_ROOT" --python_out="$WORK/py" "$HEALTH_PROTO"
HEALTH_PB2=$WORK/py/grpc/health/v1/health_pb2.py
[[ -f $HEALTH_PB2 ]] || die "protoc did not produce $HEALTH_PB2"

# grpc C++ callback-API server, rebuilt only when its inputs change.
build_cpp_server() {
    local src=$SCRIPT_DIR/grpc_cpp_health_server.cc flags key gen
    CPP_BIN=$CACHE_DIR/grpc_cpp_health_server
    mkdir -p "$CACHE_DIR"
    flags=$(pkg-config --cflags --libs grpc++ protobuf) || die "pkg-config grpc++ protobuf failed (install libgrpc++-dev)"
    key=$({
        sha256sum <"$src"
        sha256sum <"$HEALTH_PROTO_ROOT/$HEALTH_PROTO"
        echo "$flags"
        g++ --version | head -n1
        protoc --version
        pkg-config --modversion grpc++
    } | sha256sum | cut -d' ' -f1)
    if [[ -x $CPP_BIN && -f $CPP_BIN.stamp && $(cat "$CPP_BIN.stamp") == "$key" ]]; then
        log "grpc C++ server: up to date ($CPP_BIN)"
        return
    fi
    log "grpc C++ server: building $CPP_BIN (grpc++ $(pkg-config --modversion grpc++))"
    gen=$CACHE_DIR/gen
    rm -rf "$gen"
    mkdir -p "$gen"
    protoc -I "$HEALTH_PROTO_ROOT" --cpp_out="$gen" --grpc_out="$gen" \
        --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin "$HEALTH_PROTO"
    # shellcheck disable=SC2086  # $flags is a word list from pkg-config
    run_bounded "$BUILD_TIMEOUT" g++ -O2 -std=c++17 -I "$gen" -o "$CPP_BIN.tmp" "$src" \
        "$gen/grpc/health/v1/health.pb.cc" "$gen/grpc/health/v1/health.grpc.pb.cc" \
        $flags || die "building the grpc C++ server failed"
    mv -f "$CPP_BIN.tmp" "$CPP_BIN"
    echo "$key" >"$CPP_BIN.stamp"
}
build_cpp_server

# ---------------------------------------------------------------- throughput

# All four servers run side by side; each round loads them one after another, so slow
# phases of this shared machine hit every server alike. The table reports each server's
# median over the rounds and the ratios of medians.
port_sg=$(free_port)
start_sealgate sealgate "$port_sg"
sg_pid=$BG_PID
verify_serving sealgate "$port_sg"

port_sgw=$(free_port)
start_sealgate sealgate-warn "$port_sgw" --log-level warn
sgw_pid=$BG_PID
verify_serving sealgate-warn "$port_sgw"

port_cpp=$(free_port)
start_bg grpc-cpp "$WORK/grpc-cpp.log" "$CPP_BIN" "127.0.0.1:$port_cpp"
cpp_pid=$BG_PID
wait_listening "$cpp_pid" "$port_cpp" "grpc C++ server" "$WORK/grpc-cpp.log"
verify_serving "grpc-cpp" "$port_cpp"

mkdir -p "$WORK/docroot"
printf 'ok' >"$WORK/docroot/ok"
port_ngd=$(free_port)
start_bg nghttpd "$WORK/nghttpd.log" nghttpd --no-tls -a 127.0.0.1 -n "$NGHTTPD_WORKERS" -d "$WORK/docroot" "$port_ngd"
ngd_pid=$BG_PID
wait_listening "$ngd_pid" "$port_ngd" "nghttpd" "$WORK/nghttpd.log"

declare -A RUNS NOTES
for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round of $ROUNDS"
    h2load_run sealgate "http://127.0.0.1:$port_sg$HEALTH_PATH" "${GRPC_HEADERS[@]}" -d "$BODY"
    RUNS[sealgate]+="$H2_RPS "; NOTES[sealgate]=$H2_NOTE
    h2load_run sealgate-warn "http://127.0.0.1:$port_sgw$HEALTH_PATH" "${GRPC_HEADERS[@]}" -d "$BODY"
    RUNS[sealgate-warn]+="$H2_RPS "; NOTES[sealgate-warn]=$H2_NOTE
    h2load_run grpc-cpp "http://127.0.0.1:$port_cpp$HEALTH_PATH" "${GRPC_HEADERS[@]}" -d "$BODY"
    RUNS[grpc-cpp]+="$H2_RPS "; NOTES[grpc-cpp]=$H2_NOTE
    h2load_run nghttpd "http://127.0.0.1:$port_ngd/ok"
    RUNS[nghttpd]+="$H2_RPS "; NOTES[nghttpd]=$H2_NOTE
done
stop_pid "$sg_pid"  # flushes and closes the logs
stop_pid "$sgw_pid"
stop_pid "$cpp_pid"
stop_pid "$ngd_pid"

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
runs_note() { echo "runs: $(printf '%.0f ' $1)"; }

# Expected status=OK lines: grpcio check + (warm-up + timed run) per round.
warm=$WARMUP
((warm > REQUESTS)) && warm=$REQUESTS
expected=$((1 + ROUNDS * (warm + REQUESTS)))
ok_lines=$(count_ok "$WORK/sealgate.log")
unexpected=$(grep 'msg=rpc' "$WORK/sealgate.log" | grep -vc 'status=OK' || true)
note="${NOTES[sealgate]}; log: $ok_lines status=OK lines (expected $expected)"
[[ $ok_lines == "$expected" && $unexpected == 0 ]] || note="$note MISMATCH ($unexpected not OK)"
# shellcheck disable=SC2086  # word lists of numbers
SEALGATE_RPS=$(median ${RUNS[sealgate]})
add_row "sealgate" "$SEALGATE_RPS" "$note; $(runs_note "${RUNS[sealgate]}")"

ok_lines=$(count_ok "$WORK/sealgate-warn.log")
note="${NOTES[sealgate-warn]}; log: $ok_lines status=OK lines (expected 0)"
[[ $ok_lines == 0 ]] || note="$note MISMATCH"
# shellcheck disable=SC2086
SEALGATE_WARN_RPS=$(median ${RUNS[sealgate-warn]})
add_row "sealgate --log-level warn" "$SEALGATE_WARN_RPS" "$note; $(runs_note "${RUNS[sealgate-warn]}")"

# shellcheck disable=SC2086
CPP_RPS=$(median ${RUNS[grpc-cpp]})
add_row "grpc C++ $(pkg-config --modversion grpc++) callback" "$CPP_RPS" \
    "${NOTES[grpc-cpp]}; $(runs_note "${RUNS[grpc-cpp]}")"

# shellcheck disable=SC2086
NGHTTPD_RPS=$(median ${RUNS[nghttpd]})
add_row "nghttpd -n $NGHTTPD_WORKERS (GET 2 B)" "$NGHTTPD_RPS" \
    "${NOTES[nghttpd]}; $(runs_note "${RUNS[nghttpd]}")"

# ---------------------------------------------------------------- memory

# measure_idle NAME [--call]: fresh sealgate, VmRSS before and after
# IDLE_CONNS idle connections. Sets MEM_BEFORE, MEM_AFTER, MEM_PER_CONN, MEM_NOTE.
measure_idle() {
    local name=$1 port pid client_pid i prev cur fds_before fds_after stable
    shift
    port=$(free_port)
    start_sealgate "$name" "$port"
    pid=$BG_PID
    sleep 0.5
    MEM_BEFORE=$(rss_kib "$pid")
    fds_before=$(fd_count "$pid")
    log "$name: VmRSS before $MEM_BEFORE KiB; opening $IDLE_CONNS connections $*"
    start_bg "$name-client" "$WORK/$name-client.out" \
        "$PY" "$SCRIPT_DIR/idle_conns.py" --port "$port" --count "$IDLE_CONNS" \
        --timeout "$IDLE_TIMEOUT" --hold $((IDLE_TIMEOUT + 120)) "$@"
    client_pid=$BG_PID
    for ((i = 0; i < (IDLE_TIMEOUT + 10) * 10; i++)); do
        grep -q '^READY' "$WORK/$name-client.out" && break
        if ! kill -0 "$client_pid" 2>/dev/null; then
            cat "$WORK/$name-client.out" >&2
            die "$name: idle_conns.py failed"
        fi
        sleep 0.1
    done
    grep -q '^READY' "$WORK/$name-client.out" || die "$name: connections not up within ${IDLE_TIMEOUT}s"
    # Settle: until two readings 1 s apart agree (bounded).
    prev=$(rss_kib "$pid")
    stable=0
    for ((i = 0; i < SETTLE_MAX; i++)); do
        sleep 1
        cur=$(rss_kib "$pid")
        if [[ $cur == "$prev" ]]; then
            stable=1
            break
        fi
        prev=$cur
    done
    MEM_AFTER=$(rss_kib "$pid")
    fds_after=$(fd_count "$pid")
    MEM_PER_CONN=$(awk -v a="$MEM_AFTER" -v b="$MEM_BEFORE" -v n="$IDLE_CONNS" 'BEGIN { printf "%.1f", (a - b) / n }')
    MEM_NOTE="server fds $fds_before -> $fds_after"
    ((stable)) || MEM_NOTE="$MEM_NOTE; RSS still moving after ${SETTLE_MAX}s"
    kill -0 "$client_pid" 2>/dev/null || MEM_NOTE="$MEM_NOTE; client exited early"
    stop_pid "$client_pid"
    grep -v "^READY" "$WORK/$name-client.out" >&2 || true
    stop_pid "$pid"
    log "$name: VmRSS $MEM_BEFORE -> $MEM_AFTER KiB = $MEM_PER_CONN KiB/conn ($MEM_NOTE)"
}

measure_idle mem-idle
IDLE_B=$MEM_BEFORE IDLE_A=$MEM_AFTER IDLE_PER=$MEM_PER_CONN IDLE_NOTE=$MEM_NOTE
measure_idle mem-after-call --call
CALL_B=$MEM_BEFORE CALL_A=$MEM_AFTER CALL_PER=$MEM_PER_CONN CALL_NOTE=$MEM_NOTE
call_ok=$(count_ok "$WORK/mem-after-call.log")
CALL_NOTE="$CALL_NOTE; $call_ok status=OK log lines"

# ---------------------------------------------------------------- report

met() { if "$@"; then echo "met"; else echo "NOT MET"; fi; }

echo
echo "== unary grpc.health.v1.Health/Check, h2load ${H2LOAD_ARGS[*]} -n $REQUESTS, median of $ROUNDS rounds, 127.0.0.1, $NCPU cores (client and server share them) =="
printf '%-34s %12s %12s %12s  %s\n' "server" "req/s" "vs grpc C++" "vs nghttpd" "notes"
for i in "${!ROW_NAMES[@]}"; do
    printf '%-34s %12.0f %11sx %11sx  %s\n' "${ROW_NAMES[$i]}" "${ROW_RPS[$i]}" \
        "$(ratio "${ROW_RPS[$i]}" "$CPP_RPS")" "$(ratio "${ROW_RPS[$i]}" "$NGHTTPD_RPS")" "${ROW_NOTES[$i]}"
done
echo
echo "== sealgate memory per connection ($IDLE_CONNS connections, VmRSS) =="
printf '%-34s %12s %12s %14s  %s\n' "connections" "before KiB" "after KiB" "KiB per conn" "notes"
printf '%-34s %12s %12s %14s  %s\n' "idle (preface + SETTINGS)" "$IDLE_B" "$IDLE_A" "$IDLE_PER" "$IDLE_NOTE"
printf '%-34s %12s %12s %14s  %s\n' "idle after one Health/Check" "$CALL_B" "$CALL_A" "$CALL_PER" "$CALL_NOTE"
echo
r_cpp=$(ratio "$SEALGATE_RPS" "$CPP_RPS")
r_ngd=$(ratio "$SEALGATE_RPS" "$NGHTTPD_RPS")
echo "== targets (sealgate with default logging) =="
printf '  %-44s %-8s (%sx)\n' "throughput >= 2.00x grpc C++" "$(met ge "$r_cpp" 2.0)" "$r_cpp"
printf '  %-44s %-8s (%sx)\n' "throughput >= 0.75x nghttpd" "$(met ge "$r_ngd" 0.75)" "$r_ngd"
printf '  %-44s %-8s (%s KiB)\n' "idle connection <= 64 KiB" "$(met le "$IDLE_PER" 64)" "$IDLE_PER"
printf '  (for reference, --log-level warn: %sx grpc C++, %sx nghttpd; after-call connection: %s KiB)\n' \
    "$(ratio "$SEALGATE_WARN_RPS" "$CPP_RPS")" "$(ratio "$SEALGATE_WARN_RPS" "$NGHTTPD_RPS")" "$CALL_PER"
echo
echo "finished in $((SECONDS - START_SECONDS)) s"
