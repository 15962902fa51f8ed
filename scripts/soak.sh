#!/usr/bin/env bash
# scripts/soak.sh [SECONDS] [MODES]: builds release, then for each io mode (default "uring epoll")
# starts tcpserver on a free port (--port 0, port read from its "address=" log line, no log
# file), runs tcpserver-soak against it for SECONDS (default 60) with --server-pid, and stops it.
# Exits non-zero if any mode's soak reports a violation or the server dies.
#   SOAK_ARGS="..."   extra tcpserver-soak flags (e.g. --members 40 --churn 50 --seed 7)
#   SERVER_ARGS="..." extra tcpserver flags
#   SCRATCH=.build    build directory (default .build)
set -uo pipefail
cd "$(dirname "$0")/.."

RUN_SECONDS=${1:-60}
MODES=${2:-"uring epoll"}
SCRATCH=${SCRATCH:-.build}
echo "soak: building release …"
t0=$(date +%s)
if ! swift build -c release --scratch-path "$SCRATCH" --product tcpserver >/tmp/soak-build.$$ 2>&1 ||
   ! swift build -c release --scratch-path "$SCRATCH" --product tcpserver-soak >>/tmp/soak-build.$$ 2>&1; then
    grep -E "error:" /tmp/soak-build.$$ | head -20; tail -5 /tmp/soak-build.$$
    echo "soak: build FAILED"; rm -f /tmp/soak-build.$$; exit 2
fi
rm -f /tmp/soak-build.$$
echo "soak: build took $(( $(date +%s) - t0 )) s"
BIN=$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)
ulimit -n 65536 2>/dev/null || true

failed=0
for mode in $MODES; do
    log=$(mktemp /tmp/soak-server.XXXXXX)
    # shellcheck disable=SC2086
    "$BIN/tcpserver" --port 0 --io "$mode" --log-file '' ${SERVER_ARGS:-} >"$log" 2>&1 &
    pid=$!
    port=""
    for _ in $(seq 1 100); do
        port=$(grep -oE 'address=[^ ]*:[0-9]+' "$log" | head -1 | sed -E 's/.*:([0-9]+)$/\1/')
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "soak[$mode]: server did not start:"; cat "$log"; kill "$pid" 2>/dev/null; rm -f "$log"
        failed=1; continue
    fi
    echo "soak[$mode]: tcpserver pid $pid on port $port, soaking for ${RUN_SECONDS}s"
    # shellcheck disable=SC2086
    "$BIN/tcpserver-soak" --port "$port" --seconds "$RUN_SECONDS" --server-pid "$pid" --label "$mode" ${SOAK_ARGS:-}
    rc=$?
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "soak[$mode]: server DIED:"; tail -20 "$log"; rc=1
    else
        kill -TERM "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && { echo "soak[$mode]: server ignored SIGTERM for 5 s, killing"; kill -KILL "$pid"; rc=1; }
        wait "$pid" 2>/dev/null
    fi
    grep -E "level=(warning|error)" "$log" | head -5 | sed "s/^/soak[$mode] server: /"
    rm -f "$log"
    [ $rc -eq 0 ] || failed=1
    echo "soak[$mode]: $([ $rc -eq 0 ] && echo OK || echo FAILED)"
done
exit $failed
