#!/usr/bin/env python3
"""tcpserver vs Redis vs NATS: the same loads against four servers in one run.

Starts redis-server, nats-server and tcpserver twice (--io uring, --io epoll), each on its own
127.0.0.1 port, and drives them with tcpserver-bench in alternating rounds (every load runs
against every server in turn, the server order rotating each round; fresh servers each round).
Reports medians over the rounds:

  (a) fan-out 50 subscribers x 64 B, 1 publisher        closed window, max throughput
  (b) fan-out 500 subscribers x 256 B, 4 publishers     closed window
  (c) fan-out 50 subscribers x 4 KiB, 1 publisher       closed window
  (d) ping: 100 connections x 8 in flight
  (j) ping: 2,000 connections x 1 in flight (many connections, one request each per round trip)
  (e) latency: fan-out 50 x 64 B paced at half the lowest (a) rate of the four servers
      (measured in round 1, then fixed), publish->deliver p50/p99/p999
  (f) hold: 500 and 10,000 idle subscribed connections (3 s settle: idle means no traffic for
      over a second, when the server gives output buffers back) -> RSS, bytes per extra connection
  (g) compressed fan-out: 50 subscribers x 4 KiB of English-like text, subscribers ask for lz4
  (h) the same with zstd (g, h: tcpserver only, binary frames; Redis and NATS have no
      equivalent and show n/a) -> deliveries/s, bytes on the wire per delivery, wire ratio
  (i) fan-out 50 subscribers x 64 B over WebSocket: subscribers and publisher on tcpserver's /ws
      and on nats-server's websocket listener (started with one, no TLS); Redis has none (n/a)
      -> the same figures as (a), and the notes give (i) / (a) per server CPU-s

The ping loads (d) and (j) also run against "minimal", a minimal JSON-lines ping server in C
(scripts/minimal_ping_server.c: epoll, one thread, a scan for "type", a pong per line, one send
per read), compiled here with `cc -O2`: the floor for the CPU a request costs. The notes give
tcpserver's CPU per request as a multiple of it.

Writes bench/results.json, docs/performance-table.md and docs/performance.png (matplotlib;
skipped with a warning when it is missing). Exit status: 0, or 3 when a tcpserver run missed
deliveries or failed (Redis/NATS drops are findings, printed in the table, not failures).

A/B of two tcpserver builds: --ab-bin DIR names a folder holding a second ("before") build's
tcpserver binary. Two more servers then join the same alternating rounds, "uring-before" and
"epoll-before" (the same flags as "uring"/"epoll", binary from DIR; tcpserver-bench always comes
from --bin). The table gains their columns and "after ÷ before" ratio columns; the JSON
("ab_ratios") and the printed summary give, for every load, the ratio after/before of the
medians for uring and for epoll; the before build's drops are findings, not failures (exit 3 is
for the build under test). --servers LIST runs a comma-separated subset of
redis,nats,uring,epoll,uring-before,epoll-before (default: all that apply), e.g. an A/B
without Redis and NATS:

  scripts/bench.py --ab-bin /tmp/before --servers uring,epoll,uring-before,epoll-before \
      --out /tmp/ab.json --table /tmp/ab.md --chart /tmp/ab.png

(e) is paced at half the lowest (a) rate of the servers that run.

Usage: scripts/bench.py [--rounds 3] [--duration 3] [--quick] [--bin .build/release]
                        [--ab-bin DIR] [--servers LIST]
"""
import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import socket
import statistics
import subprocess
import tempfile
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOADS = [
    # key, label, tool arguments (without --wire/--port/--server-pid/--duration)
    ("a", "(a) fan-out 50 subs x 64 B, 1 pub", ["fanout", "--subs", "50", "--pubs", "1", "--size", "64"]),
    ("b", "(b) fan-out 500 subs x 256 B, 4 pubs", ["fanout", "--subs", "500", "--pubs", "4", "--size", "256"]),
    ("c", "(c) fan-out 50 subs x 4 KiB, 1 pub", ["fanout", "--subs", "50", "--pubs", "1", "--size", "4096"]),
    ("d", "(d) ping 100 conns x 8 in flight", ["ping", "--conns", "100", "--inflight", "8"]),
    ("j", "(j) ping 2,000 conns x 1 in flight", ["ping", "--conns", "2000", "--inflight", "1"]),
    ("e", "(e) latency: fan-out 50 x 64 B, paced", ["fanout", "--subs", "50", "--pubs", "1", "--size", "64"]),
    ("g", "(g) compressed fan-out 50 subs x 4 KiB text, lz4",
     ["fanout", "--subs", "50", "--pubs", "1", "--size", "4096", "--payload", "text", "--compress", "lz4"]),
    ("h", "(h) compressed fan-out 50 subs x 4 KiB text, zstd",
     ["fanout", "--subs", "50", "--pubs", "1", "--size", "4096", "--payload", "text", "--compress", "zstd"]),
    ("i", "(i) fan-out 50 subs x 64 B over WebSocket", ["fanout", "--subs", "50", "--pubs", "1", "--size", "64", "--ws"]),
]
# Loads only some servers can run: per-connection compression (tcpserver), WebSocket (tcpserver,
# NATS); the others show n/a.
TCPSERVER_ONLY = {"g", "h", "i"}
# The loads the minimal C server can answer (it knows hello and ping only).
PING_LOADS = {"d", "j"}


def runs_on(key, server):
    if server == "minimal":
        return key in PING_LOADS
    if key == "i":
        return WIRE[server] != "redis"
    return key not in TCPSERVER_ONLY or WIRE[server] == "tcpserver"
ALL_SERVERS = ["redis", "nats", "minimal", "uring", "epoll", "uring-before", "epoll-before"]
# The servers of this run (main() narrows it with --servers / --ab-bin); the table, the chart
# and the rotation follow this order.
SERVERS = ["redis", "nats", "minimal", "uring", "epoll"]
WIRE = {"redis": "redis", "nats": "nats", "minimal": "tcpserver", "uring": "tcpserver", "epoll": "tcpserver",
        "uring-before": "tcpserver", "epoll-before": "tcpserver"}
TITLE = {"redis": "Redis", "nats": "NATS", "minimal": "minimal C ping server", "uring": "tcpserver uring", "epoll": "tcpserver epoll",
         "uring-before": "tcpserver uring (before)", "epoll-before": "tcpserver epoll (before)"}
# tcpserver's --io mode per server name.
IO = {"uring": "uring", "epoll": "epoll", "uring-before": "uring", "epoll-before": "epoll"}
# A/B pairs: (io mode, after, before).
AB_PAIRS = [("uring", "uring", "uring-before"), ("epoll", "epoll", "epoll-before")]


# tcpserver runs its shipped defaults (presence on, the performance monitor on): only the
# per-connection rate limit is lifted, because the benchmark publishers flood. --log-file ''
# logs to stderr instead of a file (the bench reads the start line from it).
TCPSERVER_FLAGS = ["--rate-limit-per-sec", "0", "--log-file", ""]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Server:
    """One server process; `pid` is the server itself (the tool reads its /proc entries)."""

    def __init__(self, name, binary):
        self.name = name
        self.binary = binary
        self.proc = None
        self.port = None
        self.ws_port = None
        self.tail = []

    @property
    def pid(self):
        return self.proc.pid

    def _drain(self, stream):
        for line in iter(stream.readline, ""):
            self.tail.append(line.rstrip("\n"))
            del self.tail[:-50]

    def start(self):
        for attempt in range(3):
            if self._start_once():
                return
            self.stop()
        raise RuntimeError(f"{self.name}: could not start: " + " | ".join(self.tail[-5:]))

    def _start_once(self):
        self.tail = []
        if self.name in IO:
            io = IO[self.name]
            cmd = [self.binary, "--port", "0", "--io", io] + TCPSERVER_FLAGS
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True, preexec_fn=raise_nofile)
            end = time.time() + 15
            while time.time() < end:
                line = self.proc.stderr.readline()
                if not line:
                    break
                self.tail.append(line.rstrip("\n"))
                if "address=" in line:
                    addr = line.split("address=", 1)[1].split()[0]
                    self.port = int(addr.rsplit(":", 1)[1])
                    if f"io={io}" not in line:
                        log(f"warning: {self.name}: started line does not say io={io}: {line.strip()}")
                    threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True).start()
                    return wait_port(self.port)
            return False
        self.port = free_port()
        if self.name == "minimal":
            cmd = [self.binary, str(self.port)]
        elif self.name == "redis":
            cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--maxclients", "12000", "--loglevel", "warning"]
        else:
            # A websocket listener too (load (i)); it costs nothing while unused.
            self.ws_port = free_port()
            conf = os.path.join(tempfile.gettempdir(), f"bench-nats-{os.getpid()}-{self.port}.conf")
            with open(conf, "w") as f:
                f.write(f'listen: "127.0.0.1:{self.port}"\nwebsocket {{\n  listen: "127.0.0.1:{self.ws_port}"\n  no_tls: true\n}}\n')
            cmd = ["nats-server", "-c", conf]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, preexec_fn=raise_nofile)
        threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True).start()
        ok = wait_port(self.port)
        return ok and self.proc.poll() is None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def parse_result(stdout):
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            out = {}
            for kv in line[7:].split():
                k, _, v = kv.partition("=")
                try:
                    out[k] = float(v) if any(c in v for c in ".eE") else int(v)
                except ValueError:
                    out[k] = v
            return out
    return None


def run_tool(tool, server, args, duration, timeout_extra=40):
    port = server.ws_port if "--ws" in args and WIRE[server.name] == "nats" else server.port
    cmd = [tool] + args[:1] + ["--wire", WIRE[server.name], "--port", str(port),
                               "--server-pid", str(server.pid), "--quiet"] + args[1:]
    if args[0] != "hold":
        cmd += ["--duration", str(duration)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout_extra,
                           preexec_fn=raise_nofile)
    except subprocess.TimeoutExpired:
        return {"error": "timed out", "cmd": shlex.join(cmd)}
    res = parse_result(p.stdout)
    if res is None:
        return {"error": (p.stderr.strip() or f"exit {p.returncode}")[-300:], "exit": p.returncode,
                "cmd": shlex.join(cmd)}
    res["exit"] = p.returncode
    if res.get("tool_cpu_s") is not None and res.get("seconds"):
        res["tool_cpu_share"] = round(res["tool_cpu_s"] / res["seconds"], 3)
    return res


def shed_flags(port):
    """Feature flags tcpserver's monitor has shed right after a load ("?" when /stats fails)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
            return [f["name"] for f in json.load(r).get("flags", []) if f.get("shed")]
    except Exception:
        return ["?"]


def wait_restored(port, name, timeout=30):
    """A flooding load is an overload: tcpserver's monitor may shed presence and compression
    (as it would in production). The next load starts once the server has recovered on its own
    (breaches clear, then monitor_hold_ms), so (h) is not measured with compression shed by (g)."""
    end = time.time() + timeout
    shed = shed_flags(port)
    if shed:
        log(f"  {name}: waiting for the monitor to restore {', '.join(shed)}")
    while shed and time.time() < end:
        time.sleep(0.5)
        shed = shed_flags(port)
    if shed:
        log(f"  {name}: still shed after {timeout} s: {', '.join(shed)}")


def binary_id(path):
    """What identifies a tcpserver binary that is not this checkout's build: path, size, mtime, sha256."""
    try:
        import hashlib
        st = os.stat(path)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        mtime = datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc).isoformat(timespec="seconds")
        return f"{os.path.abspath(path)} ({st.st_size:,} bytes, modified {mtime}, sha256 {digest})"
    except OSError as e:
        return f"{path} ({e})"


def versions(tcpserver_bin, before_bin=None):
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except Exception:
            return "?"
    rev = out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "redis": out(["redis-server", "--version"]),
        "nats": out(["nats-server", "--version"]),
        "tcpserver": f"git {rev}{' (uncommitted changes)' if dirty else ''}",
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        **({"tcpserver_before": binary_id(before_bin)} if before_bin else {}),
    }


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def median(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


# ---------------------------------------------------------------------------------------------
# The table

METRICS = {
    # load: [(metric key, label, higher is better?, formatter)]
    "a": [("deliveries_per_sec", "deliveries/s", True, "rate"), ("deliveries_per_cpu_s", "deliveries per server CPU-s", True, "rate"),
          ("user_share", "user-space share of server CPU", None, "pct"), ("p99_us", "p99 µs (closed window, queueing)", False, "us"),
          ("tool_cpu_share", "load tool's CPU (share of one CPU)", None, "pct")],
    "b": [("deliveries_per_sec", "deliveries/s", True, "rate"), ("deliveries_per_cpu_s", "deliveries per server CPU-s", True, "rate"),
          ("user_share", "user-space share of server CPU", None, "pct")],
    "c": [("deliveries_per_sec", "deliveries/s", True, "rate"), ("deliveries_per_cpu_s", "deliveries per server CPU-s", True, "rate"),
          ("user_share", "user-space share of server CPU", None, "pct"),
          ("wire_bytes_per_delivery", "bytes on the wire per delivery", False, "int")],
    "d": [("requests_per_sec", "requests/s", True, "rate"), ("requests_per_cpu_s", "requests per server CPU-s", True, "rate"),
          ("user_share", "user-space share of server CPU", None, "pct"),
          ("p50_us", "p50 µs", False, "us"), ("p99_us", "p99 µs", False, "us"), ("p999_us", "p99.9 µs", False, "us")],
    "e": [("p50_us", "p50 µs publish→deliver", False, "us"), ("p99_us", "p99 µs publish→deliver", False, "us"),
          ("p999_us", "p99.9 µs publish→deliver", False, "us"), ("deliveries_per_cpu_s", "deliveries per server CPU-s", True, "rate"),
          ("tool_cpu_share", "load tool's CPU (share of one CPU)", None, "pct")],
    "f": [("rss_0_mb", "RSS, 0 connections (MB)", False, "mb"), ("rss_500_mb", "RSS, 500 connections (MB)", False, "mb"),
          ("rss_10000_mb", "RSS, 10,000 connections (MB)", False, "mb"),
          ("bytes_per_conn_500", "bytes per extra connection (500)", False, "int"),
          ("bytes_per_conn_10000", "bytes per extra connection (10,000)", False, "int")],
    "g": [("deliveries_per_sec", "deliveries/s", True, "rate"), ("deliveries_per_cpu_s", "deliveries per server CPU-s", True, "rate"),
          ("user_share", "user-space share of server CPU", None, "pct"),
          ("wire_bytes_per_delivery", "bytes on the wire per delivery (frame)", False, "int"),
          ("raw_bytes_per_delivery", "uncompressed JSON per delivery", None, "int"),
          ("wire_ratio", "compression on the wire (raw ÷ wire)", None, "x")],
}
METRICS["h"] = METRICS["g"]
METRICS["i"] = METRICS["a"]
METRICS["j"] = METRICS["d"]


def fmt(v, kind):
    if v is None:
        return "–"
    if kind == "rate":
        if v >= 1e6:
            return f"{v / 1e6:.2f} M"
        if v >= 1e3:
            return f"{v / 1e3:.0f} k"
        return f"{v:.0f}"
    if kind == "pct":
        return f"{v * 100:.0f} %"
    if kind == "us":
        return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"
    if kind == "mb":
        return f"{v:.1f}"
    if kind == "x":
        return f"{v:.2f}×"
    return f"{v:,.0f}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.2f}"


def hold_metrics(steps):
    out = [("rss_0_mb", "RSS, 0 connections (MB)", False, "mb")]
    for n in steps:
        out.append((f"rss_{n}_mb", f"RSS, {n:,} connections (MB)", False, "mb"))
    for n in steps:
        out.append((f"bytes_per_conn_{n}", f"RSS above idle per connection ({n:,})", False, "int"))
    for a, b in zip(steps, steps[1:]):
        out.append((f"marginal_bytes_per_conn_{b}", f"bytes per extra connection ({a:,} → {b:,})", False, "int"))
    for a, b in zip([0] + steps, steps):
        out.append((f"joins_per_sec_{b}", f"joins/s into one room ({a:,} → {b:,}; connect + hello + join)", True, "rate"))
    return out


# Ratio columns: (header, numerator, denominator); a column shows when both servers run.
RATIO_COLUMNS = [("uring ÷ Redis", "uring", "redis"), ("epoll ÷ Redis", "epoll", "redis"),
                 ("uring ÷ epoll", "uring", "epoll"), ("uring ÷ minimal C", "uring", "minimal"),
                 ("uring after ÷ before", "uring", "uring-before"), ("epoll after ÷ before", "epoll", "epoll-before")]


def build_table(res):
    med = res["medians"]
    labels = dict((k, l) for k, l, _ in LOADS)
    labels["f"] = "(f) hold: " + " / ".join(f"{n:,}" for n in res["hold_steps"]) + " idle subscribers"
    labels["e"] = f"(e) latency: fan-out 50 x 64 B at {res['latency_rate']:,.0f} msg/s"
    METRICS["f"] = hold_metrics(res["hold_steps"])
    columns = [c for c in RATIO_COLUMNS if c[1] in SERVERS and c[2] in SERVERS]
    head = ("| " + " | ".join(["load", "metric"] + [TITLE[s] for s in SERVERS] + [c[0] for c in columns]) + " |\n"
            "| " + " | ".join(["---", "---"] + ["---:"] * (len(SERVERS) + len(columns))) + " |")
    rows = [head]
    for key in ["a", "b", "c", "d", "j", "e", "f", "g", "h", "i"]:
        if key not in med:   # not run (or failed everywhere: the findings say so)
            continue
        first = True
        for metric, label, _, kind in METRICS[key]:
            vals = {s: med.get(key, {}).get(s, {}).get(metric) for s in SERVERS}
            cells = [fmt(vals[s], kind) for s in SERVERS]
            r = [ratio(vals[a], vals[b]) for _, a, b in columns]
            cells = ["n/a" if not runs_on(key, s) else c for s, c in zip(SERVERS, cells)]
            na = [not runs_on(key, a) or not runs_on(key, b) for _, a, b in columns]
            if kind in ("pct", "x"):
                r = ["" for _ in columns]
            r = ["n/a" if n else c for n, c in zip(na, r)]
            rows.append(f"| {labels[key] if first else ''} | {label} | " + " | ".join(cells) + " |"
                        + "".join(f" {c} |" for c in r))
            first = False
        # Drops and failures, per server, summed over the rounds.
        if key in ("a", "b", "c", "e", "f", "d", "j", "g", "h", "i"):
            cells = []
            any_issue = False
            for s in SERVERS:
                runs = [r for r in res["runs"] if r["load"] == key and r["server"] == s]
                missing = sum(r.get("missing", 0) or 0 for r in runs if "error" not in r)
                closed = sum((r.get("closed_subs", 0) or 0) + (r.get("closed", 0) or 0) for r in runs if "error" not in r)
                errors = sum(1 for r in runs if "error" in r)
                unverified = sum(r.get("verify_failed", 0) or 0 for r in runs if "error" not in r)
                parts = []
                if unverified:
                    parts.append(f"{unverified} failed to decompress")
                if missing:
                    parts.append(f"{missing:,} missing")
                if closed:
                    parts.append(f"{closed} closed")
                if errors:
                    parts.append(f"{errors} failed")
                any_issue |= bool(parts)
                cells.append(", ".join(parts) or "0")
            if any_issue:
                rows.append(f"| | drops (all rounds) | " + " | ".join(cells) + " |" + " |" * len(columns))
    return "\n".join(rows)


def write_chart(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("warning: matplotlib missing, no chart (pip install matplotlib)")
        return False
    med = res["medians"]
    keys = ["a", "b", "c", "d", "j", "e"]
    names = {"a": "(a) 50x64B", "b": "(b) 500x256B\n4 pubs", "c": "(c) 50x4KiB", "d": "(d) ping 100x8\n(requests)",
             "j": "(j) ping 2000x1\n(requests)", "e": "(e) paced\n50x64B"}
    colors = {"redis": "#d62728", "nats": "#2ca02c", "minimal": "#7f7f7f", "uring": "#1f77b4", "epoll": "#9ecae1",
              "uring-before": "#1f77b4", "epoll-before": "#9ecae1"}
    fig, ax = plt.subplots(figsize=(10, 5.5))
    width = 0.8 / len(SERVERS)
    for i, s in enumerate(SERVERS):
        ys = []
        for k in keys:
            m = med.get(k, {}).get(s, {})
            ys.append((m.get("deliveries_per_cpu_s") or m.get("requests_per_cpu_s") or 0) / 1e6)
        xs = [j + (i - (len(SERVERS) - 1) / 2) * width for j in range(len(keys))]
        bars = ax.bar(xs, ys, width, label=TITLE[s], color=colors[s],
                      hatch="//" if s.endswith("-before") else None, edgecolor="white" if s.endswith("-before") else None)
        for b, y, k in zip(bars, ys, keys):
            if runs_on(k, s):   # no "0.0" over a load the server does not run
                ax.annotate(f"{y:.1f}", (b.get_x() + b.get_width() / 2, y), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([names[k] for k in keys])
    ax.set_ylabel("millions of deliveries per server CPU-second")
    ax.set_title(f"Deliveries per server CPU-second (median of {res['rounds']} rounds, {res['date'][:10]}, "
                 f"{res['host']['cpus']} CPUs, shared VM)", fontsize=10)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per load per server")
    ap.add_argument("--hold", default="500,10000", help="idle connection steps for (f)")
    ap.add_argument("--latency-rate", type=float, default=0, help="msg/s for (e); default: half the lowest (a) rate")
    ap.add_argument("--quick", action="store_true", help="1 round, 1.5 s loads")
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build", "release"), help="folder with tcpserver and tcpserver-bench")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results.json"))
    ap.add_argument("--table", default=os.path.join(ROOT, "docs", "performance-table.md"))
    ap.add_argument("--chart", default=os.path.join(ROOT, "docs", "performance.png"))
    ap.add_argument("--loads", default="abcdefghij", help="subset of loads to run, e.g. 'ad'")
    ap.add_argument("--ab-bin", default=None, metavar="DIR",
                    help="folder with a second (\"before\") build's tcpserver: adds uring-before and epoll-before")
    ap.add_argument("--servers", default=None, metavar="LIST",
                    help="comma-separated subset of " + ",".join(ALL_SERVERS) + " (default: all that apply)")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 1
        args.duration = min(args.duration, 1.5)
    raise_nofile()
    tool = os.path.join(args.bin, "tcpserver-bench")
    tcpserver = os.path.join(args.bin, "tcpserver")
    for b in (tool, tcpserver):
        if not os.access(b, os.X_OK):
            sys.exit(f"missing {b}: build first (make bench does)")
    before = os.path.join(args.ab_bin, "tcpserver") if args.ab_bin else None
    if before and not os.access(before, os.X_OK):
        sys.exit(f"missing {before}: --ab-bin needs a folder holding the before build's tcpserver")
    default_servers = ALL_SERVERS if before else [s for s in ALL_SERVERS if not s.endswith("-before")]
    chosen = [x.strip() for x in args.servers.split(",") if x.strip()] if args.servers else default_servers
    unknown = [x for x in chosen if x not in ALL_SERVERS]
    if unknown or not chosen:
        sys.exit(f"--servers: unknown {', '.join(unknown) or '(empty list)'}; choose from {','.join(ALL_SERVERS)}")
    if not before and any(x.endswith("-before") for x in chosen):
        sys.exit("--servers: uring-before/epoll-before need --ab-bin DIR")
    minimal = None
    if "minimal" in chosen and not any(k in args.loads for k in PING_LOADS):
        chosen.remove("minimal")   # it only answers the ping loads
    if "minimal" in chosen:
        minimal = build_minimal()
        if minimal is None:
            if args.servers:
                sys.exit("--servers minimal: could not compile scripts/minimal_ping_server.c (cc)")
            chosen.remove("minimal")
    SERVERS[:] = [x for x in ALL_SERVERS if x in chosen]
    hold_steps = [int(x) for x in args.hold.split(",")]
    command = "scripts/bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    res = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command.strip(),
        "rounds": args.rounds, "duration": args.duration, "quick": args.quick,
        "hold_steps": hold_steps, "latency_rate": args.latency_rate,
        "servers": list(SERVERS),
        "host": versions(tcpserver, before), "loadavg_start": loadavg(),
        "server_flags": {
            "tcpserver": " ".join(shlex.quote(a) for a in TCPSERVER_FLAGS) + " (defaults otherwise)",
            "redis": "--save '' --appendonly no --maxclients 12000",
            "nats": "defaults",
        },
        "runs": [],
    }
    log(f"bench: {args.rounds} round(s), {args.duration:g} s per load, loads {args.loads}, load average {res['loadavg_start']}")
    t0 = time.time()
    servers = {s: Server(s, minimal if s == "minimal" else before if s.endswith("-before") else tcpserver)
               for s in SERVERS}
    try:
        for rnd in range(args.rounds):
            order = SERVERS[rnd % len(SERVERS):] + SERVERS[:rnd % len(SERVERS)]
            for s in order:
                servers[s].start()
            log(f"round {rnd + 1}/{args.rounds}: order {', '.join(order)}; ports " +
                ", ".join(f"{s}={servers[s].port}" for s in order))
            plan = []
            if "f" in args.loads:  # fresh servers: memory first
                plan.append(("f", ["hold", "--conns", args.hold, "--settle", "3"]))
            for key, _, targs in LOADS:
                if key in args.loads:
                    plan.append((key, targs))
            for key, targs in plan:
                if key == "e":
                    if not res["latency_rate"]:
                        a_rates = [r["deliveries_per_sec"] / 50 for r in res["runs"]
                                   if r["load"] == "a" and "error" not in r and r.get("deliveries_per_sec")]
                        res["latency_rate"] = round(0.5 * min(a_rates)) if a_rates else 5000
                    targs = targs + ["--rate", str(res["latency_rate"])]
                for s in order:
                    if not runs_on(key, s):
                        continue
                    srv = servers[s]
                    if not srv.alive():
                        log(f"  {s} is not running any more, restarting: {' | '.join(srv.tail[-3:])}")
                        srv.stop()
                        srv.start()
                    if s in IO:   # tcpserver (the minimal C server has no /stats)
                        wait_restored(srv.port, s)
                    r = run_tool(tool, srv, targs, args.duration)
                    r.update({"load": key, "server": s, "round": rnd + 1})
                    if s in IO:
                        r["shed"] = shed_flags(srv.port)
                    res["runs"].append(r)
                    log("  " + summary(key, s, r))
                    time.sleep(0.3)
            for s in order:
                servers[s].stop()
    finally:
        for s in servers.values():
            s.stop()
    res["seconds"] = round(time.time() - t0, 1)
    res["loadavg_end"] = loadavg()

    # Medians per load and server.
    med = {}
    for r in res["runs"]:
        if "error" in r:
            continue
        d = med.setdefault(r["load"], {}).setdefault(r["server"], {})
        for k, v in r.items():
            if isinstance(v, (int, float)) and k not in ("round", "exit"):
                d.setdefault(k, []).append(v)
    res["medians"] = {k: {s: {m: median(v) for m, v in d.items()} for s, d in sv.items()} for k, sv in med.items()}
    if any(s.endswith("-before") for s in SERVERS):
        res["ab_ratios"] = ab_ratios(res)

    findings = []
    failed = False
    for r in res["runs"]:
        issue = None
        if "error" in r:
            issue = f"failed: {r['error']}"
        elif r.get("missing") or r.get("closed_subs") or r.get("closed") or r.get("verify_failed"):
            issue = f"missing={r.get('missing', 0)} closed={r.get('closed_subs', r.get('closed', 0))}"
            if r.get("verify_failed"):
                issue += f" verify_failed={r['verify_failed']}"
        if issue:
            findings.append(f"round {r['round']} load ({r['load']}) {TITLE[r['server']]}: {issue}")
            if r["server"] in ("uring", "epoll"):  # the build under test; the before build's are findings
                failed = True
    res["findings"] = findings
    res["shed_after"] = sorted({f"({r['load']}) {TITLE[r['server']]}: {', '.join(r['shed'])}"
                                for r in res["runs"] if r.get("shed")})

    table = build_table(res)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    notes = notes_text(res)
    with open(args.table, "w") as f:
        f.write("# Performance: tcpserver vs Redis vs NATS\n\n")
        f.write(f"Generated by `{res['command']}` (`make bench`) on {res['date']} in {res['seconds']:.0f} s.\n\n")
        f.write(table + "\n\n" + notes + "\n")
    chart = write_chart(res, args.chart)
    print(table)
    print()
    print(notes)
    log(f"wrote {os.path.relpath(args.out, ROOT)}, {os.path.relpath(args.table, ROOT)}"
        + (f", {os.path.relpath(args.chart, ROOT)}" if chart else "") + f" in {res['seconds']:.0f} s")
    if failed:
        log("FAIL: a tcpserver run missed deliveries or failed (see findings)")
        sys.exit(3)


# The metrics the A/B summary line names per load (all of the table's are in the JSON).
AB_HEADLINE = {
    "a": [("deliveries_per_sec", "deliveries/s"), ("deliveries_per_cpu_s", "per CPU-s")],
    "d": [("requests_per_sec", "requests/s"), ("requests_per_cpu_s", "per CPU-s")],
    "e": [("p50_us", "p50"), ("p99_us", "p99")],
}
for _k in "bcghi":
    AB_HEADLINE[_k] = AB_HEADLINE["a"]
AB_HEADLINE["j"] = AB_HEADLINE["d"]


def load_metrics(key, hold_steps):
    return hold_metrics(hold_steps) if key == "f" else METRICS[key]


def ab_ratios(res):
    """after ÷ before of the medians, per load, per io mode, for every metric of the table."""
    out = {}
    for key, per_server in res["medians"].items():
        for io, after, before in AB_PAIRS:
            a, b = per_server.get(after), per_server.get(before)
            if not a or not b:
                continue
            d = {}
            for metric, *_ in load_metrics(key, res["hold_steps"]):
                if isinstance(a.get(metric), (int, float)) and b.get(metric):
                    d[metric] = round(a[metric] / b[metric], 3)
            out.setdefault(key, {})[io] = d
    return out


def ab_lines(res):
    """One line per load: the headline metrics' after/before ratios for uring and for epoll."""
    lines = []
    for key in ["a", "b", "c", "d", "j", "e", "f", "g", "h", "i"]:
        per_io = res.get("ab_ratios", {}).get(key)
        if not per_io:
            continue
        if key == "f":
            last = res["hold_steps"][-1]
            heads = [(f"rss_{last}_mb", f"RSS at {last:,}"), (f"bytes_per_conn_{last}", f"bytes per connection ({last:,})")]
        else:
            heads = AB_HEADLINE[key]
        parts = []
        for metric, label in heads:
            vals = [f"{io} after/before {per_io[io][metric]:.2f}" for io, _, _ in AB_PAIRS
                    if metric in per_io.get(io, {})]
            if vals:
                parts.append(f"{label}: " + ", ".join(vals))
        if parts:
            lines.append(f"({key}) " + "; ".join(parts))
    return lines


def summary(key, s, r):
    if "error" in r:
        return f"({key}) {s:6}: ERROR {r['error']}"
    if key == "f":
        steps = [k for k in r if k.startswith("bytes_per_conn_")]
        marginal = [f"+{r[k]} B/extra conn to {k[24:]}" for k in r if k.startswith("marginal_bytes_per_conn_")]
        return f"({key}) {s:6}: rss0={r.get('rss_0_mb')} MB " + " ".join(
            f"{k[15:]}:{r.get('rss_' + k[15:] + '_mb')} MB/{r[k]} B/conn" for k in steps) + " " + " ".join(marginal)
    if key in PING_LOADS:
        return f"({key}) {s:6}: {r.get('requests_per_sec', 0):,.0f} req/s, {r.get('requests_per_cpu_s', 0):,.0f}/CPU-s, p99 {r.get('p99_us')} µs"
    extra = f", missing {r['missing']:,}" if r.get("missing") else ""
    if r.get("compress"):
        extra += (f", {r.get('wire_bytes_per_delivery')} B/delivery on the wire ({r.get('raw_bytes_per_delivery')} raw), "
                  f"{r.get('verified', 0):,} verified")
    return (f"({key}) {s:6}: {r.get('deliveries_per_sec', 0):,.0f}/s, {r.get('deliveries_per_cpu_s', 0):,.0f}/CPU-s, "
            f"p50 {r.get('p50_us')} p99 {r.get('p99_us')} µs{extra}")


def websocket_note(res):
    """(i) ÷ (a) for each tcpserver io mode: what WebSocket framing costs against JSON lines."""
    med = res["medians"]
    if "i" not in med or "a" not in med:
        return ""
    parts = []
    for s in SERVERS:
        if not runs_on("i", s):
            continue
        a, i = med["a"].get(s, {}), med["i"].get(s, {})
        r_cpu = ratio(i.get("deliveries_per_cpu_s"), a.get("deliveries_per_cpu_s"))
        r_rate = ratio(i.get("deliveries_per_sec"), a.get("deliveries_per_sec"))
        parts.append(f"{TITLE[s]} {r_cpu} per server CPU-s, {r_rate} deliveries/s")
    return ("- (i) is (a) with subscribers and publisher on WebSocket: tcpserver's /ws (masked client frames, "
            "a 2-byte frame header per delivery instead of the newline) and nats-server's websocket listener "
            "(`websocket { no_tls: true }`; NATS protocol in binary frames). WebSocket ÷ TCP, (i) ÷ (a): "
            + "; ".join(parts) + ".")


def build_minimal():
    """Compiles scripts/minimal_ping_server.c into a temporary folder; None when cc fails."""
    src = os.path.join(ROOT, "scripts", "minimal_ping_server.c")
    out = os.path.join(tempfile.gettempdir(), f"bench-minimal-ping-{os.getpid()}")
    try:
        p = subprocess.run(["cc", "-O2", "-o", out, src], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"warning: no minimal C server ({e})")
        return None
    if p.returncode != 0:
        log(f"warning: no minimal C server: cc failed: {p.stderr.strip()[-300:]}")
        return None
    return out


def minimal_note(res):
    """tcpserver's server CPU per request as a multiple of the minimal C server's, (d) and (j)."""
    parts = []
    for key in sorted(PING_LOADS):
        per = res["medians"].get(key, {})
        floor = per.get("minimal", {}).get("requests_per_cpu_s")
        if not floor:
            continue
        vals = [f"{TITLE[s]} {floor / per[s]['requests_per_cpu_s']:.2f}×" for s in SERVERS
                if s in IO and per.get(s, {}).get("requests_per_cpu_s")]
        if vals:
            parts.append(f"({key}) " + ", ".join(vals))
    if not parts:
        return ""
    return ("- Server CPU per request against the minimal C ping server (scripts/minimal_ping_server.c: epoll, "
            "one thread, a scan for \"type\", one send per read; the floor any server pays), as a multiple of "
            "its CPU per request: " + "; ".join(parts) + ".")


def notes_text(res):
    h = res["host"]
    lines = [
        f"- Median of {res['rounds']} round(s); each load ran {res['duration']:g} s per server (plus up to 3 s to drain), "
        "servers in rotating order, fresh server processes each round; (f) runs first on the fresh processes.",
        f"- Machine: {h['cpus']} CPUs, kernel {h['kernel']}, a **shared, noisy VM** (other builds and tests ran "
        f"meanwhile: load average {res['loadavg_start']} at the start, {res['loadavg_end']} at the end). "
        "The load tool runs on the same 2 CPUs as the servers.",
        f"- Servers: {h['redis']}; nats-server {h['nats']}; tcpserver {h['tcpserver']} with "
        f"`{res['server_flags']['tcpserver']}`; Redis `{res['server_flags']['redis']}`; NATS defaults. "
        "Redis serves from one thread, NATS and tcpserver from two: per CPU-second is the fairer comparison.",
        "- tcpserver runs its shipped defaults: presence on (rooms past presence_max_members get one batched "
        "diff a second; the (f) subscribers receive them), the performance monitor on (it may shed presence and "
        "compression under the flooding loads, as it would in production); only the per-connection rate limit is "
        "lifted. Its publishers are room members, so with 4 publishers (b) it delivers 3 extra copies per "
        "message that are not counted.",
        (f"- (e) is paced at {res['latency_rate']:,.0f} msg/s for every server (half the lowest (a) rate measured in round 1); "
         "latency runs from each message's scheduled send time (the payload carries it) to its arrival at the subscriber."
         if res["latency_rate"] else "- (e) was not run."),
        ("- (g)/(h): subscribers ask for lz4/zstd in their hello and receive binary frames; the payload is 4 KiB of "
         "English-like words (`--payload text`), so each ~4.2 KB chat is compressed once per message per codec "
         "(server defaults: threshold 512 B, lz4 acceleration 1, zstd level 3). Deliveries are counted from frame "
         "headers; the first 3 frames per subscriber and every 32nd after that are decompressed, checked and give "
         "the latency samples. Bytes on the wire include the 5-byte frame header. "
         "Redis and NATS have no equivalent: n/a. Compare with (c) for the uncompressed 4 KiB cost "
         "('x' filler, JSON lines)."
         if any(r["load"] in ("g", "h") for r in res["runs"]) else ""),
        websocket_note(res),
        minimal_note(res),
        "- Ratios are tcpserver ÷ Redis (above 1 is better for rates, below 1 is better for latency and memory) "
        "and uring ÷ epoll. user-space share = utime ÷ (utime + stime) of the server process.",
    ]
    lines = [l for l in lines if l]
    if res.get("ab_ratios") is not None:
        lines.append(f"- A/B: \"after\" is tcpserver {h['tcpserver']} (--bin), \"before\" is "
                     f"{h.get('tcpserver_before', '?')} (--ab-bin), same flags, in the same alternating rounds. "
                     "after ÷ before of the medians (above 1 is better for rates, below 1 for latency and memory):")
        lines += [f"  - {l}" for l in ab_lines(res)] or ["  - (no load ran on both builds)"]
    if res.get("shed_after"):
        lines.append("- The monitor had shed features at the end of (the next load waited until they were back): " + "; ".join(res["shed_after"]) + ".")
    else:
        lines.append("- tcpserver's monitor shed nothing during any load.")
    if res["findings"]:
        lines.append("- Findings (drops, failures): " + "; ".join(res["findings"]))
    else:
        lines.append("- No missing deliveries and no closed connections on any server.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
