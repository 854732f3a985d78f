"""Inbound on 15006 end-to-end (issue 9, "Inbound on 15006" and its test items): the server
pod's sidecar sniffs each captured connection and applies PeerAuthentication (static
resources), with real peers in the client pod (no sidecar there):

    openssl s_client / curl (client pod) -> server pod IP:port --nat PREROUTING--> :15006
        -> STRICT / PERMISSIVE / DISABLE -> app (http, or openssl s_server for app-level TLS)

Certificates come from tests/lab/certs.py (the openssl CLI), the sidecar loads its own from
--cert-dir. Every refusal is checked in its listener.inbound counter.
"""
import json
import os
import signal

import pytest

import certs
import lab
from lab import wait_for

PA = "type.googleapis.com/istio.security.v1beta1.PeerAuthentication"
NS = "shop"
SERVER_ID = certs.spiffe_id(NS, "server")
CLIENT_ID = certs.spiffe_id("default", "client")
HTTP_REQ = "GET / HTTP/1.0\r\nHost: x\r\n\r\n"


def pa(mode=None, **kw):
    r = {"@type": PA}
    if mode:
        r["mtls"] = {"mode": mode}
    r.update(kw)
    return r


class Mesh:
    def __init__(self, L):
        self.L = L
        d = L.dir
        self.ca = certs.CA(os.path.join(d, "ca"))
        self.server_dir = os.path.join(d, "server-certs")
        self.ca.issue(self.server_dir, SERVER_ID)
        self.client_dir = os.path.join(d, "client-certs")
        self.ca.issue(self.client_dir, CLIENT_ID)
        self.other = certs.CA(os.path.join(d, "other"), name="another root")
        self.stranger_dir = os.path.join(d, "stranger-certs")
        self.other.issue(self.stranger_dir, CLIENT_ID)
        for x in (d, self.server_dir, self.client_dir, self.stranger_dir):
            os.chmod(x, 0o755)
        self.client = L.add_pod("client")
        self.server = L.add_pod("server")

    def start(self, resources, labels=None, log_level="debug", extra=None, with_certs=True):
        cfg = {"resources": resources, "proxy": {"logLevel": log_level}}
        cfg.update(extra or {})
        env = {"POD_NAMESPACE": NS}
        if labels is not None:
            env["ISTIO_METAJSON_LABELS"] = json.dumps(labels)
        env["OUTRIGGER_POD_LABELS"] = os.path.join(self.L.dir, "no-such-labels-file")
        if with_certs is True:
            args = ("--cert-dir", self.server_dir)
        elif with_certs == "pending":   # a source that has delivered nothing yet
            empty = os.path.join(self.L.dir, "no-certs-yet")
            os.makedirs(empty, exist_ok=True)
            args = ("--cert-dir", empty)
        else:
            args = ()
        self.sc = self.server.start_sidecar(config=cfg, proxy_args=args, env=env,
                                            ready=with_certs != "pending")
        if with_certs is True:
            wait_for(lambda: self.sc.stats().get("server.cert_updates", 0) >= 1, timeout=10,
                     what="the sidecar's certificate loaded")
        return self.sc

    def stat(self, name):
        return self.sc.stats().get("listener.inbound." + name, 0)

    def s_client(self, port, certdir=None, alpn="istio", data=HTTP_REQ, timeout=10):
        """openssl s_client from the client pod: (returncode, stdout, stderr)."""
        argv = ["timeout", str(timeout), "openssl", "s_client", "-quiet", "-connect",
                "%s:%d" % (self.server.ip4, port), "-servername", "outbound_.%d_._.server.shop" % port]
        if alpn:
            argv += ["-alpn", alpn]
        if certdir:
            argv += ["-cert", os.path.join(certdir, "cert-chain.pem"),
                     "-key", os.path.join(certdir, "key.pem"),
                     "-CAfile", os.path.join(certdir, "root-cert.pem")]
        r = self.client.run(argv, check=False, timeout=timeout + 5, input=data)
        return r.returncode, r.stdout, r.stderr

    def plain(self, port):
        """A plaintext HTTP GET from the client pod: (status, body)."""
        return self.client.curl("http://%s:%d/" % (self.server.ip4, port))


@pytest.fixture
def mesh(pod_lab):
    m = Mesh(pod_lab)
    m.server.app(["http", "--port", 8080, "--name", "server"])
    m.server.app(["http", "--port", 8081, "--name", "server-8081"])
    return m


def s_server(m, port):
    """An app that speaks TLS itself (a non-mesh certificate): openssl s_server -www."""
    d = os.path.join(m.L.dir, "app-tls")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    key, crt = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    if not os.path.exists(crt):
        certs._run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", crt, "-days", "1", "-subj", "/CN=app.example"])
        os.chmod(key, 0o644)
    m.server.popen(["openssl", "s_server", "-accept", str(port), "-cert", crt, "-key", key, "-www"],
                   user="nobody")
    wait_for(lambda: m.server.run(["sh", "-c", "ss -ltn | grep -q ':%d '" % port], check=False).returncode == 0,
             timeout=10, what="s_server listening")


def test_strict_refuses_plaintext_and_foreign_certs(mesh):
    """STRICT: a plaintext client is reset and counted; a client with a certificate of
    another root, and one with none, fail the handshake (counted by reason); a client with a
    mesh certificate and ALPN istio (an Envoy sidecar, on the wire) gets through, the app
    gets the plaintext bytes, and the close log line names the peer."""
    m = mesh
    m.start([pa("STRICT")])
    code, _ = m.plain(8080)
    assert code == 0
    wait_for(lambda: m.stat("downstream_cx_plaintext_refused") == 1, what="plaintext refused")

    rc, out, err = m.s_client(8080, m.stranger_dir)
    assert "hello from server" not in out
    wait_for(lambda: m.stat("downstream_cx_tls_fail_untrusted") == 1, what="untrusted counted")
    rc, out, err = m.s_client(8080, None)
    assert "hello from server" not in out
    wait_for(lambda: m.stat("downstream_cx_tls_fail_no_cert") == 1, what="no cert counted")
    assert m.stat("downstream_cx_tls_handshake_fail") == 2

    rc, out, err = m.s_client(8080, m.client_dir)
    assert "hello from server" in out, (rc, out, err)
    assert m.stat("downstream_cx_mtls") == 1
    # The app saw a plaintext request from the sidecar (its answer names the peer address).
    assert "127.0.0.6" in out
    wait_for(lambda: "peer " + CLIENT_ID in m.sc.log(), what="peer identity in the close log line")
    # curl with a mesh certificate (no istio ALPN: STRICT terminates any TLS).
    r = m.client.run(["curl", "-sS", "-k", "--http1.1", "-m", "5",
                      "--cert", os.path.join(m.client_dir, "cert-chain.pem"),
                      "--key", os.path.join(m.client_dir, "key.pem"),
                      "https://%s:8080/" % m.server.ip4], check=False, timeout=10)
    assert "hello from server" in r.stdout, r.stderr
    assert m.stat("downstream_cx_mtls") == 2
    r = m.client.run(["curl", "-sS", "-k", "--http1.1", "-m", "5",
                      "--cert", os.path.join(m.stranger_dir, "cert-chain.pem"),
                      "--key", os.path.join(m.stranger_dir, "key.pem"),
                      "https://%s:8080/" % m.server.ip4], check=False, timeout=10)
    assert r.returncode != 0 and "hello" not in r.stdout
    wait_for(lambda: m.stat("downstream_cx_tls_fail_untrusted") == 2, what="curl untrusted counted")


def test_permissive_passes_plaintext_and_app_tls(mesh):
    """PERMISSIVE (the default): plaintext passes; TLS without an Istio ALPN (curl https to an
    app that serves TLS itself) passes through unchanged, the app's own certificate answering;
    TLS with ALPN istio and a mesh certificate is terminated."""
    m = mesh
    s_server(m, 8443)
    m.start([])
    code, body = m.plain(8080)
    assert code == 200 and "hello from server" in body
    assert m.stat("downstream_cx_plaintext") == 1
    r = m.client.run(["curl", "-sS", "-k", "-m", "5", "-o", "/dev/null", "-w", "%{http_code} %{ssl_verify_result}",
                      "https://%s:8443/" % m.server.ip4], check=False, timeout=10)
    assert r.stdout.startswith("200"), (r.stdout, r.stderr)
    assert m.stat("downstream_cx_tls_passthrough") == 1
    # The certificate the client saw is the app's, not the sidecar's.
    rc, out, err = m.s_client(8443, None, alpn="http/1.1")
    assert "CN = app.example" in err or "CN=app.example" in err, err
    assert m.stat("downstream_cx_tls_passthrough") == 2
    rc, out, err = m.s_client(8080, m.client_dir)
    assert "hello from server" in out, (rc, out, err)
    assert m.stat("downstream_cx_mtls") == 1


def test_disable_passes_tls_bytes(mesh):
    """DISABLE: nothing is looked at; TLS with ALPN istio reaches the app's own TLS server."""
    m = mesh
    s_server(m, 8443)
    m.start([pa("DISABLE")])
    rc, out, err = m.s_client(8443, m.client_dir, alpn="istio")
    assert "CN = app.example" in err or "CN=app.example" in err, err
    code, body = m.plain(8080)
    assert code == 200
    assert m.stat("downstream_cx_mtls_disabled") == 2
    assert m.stat("downstream_cx_mtls") == 0


def test_port_level_strict(mesh):
    """A workload policy (selector on the pod's labels) with STRICT on 8080 only: plaintext
    to 8080 is refused, to 8081 it passes (PERMISSIVE, the mesh's default)."""
    m = mesh
    m.start([pa(None, namespace=NS, name="server-ports", selector={"matchLabels": {"app": "server"}},
                portLevelMtls={"8080": {"mode": "STRICT"}})], labels={"app": "server", "version": "v1"})
    assert "inbound mTLS: PERMISSIVE, port 8080 STRICT" in m.sc.log()
    assert m.sc.config_dump()["inboundMtls"] == {
        "mode": "PERMISSIVE", "ports": {"8080": "STRICT"},
        "policies": {"mesh": "", "namespace": "", "workload": "shop/server-ports"},
        "namespace": NS, "labels": {"app": "server", "version": "v1"}}
    code, _ = m.plain(8080)
    assert code == 0
    code, body = m.plain(8081)
    assert code == 200 and "server-8081" in body
    assert m.stat("downstream_cx_plaintext_refused") == 1
    assert m.stat("downstream_cx_plaintext") == 1
    rc, out, err = m.s_client(8080, m.client_dir)
    assert "hello from server" in out


def test_reload_changes_mode_for_new_connections(mesh):
    """PERMISSIVE, then a reload to STRICT: an open plaintext connection keeps going (its
    snapshot), new plaintext connections are refused."""
    m = mesh
    m.server.app(["echo", "--port", 9000])
    sc = m.start([])
    c = m.client.interactive(m.server.ip4, 9000)
    assert c.cmd("echo 10").startswith("OK")
    with open(sc.config_path) as f:
        cfg = json.load(f)
    cfg["resources"] = [pa("STRICT")]
    with open(sc.config_path, "w") as f:
        json.dump(cfg, f)
    gen = sc.stats()["server.config_generation"]  # the certificate made one already
    sc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: sc.stats().get("server.config_generation") == gen + 1, what="reload applied")
    assert "inbound mTLS: STRICT" in sc.log()
    code, _ = m.plain(8080)
    assert code == 0
    assert m.stat("downstream_cx_plaintext_refused") == 1
    assert c.cmd("echo 10").startswith("OK")
    c.close()


def test_no_certificate_yet(mesh):
    """Without a certificate (the source has delivered none yet): PERMISSIVE passes plaintext
    but refuses mTLS attempts (as Envoy with no SDS secret has no such filter chain), counted;
    the sidecar is not ready meanwhile."""
    m = mesh
    m.start([], with_certs="pending")
    assert m.sc.health() == 503
    code, body = m.plain(8080)
    assert code == 200
    rc, out, err = m.s_client(8080, m.client_dir)
    assert "hello from server" not in out
    wait_for(lambda: m.stat("downstream_cx_mtls_no_cert") == 1, what="mTLS without a certificate counted")


def test_no_certificate_source_no_sniffing(mesh):
    """No certificate source at all (a plain L4 sidecar, the built-in defaults): nothing can
    be terminated, so PERMISSIVE does not wait for the client's first bytes. A server-first
    app (a banner before any request, as SMTP or MySQL) answers a client that sends nothing;
    with a source it would wait, as Istio's sidecars do (see the next test). Regression:
    the sniffing stage made every inbound connection wait for the client."""
    m = mesh
    banner = "220 banner-%d" % os.getpid()
    m.server.popen(["socat", "TCP-LISTEN:9100,reuseaddr,fork", "SYSTEM:echo %s; sleep 5" % banner],
                   user="nobody")
    wait_for(lambda: m.server.run(["sh", "-c", "ss -ltn | grep -q ':9100 '"], check=False).returncode == 0,
             timeout=10, what="the banner app listening")
    m.start([], with_certs=False)
    r = m.client.run(["timeout", "5", "socat", "-T", "3", "-u", "TCP:%s:9100" % m.server.ip4, "STDOUT"],
                     check=False, timeout=15)
    assert banner in r.stdout, (r.returncode, r.stdout, r.stderr)
    assert m.stat("downstream_cx_sniff_timeout") == 0


def test_protocol_detection_timeout_server_first(mesh):
    """mesh.protocolDetectionTimeout: a client that sends nothing (a server-first protocol)
    is taken as plaintext after the timeout and reaches the app, counted."""
    m = mesh
    m.server.app(["echo", "--port", 9000])
    m.start([], extra={"mesh": {"protocolDetectionTimeout": "0.2s"}})
    c = m.client.interactive(m.server.ip4, 9000)
    wait_for(lambda: m.stat("downstream_cx_sniff_timeout") == 1, what="sniff timeout")
    assert c.cmd("echo 10").startswith("OK")
    assert m.stat("downstream_cx_plaintext") == 1
    c.close()


# A real TLS client (Python's ssl: OpenSSL) whose ClientHello we deliver in pieces: in two
# TCP segments 300 ms apart, or re-framed into two TLS records (legal fragmentation, RFC 8446
# §5.1) also sent apart. The sniffing stage must wait for the whole hello (SO_RCVLOWAT), not
# decide on the first segment.
SPLIT_CLIENT = r'''
import socket, ssl, sys, time
host, port, certdir, how = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.load_verify_locations(certdir + "/root-cert.pem")
ctx.load_cert_chain(certdir + "/cert-chain.pem", certdir + "/key.pem")
ctx.set_alpn_protocols(["istio"])
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(inc, out, server_hostname="x")
s = socket.create_connection((host, port), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
try:
    obj.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = out.read()
if how == "records":
    body = hello[5:]
    wire = b"".join(b"\x16\x03\x01" + len(c).to_bytes(2, "big") + c for c in (body[:50], body[50:]))
else:
    wire = hello
if how == "whole":
    s.sendall(wire)
else:
    s.sendall(wire[:30]); time.sleep(0.3); s.sendall(wire[30:])
while True:
    try:
        obj.do_handshake()
        break
    except ssl.SSLWantReadError:
        s.sendall(out.read())
        d = s.recv(65536)
        if not d:
            print("EOF during handshake"); sys.exit(1)
        inc.write(d)
s.sendall(out.read())
obj.write(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
s.sendall(out.read())
got, done = b"", False
while not done:
    d = s.recv(65536)
    if not d:
        break
    inc.write(d)
    try:
        while True:
            x = obj.read(65536)
            if not x:   # close_notify: the end, as for any TLS client
                done = True
                break
            got += x
    except ssl.SSLWantReadError:
        pass
    except ssl.SSLZeroReturnError:
        done = True
print(got.decode(errors="replace"))
'''


@pytest.mark.parametrize("how", ["whole", "segments", "records"])
def test_strict_hello_in_pieces(mesh, how):
    """A ClientHello that arrives in two TCP segments, or in two TLS records, 300 ms apart,
    is recognised whole (not taken as plaintext and refused) and terminated."""
    m = mesh
    m.start([pa("STRICT")])
    r = m.client.run([lab.PYTHON, "-c", SPLIT_CLIENT, m.server.ip4, "8080", m.client_dir, how],
                     check=False, timeout=40)
    assert "hello from server" in r.stdout, (r.stdout, r.stderr)
    assert m.stat("downstream_cx_mtls") == 1
    assert m.stat("downstream_cx_plaintext_refused") == 0


def test_peer_exchange_alpn_never_selected(mesh):
    """An Envoy sidecar's TCP offer (istio-peer-exchange, istio) is terminated, but
    istio-peer-exchange is not selected, so neither side speaks the metadata-exchange
    preamble: the app's bytes arrive unchanged (s_client reports no ALPN)."""
    m = mesh
    m.start([pa("STRICT")])
    d = m.client_dir
    r = m.client.run(["timeout", "10", "openssl", "s_client", "-connect", "%s:8080" % m.server.ip4,
                      "-alpn", "istio-peer-exchange,istio", "-ign_eof",
                      "-cert", os.path.join(d, "cert-chain.pem"), "-key", os.path.join(d, "key.pem"),
                      "-CAfile", os.path.join(d, "root-cert.pem")],
                     check=False, timeout=15, input=HTTP_REQ)
    assert "No ALPN negotiated" in r.stdout, r.stdout[-2000:]
    assert "Verify return code: 0 (ok)" in r.stdout
    assert "HTTP/1.1 200 OK" in r.stdout and "hello from server" in r.stdout
    assert m.stat("downstream_cx_mtls") == 1


# A client that opens a connection, sends `first` (hex) and then waits: prints how long
# until the sidecar ended the connection ("closed 1.02"), or "open" if it still stands at
# the limit. Bounded: one connection, at most `limit` seconds.
STALL_CLIENT = r'''
import socket, sys, time
host, port, first, limit = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), float(sys.argv[4])
s = socket.create_connection((host, port), timeout=5)
if first:
    s.sendall(first)
t0 = time.monotonic()
s.settimeout(limit)
try:
    d = s.recv(100)
    print("closed %.2f %r" % (time.monotonic() - t0, d))
except ConnectionResetError:
    print("closed %.2f reset" % (time.monotonic() - t0))
except socket.timeout:
    print("open")
'''


@pytest.mark.parametrize("mode,first,bounded", [
    ("STRICT", "", True),              # STRICT: silent, never a TLS client -> connectTimeout
    ("STRICT", "16", True),            # one byte of a record header
    ("STRICT", "1603010200", True),    # a record header announcing 512 bytes, nothing after
    ("PERMISSIVE", "16030102000100", True),   # a hello begun, then silence
    ("PERMISSIVE", "", False),         # silent: may be a server-first protocol, waits
])
def test_stalled_hello_is_bounded(mesh, mode, first, bounded):
    """Slowloris on 15006 with protocolDetectionTimeout 0 (the default): a client that begins
    a ClientHello and stops (or, in STRICT, sends nothing) is reset after proxy.connectTimeout,
    as a stalled handshake is, not kept for proxy.idleTimeout (an hour by default) holding a
    tunnel and a socket. A silent PERMISSIVE client still waits (server-first apps)."""
    m = mesh
    m.start([pa(mode)], extra={"proxy": {"logLevel": "debug", "connectTimeout": "1s"}})
    r = m.client.run([lab.PYTHON, "-c", STALL_CLIENT, m.server.ip4, "8080", first, "4"],
                     check=False, timeout=20)
    out = r.stdout.strip()
    if bounded:
        assert out.startswith("closed"), (out, r.stderr)
        assert 0.5 < float(out.split()[1]) < 3.5, out
        assert m.stat("downstream_cx_sniff_timeout") == 1
    else:
        assert out == "open", (out, r.stderr)
