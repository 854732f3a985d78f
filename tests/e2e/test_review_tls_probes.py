"""Hostile and unusual TLS traffic against the inbound sniffing stage and the TLS transport
(the review of issue 9): bytes that are not TLS after a good handshake, a certificate chain
too large to take, renegotiation and key updates, many stalled hellos at once, and a few
hundred mutated ClientHellos. Each probe is bounded in count and time; after each, the
sidecar is alive and still serves a good mTLS client. Run under the sanitizers build, the
sidecar's exit also checks for leaks."""
import os

import pytest

import lab
from lab import wait_for
from test_inbound_mtls import Mesh, pa, HTTP_REQ


@pytest.fixture
def mesh(pod_lab):
    m = Mesh(pod_lab)
    m.server.app(["http", "--port", 8080, "--name", "server"])
    return m


def good_client_works(m):
    rc, out, err = m.s_client(8080, m.client_dir)
    assert "hello from server" in out, (rc, out[-500:], err[-1500:])


HANDSHAKE_THEN = r'''
import socket, ssl, sys, os
host, port, certdir, what = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.load_verify_locations(certdir + "/root-cert.pem")
chain = certdir + "/cert-chain.pem"
if what.startswith("chain"):
    copies = int(what[5:])
    leaf = open(chain).read()
    root = open(certdir + "/root-cert.pem").read()
    chain = "/tmp/big-chain-%d.pem" % os.getpid()
    with open(chain, "w") as f:
        f.write(leaf + root * copies)
ctx.load_cert_chain(chain, certdir + "/key.pem")
ctx.set_alpn_protocols(["istio"])
s0 = socket.create_connection((host, port), timeout=10)
try:
    t = ctx.wrap_socket(s0, server_hostname="x")
except (ssl.SSLError, OSError) as e:
    print("handshake failed", type(e).__name__, e); sys.exit(0)
t.settimeout(5)
s = socket.socket(fileno=os.dup(t.fileno()))    # the same TCP connection, under TLS
s.settimeout(5)
if what == "garbage":
    # Raw bytes under the TLS layer: a record of an unknown type, then noise.
    s.sendall(b"\x17\x03\x03\x00\x10" + os.urandom(16) + os.urandom(3000))
elif what == "badtype":
    s.sendall(b"\x42\x03\x03\x00\x05hello")
elif what.startswith("chain"):
    t.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
got = b""
try:
    while True:
        d = (t.recv(65536) if what.startswith("chain") else s.recv(65536))
        if not d:
            break
        got += d
except (ssl.SSLError, OSError) as e:
    print("ended", type(e).__name__)
print("sent", what)
print("got %d bytes%s" % (len(got), " hello" if b"hello from server" in got else ""))
'''


@pytest.mark.parametrize("what", ["garbage", "badtype"])
def test_garbage_after_handshake(mesh, what):
    """A mesh client completes the handshake, then sends bytes that are no TLS record: the
    connection ends (nothing reaches the app as data), the sidecar lives, others are served."""
    m = mesh
    m.start([pa("STRICT")])
    r = m.client.run([lab.PYTHON, "-c", HANDSHAKE_THEN, m.server.ip4, "8080", m.client_dir, what],
                     check=False, timeout=30)
    assert "sent " + what in r.stdout, (r.stdout, r.stderr)
    assert "hello" not in r.stdout, r.stdout
    assert m.sc.alive()
    good_client_works(m)


@pytest.mark.parametrize("copies,ok", [(40, True), (400, False)])
def test_large_client_chain(mesh, copies, ok):
    """A client chain padded with copies of the root: 40 (about 25 KB) still verifies; 400
    (about 250 KB, over OpenSSL's 100 KB certificate list limit) is refused, without harm."""
    m = mesh
    m.start([pa("STRICT")])
    r = m.client.run([lab.PYTHON, "-c", HANDSHAKE_THEN, m.server.ip4, "8080", m.client_dir,
                      "chain%d" % copies], check=False, timeout=30)
    if ok:
        assert "hello" in r.stdout, (r.stdout, r.stderr)
    else:
        assert "handshake failed" in r.stdout or "ended" in r.stdout, (r.stdout, r.stderr)
        assert "hello" not in r.stdout, r.stdout
        wait_for(lambda: m.stat("downstream_cx_tls_handshake_fail") >= 1, what="refusal counted")
    assert m.sc.alive()
    good_client_works(m)


@pytest.mark.parametrize("proto,cmd", [("-tls1_2", "R"), ("-tls1_3", "K"), ("-tls1_3", "k")])
def test_renegotiation_and_key_update(mesh, proto, cmd):
    """s_client's R (TLS 1.2 renegotiation: refused by the server, the connection may go on
    or end) and K / k (TLS 1.3 key update, with and without a request for ours): the sidecar
    lives and a request after the key update still gets its answer."""
    m = mesh
    m.start([pa("STRICT")])
    d = m.client_dir
    script = ("(sleep 0.5; echo %s; sleep 0.5; printf 'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n'; sleep 2) | "
              "timeout 10 openssl s_client %s -connect %s:8080 -alpn istio -cert %s -key %s -CAfile %s"
              % (cmd, proto, m.server.ip4, os.path.join(d, "cert-chain.pem"), os.path.join(d, "key.pem"),
                 os.path.join(d, "root-cert.pem")))
    r = m.client.run(["sh", "-c", script], check=False, timeout=20)
    if cmd in ("K", "k"):
        assert "hello from server" in r.stdout, (r.stdout[-1500:], r.stderr[-1500:])
    assert m.sc.alive()
    good_client_works(m)


MANY_STALLED = r'''
import socket, sys, time
host, port, n, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), bytes.fromhex(sys.argv[4])
socks = []
for i in range(n):
    s = socket.create_connection((host, port), timeout=5)
    if first:
        s.sendall(first)
    socks.append(s)
time.sleep(0.3)
print("open", len(socks)); sys.stdout.flush()
t0 = time.monotonic()
closed = 0
for s in socks:
    s.settimeout(max(0.1, 6 - (time.monotonic() - t0)))
    try:
        if s.recv(10) == b"":
            closed += 1
    except ConnectionResetError:
        closed += 1
    except socket.timeout:
        pass
print("closed", closed, "in %.1f" % (time.monotonic() - t0))
'''


def test_many_stalled_hellos(mesh):
    """300 clients each send the first 7 bytes of a ClientHello and stop (STRICT, the
    default protocolDetectionTimeout 0): a good client is served meanwhile, and all 300
    are reset after proxy.connectTimeout (1 s here), none left active."""
    m = mesh
    m.start([pa("STRICT")], extra={"proxy": {"logLevel": "info", "connectTimeout": "1s"}})
    p = m.client.popen([lab.PYTHON, "-c", MANY_STALLED, m.server.ip4, "8080", "300", "16030102000100"],
                       stdout=__import__("subprocess").PIPE, text=True)
    line = p.stdout.readline()
    assert line.startswith("open 300"), line
    good_client_works(m)
    out = p.communicate(timeout=30)[0]
    assert "closed 300" in out, out
    wait_for(lambda: m.stat("downstream_cx_active") == 0, what="no connection left")
    assert m.stat("downstream_cx_sniff_timeout") == 300
    assert m.sc.alive()


MUTATE = r'''
import os, random, socket, ssl, sys, time
host, port, certdir, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.load_verify_locations(certdir + "/root-cert.pem")
ctx.load_cert_chain(certdir + "/cert-chain.pem", certdir + "/key.pem")
ctx.set_alpn_protocols(["istio-peer-exchange", "istio"])
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(inc, out, server_hostname="outbound_.8080_._.server.shop.svc.cluster.local")
try:
    obj.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = bytearray(out.read())
rnd = random.Random(9)
deadline = time.monotonic() + 90
done = 0
for i in range(n):
    if time.monotonic() > deadline:
        break
    h = bytearray(hello)
    k = rnd.randrange(6)
    if k == 0:      # flip bytes anywhere
        for _ in range(rnd.randrange(1, 8)):
            h[rnd.randrange(len(h))] = rnd.randrange(256)
    elif k == 1:    # a length field (record, handshake, vectors near the start)
        j = rnd.choice([3, 4, 6, 7, 8, 43, 44]) if len(h) > 45 else 3
        h[j] = rnd.choice([0, 1, 0x7f, 0x80, 0xff])
    elif k == 2:    # truncated, then FIN
        h = h[:rnd.randrange(1, len(h))]
    elif k == 3:    # extended with junk
        h += os.urandom(rnd.randrange(1, 2000))
    elif k == 4:    # split into records of random sizes
        body, parts = h[5:], bytearray()
        while body:
            c = rnd.randrange(1, 300)
            parts += b"\x16\x03\x01" + len(body[:c]).to_bytes(2, "big") + body[:c]
            body = body[c:]
        h = parts
    else:           # bytes of the body zeroed
        a = rnd.randrange(5, len(h)); h[a:a + rnd.randrange(1, 40)] = bytes(min(40, len(h) - a))
    try:
        s = socket.create_connection((host, port), timeout=3)
        s.sendall(bytes(h))
        if k == 2:
            s.shutdown(socket.SHUT_WR)
        s.settimeout(3)
        while s.recv(65536):
            pass
    except OSError:
        pass
    finally:
        s.close()
    done += 1
print("sent", done)
'''


def test_mutated_client_hellos(mesh):
    """A few hundred mutated ClientHellos (flipped bytes, bad lengths, truncation, junk
    after, re-split into records) against STRICT: each is refused or fails its handshake;
    the sidecar lives and serves a good client after."""
    m = mesh
    m.start([pa("STRICT")], extra={"proxy": {"logLevel": "warn", "connectTimeout": "2s"}})
    r = m.client.run([lab.PYTHON, "-c", MUTATE, m.server.ip4, "8080", m.client_dir, "400"],
                     check=False, timeout=150)
    assert r.stdout.startswith("sent"), (r.stdout, r.stderr[-2000:])
    assert m.sc.alive()
    good_client_works(m)
    assert m.stat("downstream_cx_mtls") >= 1
