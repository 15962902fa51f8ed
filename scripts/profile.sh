#!/usr/bin/env bash
# CPU profile of tcpserver under a tcpserver-bench load (default: fan-out): `make profile`.
#
#   1. builds tcpserver and tcpserver-bench in release (PROFILE_SCRATCH, default .build);
#   2. starts `perf record -e cpu-clock -g -- tcpserver --io uring …` (cpu-clock: hardware
#      events are not available on VMs like this one);
#   3. runs `tcpserver-bench $PROFILE_LOAD --duration 5 --server-pid PID` (default load
#      `fanout --subs 50 --size 64`; e.g. PROFILE_LOAD="ping --conns 100 --inflight 8");
#   4. stops the server with SIGINT (to the tcpserver process itself; perf then writes its data);
#   5. writes profile/report.txt (perf report --no-children, flat top symbols, then call graphs
#      of the top ones, Swift names demangled) and profile/flame.svg (a flame graph, drawn by the
#      small Python renderer below from `perf script` stacks: Debian has no flamegraph package).
#
# Knobs (environment): PROFILE_SCRATCH, PROFILE_DURATION (5), PROFILE_LOAD (the tcpserver-bench
# subcommand and its flags; default "fanout --subs $PROFILE_SUBS --size $PROFILE_SIZE"),
# PROFILE_SUBS (50), PROFILE_SIZE (64), PROFILE_IO (uring; or epoll), PROFILE_THREADS (2),
# PROFILE_CALLGRAPH (fp; `dwarf` for unwinding without frame
# pointers, much larger perf.data), PROFILE_OUT (profile), PROFILE_BUILD (1; 0 skips the build).
# Needs: perf (Debian linux-perf), python3; run as root or with kernel.perf_event_paranoid <= 1.
set -euo pipefail
cd "$(dirname "$0")/.."

SCRATCH=${PROFILE_SCRATCH:-.build}
DURATION=${PROFILE_DURATION:-5}
SUBS=${PROFILE_SUBS:-50}
SIZE=${PROFILE_SIZE:-64}
THREADS=${PROFILE_THREADS:-2}
LOAD=${PROFILE_LOAD:-fanout --subs $SUBS --size $SIZE}
IO=${PROFILE_IO:-uring}
CALLGRAPH=${PROFILE_CALLGRAPH:-fp}
OUT=${PROFILE_OUT:-profile}
BIN="$SCRATCH/release"

log() { echo "profile: $*" >&2; }

if ! command -v perf >/dev/null 2>&1 || ! perf --version >/dev/null 2>&1; then
  log "perf not found; installing Debian's linux-perf"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq linux-perf >/dev/null
fi
command -v python3 >/dev/null || { log "python3 is needed (Debian python3)"; exit 1; }

if [ "${PROFILE_BUILD:-1}" = 1 ]; then
  swift build -c release --scratch-path "$SCRATCH" --product tcpserver
  swift build -c release --scratch-path "$SCRATCH" --product tcpserver-bench
fi

mkdir -p "$OUT"
# Generated output, never committed: the directory ignores itself (root .gitignore has /profile/ too).
[ -f "$OUT/.gitignore" ] || echo '*' > "$OUT/.gitignore"
rm -f "$OUT/perf.data" "$OUT/perf.data.old"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# perf runs the server as its child: $! is perf's pid, the server's is found as perf's child.
perf record -e cpu-clock -F 4999 --call-graph "$CALLGRAPH" -o "$OUT/perf.data" -- \
  "$BIN/tcpserver" --io "$IO" --port "$PORT" --threads "$THREADS" --rate-limit-per-sec 0 \
  --log-file '' 2>"$OUT/server.log" &
PERF_PID=$!

SERVER_PID=""
cleanup() {
  # Only our own processes, by pid: the server first (perf then exits by itself), then perf.
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -INT "$SERVER_PID" 2>/dev/null || true; fi
  sleep 1
  if kill -0 "$PERF_PID" 2>/dev/null; then kill -INT "$PERF_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  SERVER_PID=$(ps -o pid= --ppid "$PERF_PID" 2>/dev/null | tr -d ' ' | head -n1 || true)
  if [ -n "$SERVER_PID" ] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.1
done
[ -n "$SERVER_PID" ] || { log "tcpserver did not start under perf"; cat "$OUT/server.log" >&2; exit 1; }
comm=$(cat "/proc/$SERVER_PID/comm" 2>/dev/null || true)
[ "$comm" = tcpserver ] || { log "pid $SERVER_PID is '$comm', not tcpserver"; exit 1; }
log "tcpserver --io $IO pid $SERVER_PID on port $PORT under perf (pid $PERF_PID)"

set +e
# $LOAD is split on spaces on purpose: it is a subcommand and its flags.
# shellcheck disable=SC2086
"$BIN/tcpserver-bench" $LOAD --port "$PORT" --duration "$DURATION" \
  --server-pid "$SERVER_PID" --quiet | tee "$OUT/bench.txt"
bench_rc=${PIPESTATUS[0]}
set -e
[ "$bench_rc" = 0 ] || log "warning: tcpserver-bench exited $bench_rc (3 = missing deliveries)"

kill -INT "$SERVER_PID"
for _ in $(seq 1 150); do kill -0 "$PERF_PID" 2>/dev/null || break; sleep 0.1; done
wait "$PERF_PID" 2>/dev/null || true
trap - EXIT
[ -s "$OUT/perf.data" ] || { log "no perf.data written"; exit 1; }

demangle() { if command -v swift-demangle >/dev/null; then swift-demangle --simplified; else swift demangle --simplified; fi; }

{
  echo "# tcpserver --io $IO --threads $THREADS, tcpserver-bench $LOAD --duration $DURATION"
  echo "# $(grep -h '^RESULT' "$OUT/bench.txt" || true)"
  echo "# perf record -e cpu-clock -F 4999 --call-graph $CALLGRAPH; $(uname -r); $(date -u +%FT%TZ)"
  echo
  echo "## Top symbols (self time, --no-children)"
  perf report -i "$OUT/perf.data" --no-children --stdio --sort comm,dso,symbol -g none \
    --percent-limit 0.4 2>/dev/null | grep -v '^$'
  echo
  echo "## Call graphs of the symbols above 2 % (callers, --no-children)"
  perf report -i "$OUT/perf.data" --no-children --stdio --sort symbol -g caller,0.5,callee,function,percent \
    --percent-limit 2 2>/dev/null | grep -v '^$'
} 2>&1 | demangle | sed -E -e '/^# (To display the perf.data header|\(Tip:)/d' -e 's/ +(-|IPC) +(-|\[IPC Coverage\]) *$//' -e 's/ +$//' > "$OUT/report.txt"
log "wrote $OUT/report.txt"

perf script -i "$OUT/perf.data" -F comm,tid,ip,sym,dso 2>/dev/null | demangle > "$OUT/stacks.txt"
python3 - "$OUT/stacks.txt" "$OUT/flame.svg" "$OUT/collapsed.txt" <<'PY'
# perf script stacks → collapsed stacks (Brendan Gregg's format) → a flame graph SVG.
import sys, html, re, zlib
src, svg_path, collapsed_path = sys.argv[1:4]
counts = {}
MAXDEPTH = 48
def flush(comm, frames):
    if comm is None: return
    # Broken frame-pointer chains show up as long runs of [unknown]: fold repeats, cap depth.
    folded = []
    for fr in reversed(frames):
        if folded and fr == folded[-1] and fr.startswith("["): continue
        folded.append(fr)
    stack = [comm] + folded[-MAXDEPTH:]
    key = ";".join(stack)
    counts[key] = counts.get(key, 0) + 1
comm, frames = None, []
for line in open(src, errors="replace"):
    line = line.rstrip("\n")
    if not line.strip():
        flush(comm, frames); comm, frames = None, []
        continue
    if not line.startswith((" ", "\t")):
        flush(comm, frames); frames = []
        comm = line.split()[0]
        continue
    parts = line.strip().split(None, 1)
    if len(parts) < 2: continue
    rest = parts[1]
    m = re.match(r"(.*) \(([^)]*)\)$", rest)
    sym, dso = (m.group(1), m.group(2)) if m else (rest, "")
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
    if sym == "[unknown]": sym = "[" + dso.rsplit("/", 1)[-1].strip("[]") + "]" if dso else "[unknown]"
    elif dso.startswith("[kernel"): sym += "_[k]"
    frames.append(sym.replace(";", ":"))
flush(comm, frames)
with open(collapsed_path, "w") as f:
    for k, v in sorted(counts.items()): f.write(f"{k} {v}\n")
total = sum(counts.values())
if total == 0:
    sys.exit("no samples in perf script output")
# tree
root = {"n": "all", "v": 0, "c": {}}
for k, v in counts.items():
    node = root; node["v"] += v
    for fr in k.split(";"):
        node = node["c"].setdefault(fr, {"n": fr, "v": 0, "c": {}}); node["v"] += v
W, FH, PADT = 1200, 16, 40
def depth(n): return 1 + max((depth(c) for c in n["c"].values()), default=0)
D = depth(root)
H = PADT + D * FH + 20
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="monospace" font-size="11">',
       f'<rect width="{W}" height="{H}" fill="#f8f8f0"/>',
       f'<text x="{W/2}" y="20" text-anchor="middle" font-size="15">tcpserver CPU flame graph ({total} cpu-clock samples)</text>',
       f'<text x="10" y="{H-6}" fill="#555">width = share of samples; bottom = thread, upward = callees; hover for names</text>']
def color(name):
    h = zlib.crc32(name.encode()) & 0xffff
    if name.endswith("_[k]") or "[kernel" in name: return f"rgb({200 + h % 55},{120 + h % 60},{60})"
    if "UringServer" in name or "Reactor" in name or "Primitives" in name: return f"rgb({80 + h % 60},{160 + h % 60},{80 + h % 40})"
    return f"rgb({220 + h % 35},{100 + h % 100},{40 + h % 50})"
def draw(node, x, level):
    w = node["v"] / total * (W - 20)
    if w < 0.3: return
    y = H - 30 - (level + 1) * FH
    name = node["n"]
    pct = 100.0 * node["v"] / total
    label = html.escape(f"{name} ({node['v']} samples, {pct:.2f}%)")
    out.append(f'<g><title>{label}</title><rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{FH-1}" fill="{color(name)}" rx="2"/>')
    chars = int(w / 6.6)
    if chars >= 3:
        t = name if len(name) <= chars else name[:chars - 2] + ".."
        out.append(f'<text x="{x+3:.2f}" y="{y+12}">{html.escape(t)}</text>')
    out.append("</g>")
    cx = x
    for c in sorted(node["c"].values(), key=lambda c: c["n"]):
        draw(c, cx, level + 1); cx += c["v"] / total * (W - 20)
draw(root, 10, 0)
out.append("</svg>")
open(svg_path, "w").write("\n".join(out))
print(f"profile: wrote {svg_path} ({total} samples, {len(counts)} distinct stacks)", file=sys.stderr)
PY
rm -f "$OUT/stacks.txt"
log "done: $OUT/report.txt $OUT/flame.svg ($OUT/perf.data for perf report -i)"
