#!/usr/bin/env bash
# `make dashboard-check`: the dashboard in a real browser, and what polling /stats costs.
#
#   1. test:      the Swift Testing suite "Dashboard: browser" (headless Debian chromium against an
#                 in-process server under chat load; screenshot in .build/artifacts/dashboard.png).
#   2. poll-cost: the fan-out load (tcpserver-bench fanout --subs 50 --size 64), ROUNDS times
#                 without and ROUNDS times with `curl -s http://127.0.0.1:PORT/stats` once a second,
#                 alternating (off, on, on, off, off, on, …) on a fresh release server each run;
#                 prints deliveries/s of every run, the medians and the ratio on/off.
#
# usage: scripts/dashboard-check.sh [test|poll-cost|all]     (default all)
# Environment: SCRATCH (.build), ROUNDS (3), DURATION (5), SUBS (50), SIZE (64),
#   POLL_COST_MAX_DROP (5: percent; a larger drop is reported as WARN, and fails only with
#   POLL_COST_STRICT=1: on a busy shared VM run-to-run noise alone can exceed 5 %).
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT=${1:-all}
SCRATCH=${SCRATCH:-.build}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
SUBS=${SUBS:-50}
SIZE=${SIZE:-64}
MAX_DROP=${POLL_COST_MAX_DROP:-5}

log() { echo "dashboard-check: $*" >&2; }

run_test() {
  if ! command -v chromium >/dev/null; then
    log "chromium is not installed; installing Debian's chromium"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
      || log "warning: could not install chromium; the test will fail"
  fi
  ulimit -n 65536 2>/dev/null || true
  swift test --scratch-path "$SCRATCH" --filter 'DashboardBrowserTests'
  [ -f .build/artifacts/dashboard.png ] && log "screenshot: .build/artifacts/dashboard.png"
}

# One fan-out run on a fresh server; $1 = on|off (poll /stats every second). Prints deliveries/s.
one_run() {
  local poll=$1 port server_pid poller_pid="" out rate
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$SCRATCH/release/tcpserver" --io uring --port "$port" --threads 2 --rate-limit-per-sec 0 \
    --log-file '' >/dev/null 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  if [ "$poll" = on ]; then
    ( while :; do curl -s "http://127.0.0.1:$port/stats" >/dev/null || true; sleep 1; done ) >/dev/null 2>&1 &
    poller_pid=$!
  fi
  out=$("$SCRATCH/release/tcpserver-bench" fanout --port "$port" --subs "$SUBS" --size "$SIZE" \
        --duration "$DURATION" --server-pid "$server_pid" --quiet || true)
  if [ -n "$poller_pid" ]; then kill "$poller_pid" 2>/dev/null || true; wait "$poller_pid" 2>/dev/null || true; fi
  kill -INT "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  rate=$(sed -n 's/.*deliveries_per_sec=\([0-9.]*\).*/\1/p' <<<"$out" | head -n1)
  percpu=$(sed -n 's/.*deliveries_per_cpu_s=\([0-9.]*\).*/\1/p' <<<"$out" | head -n1)
  echo "${rate:-0} ${percpu:-0}"
}

# Server CPU per request, measured directly: N sequential GET /stats, then N GET /health (the
# same accept/parse/close work without the render), on an idle server; utime+stime from /proc.
direct_cost() {
  local port server_pid
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$SCRATCH/release/tcpserver" --io uring --port "$port" --threads 2 --log-file '' >/dev/null 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  python3 - "$port" "$server_pid" <<'PY' || true
import socket, sys, os
port, pid = int(sys.argv[1]), int(sys.argv[2])
tick = os.sysconf("SC_CLK_TCK")
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
def get(path):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    n = 0
    while True:
        b = s.recv(65536)
        if not b: break
        n += len(b)
    s.close()
    return n
N = 3000
res = {}
for path in ("/health", "/stats", "/health", "/stats"):
    c0 = cpu(); size = 0
    for _ in range(N): size = get(path)
    res.setdefault(path, []).append((cpu() - c0) / N * 1e6)
h, st = min(res["/health"]), min(res["/stats"])
print(f"poll-cost: direct: server CPU per request: /stats {st:.0f} us ({size} bytes), /health {h:.0f} us;"
      f" at 1 poll/s that is {st / 1e6 * 100:.3f} % of one core")
PY
  kill -INT "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

run_poll_cost() {
  command -v curl >/dev/null || { log "curl is needed (Debian curl)"; exit 1; }
  swift build -c release --scratch-path "$SCRATCH" --product tcpserver >&2
  swift build -c release --scratch-path "$SCRATCH" --product tcpserver-bench >&2
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  local off=() on=() off_cpu=() on_cpu=() r order
  for r in $(seq 1 "$ROUNDS"); do
    # Alternate which goes first, so a drift in machine load hits both sides alike.
    if [ $((r % 2)) = 1 ]; then order="off on"; else order="on off"; fi
    for mode in $order; do
      local v c; read -r v c < <(one_run "$mode")
      log "round $r poll=$mode deliveries/s=$v deliveries/server-cpu-s=$c"
      if [ "$mode" = on ]; then on+=("$v"); on_cpu+=("$c"); else off+=("$v"); off_cpu+=("$c"); fi
    done
  done
  local m_off m_on
  m_off=$(printf '%s\n' "${off[@]}" | median)
  m_on=$(printf '%s\n' "${on[@]}" | median)
  log "deliveries per server CPU-second: off $(printf '%s\n' "${off_cpu[@]}" | median), on $(printf '%s\n' "${on_cpu[@]}" | median) (medians)"
  direct_cost
  local rc=0
  python3 - "$m_off" "$m_on" "$MAX_DROP" "${off[*]}" "${on[*]}" <<'PY' || rc=$?
import sys
import statistics
off, on, max_drop = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
offs = [float(x) for x in sys.argv[4].split()]
ons = [float(x) for x in sys.argv[5].split()]
ratio = on / off if off else 0.0
# Each round's two runs are back to back, so their ratio cancels slow drifts in machine load.
pairs = [b / a for a, b in zip(offs, ons) if a > 0]
pair_median = statistics.median(pairs) if pairs else 0.0
verdict = "PASS" if pair_median >= 1 - max_drop / 100 else "WARN"
print(f"poll-cost: without polling: {sys.argv[4]}  median {off:,.0f} deliveries/s")
print(f"poll-cost: with /stats 1/s: {sys.argv[5]}  median {on:,.0f} deliveries/s")
print(f"poll-cost: ratio of medians with/without = {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)")
print(f"poll-cost: per-round ratios {' '.join(f'{p:.3f}' for p in pairs)}; median {pair_median:.3f}"
      f" ({(pair_median - 1) * 100:+.1f} %); target within {max_drop:g} %: {verdict}")
sys.exit(0 if verdict == "PASS" else 10)
PY
  if [ "$rc" = 10 ] && [ "${POLL_COST_STRICT:-0}" = 1 ]; then exit 1; fi
  return 0
}

case "$WHAT" in
  test) run_test ;;
  poll-cost) run_poll_cost ;;
  all) run_test; run_poll_cost ;;
  *) echo "usage: $0 [test|poll-cost|all]" >&2; exit 2 ;;
esac
