#!/usr/bin/env python3
"""An independent client for the tcpserver protocol (docs/protocol.md), written against the
document rather than the Swift code: for each io mode it starts the server binary, connects
50 subscribers to one room (10 of them in binary framing), has 2 publishers send batches of
send_chat lines, and checks that every subscriber receives every message exactly once and in
order per publisher. Exit status 0 when all holds; prints one summary line per mode.

usage: scripts/conformance_client.py BINARY [--messages N]
"""
import json, os, re, selectors, socket, struct, subprocess, sys, time

SUBSCRIBERS, BINARY_SUBS, PUBLISHERS, BATCH = 50, 10, 2, 50


def start_server(binary, mode):
    p = subprocess.Popen([binary, "--port", "0", "--io", mode, "--threads", "2", "--log-file", "",
                          "--rate-limit-per-sec", "0", "--presence", "false"],
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        line = p.stderr.readline()
        m = re.search(r"address=127\.0\.0\.1:(\d+)", line or "")
        if m:
            return p, int(m.group(1))
        if p.poll() is not None:
            break
    p.kill()
    raise SystemExit(f"{mode}: server did not start")


class Client:
    def __init__(self, port, binary=False):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.binary, self.buf = binary, b""

    def send(self, obj):
        data = json.dumps(obj, separators=(",", ":")).encode()
        if self.binary:
            self.s.sendall(struct.pack(">I", len(data) + 1) + b"\0" + data)
        else:
            self.s.sendall(data + b"\n")

    def messages(self):
        """Complete messages in the buffer (parsed), leaving a partial tail."""
        out = []
        while True:
            if self.binary:
                if len(self.buf) < 4:
                    break
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) < 4 + n:
                    break
                codec, payload = self.buf[4], self.buf[5:4 + n]
                assert codec == 0, f"unexpected codec {codec}"
                self.buf = self.buf[4 + n:]
            else:
                i = self.buf.find(b"\n")
                if i < 0:
                    break
                payload, self.buf = self.buf[:i], self.buf[i + 1:]
            out.append(json.loads(payload))
        return out

    def expect(self, typ, timeout=10):
        self.s.settimeout(timeout)
        while True:
            for m in self.messages():
                if m.get("type") == typ:
                    return m
                if m.get("type") == "error":
                    raise SystemExit(f"error while waiting for {typ}: {m}")
            chunk = self.s.recv(65536)
            if not chunk:
                raise SystemExit(f"closed while waiting for {typ}")
            self.buf += chunk


def run(binary, mode, total):
    server, port = start_server(binary, mode)
    try:
        subs = []
        for i in range(SUBSCRIBERS):
            c = Client(port, binary=i < BINARY_SUBS)
            c.send({"type": "hello", "user": f"sub{i}"})
            c.expect("welcome")
            c.send({"type": "join_room", "room": "conformance"})
            c.expect("joined")
            subs.append(c)
        pubs = []
        for p in range(PUBLISHERS):
            c = Client(port)
            c.send({"type": "hello", "user": f"pub{p}"})
            c.expect("welcome")
            c.send({"type": "join_room", "room": "conformance"})
            c.expect("joined")
            pubs.append(c)
        sel = selectors.DefaultSelector()
        for c in subs + pubs:
            c.s.setblocking(False)
            sel.register(c.s, selectors.EVENT_READ, c)
        seen = {id(c): {p: [] for p in range(PUBLISHERS)} for c in subs}
        sent = 0
        start = time.time()
        deadline = start + 60
        while True:
            if sent < total:
                for p, c in enumerate(pubs):
                    lines = b"".join(json.dumps({"type": "send_chat", "room": "conformance",
                                                 "text": f"{p}:{sent + k}"}, separators=(",", ":")).encode() + b"\n"
                                     for k in range(BATCH))
                    c.s.setblocking(True)
                    c.s.sendall(lines)
                    c.s.setblocking(False)
                sent += BATCH
            for key, _ in sel.select(timeout=0.05):
                c = key.data
                try:
                    chunk = c.s.recv(1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise SystemExit(f"{mode}: server closed a connection")
                c.buf += chunk
                for m in c.messages():
                    if c in pubs or m.get("type") != "chat":
                        continue
                    p, n = m["text"].split(":")
                    seen[id(c)][int(p)].append(int(n))
            if all(len(v[p]) >= total for v in seen.values() for p in range(PUBLISHERS)):
                break
            if time.time() > deadline:
                break
        elapsed = time.time() - start
        want = list(range(total))
        bad = [i for i, c in enumerate(subs) for p in range(PUBLISHERS) if seen[id(c)][p] != want]
        delivered = sum(len(v[p]) for v in seen.values() for p in range(PUBLISHERS))
        print(f"conformance {mode}: {SUBSCRIBERS} subscribers ({BINARY_SUBS} binary), {PUBLISHERS} publishers, "
              f"{total} messages each, delivered {delivered}/{SUBSCRIBERS * PUBLISHERS * total} "
              f"in {elapsed:.2f} s, out of order or missing at {len(bad)} subscriber(s)")
        return not bad
    finally:
        server.terminate()
        server.wait(timeout=10)


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    total = int(sys.argv[sys.argv.index("--messages") + 1]) if "--messages" in sys.argv else 1000
    ok = all([run(sys.argv[1], mode, total) for mode in ("uring", "epoll")])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
