#!/usr/bin/env python3
"""Two-client voice demo: alice and bob join a room over TCP, alice starts voice, bob joins it,
both bind to the relay over UDP and exchange a few "audio" packets, then alice ends the voice
and the relay stops relaying. Needs a running tcpserver with voice configured and a relay:

    make run-voice                      # terminal 1: tcpserver + tcpserver-voice
    python3 scripts/voice_demo.py       # terminal 2

Raw sockets only (no dependencies): the JSON-lines protocol on TCP, the 12-byte voice header on
UDP (docs/protocol.md, "Voice").
"""
import argparse
import json
import socket
import struct
import time


class Member:
    def __init__(self, host, port, user):
        self.user = user
        self.tcp = socket.create_connection((host, port))
        self.lines = self.tcp.makefile("rb")
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.settimeout(1.0)

    def send(self, **msg):
        self.tcp.sendall((json.dumps(msg) + "\n").encode())

    def read(self, type_):
        while True:
            m = json.loads(self.lines.readline())
            if m["type"] == "error":
                raise SystemExit(f"{self.user}: error {m['code']}: {m['message']}")
            if m["type"] == type_:
                return m

    def voice(self, grant):
        self.channel = int(grant["channel"], 16)
        host, port = grant["relay"].rsplit(":", 1)
        self.relay = (host, int(port))
        join = struct.pack(">BBHII", 0x56, 0, 0, self.channel, 0) + grant["token"].encode()
        for _ in range(5):
            self.udp.sendto(join, self.relay)
            try:
                ack, _ = self.udp.recvfrom(64)
                self.member = struct.unpack(">BBHII", ack[:12])[2]
                print(f"{self.user}: bound to channel {grant['channel']} on {grant['relay']} as member {self.member}")
                return
            except socket.timeout:
                pass
        raise SystemExit(f"{self.user}: no join ack from the relay (is tcpserver-voice running with the same secret?)")

    def say(self, seq, text):
        self.udp.sendto(struct.pack(">BBHII", 0x56, 1, 0, self.channel, seq) + text.encode(), self.relay)

    def hear(self, timeout=1.0):
        self.udp.settimeout(timeout)
        try:
            p, _ = self.udp.recvfrom(2048)
        except socket.timeout:
            return None
        _, _, member, _, seq = struct.unpack(">BBHII", p[:12])
        return member, seq, p[12:].decode(errors="replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4000)
    ap.add_argument("--room", default="voice-demo")
    a = ap.parse_args()
    alice, bob = Member(a.host, a.port, "alice"), Member(a.host, a.port, "bob")
    for m in (alice, bob):
        m.send(type="hello", user=m.user)
        m.read("welcome")
        m.send(type="join_room", room=a.room)
        m.read("joined")
    alice.send(type="start_voice", room=a.room)
    alice.voice(alice.read("voice"))
    print("bob:", json.dumps(bob.read("voice_started")))
    bob.send(type="join_voice", room=a.room)
    bob.voice(bob.read("voice"))
    for seq in range(1, 4):
        alice.say(seq, f"alice frame {seq}")
        print("bob hears", bob.hear())
        bob.say(seq, f"bob frame {seq}")
        print("alice hears", alice.hear())
    alice.send(type="end_voice", room=a.room)
    print("bob:", json.dumps(bob.read("voice_ended")))
    time.sleep(0.2)
    alice.say(99, "after the end")
    print("bob hears after end_voice:", bob.hear(0.5), "(None: the relay stopped)")


if __name__ == "__main__":
    main()
