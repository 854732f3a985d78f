"""An HBONE client that holds its streams open (python3-h2 over Python's ssl, run in a pod by
test_authz.py): one mTLS HTTP/2 connection to host:15008, one CONNECT stream per --authority,
and on each 200 a few bytes sent without END_STREAM (the app, an HTTP server, waits for the
rest of the request). Prints one JSON line once every stream is answered
({"status": {"0": code, ...}}, keyed by the --authority's index), then holds them until each is reset or ended, the connection
closes, or --hold seconds pass, and prints a second JSON line:
{"ended": {"0": "reset" | "end" | "answered" | "open", ...}, "eof": bool, "goaway": code or null}.
"""
import argparse
import json
import os
import select
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=15008)
    ap.add_argument("--certs", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--authority", action="append", required=True)
    ap.add_argument("--hold", type=float, default=20)
    a = ap.parse_args(argv)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(a.ca)
    ctx.load_cert_chain(os.path.join(a.certs, "cert-chain.pem"), os.path.join(a.certs, "key.pem"))
    ctx.set_alpn_protocols(["h2"])
    s = ctx.wrap_socket(socket.create_connection((a.host, a.port), timeout=10))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                validate_outbound_headers=False,
                                                                normalize_outbound_headers=False))
    conn.initiate_connection()
    sids = {}
    for i, auth in enumerate(a.authority):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "CONNECT"), (":authority", auth)])
        sids[sid] = str(i)
    s.sendall(conn.data_to_send())
    status, ended, eof, goaway, announced = {}, {}, False, None, False
    deadline = time.monotonic() + a.hold
    s.setblocking(False)
    while time.monotonic() < deadline and len(ended) < len(sids) and not eof:
        if announced is False and len(status) == len(sids):
            print(json.dumps({"status": status}), flush=True)
            announced = True
        r, _, _ = select.select([s], [], [], 0.2)
        if not r and not s.pending():
            continue
        try:
            data = s.recv(65536)
        except ssl.SSLWantReadError:
            continue
        except (ssl.SSLError, OSError):
            eof = True
            break
        if not data:
            eof = True
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                code = int(dict(ev.headers)[b":status"])
                status[sids[ev.stream_id]] = code
                if code == 200:
                    conn.send_data(ev.stream_id, b"GET / HTTP/1.1\r\n")
                else:
                    ended[sids[ev.stream_id]] = "answered"
            elif isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                ended[sids[ev.stream_id]] = "reset"
            elif isinstance(ev, h2.events.StreamEnded):
                ended.setdefault(sids[ev.stream_id], "end")
            elif isinstance(ev, h2.events.ConnectionTerminated):
                goaway = int(ev.error_code)
                eof = True
        out = conn.data_to_send()
        if out:
            s.setblocking(True)
            s.sendall(out)
            s.setblocking(False)
    if not announced:
        print(json.dumps({"status": status}), flush=True)
    print(json.dumps({"ended": {str(i): ended.get(str(i), "open") for i in range(len(a.authority))}, "eof": eof,
                      "goaway": goaway}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
