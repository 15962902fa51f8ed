#!/usr/bin/env python3
"""Room history bench rows (issue #15), against release builds on 127.0.0.1:

  (a) fan-out 50 subs x 64 B, 1 pub: deliveries per server CPU-s with history on
      (history_size 100, the default) and off (history_size 0), in alternating rounds of the
      same run (fresh servers each round); with --base-bin DIR also a build without the room
      log (the cost of the log itself, offsets and ordering included).
  (b) replay: a member 100 behind re-joins with since; time from sending join_room to the
      100th replayed line on the client (an upper bound of the server's time: it includes the
      loopback and this Python client; ServerBenchmarks rejoin_replay_100_missed_64B measures
      the server alone).
  (c) history memory: 1,000 rooms x 100 stored messages of 64 B text; the server's RSS with
      history on minus the same load with history off, per stored message, and /stats
      history_bytes per stored message.

Usage: scripts/bench_history.py [--bin .build/release] [--base-bin DIR] [--rounds 9]
                                [--duration 3] [--io uring] [--out bench/history.json]
(make bench runs it after scripts/bench.py; make bench-history alone.)
"""
import argparse
import json
import os
import socket
import statistics
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (Server, run_tool: the same harness as make bench)


class HServer(bench.Server):
    """A tcpserver with extra flags (bench.Server starts tcpserver with bench.TCPSERVER_FLAGS)."""

    def __init__(self, name, binary, io, extra):
        super().__init__(name, binary)
        bench.IO[name] = io
        bench.WIRE[name] = "tcpserver"
        self.extra = extra

    def _start_once(self):
        saved = bench.TCPSERVER_FLAGS
        bench.TCPSERVER_FLAGS = saved + self.extra
        try:
            return super()._start_once()
        finally:
            bench.TCPSERVER_FLAGS = saved


class Client:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, obj):
        self.s.sendall((json.dumps(obj) + "\n").encode())

    def send_raw(self, data):
        self.s.sendall(data)

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise EOFError
            self.buf += chunk
        l, self.buf = self.buf.split(b"\n", 1)
        return json.loads(l)

    def until(self, typ):
        while True:
            m = self.line()
            if m.get("type") == typ:
                return m

    def until_bytes(self, marker):
        while marker not in self.buf:
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise EOFError
            self.buf += chunk
        self.buf = self.buf.split(marker, 1)[1]

    def pingpong(self):
        self.send({"type": "ping"})
        self.until("pong")


TEXT64 = "x" * 64


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1]) * 1024
    return 0


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        return json.load(r)


def replay_row(binary, io, samples=200):
    srv = HServer("hist-replay", binary, io, [])
    srv.start()
    try:
        pub, mem = Client(srv.port), Client(srv.port)
        pub.send({"type": "hello", "user": "pub"}); pub.until("welcome")
        mem.send({"type": "hello", "user": "mem"}); mem.until("welcome")
        pub.send({"type": "join_room", "room": "r"}); pub.until("joined")
        for _ in range(100):
            pub.send({"type": "send_chat", "room": "r", "text": TEXT64})
        pub.pingpong()
        mem.send({"type": "join_room", "room": "r"})
        j = mem.until("joined")
        epoch, last = j["epoch"], j["offset"]
        assert last == 100, j
        line = (json.dumps({"type": "join_room", "room": "r", "epoch": epoch, "since": 0}) + "\n").encode()
        marker = b'"offset":100}\n'
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            mem.send_raw(line)
            mem.until_bytes(b'"type":"joined"')
            mem.until_bytes(marker)
            times.append((time.perf_counter() - t0) * 1e6)
        time.sleep(1.2)   # the stats snapshot is at most a second old
        st = stats(srv.port)
        return {"median_us": round(statistics.median(times)), "p90_us": round(sorted(times)[int(samples * 0.9)]),
                "replayed": st["totals"].get("messages_replayed")}
    finally:
        srv.stop()


def memory_row(binary, io, rooms=1000, per_room=100):
    out = {}
    for label, extra in (("on", []), ("off", ["--history-size", "0"])):
        srv = HServer(f"hist-mem-{label}", binary, io, extra)
        srv.start()
        try:
            clients = []
            for c in range(rooms // 100):
                cl = Client(srv.port)
                cl.send({"type": "hello", "user": f"u{c}"}); cl.until("welcome")
                for r in range(100):
                    cl.send({"type": "join_room", "room": f"room{c * 100 + r}"})
                cl.pingpong()
                clients.append(cl)
            time.sleep(1.5)
            before = rss_bytes(srv.pid)
            for c, cl in enumerate(clients):
                batch = "".join(json.dumps({"type": "send_chat", "room": f"room{c * 100 + r}", "text": TEXT64}) + "\n"
                                for r in range(100))
                for _ in range(per_room):
                    cl.send_raw(batch.encode())
                cl.pingpong()
            time.sleep(2.5)   # idle: output buffers go back, the stats snapshot is fresh
            after = rss_bytes(srv.pid)
            out[label] = {"rss_delta": after - before, "history_bytes": stats(srv.port)["totals"].get("history_bytes")}
            for cl in clients:
                cl.s.close()
        finally:
            srv.stop()
    stored = rooms * per_room
    out["per_message_rss_on_minus_off"] = round((out["on"]["rss_delta"] - out["off"]["rss_delta"]) / stored, 1)
    out["per_message_history_bytes"] = round(out["on"]["history_bytes"] / stored, 1)
    out["line_bytes"] = len(json.dumps({"type": "chat", "room": "room100", "from": "u1", "text": TEXT64,
                                        "ts": 1795573783532, "offset": 100}, separators=(",", ":")))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(bench.ROOT, ".build/release"))
    ap.add_argument("--base-bin")
    ap.add_argument("--rounds", type=int, default=9,
                    help="alternating rounds of (a); the per-round spread is ~20 %%, so at least 7")
    ap.add_argument("--duration", type=float, default=3)
    ap.add_argument("--io", default="uring")
    ap.add_argument("--skip", default="", help="comma-separated rows to skip: a,b,c")
    ap.add_argument("--out", help="also write the JSON report here")
    a = ap.parse_args()
    tool = os.path.join(a.bin, "tcpserver-bench")
    servers = [HServer("history-on", os.path.join(a.bin, "tcpserver"), a.io, []),
               HServer("history-off", os.path.join(a.bin, "tcpserver"), a.io, ["--history-size", "0"])]
    if a.base_bin:
        servers.append(HServer("no-log", os.path.join(a.base_bin, "tcpserver"), a.io, []))
    report = {"rounds": a.rounds, "duration": a.duration, "io": a.io}
    if "a" not in a.skip:
        per = {s.name: [] for s in servers}
        load = ["fanout", "--subs", "50", "--pubs", "1", "--size", "64"]
        for rnd in range(a.rounds):
            order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
            for s in order:
                s.start()
                try:
                    r = bench.run_tool(tool, s, load, a.duration)
                finally:
                    s.stop()
                bench.log(f"round {rnd + 1} {s.name}: {r.get('deliveries_per_cpu_s')} deliveries/CPU-s, "
                          f"{r.get('deliveries_per_sec')}/s {r.get('error', '')}")
                per[s.name].append(r)
        report["fanout"] = {n: {"deliveries_per_cpu_s": statistics.median(x.get("deliveries_per_cpu_s", 0) for x in rs),
                                "deliveries_per_sec": statistics.median(x.get("deliveries_per_sec", 0) for x in rs),
                                "rounds": [x.get("deliveries_per_cpu_s") for x in rs]}
                            for n, rs in per.items()}
        on, off = report["fanout"]["history-on"], report["fanout"]["history-off"]
        report["fanout"]["on_over_off"] = round(on["deliveries_per_cpu_s"] / off["deliveries_per_cpu_s"], 3)
        # Paired per round (on and off ran back to back): what the box did in between cancels.
        pairs = [a / b for a, b in zip(on["rounds"], off["rounds"]) if a and b]
        report["fanout"]["on_over_off_per_round"] = [round(x, 3) for x in pairs]
        report["fanout"]["on_over_off_per_round_median"] = round(statistics.median(pairs), 3) if pairs else None
        if "no-log" in report["fanout"]:
            report["fanout"]["on_over_no_log"] = round(on["deliveries_per_cpu_s"] / report["fanout"]["no-log"]["deliveries_per_cpu_s"], 3)
    if "b" not in a.skip:
        report["replay_100"] = replay_row(os.path.join(a.bin, "tcpserver"), a.io)
    if "c" not in a.skip:
        report["memory"] = memory_row(os.path.join(a.bin, "tcpserver"), a.io)
    print(json.dumps(report, indent=2))
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
