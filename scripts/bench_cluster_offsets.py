#!/usr/bin/env python3
"""Cluster offsets bench (issue #15): what assigning cluster-wide offsets in Redis costs.

Two tcpserver nodes (--cluster redis) on one redis-server; one publisher on node A, the
subscribers on node B (tcpserver-bench fanout --sub-ports), a fixed publish rate, so the
figure is publish→deliver latency across nodes (from the scheduled send time). The "after"
build gives every chat line its offset with the chat script (HINCRBY + XADD + PUBLISH in one
EVALSHA) and delivers it from pub/sub on every node; the "before" build (--before-bin, e.g.
main) sends a plain PUBLISH. Rounds alternate the two builds (fresh nodes and FLUSHALL each
round) and the table gives the medians and the after/before ratio.

Usage: scripts/bench_cluster_offsets.py --bin .build/release [--before-bin DIR] [--rounds 5]
       [--duration 3] [--rate 2000] [--subs 20] [--io uring] [--out bench/cluster_offsets.json]
Run it under `flock /tmp/bench.lock` on a shared machine (make bench-cluster-offsets does).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (parse_result, raise_nofile, free_port, wait_port, log)


def redis_cmd(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port)] + list(args), capture_output=True, text=True).stdout.strip()


class Node:
    def __init__(self, binary, io, redis_port, node_id):
        cmd = [binary, "--port", "0", "--io", io, "--threads", "1", "--cluster", "redis", "--redis-port",
               str(redis_port), "--node-id", node_id] + bench.TCPSERVER_FLAGS
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=bench.raise_nofile)
        self.port = None
        end = time.time() + 15
        while time.time() < end and self.port is None:
            line = self.proc.stderr.readline()
            if not line:
                break
            if "address=" in line:
                self.port = int(line.split("address=", 1)[1].split()[0].rsplit(":", 1)[1])
        if self.port is None or not bench.wait_port(self.port):
            self.stop()
            raise RuntimeError(f"node {node_id} ({binary}) did not start")
        threading.Thread(target=lambda: [None for _ in iter(self.proc.stderr.readline, "")], daemon=True).start()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def one_round(tool, binary, io, redis_port, args):
    redis_cmd(redis_port, "FLUSHALL")
    a = Node(binary, io, redis_port, "bench-a")
    b = Node(binary, io, redis_port, "bench-b")
    try:
        time.sleep(0.5)   # both links up
        cmd = [tool, "fanout", "--wire", "tcpserver", "--port", str(a.port), "--sub-ports", str(b.port),
               "--subs", str(args.subs), "--pubs", "1", "--size", "64", "--rate", str(args.rate),
               "--duration", str(args.duration), "--server-pid", str(a.proc.pid), "--quiet"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60,
                           preexec_fn=bench.raise_nofile)
        res = bench.parse_result(p.stdout) or {"error": p.stderr.strip()[-300:]}
        res["exit"] = p.returncode
        return res
    finally:
        a.stop()
        b.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=".build/release")
    ap.add_argument("--before-bin")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--subs", type=int, default=20)
    ap.add_argument("--io", default="uring")
    ap.add_argument("--out", default="bench/cluster_offsets.json")
    args = ap.parse_args()
    tool = os.path.join(args.bin, "tcpserver-bench")
    builds = {"after": os.path.join(args.bin, "tcpserver")}
    if args.before_bin:
        builds["before"] = os.path.join(args.before_bin, "tcpserver")
    redis_port = bench.free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--loglevel", "warning"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = {k: [] for k in builds}
    try:
        if not bench.wait_port(redis_port):
            raise RuntimeError("redis-server did not start")
        names = list(builds)
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                res = one_round(tool, builds[name], args.io, redis_port, args)
                bench.log(f"round {r + 1} {name}: p50 {res.get('p50_us')} us, p99 {res.get('p99_us')} us, "
                          f"delivered {res.get('delivered')}, missing {res.get('missing')}, exit {res.get('exit')}"
                          + (f", error {res['error']}" if "error" in res else ""))
                rows[name].append(res)
    finally:
        redis.terminate()
        redis.wait()

    def med(name, key):
        vals = [x[key] for x in rows[name] if isinstance(x.get(key), (int, float))]
        return statistics.median(vals) if vals else None

    summary = {name: {k: med(name, k) for k in ("p50_us", "p99_us", "p999_us")} for name in rows}
    for name in rows:
        summary[name]["missing_total"] = sum(x.get("missing", 0) or 0 for x in rows[name])
    print(f"| build | p50 µs | p99 µs | p99.9 µs | missing |   ({args.io}, 2 nodes, 1 pub → {args.subs} subs on the other "
          f"node, {args.rate} msg/s, 64 B, {args.duration:g} s × {args.rounds} alternating rounds, medians)")
    print("|---|---:|---:|---:|---:|")
    for name, s in summary.items():
        print(f"| {name} | {s['p50_us']} | {s['p99_us']} | {s['p999_us']} | {s['missing_total']} |")
    if "before" in summary and summary["before"]["p99_us"]:
        a, b = summary["after"], summary["before"]
        print(f"after ÷ before: p50 {a['p50_us'] / b['p50_us']:.2f}, p99 {a['p99_us'] / b['p99_us']:.2f}")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "summary": summary, "rounds": rows}, f, indent=1)


if __name__ == "__main__":
    main()
