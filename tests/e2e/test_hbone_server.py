"""The HBONE server on 15008 end-to-end (issue 11, "HBONE server on 15008"), with a real
client that is not ours: python3-h2 over Python's ssl (OpenSSL) in the client pod, with
certificates from tests/lab/certs.py (the openssl CLI):

    h2 client (client pod) --TLS 1.3, ALPN h2, client cert--> server pod IP:15008
        --CONNECT server-IP:port--> outrigger --> the app (echo) in the server pod

Checked: 200 and bytes both ways, the client's SPIFFE ID as the tunnel's peer; 400 for a
non-CONNECT, a bad authority and another pod's address; 503 for a closed port; and the
TLS refusals (TLS 1.2, no client certificate, another trust domain, no h2 in ALPN). Each
outcome in its listener.hbone counter. This file is also the client: run as a script
(`python3 test_hbone_server.py client ...`) it prints one JSON line.
"""
import json
import os
import sys

if __name__ != "__main__":
    import pytest

    import certs
    from lab import wait_for

NS = "shop"
SERVER_ID = "spiffe://cluster.local/ns/shop/sa/server"
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/client"
HERE = os.path.abspath(__file__)


# --- the client (runs in the client pod) ------------------------------------------------

def client_main(argv):
    import argparse
    import base64
    import socket
    import ssl

    import h2.config
    import h2.connection
    import h2.events

    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=15008)
    ap.add_argument("--certs")
    ap.add_argument("--ca", required=True)
    ap.add_argument("--authority", required=True)
    ap.add_argument("--method", default="CONNECT")
    ap.add_argument("--path")
    ap.add_argument("--send", default="")
    ap.add_argument("--size", type=int, default=0, help="send this many pattern bytes instead")
    ap.add_argument("--tls12", action="store_true")
    ap.add_argument("--alpn", default="h2")
    ap.add_argument("--garbage", action="store_true", help="after the preface: a PING on a stream")
    a = ap.parse_args(argv)

    out = {}
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(a.ca)
    if a.certs:
        ctx.load_cert_chain(os.path.join(a.certs, "cert-chain.pem"), os.path.join(a.certs, "key.pem"))
    if a.tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([a.alpn])
    raw = socket.create_connection((a.host, a.port), timeout=10)
    try:
        s = ctx.wrap_socket(raw)
    except (ssl.SSLError, OSError) as e:
        print(json.dumps({"tls_error": str(e)}))
        return
    out["version"], out["alpn"] = s.version(), s.selected_alpn_protocol()
    out["server_san"] = [v for k, v in s.getpeercert().get("subjectAltName", ()) if k == "URI"]
    if a.garbage:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
                  + bytes([0, 0, 8, 6, 0, 0, 0, 0, 3]) + b"12345678")
        got = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += d
        except (ssl.SSLError, OSError) as e:
            out["io_error"] = str(e)
        out["eof"] = True
        # Frames back: type 7 is GOAWAY.
        off, types = 0, []
        while off + 9 <= len(got):
            n = int.from_bytes(got[off:off + 3], "big")
            types.append(got[off + 3])
            off += 9 + n
        out["goaway"] = 7 in types
        print(json.dumps(out))
        return
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                validate_outbound_headers=False,
                                                                normalize_outbound_headers=False))
    body = a.send.encode()
    if a.size:
        body = bytes((i * 131 + 7) >> 3 & 0xff for i in range(a.size))
    try:
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        sid = conn.get_next_available_stream_id()
        hdrs = [(":method", a.method), (":authority", a.authority)]
        if a.path:
            hdrs += [(":scheme", "https"), (":path", a.path)]
        conn.send_headers(sid, hdrs)
        s.sendall(conn.data_to_send())
        got, off, ended = bytearray(), 0, False
        while not ended:
            data = s.recv(65536)
            if not data:
                out["eof"] = True
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    out["status"] = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    got += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = True
                elif isinstance(ev, h2.events.StreamReset):
                    out["reset"] = int(ev.error_code)
                    ended = True
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    out["goaway"] = int(ev.error_code)
                    ended = True
            # After the 200: send the body (as the window allows), then END_STREAM.
            if out.get("status") == 200 and off <= len(body) and not ended:
                while off < len(body):
                    n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size,
                            len(body) - off)
                    if n <= 0:
                        break
                    conn.send_data(sid, body[off:off + n])
                    off += n
                if off == len(body):
                    conn.end_stream(sid)
                    off += 1
            s.sendall(conn.data_to_send())
        out["received"] = len(got)
        out["echo_ok"] = bytes(got) == body
        out["body"] = base64.b64encode(bytes(got[:4096])).decode()
    except (ssl.SSLError, OSError) as e:
        out["io_error"] = str(e)
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        client_main(sys.argv[2:])
    sys.exit(0)


# --- the tests ----------------------------------------------------------------------------

class Mesh:
    def __init__(self, L):
        self.L = L
        d = L.dir
        self.ca = certs.CA(os.path.join(d, "ca"))
        self.server_dir = os.path.join(d, "server-certs")
        self.ca.issue(self.server_dir, SERVER_ID)
        self.client_dir = os.path.join(d, "client-certs")
        self.ca.issue(self.client_dir, CLIENT_ID)
        self.foreign_td_dir = os.path.join(d, "foreign-td-certs")
        self.ca.issue(self.foreign_td_dir, "spiffe://other.example/ns/default/sa/client")
        self.other = certs.CA(os.path.join(d, "other"), name="another root")
        self.stranger_dir = os.path.join(d, "stranger-certs")
        self.other.issue(self.stranger_dir, CLIENT_ID)
        for x in (d, self.server_dir, self.client_dir, self.foreign_td_dir, self.stranger_dir):
            os.chmod(x, 0o755)
        self.client = L.add_pod("client")
        self.server = L.add_pod("server")

    def start(self, tproxy=False):
        cfg = {"proxy": {"logLevel": "debug"}}
        kw = {}
        if tproxy:
            # As Istio's injector runs a TPROXY sidecar: uid 0 (transparent sockets), gid 1337.
            import lab
            kw = {"init_args": [a if a != "REDIRECT" else "TPROXY" for a in lab.DEFAULT_INIT_ARGS],
                  "user": (0, 1337)}
            cfg["proxy"]["interceptionMode"] = "TPROXY"
        self.sc = self.server.start_sidecar(config=cfg, proxy_args=("--cert-dir", self.server_dir),
                                            env={"POD_NAMESPACE": NS}, **kw)
        wait_for(lambda: self.sc.stats().get("server.cert_updates", 0) >= 1, timeout=10,
                 what="the sidecar's certificate loaded")
        return self.sc

    def stat(self, name):
        return self.sc.stats().get("listener.hbone." + name, 0)

    def h2(self, authority, certdir=None, **kw):
        certdir = self.client_dir if certdir is None else certdir
        argv = ["/usr/bin/python3", HERE, "client", "--host", self.server.ip4, "--authority", authority,
                "--ca", os.path.join(self.server_dir, "root-cert.pem")]
        if certdir:
            argv += ["--certs", certdir]
        for k, v in kw.items():
            flag = "--" + k.replace("_", "-")
            argv += [flag] if v is True else [flag, str(v)]
        r = self.client.run(argv, check=False, timeout=40)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def mesh(pod_lab):
    m = Mesh(pod_lab)
    m.server.app(["echo", "--port", 8080])
    m.start()
    return m


def test_connect_200_bytes_both_ways_and_peer_identity(mesh):
    m = mesh
    r = m.h2("%s:8080" % m.server.ip4, send="hello over hbone")
    assert r.get("status") == 200, r
    assert r["version"] == "TLSv1.3" and r["alpn"] == "h2", r
    assert r["server_san"] == [SERVER_ID], r
    assert r["echo_ok"], r
    # A stream larger than the windows: back-pressure both ways through the app.
    r = m.h2("%s:8080" % m.server.ip4, size=6 << 20)
    assert r.get("status") == 200 and r["echo_ok"] and r["received"] == 6 << 20, r
    wait_for(lambda: m.stat("hbone_rq_200") == 2, timeout=5, what="two 200s counted")
    assert m.stat("hbone_rq_total") == 2
    assert m.stat("downstream_cx_mtls") == 2
    wait_for(lambda: m.stat("downstream_cx_destroy") == 2, timeout=5, what="both tunnels closed")
    # The client certificate's identity is the tunnel's peer (the close log line).
    with open(m.sc.log_path, errors="replace") as f:
        log = f.read()
    assert "peer " + CLIENT_ID in log


@pytest.mark.parametrize("mode", ["REDIRECT", "TPROXY"])
def test_app_sees_the_hbone_peer_address_under_tproxy(pod_lab, mode):
    """Under TPROXY the app connection of an HBONE stream comes from the HBONE peer's own
    address (as ztunnel's in TPROXY mode, and as the sidecar's 15006 does), so that the app sees
    who called; under REDIRECT from 127.0.0.6, which the capture rules let through."""
    import base64
    m = Mesh(pod_lab)
    m.server.app(["http", "--port", 8080, "--name", "server"])
    m.start(tproxy=mode == "TPROXY")
    for _ in range(2):
        r = m.h2("%s:8080" % m.server.ip4, send="GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        assert r.get("status") == 200, r
        body = base64.b64decode(r["body"]).decode(errors="replace")
        want = m.client.ip4 if mode == "TPROXY" else "127.0.0.6"
        assert "hello from server" in body and "peer %s" % want in body, body
    assert m.sc.health() == 200


def test_400s(mesh):
    m = mesh
    ip = m.server.ip4
    cases = [
        dict(authority="%s:8080" % ip, method="GET", path="/"),     # not a CONNECT
        dict(authority="server.shop.svc:8080"),                     # a host name
        dict(authority="%s" % ip),                                  # no port
        dict(authority="%s:0" % ip),                                # port 0
        dict(authority="%s:8080" % m.client.ip4),                   # another pod's address
    ]
    for c in cases:
        r = m.h2(**c)
        assert r.get("status") == 400, (c, r)
    assert m.stat("hbone_rq_400") == len(cases)
    assert m.stat("hbone_rq_200") == 0
    # A CONNECT with :path is malformed (RFC 9113 8.5): nghttp2 resets that stream.
    r = m.h2("%s:8080" % ip, path="/x")
    assert r.get("status") in (None, 400) and (r.get("reset") or r.get("status") == 400), r
    # The connection is still good for the next request.
    r = m.h2("%s:8080" % ip, send="after")
    assert r.get("status") == 200 and r["echo_ok"], r


def test_503_for_a_closed_port(mesh):
    m = mesh
    r = m.h2("%s:9" % m.server.ip4, send="x")
    assert r.get("status") == 503, r
    wait_for(lambda: m.stat("hbone_rq_503") == 1, timeout=5, what="the 503 counted")
    assert m.stat("upstream_cx_connect_fail") == 1


def test_tls_refusals(mesh):
    m = mesh
    target = "%s:8080" % m.server.ip4
    refused = []
    for what, kw in [("tls12", dict(tls12=True)),
                     ("no client certificate", dict(certdir="")),
                     ("another trust domain", dict(certdir=m.foreign_td_dir)),
                     ("another root", dict(certdir=m.stranger_dir)),
                     ("no h2 in ALPN", dict(alpn="http/1.1"))]:
        r = m.h2(target, **kw)
        assert r.get("status") is None, (what, r)
        assert "tls_error" in r or "io_error" in r or r.get("eof"), (what, r)
        refused.append(what)
    wait_for(lambda: m.stat("downstream_cx_tls_handshake_fail") == len(refused), timeout=5,
             what="every refusal counted")
    assert m.stat("downstream_cx_tls_fail_no_cert") == 1
    assert m.stat("downstream_cx_tls_fail_identity") == 1
    assert m.stat("downstream_cx_tls_fail_untrusted") == 1
    assert m.stat("hbone_rq_total") == 0
    # And a good client still gets through.
    r = m.h2(target, send="ok")
    assert r.get("status") == 200 and r["echo_ok"], r


def test_garbage_frames_end_that_connection_only(mesh):
    m = mesh
    target = "%s:8080" % m.server.ip4
    r = m.h2(target, garbage=True)
    assert r.get("eof") and r.get("goaway"), r
    wait_for(lambda: m.stat("hbone_cx_protocol_error") == 1, timeout=5, what="the protocol error counted")
    assert m.stat("hbone_cx_total") == 1
    # And a good client still gets through.
    r = m.h2(target, send="ok")
    assert r.get("status") == 200 and r["echo_ok"], r
