#!/usr/bin/env python3
"""An independent WebSocket client (the `websockets` package, not our code) against /ws.

    python3 scripts/ws_interop.py --port PORT

Two WebSocket clients and one JSON-lines TCP client join a room and chat every way round;
a fragmented message, a ping with payload, a message over max_frame_bytes (the server must
close with 1009) and a clean close (1000 echoed). Exits 0 on success, 1 with a reason.
Run by the Swift suite (WebSocketInteropTests) against an in-process server in both io modes.
"""
import argparse
import asyncio
import json
import socket
import sys

try:
    import websockets
except ImportError:
    print("ws_interop: the Python package 'websockets' is missing (make deps installs it: pip install websockets)")
    sys.exit(2)


def fail(why):
    print("ws_interop: FAILED:", why)
    sys.exit(1)


async def recv_type(ws, kind, timeout=5):
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if m.get("type") == kind:
            return m


def tcp_read_type(f, kind):
    while True:
        line = f.readline()
        if not line:
            fail(f"tcp client: EOF waiting for {kind}")
        m = json.loads(line)
        if m.get("type") == kind:
            return m


async def main(port, max_frame):
    url = f"ws://127.0.0.1:{port}/ws"
    room = "interop"
    a = await websockets.connect(url, max_size=None)
    b = await websockets.connect(url, max_size=None)
    for ws, user in ((a, "py-a"), (b, "py-b")):
        await ws.send(json.dumps({"type": "hello", "user": user}))
        w = await recv_type(ws, "welcome")
        if w.get("user") != user:
            fail(f"welcome {w}")
        await ws.send(json.dumps({"type": "join_room", "room": room}))
        await recv_type(ws, "joined")
    tcp = socket.create_connection(("127.0.0.1", port), timeout=5)
    f = tcp.makefile("rb")
    tcp.sendall(b'{"type":"hello","user":"py-tcp"}\n{"type":"join_room","room":"interop"}\n')
    tcp_read_type(f, "joined")

    # websockets → websockets and → TCP
    await a.send(json.dumps({"type": "send_chat", "room": room, "text": "from a ✓"}))
    m = await recv_type(b, "chat")
    if (m["from"], m["text"]) != ("py-a", "from a ✓"):
        fail(f"b got {m}")
    m = tcp_read_type(f, "chat")
    if (m["from"], m["text"]) != ("py-a", "from a ✓"):
        fail(f"tcp got {m}")
    # TCP → both WebSocket clients
    tcp.sendall(json.dumps({"type": "send_chat", "room": room, "text": "from tcp"}).encode() + b"\n")
    for ws in (a, b):
        m = await recv_type(ws, "chat")
        if (m["from"], m["text"]) != ("py-tcp", "from tcp"):
            fail(f"ws got {m}")
    # A fragmented text message (websockets sends an iterable as fragments).
    body = json.dumps({"type": "send_chat", "room": room, "text": "fragmented " + "é" * 500})
    await b.send([body[:100], body[100:700], body[700:]])
    m = await recv_type(a, "chat")
    if m["text"] != "fragmented " + "é" * 500:
        fail("fragmented message garbled")
    # A message bigger than shared_block_threshold, by reference to the shared block.
    big = "z" * 20000
    tcp.sendall(json.dumps({"type": "send_chat", "room": room, "text": big}).encode() + b"\n")
    for ws in (a, b):
        m = await recv_type(ws, "chat")
        if m["text"] != big:
            fail("big message garbled")
    # Ping with payload: websockets checks the pong's payload itself.
    latency = await asyncio.wait_for(await a.ping(b"interop-ping"), 5)
    # Over max_frame_bytes: close 1009.
    try:
        await b.send("x" * (max_frame + 1))
        await asyncio.wait_for(b.recv(), 5)
        fail("no close after an oversized message")
    except websockets.ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd else None
        if code != 1009:
            fail(f"oversized message: close code {code}, expected 1009")
    # Clean close: 1000 echoed.
    await a.close(1000, "done")
    if a.close_code != 1000:
        fail(f"close code {a.close_code}")
    tcp.close()
    print(f"ws_interop: OK (websockets {websockets.__version__}; ping {latency * 1000:.1f} ms)")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-frame-bytes", type=int, default=65536)
    args = p.parse_args()
    asyncio.run(main(args.port, args.max_frame_bytes))
