# Shared by the benchmark scripts (sourced, not run): logging, and starting, waiting for and
# stopping the processes a benchmark runs, so that every one of them is gone when it ends.
# The sourcing script sets PY, START_TIMEOUT and STOP_TIMEOUT, and calls stop_started from
# its EXIT trap.

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# pid -> name of every process started and not reaped yet; START_ORDER lets stop_started stop
# clients before the servers they talk to.
declare -A LIVE=()
START_ORDER=()

stop_pid() {  # stop_pid PID: SIGTERM, bounded wait, then SIGKILL; reap.
    local pid=$1 i
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "${LIVE[$pid]:-pid $pid} did not exit within ${STOP_TIMEOUT}s of SIGTERM; killing"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    unset "LIVE[$pid]"
}

stop_started() {  # stops everything still running, newest first
    local pid i
    for ((i = ${#START_ORDER[@]} - 1; i >= 0; i--)); do
        pid=${START_ORDER[$i]}
        [[ -n ${LIVE[$pid]:-} ]] && stop_pid "$pid"
    done
    return 0
}

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

is_listening() {  # is_listening PORT: a LISTEN socket on that port (no connection made)
    local hex
    hex=$(printf '%04X' "$1")
    # IPv4 sockets are in /proc/net/tcp; grpc binds 127.0.0.1 as a v4-mapped IPv6 socket,
    # which shows up in /proc/net/tcp6.
    grep -qE ":$hex 0+:0000 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

wait_listening() {  # wait_listening PID PORT NAME LOGFILE
    local pid=$1 port=$2 name=$3 logfile=$4 i
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$logfile" >&2 || true
            die "$name exited during startup (log: $logfile)"
        fi
        is_listening "$port" && return 0
        sleep 0.1
    done
    tail -n 20 "$logfile" >&2 || true
    die "$name not listening on 127.0.0.1:$port within ${START_TIMEOUT}s"
}

# start_bg NAME LOGFILE CMD...: starts CMD in the background (stdout and stderr to LOGFILE)
# and sets BG_PID.
start_bg() {
    local name=$1 logfile=$2
    shift 2
    "$@" >"$logfile" 2>&1 &
    BG_PID=$!
    LIVE[$BG_PID]=$name
    START_ORDER+=("$BG_PID")
}

# run_bounded SECONDS CMD...: runs CMD under `timeout`, in the background so that a SIGINT or
# SIGTERM to the script interrupts the `wait` at once (a trap waits for a foreground child)
# and the EXIT trap stops it.
run_bounded() {
    local secs=$1 pid rc=0
    shift
    timeout "$secs" "$@" &
    pid=$!
    LIVE[$pid]="$1"
    START_ORDER+=("$pid")
    wait "$pid" || rc=$?
    unset "LIVE[$pid]"
    return "$rc"
}
