#!/usr/bin/python3
"""Writes the seed corpus of fuzz_hbone (tests/fuzz/corpus/hbone): what an HBONE client
sends after the preface, made with python3-h2 (an HTTP/2 stack other than ours), plus
hand-made frames. Each file: one byte (how the target cuts reads), then the frames.
Run from the source tree: tests/fuzz/make-hbone-corpus.py"""
import os
import struct

import h2.config
import h2.connection

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "hbone")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(typ, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([typ, flags]) + struct.pack(">I", sid) + payload


def client(steps):
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                                             normalize_outbound_headers=False))
    c.initiate_connection()
    out = bytearray()
    for s in steps:
        s(c)
    out += c.data_to_send()
    assert out.startswith(PREFACE)
    return bytes(out[len(PREFACE):])


def connect(auth, data=b"", end=True, extra=(), path=None, method="CONNECT"):
    def step(c):
        sid = c.get_next_available_stream_id()
        h = [(":method", method), (":authority", auth)] + list(extra)
        if path:
            h += [(":scheme", "https"), (":path", path)]
        c.send_headers(sid, h)
        if data:
            c.send_data(sid, data)
        if end:
            c.end_stream(sid)
    return step


def reset(sid):
    return lambda c: c.reset_stream(sid)


SEEDS = {
    "connect-v4": client([connect("10.1.2.3:8080", b"hello")]),
    "connect-v6": client([connect("[fd00::1]:80", b"x" * 3000)]),
    "connect-headers": client([connect("10.1.2.3:8080", b"hi", extra=[
        ("forwarded", "for=10.0.0.1"), ("baggage", "k8s.namespace.name=default"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")])]),
    "get": client([connect("10.1.2.3:8080", method="GET", path="/")]),
    "connect-path": client([connect("10.1.2.3:8080", path="/x")]),
    "bad-authorities": client([connect(a) for a in ("host:80", "10.1.2.3", "[::1", "1.2.3.4:0",
                                                   "1.2.3.4:99999", "")]),
    "open-then-reset": client([connect("10.1.2.3:8080", b"abc", end=False), reset(1)]),
    "many-streams": client([connect("10.1.2.3:%d" % (1000 + i), b"s%d" % i) for i in range(20)]),
    "half-open": client([connect("10.1.2.3:8080", b"no end", end=False)]),
    "ping-settings-window": frame(6, 0, 0, b"12345678") + frame(4, 0, 0, struct.pack(">HI", 4, 1 << 20))
    + frame(8, 0, 0, struct.pack(">I", 1000)) + frame(4, 1, 0),
    "garbage-after-preface": b"\x00\x00\x04\xfe\xff\x00\x00\x00\x01xxxx" + b"\x00\x00\x08\x06\x00\x00\x00\x00\x03"
    + b"12345678",
    "data-on-idle-stream": frame(4, 0, 0) + frame(0, 1, 5, b"data"),
    "rst-flood": frame(4, 0, 0) + b"".join(frame(3, 0, 2 * i + 1, b"\x00\x00\x00\x08") for i in range(50)),
    "window-overflow": frame(4, 0, 0) + frame(8, 0, 0, struct.pack(">I", 0x7fffffff))
    + frame(8, 0, 0, struct.pack(">I", 0x7fffffff)),
    "empty": b"",
}

os.makedirs(OUT, exist_ok=True)
for i, (name, body) in enumerate(sorted(SEEDS.items())):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([(i * 37) % 256]) + body)
print("%d seeds in %s" % (len(SEEDS), OUT))
