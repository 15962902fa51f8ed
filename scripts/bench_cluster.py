#!/usr/bin/env python3
"""Cluster mode over Redis Cluster vs over a single Redis: cross-node deliveries/s, same run.

Starts one plain redis-server and one Redis Cluster (6 redis-server: 3 masters + 3 replicas,
`redis-cli --cluster create`), then in alternating rounds (the backend order flips each round;
fresh tcpserver nodes each round) runs two tcpserver nodes in cluster mode on the backend and
drives them with `tcpserver-bench fanout`: the publisher on node 1, 50 subscribers on node 2,
so every delivery crossed Redis (PUBLISH/SUBSCRIBE on the single Redis, SPUBLISH/SSUBSCRIBE on
the master serving the room's slot in the cluster). Before each load a member on node 2 holds
the room, and the run waits until node 2's /stats shows the subscription, so no message is
published before node 2 listens.

    python3 scripts/bench_cluster.py                    # 5 rounds, 3 s loads
    python3 scripts/bench_cluster.py --rounds 3 --duration 2

Needs release builds of tcpserver and tcpserver-bench, redis-server and redis-cli. Writes
bench/cluster.json, prints a markdown table and puts it into docs/performance.md between the
`<!-- bench_cluster:start -->` and `<!-- bench_cluster:end -->` markers.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def port_free(p):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_ports(n, lo=12000, hi=21990):
    """Ports p with p and its cluster bus port p + 10000 free (all below 32768)."""
    import random
    out, p = [], random.randrange(lo, hi - 100)
    while len(out) < n:
        if port_free(p) and port_free(p + 10000):
            out.append(p)
        p = lo if p >= hi else p + 1
    return out


def redis(port, *args, timeout=2.0):
    r = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=timeout)
    return r.stdout.strip()


def wait(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return
        except Exception:
            pass
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


class Backends:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bench-cluster-")
        self.procs = []
        ports = pick_ports(7)
        self.single = ports[0]
        self.cluster = ports[1:]
        self._start(self.single, [])
        for p in self.cluster:
            self._start(p, ["--cluster-enabled", "yes", "--cluster-config-file", f"{self.dir}/nodes-{p}.conf",
                            "--cluster-node-timeout", "1000"])
        for p in ports:
            wait(lambda p=p: redis(p, "PING") == "PONG", 5, f"redis on {p}")
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.cluster],
                        "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True, timeout=30)
        for p in self.cluster:
            wait(lambda p=p: "cluster_state:ok" in redis(p, "CLUSTER", "INFO"), 20, f"cluster_state:ok on {p}")

    def _start(self, port, extra):
        self.procs.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Node:
    def __init__(self, binary, redis_port, node_id, threads):
        self.err = tempfile.NamedTemporaryFile(prefix="bench-cluster-node-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--threads", str(threads), "--log-file", "", "--presence", "false", "--rate-limit-per-sec", "0",
             "--cluster", "redis", "--redis-port", str(redis_port), "--node-id", node_id],
            stdout=subprocess.DEVNULL, stderr=self.err, cwd=tempfile.gettempdir())
        self.port = None

        def started():
            m = re.search(r'msg="tcpserver started".*address=[^ ]*:(\d+)', open(self.err.name).read())
            if m:
                self.port = int(m.group(1))
            return self.port is not None
        wait(started, 10, f"tcpserver node {node_id}")

    def stats(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=2) as r:
            return json.load(r).get("cluster", {})

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.unlink(self.err.name)


def hold_room(port, room):
    """A member that keeps `room` active on the node (so its subscription is in place first)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b'{"type":"hello","user":"holder"}\n' + ('{"type":"join_room","room":"%s"}\n' % room).encode())
    buf = b""
    s.settimeout(5)
    while b'"joined"' not in buf:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("holder connection closed")
        buf += chunk
    s.setblocking(False)
    return s


def run_one(args, backend_port, tag, bin_dir):
    binary = os.path.join(bin_dir, "tcpserver")
    a = Node(binary, backend_port, f"{tag}-pub", args.threads)
    b = Node(binary, backend_port, f"{tag}-sub", args.threads)
    try:
        holder = hold_room(b.port, args.room)
        wait(lambda: b.stats().get("subscribed_rooms", 0) >= 1 and a.stats().get("connected"), 10,
             f"node 2 subscribed on {tag}")
        cmd = [os.path.join(args.bin, "tcpserver-bench"), "fanout", "--wire", "tcpserver", "--port", str(a.port),
               "--sub-ports", str(b.port), "--subs", str(args.subs), "--pubs", "1", "--size", str(args.size),
               "--duration", str(args.duration), "--room", args.room, "--json", "--quiet"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60)
        line = next((l for l in out.stdout.splitlines() if l.startswith("{")), None)
        if line is None:
            sys.exit(f"tcpserver-bench gave no result on {tag}: {out.stdout}\n{out.stderr}")
        res = json.loads(line)
        st = a.stats()
        res["publish_failures"] = st.get("publish_failures", 0)
        res["redis_mode"] = st.get("redis_mode")
        res["masters"] = st.get("masters")
        holder.close()
        return res
    finally:
        a.stop()
        b.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, ".build", "release"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3)
    ap.add_argument("--subs", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--room", default="bench")
    ap.add_argument("--ab-bin", metavar="DIR", help="a 'before' build's tcpserver: adds single-Redis rounds with it "
                    "(single-before), the same load, for an A/B of the plain-Redis path")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "cluster.json"))
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs", "performance.md"))
    args = ap.parse_args()
    for tool in ("redis-server", "redis-cli"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (apt-get install redis-server)")
    backends = Backends()
    rounds = {"single": [], "cluster": []}
    if args.ab_bin:
        rounds["single-before"] = []
    try:
        for r in range(args.rounds):
            order = [("single", backends.single, args.bin), ("cluster", backends.cluster[0], args.bin)]
            if args.ab_bin:
                order.append(("single-before", backends.single, args.ab_bin))
            order = order[r % len(order):] + order[:r % len(order)]
            for name, port, bin_dir in order:
                res = run_one(args, port, f"r{r}-{name}", bin_dir)
                rounds[name].append(res)
                print(f"round {r + 1} {name:7}: {float(res['deliveries_per_sec']):>10.0f} deliveries/s "
                      f"missing={res['missing']} publish_failures={res['publish_failures']} "
                      f"mode={res['redis_mode']} masters={res['masters']}", flush=True)
    finally:
        backends.stop()

    def med(name, key):
        return statistics.median(float(x[key]) for x in rounds[name])
    summary = {n: {"deliveries_per_sec": med(n, "deliveries_per_sec"),
                   "p50_us": med(n, "p50_us") if "p50_us" in rounds[n][0] else None,
                   "p99_us": med(n, "p99_us") if "p99_us" in rounds[n][0] else None,
                   "missing": sum(int(x["missing"]) for x in rounds[n]),
                   "publish_failures": sum(int(x["publish_failures"]) for x in rounds[n])} for n in rounds}
    ratio = summary["cluster"]["deliveries_per_sec"] / max(summary["single"]["deliveries_per_sec"], 1)

    def paired(a, b):
        """Median over rounds of a/b within the same round (robust to the box's drift)."""
        return statistics.median(float(x["deliveries_per_sec"]) / max(float(y["deliveries_per_sec"]), 1)
                                 for x, y in zip(rounds[a], rounds[b]))
    ratio_rounds = paired("cluster", "single")
    ab = (summary["single"]["deliveries_per_sec"] / max(summary["single-before"]["deliveries_per_sec"], 1)
          if args.ab_bin else None)
    ab_rounds = paired("single", "single-before") if args.ab_bin else None
    result = {"rounds": args.rounds, "single_after_over_before": ab, "cluster_over_single_per_round_median": ratio_rounds,
              "single_after_over_before_per_round_median": ab_rounds, "ab_bin": args.ab_bin, "duration": args.duration, "subs": args.subs, "size": args.size,
              "threads": args.threads, "summary": summary, "cluster_over_single": ratio, "runs": rounds}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)

    def lat(s):
        return f"{s['p50_us']:.0f} / {s['p99_us']:.0f}" if s['p50_us'] is not None else "n/a"
    table = "\n".join([
        f"Cross-node fan-out: 2 tcpserver nodes (--threads {args.threads}), publisher on node 1, {args.subs} "
        f"subscribers x {args.size} B on node 2; medians of {args.rounds} alternating rounds of {args.duration:g} s "
        f"(`python3 scripts/bench_cluster.py`, bench/cluster.json).",
        "",
        "| backend | cross-node deliveries/s | p50 / p99 µs (closed window) | missing | publish failures |",
        "|---|---:|---:|---:|---:|",
        f"| single Redis | {summary['single']['deliveries_per_sec']:,.0f} | {lat(summary['single'])} | "
        f"{summary['single']['missing']} | {summary['single']['publish_failures']} |",
        f"| Redis Cluster (3 masters + 3 replicas) | {summary['cluster']['deliveries_per_sec']:,.0f} | "
        f"{lat(summary['cluster'])} | {summary['cluster']['missing']} | {summary['cluster']['publish_failures']} |",
        f"| cluster / single | {ratio:.2f} (per-round median {ratio_rounds:.2f}) | | | |",
    ] + ([f"| single Redis, before build ({args.ab_bin}) | {summary['single-before']['deliveries_per_sec']:,.0f} | "
          f"{lat(summary['single-before'])} | {summary['single-before']['missing']} | "
          f"{summary['single-before']['publish_failures']} |",
          f"| single: after / before | {ab:.2f} (per-round median {ab_rounds:.2f}) | | | |"] if args.ab_bin else []))
    print()
    print(table)
    if os.path.exists(args.doc):
        doc = open(args.doc).read()
        start, end = "<!-- bench_cluster:start -->", "<!-- bench_cluster:end -->"
        if start in doc and end in doc:
            doc = doc[:doc.index(start) + len(start)] + "\n" + table + "\n" + doc[doc.index(end):]
            open(args.doc, "w").write(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
