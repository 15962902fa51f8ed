#!/usr/bin/env python3
"""Writes the seed corpus Fuzz/corpus/ (input = control byte + stream; see FuzzTarget.swift).

control: bits 0-1 connections (0→1, 1→2, 2→3), bits 2-4 chunk (0 whole, k → 2^(k-1) bytes),
bits 5-6 disconnect policy, bit 7 split segments at 0xFF instead of after each newline."""
import os, struct, sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "Fuzz", "corpus")
os.makedirs(out, exist_ok=True)

def ctl(conns=1, chunk=0, policy=0, ff=False):
    return bytes([{1: 0, 2: 1, 3: 2}[conns] | chunk << 2 | policy << 5 | (0x80 if ff else 0)])

def lines(*ls):
    return "".join(l + "\n" for l in ls).encode()

def frame(payload, codec=0):
    if isinstance(payload, str):
        payload = payload.encode()
    return struct.pack(">I", len(payload) + 1) + bytes([codec]) + payload

def wsframe(payload, opcode=1, fin=True, key=b"\x11\x22\x33\x44"):
    """A masked client WebSocket frame."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))

WS_UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")

H = '{"type":"hello","user":"%s"}'
J = '{"type":"join_room","room":"%s"}'
S = '{"type":"send_chat","room":"%s","text":"%s"}'
seeds = {
    "hello": ctl() + lines(H % "alice"),
    "hello_join_send": ctl() + lines(H % "alice", J % "lobby", S % ("lobby", "hi"), '{"type":"ping","id":1}'),
    "two_users_chat": ctl(2) + lines(H % "alice", H % "bob", J % "lobby", J % "lobby",
                                      S % ("lobby", "hello bob") , S % ("lobby", "hi alice")),
    "three_users_leave": ctl(3, policy=1) + lines(H % "a", H % "b", H % "c", J % "r", J % "r", J % "r",
                                                 S % ("r", "x"), '{"type":"leave_room","room":"r","id":"l1"}', S % ("r", "y"), S % ("r", "z")),
    "ids_acks": ctl() + lines('{"type":"hello","user":"u","id":"h"}', '{"type":"join_room","room":"r","id":2}',
                              '{"type":"send_chat","room":"nope","text":"t","id":-3.5e2}', '{"type":"nosuch","id":null}'),
    "echo_unicode": ctl() + lines('{"type":"hello","user":"\u00e9\u4e2d","echo":true}', J % "caf\u00e9",
                                  S % ("caf\u00e9", "\u4e2d\u6587 \U0001F600")),
    "escapes": ctl() + lines(H % "e", J % "r", S % ("r", r'a\"b\\c\/d\b\f\n\r\t\u0041\u00e9\u4e2d\ud83d\ude00')),
    "surrogates_bad": ctl() + lines(H % "s", J % "r", S % ("r", r'\ud83d'), S % ("r", r'\ude00'), S % ("r", r'\ud83d\u0041'), S % ("r", r'\uZZZZ')),
    "invalid_utf8": ctl() + b'{"type":"hello","user":"a"}\n' + b'{"type":"ping","x":"\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80\xe2\x82"}\n{"type":"ping","x":"\xff"}\n',
    "control_chars": ctl() + b'{"type":"hello","user":"a\x01"}\n{"type":"hello","user":"a\tb"}\n',
    "nested": ctl() + lines(H % "n", '{"type":"ping","a":{"b":[1,2,{"c":null}],"d":true},"e":[[[[[[]]]]]]}',
                            '{"type":"ping","a":' + "[" * 40 + "]" * 40 + '}'),
    "many_fields": ctl() + lines(H % "m", "{" + ",".join('"f%d":%d' % (i, i) for i in range(20)) + ',"type":"ping"}'),
    "numbers": ctl() + lines(H % "n", '{"type":"ping","a":-0,"b":0.5e-3,"c":9223372036854775807,"d":-9223372036854775808,"e":9223372036854775808,"f":1E+2,"id":12345678901234567890}'),
    "bad_json": ctl() + lines(H % "b", '{"type":"ping",}', '{"type" "ping"}', '{type:"ping"}', '["type"]', '{"type":"ping"} x', "{", "{\"a\":tru}", "{\"a\":01}"),
    "blank_cr": ctl() + b"\r\n   \n\t\n" + b'{"type":"hello","user":"c"}\r\n\r\n{"type":"ping"}\r\n',
    "before_hello": ctl() + lines(J % "r", '{"type":"ping"}', H % "late", H % "again", '{"user":"x"}', '{"type":""}', '{"type":5}'),
    "split_bytewise": ctl(chunk=1) + lines(H % "slow", J % "r", S % ("r", "split one byte at a time")),
    "split_chunks7": ctl(2, chunk=4) + lines(H % "a", H % "b", J % "r", J % "r", S % ("r", "x" * 100), S % ("r", "y" * 100)),
    "binary_hello": ctl() + b"\x00" * 0 + frame(H % "bin") + frame(J % "r") + frame(S % ("r", "bin msg")) + frame('{"type":"ping","id":7}'),
    "binary_badcodec_len0": ctl() + frame(H % "bin") + frame("{}", codec=9) + b"\x00\x00\x00\x00" + frame('{"type":"ping"}'),
    "binary_split": ctl(chunk=2) + frame(H % "bin") + frame(J % "r") + frame(S % ("r", "z" * 300)),
    "binary_huge_len": ctl() + b"\x00\x7f\xff\xff\xff\x00{}",
    "binary_over_max": ctl() + b"\x00\x01\x00\x01\x00" + b"{" * 16,
    "binary_lz4_garbage": ctl() + frame(H % "bin") + frame(b"\x10abcdefgh\x00\x00", codec=1) + frame(b"\x28\xb5\x2f\xfd\x00\x00", codec=2),
    "binary_compress_hello": ctl(2, ff=True) + frame('{"type":"hello","user":"z","compress":"zstd"}') + frame(J % "r") + b"\xff"
        + b'{"type":"hello","user":"j"}\n' + J.encode() % b"r" + b"\n" + (S % ("r", "q" * 700)).encode() + b"\n",
    "mixed_json_binary": ctl(2, ff=True) + frame(H % "b") + frame(J % "r") + b"\xff" + lines(H % "j", J % "r", S % ("r", "to binary")) + b"\xff" + frame(S % ("r", "to json")),
    "http_health": ctl() + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "http_404_405": ctl(2, ff=True) + b"GET /nope?x=1&y HTTP/1.1\r\nHost: x\r\n\r\n\xffPOST /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "http_bad": ctl() + b"GET nothing\r\n\r\n",
    "http_stats": ctl(3, ff=True) + b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n\xffGET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n\r\n\xffGET /dashboard HTTP/1.0\r\n\r\n",
    # First lines decided only when complete: other methods, lower case, absolute form, and
    # non-request lines that start with a letter (bad_frame).
    "http_methods": ctl(3, ff=True) + b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n\xffFOO /x HTTP/1.1\r\nHost: x\r\n\r\n\xffget / HTTP/1.0\r\n\r\n"
        + b"\xffCONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n\xffGET http://h:1/health?a=b HTTP/1.1\r\nHost: h\r\n\r\n\xffPRI * HTTP/2.0\r\n\r\n",
    "http_sniff_split": ctl(2, chunk=1) + b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nZebra / FTP/1.0\n",
    "http_big_header": ctl() + b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
    "garbage_first": ctl() + b"hello there\n",
    "whitespace_then_json": ctl(chunk=1) + b" \t\r\n" + lines(H % "w"),
    "disconnect_replace": ctl(2, policy=2) + lines(H % "a", H % "b", J % "r", J % "r", S % ("r", "1"), S % ("r", "2"),
                                                   H % "c", J % "r", S % ("r", "3"), S % ("r", "4")),
    "disconnect_every3": ctl(3, policy=3) + lines(H % "a", H % "b", H % "c", J % "r", J % "r", J % "r") * 2,
    "long_names": ctl() + lines(H % ("u" * 65), H % ("u" * 64), J % ("r" * 65), J % ("r" * 64), S % ("r" * 64, "t")),
    "dup_keys": ctl() + lines('{"type":"ping","type":"hello","user":"a","user":"b"}', '{"type":"join_room","room":"a","room":"b"}'),
    "escaped_keys": ctl() + lines(r'{"\u0074ype":"hello","us\u0065r":"k"}', r'{"type":"ping","i\u0064":"\u0031"}'),
    "ws_chat": ctl(2, ff=True) + WS_UPGRADE + wsframe(H % "w") + wsframe(J % "r") + b"\xff"
        + lines(H % "j", J % "r", S % ("r", "to ws")) + b"\xff" + wsframe(S % ("r", "from ws")) + wsframe("ping!", opcode=9)
        + wsframe('{"type":"send_chat",', fin=False) + wsframe("ping", opcode=9) + wsframe('"room":"r","text":"frag"}', opcode=0)
        + wsframe(b"\x03\xe8bye", opcode=8),
    "ws_split": ctl(chunk=1) + WS_UPGRADE + wsframe(H % "s") + wsframe(J % "r") + wsframe('{"type":"ping","id":"' + "p" * 200 + '"}'),
    "ws_bad": ctl(3, ff=True) + WS_UPGRADE + b"\x81\x05hello" + b"\xff" + WS_UPGRADE + wsframe(b"\xc0\x80") + b"\xff"
        + WS_UPGRADE.replace(b"13", b"8") + b"\xff",
    "many_rooms": ctl() + lines(H % "m", *[J % ("room%d" % i) for i in range(30)], '{"type":"leave_room","room":"room3"}'),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {out}")
