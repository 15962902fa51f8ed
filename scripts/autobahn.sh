#!/usr/bin/env bash
# scripts/autobahn.sh [TCPSERVER] [MODES]: the Autobahn|Testsuite fuzzing client against
# tcpserver's /ws in ws_echo mode, for each io mode (default "uring epoll"). Every case except
# 12.* and 13.* (permessage-deflate, which the server declines — RFC 6455 lets a server refuse
# an extension, and the suite's compression cases assume it was accepted). A mode passes when
# every case's behaviour is OK, NON-STRICT or INFORMATIONAL (and every close behaviour too).
# Reports: $SCRATCH/autobahn/<mode>/index.html.
#
# autobahntestsuite is Python 2 only. wstest is taken from PATH, else from pyenv's 2.7.18
# (installed there with pip on first use). Without either the script says so and exits 0,
# unless AUTOBAHN_REQUIRED=1 (then 2).
#   TCPSERVER=path   server binary (default: first argument, else .build/release/tcpserver)
#   SCRATCH=.build   where reports go
set -uo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-${TCPSERVER:-.build/release/tcpserver}}
MODES=${2:-"uring epoll"}
SCRATCH=${SCRATCH:-.build}
[ -x "$BIN" ] || { echo "autobahn: no server binary at $BIN"; exit 2; }

WSTEST=()
if command -v wstest >/dev/null 2>&1 && wstest --help >/dev/null 2>&1; then
    WSTEST=(wstest)
elif command -v pyenv >/dev/null 2>&1 && [ -n "$(pyenv versions --bare 2>/dev/null | grep -x '2.7.18')" ]; then
    if ! PYENV_VERSION=2.7.18 pyenv exec wstest --help >/dev/null 2>&1; then
        echo "autobahn: installing autobahntestsuite into pyenv 2.7.18 …"
        PYENV_VERSION=2.7.18 pyenv exec python -m pip install -q autobahntestsuite >/dev/null 2>&1
    fi
    PYENV_VERSION=2.7.18 pyenv exec wstest --help >/dev/null 2>&1 && WSTEST=(env PYENV_VERSION=2.7.18 pyenv exec wstest)
fi
if [ ${#WSTEST[@]} -eq 0 ]; then
    echo "autobahn: SKIPPED — wstest (pip autobahntestsuite, Python 2.7) is not available here"
    [ "${AUTOBAHN_REQUIRED:-0}" = 1 ] && exit 2
    exit 0
fi

failed=0
for mode in $MODES; do
    out="$SCRATCH/autobahn/$mode"
    rm -rf "$out"; mkdir -p "$out"
    log="$out/server.log"
    # 16 MiB messages (cases 9.1.6, 9.2.6) must fit max_frame_bytes; echo mode needs no hello.
    WS_ECHO=true "$BIN" --port 0 --io "$mode" --log-file '' --max-frame-bytes 67108864 >"$log" 2>&1 &
    pid=$!
    port=""
    for _ in $(seq 1 100); do
        port=$(grep -oE 'address=[^ ]*:[0-9]+' "$log" | head -1 | sed -E 's/.*:([0-9]+)$/\1/')
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "autobahn $mode: server did not start"; cat "$log"; kill "$pid" 2>/dev/null; failed=1; continue
    fi
    cat >"$out/spec.json" <<EOF
{"outdir": "$PWD/$out", "servers": [{"agent": "tcpserver-$mode", "url": "ws://127.0.0.1:$port/ws"}],
 "cases": ["*"], "exclude-cases": ["12.*", "13.*"], "exclude-agent-cases": {}}
EOF
    t0=$(date +%s)
    (cd "$out" && "${WSTEST[@]}" -m fuzzingclient -s spec.json >wstest.log 2>&1)
    rc=$?
    alive=1; kill -0 "$pid" 2>/dev/null || alive=0
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    if [ $alive = 0 ]; then echo "autobahn $mode: the server died during the run"; tail -20 "$log"; failed=1; continue; fi
    if [ $rc != 0 ] || [ ! -f "$out/index.json" ]; then
        echo "autobahn $mode: wstest failed (rc $rc)"; tail -20 "$out/wstest.log"; failed=1; continue
    fi
    python3 - "$out/index.json" "$mode" "$(( $(date +%s) - t0 ))" <<'EOF' || failed=1
import json, sys, collections
path, mode, secs = sys.argv[1], sys.argv[2], sys.argv[3]
cases = next(iter(json.load(open(path)).values()))
good = {"OK", "NON-STRICT", "INFORMATIONAL"}
bad = {k: (v["behavior"], v["behaviorClose"]) for k, v in cases.items()
       if v["behavior"] not in good or v["behaviorClose"] not in good}
counts = collections.Counter(v["behavior"] for v in cases.values())
print(f"autobahn {mode}: {len(cases)} cases in {secs} s — " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
for k in sorted(bad, key=lambda s: [int(x) for x in s.split(".")]):
    print(f"  FAILED {k}: behavior {bad[k][0]}, close {bad[k][1]}")
sys.exit(1 if bad or not cases else 0)
EOF
done
[ $failed = 0 ] && echo "autobahn: OK (${MODES// /, })"
exit $failed
