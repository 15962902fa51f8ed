#!/usr/bin/env python3
"""Alternating rounds of server variants (a binary and its flags) on one tcpserver-bench load:
medians of latency and per-CPU figures, and every round's p99 (docs/performance.md, "Request path").
Each round starts every variant fresh, in rotating order, with --rate-limit-per-sec 0 --log-file ''.
Run it under `flock /tmp/bench.lock` on a shared machine. Example:
  scripts/ab_variants.py 6 .build/release/tcpserver-bench -- \
      default=.build/release/tcpserver:--io,uring nobatch=.build/release/tcpserver:--io,uring,--wait-batch,0 \
      -- fanout --subs 50 --pubs 1 --size 64 --rate 47000 --duration 3
usage: ab_variants.py ROUNDS TOOL -- NAME=BIN[:flag,flag...] ... -- tool args
Two builds with the same flags are an A/B: before=OLD/tcpserver:--io,uring after=NEW/tcpserver:--io,uring."""
import json, subprocess, sys, time, statistics, os, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
rounds, tool = int(sys.argv[1]), sys.argv[2]
i1 = sys.argv.index("--"); i2 = sys.argv.index("--", i1 + 1)
variants = []
for v in sys.argv[i1 + 1:i2]:
    name, _, rest = v.partition("=")
    binp, _, flags = rest.partition(":")
    variants.append((name, binp, [f for f in flags.split(",") if f]))
tool_args = sys.argv[i2 + 1:]
res = {n: [] for n, _, _ in variants}
port = 24100 + os.getpid() % 1000
for r in range(rounds):
    order = variants[r % len(variants):] + variants[:r % len(variants)]
    for name, binp, flags in order:
        port += 1
        srv = subprocess.Popen([binp, "--port", str(port), "--rate-limit-per-sec", "0", "--log-file", ""] + flags,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.6)
        out = subprocess.run([tool] + tool_args + ["--port", str(port), "--server-pid", str(srv.pid), "--json"],
                             capture_output=True, text=True).stdout
        srv.terminate(); srv.wait()
        line = [l for l in out.splitlines() if l.startswith("{")][-1]
        j = json.loads(line[:line.rindex("}") + 1])
        res[name].append(j)
        keys = ["p50_us", "p99_us", "deliveries_per_cpu_s", "requests_per_cpu_s", "user_share"]
        print(r, name, {k: j[k] for k in keys if k in j}, flush=True)
print("medians over", rounds, "rounds:")
for name, _, flags in variants:
    js = res[name]
    keys = [k for k in ["p50_us", "p99_us", "p999_us", "deliveries_per_cpu_s", "requests_per_cpu_s", "user_share"] if k in js[0]]
    print(f"  {name:14} " + "  ".join(f"{k}={statistics.median([j[k] for j in js]):.4g}" for k in keys)
          + "   p99s=" + ",".join(f"{j.get('p99_us', 0):.0f}" for j in js))
