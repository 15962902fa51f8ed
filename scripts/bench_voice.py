#!/usr/bin/env python3
"""Voice relay benchmark: tcpserver-voice (io_uring and epoll) against coturn, same run.

Each round starts every relay in turn on loopback with the same thread count and drives it with
`tcpserver-bench voice`:
  paced: --channels N x --speakers M, 50 frames/s x 160 B per speaker (each frame reaches the
         M-1 other members: N*M*(M-1)*50 copies/s);
  flood: --flood-channels x --speakers M, every speaker sending as fast as the bench can.
coturn runs as `turnserver --use-auth-secret` and gets the same load through TURN allocations
(ChannelBind + ChannelData; TURN has no fan-out, so a speaker sends M-1 copies and coturn relays
each one). The figure compared is delivered copies per relay CPU-second (relay CPU from
/proc/<pid>/stat); latency is send -> receive, measured by the bench from a stamp in each frame.

    python3 scripts/bench_voice.py                  # 3 rounds, 5 s loads
    python3 scripts/bench_voice.py --rounds 1 --duration 3

Needs release builds of tcpserver-voice and tcpserver-bench (`swift build -c release`) and
coturn (`apt-get install coturn`). Writes bench/voice.json and prints a markdown table.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "bench-voice-secret"


def free_udp_port():
    # Outside 40000-49999: coturn's relay ports (--min-port/--max-port below).
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if not 40000 <= p <= 49999:
            return p


def stun_ready(port, timeout=15.0):
    """Whether a STUN server answers a Binding request on 127.0.0.1:port within `timeout`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    req = struct.pack(">HHI12s", 0x0001, 0, 0x2112A442, os.urandom(12))
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            s.sendto(req, ("127.0.0.1", port))
            try:
                data, _ = s.recvfrom(2048)
                if data[:2] == b"\x01\x01":
                    return True
            except socket.timeout:
                pass
        return False
    finally:
        s.close()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Relay:
    def __init__(self, kind, binary, threads):
        self.kind, self.binary, self.threads = kind, binary, threads
        self.proc = None
        self.port = None
        self.stats_port = None

    def start(self):
        self.port = free_udp_port()
        if self.kind == "coturn":
            cmd = ["turnserver", "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
                   f"--listening-port={self.port}", "--use-auth-secret", f"--static-auth-secret={SECRET}",
                   "--realm=bench", "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers",
                   "--min-port=40000", "--max-port=49999", f"--relay-threads={self.threads}",
                   "--log-file=/dev/null", "--no-stdout-log"]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if not stun_ready(self.port):   # no start line: wait until it answers STUN
                raise SystemExit(f"turnserver did not answer on udp {self.port}")
        else:
            io = self.kind.split("-")[1]
            cmd = [self.binary, "--io", io, "--port", str(self.port), "--stats-port", "0",
                   "--threads", str(self.threads), "--secret", SECRET]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            line = self.proc.stdout.readline()
            m = re.search(r"stats=127\.0\.0\.1:(\d+)", line)
            if not m:
                raise SystemExit(f"{self.kind}: no start line: {line!r}")
            self.stats_port = int(m.group(1))
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.kind} exited at start")

    def stats(self):
        if not self.stats_port:
            return None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/stats", timeout=3) as r:
            return json.loads(r.read())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_bench(bench, relay, args, extra):
    wire = "turn" if relay.kind == "coturn" else "voice"
    cmd = [bench, "voice", "--wire", wire, "--port", str(relay.port), "--secret", SECRET,
           "--speakers", str(args.speakers), "--duration", str(args.duration), "--drain", "0.5",
           "--server-pid", str(relay.proc.pid), "--quiet"] + extra
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 120)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if not line:
        raise SystemExit(f"bench failed against {relay.kind}: {out.stdout}\n{out.stderr}")
    return dict(kv.split("=", 1) for kv in line[len("RESULT "):].split())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--channels", type=int, default=50)
    ap.add_argument("--flood-channels", type=int, default=10)
    ap.add_argument("--speakers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build", "release"))
    ap.add_argument("--relays", default="voice-uring,voice-epoll,coturn")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "voice.json"))
    args = ap.parse_args()
    bench = os.path.join(args.bin, "tcpserver-bench")
    voice = os.path.join(args.bin, "tcpserver-voice")
    kinds = args.relays.split(",")
    if "coturn" in kinds and not shutil.which("turnserver"):
        raise SystemExit("turnserver not found: apt-get install coturn")
    loads = {"paced": ["--channels", str(args.channels)],
             "flood": ["--channels", str(args.flood_channels), "--flood"]}
    results = {k: {l: [] for l in loads} for k in kinds}
    for rnd in range(args.rounds):
        for kind in kinds:
            for load, extra in loads.items():
                r = Relay(kind, voice, args.threads)
                r.start()
                try:
                    res = run_bench(bench, r, args, extra)
                    st = r.stats()
                    if st:
                        res["relay_p50_us"] = st["latency_us"]["p50"]
                        res["relay_p99_us"] = st["latency_us"]["p99"]
                        res["relay_drops"] = st["drops_total"]
                finally:
                    r.stop()
                results[kind][load].append(res)
                log(f"round {rnd + 1} {kind:12} {load}: {res.get('relayed_per_cpu_s')} copies/CPU-s, "
                    f"{res.get('relayed_per_s')}/s, loss {res.get('loss_pct')} %, p50 {res.get('p50_us')} us, "
                    f"p99 {res.get('p99_us')} us")

    def med(kind, load, key):
        vals = [float(r[key]) for r in results[kind][load] if key in r]
        return statistics.median(vals) if vals else float("nan")

    rows = []
    hdr = ("| relay | load | copies/s | loss % | copies per relay CPU-s | vs coturn | p50 µs | p99 µs | relay p50/p99 µs |\n"
           "|---|---|---|---|---|---|---|---|---|")
    for load in loads:
        base = med("coturn", load, "relayed_per_cpu_s") if "coturn" in kinds else float("nan")
        for kind in kinds:
            per = med(kind, load, "relayed_per_cpu_s")
            internal = "–"
            if kind != "coturn":
                internal = f"{med(kind, load, 'relay_p50_us'):.1f} / {med(kind, load, 'relay_p99_us'):.1f}"
            vs = f"{per / base:.2f}×" if base == base and base > 0 else "–"
            rows.append(f"| {kind} | {load} | {med(kind, load, 'relayed_per_s'):,.0f} | {med(kind, load, 'loss_pct'):.2f} "
                        f"| {per:,.0f} | {vs} | {med(kind, load, 'p50_us'):,.0f} | {med(kind, load, 'p99_us'):,.0f} | {internal} |")
    table = hdr + "\n" + "\n".join(rows)
    print(f"Voice relays, {args.threads} threads each, loopback; paced: {args.channels} channels x {args.speakers} speakers "
          f"x 50 frames/s x 160 B; flood: {args.flood_channels} channels x {args.speakers} speakers; "
          f"median of {args.rounds} rounds of {args.duration:g} s\n")
    print(table)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "results": results, "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
