"""HBONE and mixed meshes on the pod lab (issue 11, "Tests with independent peers").

Peers that share no code with Outrigger (tests/lab/hbone_peers.py):
  - the "ambient" pod: nghttpx -s --verify-client (nghttp2-proxy) on 15008 in front of tinyproxy,
    or the python3-h2 terminator (which checks :authority and logs the client's SPIFFE ID);
  - ztunnel as a client: a python3-h2 HBONE client (client certificate, ALPN h2, CONNECT
    podIP:port, forwarded/baggage/traceparent), and its misbehaviours.

    sidecar pod "side"  (Outrigger, Workload tunnelProtocol HBONE, apps on 8080 echo / 8081 sink)
    ambient pod "amb"   (stand-in terminator on 15008, apps on 8080 echo / 8081 sink / 8082 http)
    plain pod   "plain" (no sidecar, no Workload tunnel: apps on 8080 echo / 8082 http)

The first tests prove the stand-ins themselves (they run without our HBONE code); the rest need
the h2s (server) and hbclient (client) branches and fail, not skip, without them.
"""
import json
import os
import subprocess
import time

import pytest

import certs
import hbone_peers
import lab
import meshres
from lab import wait_for

PA = "type.googleapis.com/istio.security.v1beta1.PeerAuthentication"
ID_SIDE = certs.spiffe_id("default", "side")
ID_SIDE2 = certs.spiffe_id("default", "side2")
ID_AMB = certs.spiffe_id("default", "ambient")
ID_STRANGER = certs.spiffe_id("default", "stranger", trust_domain="other.domain")
ECHO, SINK, HTTP = 8080, 8081, 8082
PEERS = hbone_peers.HERE
PY = lab.PYTHON


# ------------------------------------------------------------------ fixtures and helpers

class Mesh:
    """The pods, certificates and Workloads of a mixed mesh (sidecars start on demand)."""

    def __init__(self, L):
        self.L = L
        d = os.path.join(L.dir, "pki")
        self.ca = certs.CA(os.path.join(d, "ca"))
        self.certs = {}
        for name, sid in (("side", ID_SIDE), ("side2", ID_SIDE2), ("ambient", ID_AMB)):
            self.certs[name] = self.ca.issue(os.path.join(d, name), sid)
        other = certs.CA(os.path.join(d, "other"), trust_domain="other.domain", name="another root")
        self.certs["stranger"] = other.issue(os.path.join(d, "stranger"), ID_STRANGER)
        for root, dirs, files in os.walk(d):
            os.chmod(root, 0o755)
        self.side = L.add_pod("side")
        self.amb = L.add_pod("amb")
        self.plain = L.add_pod("plain")
        self.sc = None

    def apps(self, pod, echo=True, sink=True, http=True, reply=0):
        if echo:
            pod.app(["echo", "--port", ECHO])
        if sink:
            pod.app(["sink", "--port", SINK, "--reply-bytes", reply])
        if http:
            pod.app(["http", "--port", HTTP, "--name", pod.name])

    def workloads(self, side_tunnel="HBONE", amb_tunnel="HBONE", extra_side=()):
        """A Workload per pod: the sidecar pod and the ambient pod HBONE (as istiod computes it
        for the tunnel label and for redirection=enabled), the plain pod none."""
        def wl(pod, sa, tunnel):
            kw = {"serviceAccount": sa}
            if tunnel:
                kw["tunnelProtocol"] = tunnel
            return meshres.workload("Kubernetes//Pod/default/" + pod.name, pod.name, [pod.ip4], **kw)
        res = [wl(self.side, "side", side_tunnel), wl(self.amb, "ambient", amb_tunnel),
               wl(self.plain, "plain", None)]
        return res + list(extra_side)

    def start_sidecar(self, resources, pod=None, cert="side", log_level="debug", proxy=None):
        pod = pod or self.side
        cfg = meshres.config(resources, proxy=dict({"logLevel": log_level}, **(proxy or {})))
        sc = pod.start_sidecar(config=cfg, proxy_args=("--cert-dir", self.certs[cert]),
                               env={"POD_NAMESPACE": "default"})
        wait_for(lambda: sc.stats().get("server.cert_updates", 0) >= 1, timeout=10,
                 what="the sidecar's certificate loaded")
        if pod is self.side:
            self.sc = sc
        return sc

    def h2client(self, pod, host, authority, scenario="probe", cert="ambient", timeout=120, **kw):
        """Run the python3-h2 client in pod; returns its JSON result."""
        argv = [PY, PEERS, "client", "--host", host, "--cert-dir", self.certs[cert],
                "--authority", authority, "--scenario", scenario, "--timeout", timeout]
        for k, v in kw.items():
            argv += ["--" + k.replace("_", "-"), v]
        r = pod.run(argv, check=False, timeout=timeout + 30)
        lines = r.stdout.strip().splitlines()
        assert lines, "h2 client printed nothing: %s" % r.stderr[-3000:]
        return json.loads(lines[-1])


@pytest.fixture
def m(pod_lab):
    return Mesh(pod_lab)


def rss_kib(sc):
    with open("/proc/%d/status" % sc.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for the sidecar")


def hbone_listening(pod):
    return pod.run(["ss", "-Hltn", "sport = :15008"], check=False).stdout.strip()


def tcp_exchange(pod, host, port, data=b"hello\n", timeout=5):
    """One plaintext TCP connection from pod: send data, half-close, read to EOF. Returns the
    reply bytes, or None when the connection is refused/reset."""
    code = ("import socket,sys\n"
            "s=socket.create_connection((%r,%d),timeout=%d)\n"
            "s.sendall(%r); s.shutdown(socket.SHUT_WR)\n"
            "b=b''\n"
            "try:\n"
            "  while True:\n"
            "    d=s.recv(65536)\n"
            "    if not d: break\n"
            "    b+=d\n"
            "except OSError: print('RESET'); sys.exit(2)\n"
            "sys.stdout.write(b.hex())\n") % (host, port, timeout, data)
    r = pod.run([PY, "-c", code], check=False, user="nobody", timeout=timeout + 5)
    if r.returncode != 0:
        return None
    return bytes.fromhex(r.stdout.strip())


# ------------------------------------------------------------------ the stand-ins themselves

def test_peers_nghttpx_tinyproxy_answers_h2_connect(m):
    """nghttpx -s + tinyproxy in the ambient pod answers our python3-h2 client's CONNECT with
    200 and the app's bytes flow both ways; nghttpx logs the client certificate (its SHA-256
    fingerprint); a client certificate of another root is refused in the handshake."""
    m.apps(m.amb, sink=False, http=False)
    # A stream's END_STREAM does not reach the backend: the tunnels end at this timeout.
    t = hbone_peers.NghttpxTerminator(m.amb, m.certs["ambient"], [ECHO],
                                      extra_args=["--backend-read-timeout=3s"])
    auth = "%s:%d" % (m.amb.ip4, ECHO)
    out = m.h2client(m.plain, m.amb.ip4, auth, cert="side", payload="through nghttpx\n")
    assert out.get("status") == 200, out
    assert out["tls"] == "TLSv1.3"
    assert out["peer_id"] == ID_AMB
    assert out["reply"] == "through nghttpx\n"
    out = m.h2client(m.plain, m.amb.ip4, auth, scenario="echo", streams=50, cert="side")
    assert out["answered"] == 50 and out["failed"] == 0, out
    wait_for(lambda: len(t.accesses()) >= 51, what="nghttpx access log")
    fp = hbone_peers.cert_fingerprint(m.certs["side"])
    acc = t.accesses()
    assert all(a.get("fp") == fp and a.get("tls") == "TLSv1.3" for a in acc), acc[:3]
    assert any(a.get("request", "").startswith("CONNECT %s" % auth) and a.get("status") == 200 for a in acc), acc[:3]
    assert any("CONNECT %s" % auth in str(r) for r in t.proxy_records()), t.proxy_records()[-5:]
    bad = m.h2client(m.plain, m.amb.ip4, auth, cert="stranger")
    assert "error" in bad and bad.get("status") is None, bad


def test_peers_nghttpx_passes_ztunnel_headers(m):
    """What nghttpx -s passes on to its HTTP/1.1 backend for an HTTP/2 CONNECT: the request
    becomes `CONNECT host:port HTTP/1.1` and ztunnel's forwarded, baggage and traceparent headers
    go with it (seen by h1proxy, the header-logging CONNECT proxy used here instead of tinyproxy)."""
    m.apps(m.amb, sink=False, http=False)
    t = hbone_peers.NghttpxTerminator(m.amb, m.certs["ambient"], [ECHO], backend="h1proxy")
    auth = "%s:%d" % (m.amb.ip4, ECHO)
    out = m.h2client(m.plain, m.amb.ip4, auth, cert="side", payload="hdrs\n")
    assert out.get("status") == 200 and out["reply"] == "hdrs\n", out
    recs = [r for r in t.proxy_records() if isinstance(r, dict)]
    assert recs and recs[0]["request"] == "CONNECT %s HTTP/1.1" % auth, recs
    h = recs[0]["headers"]
    assert h["baggage"] == [hbone_peers.BAGGAGE]
    assert h["traceparent"][0].startswith("00-")
    assert any(v.startswith('for="') for v in h.get("forwarded", [])), h


def test_peers_h2_terminator_semantics(m):
    """The python3-h2 terminator as ztunnel's inbound: 200 and bytes for podIP:port, 400 for
    another IP or a non-CONNECT, 503 for a closed port, the client's SPIFFE ID logged with
    ztunnel's headers; a certificate of another trust domain is refused."""
    m.apps(m.amb, sink=False, http=False)
    p, log = hbone_peers.start_terminator(m.amb, m.certs["ambient"])
    ok = m.h2client(m.plain, m.amb.ip4, "%s:%d" % (m.amb.ip4, ECHO), cert="side", payload="hi\n")
    assert ok.get("status") == 200 and ok["reply"] == "hi\n", ok
    assert m.h2client(m.plain, m.amb.ip4, "%s:%d" % (m.plain.ip4, ECHO), cert="side")["status"] == 400
    assert m.h2client(m.plain, m.amb.ip4, "%s:%d" % (m.amb.ip4, 9), cert="side")["status"] == 503
    assert m.h2client(m.plain, m.amb.ip4, "%s:%d" % (m.amb.ip4, ECHO), cert="side", method="GET")["status"] == 400
    recs = [r for r in hbone_peers.read_jsonl(log) if r.get("event") == "stream"]
    assert recs[0]["peer_id"] == ID_SIDE and recs[0]["status"] == 200
    assert recs[0]["headers"]["baggage"] == [hbone_peers.BAGGAGE]
    out = m.h2client(m.plain, m.amb.ip4, "%s:%d" % (m.amb.ip4, ECHO), cert="stranger")
    assert out.get("status") != 200, out


def test_peers_h2_client_against_terminator_many_streams(m):
    """Our ztunnel stand-in opens 1,000 streams on one connection against the python3-h2
    terminator (which allows 2,000 at once): all answered, 1,000 open at the same time."""
    m.apps(m.amb, sink=False, http=False)
    hbone_peers.start_terminator(m.amb, m.certs["ambient"])
    out = m.h2client(m.plain, m.amb.ip4, "%s:%d" % (m.amb.ip4, ECHO), scenario="echo", streams=1000,
                     cert="side", timeout=180)
    assert out["answered"] == 1000 and out["peak_concurrent"] == 1000, out


@pytest.mark.parametrize("scenario", ["garbage", "rst", "noack", "vanish"])
def test_peers_misbehaviours_against_terminator(m, scenario):
    """The misbehaviour scenarios themselves, against the python3-h2 terminator: each one
    happens (garbage: the server closes that connection; noack: no more than our window
    arrives) and the healthy stream is seen to keep flowing."""
    m.amb.app(["echo", "--port", ECHO])
    m.amb.app(["sink", "--port", 8090, "--reply-bytes", 64 << 20])
    hbone_peers.start_terminator(m.amb, m.certs["ambient"])
    out = m.h2client(m.plain, m.amb.ip4, "%s:%d" % (m.amb.ip4, ECHO), scenario=scenario, hold=2,
                     noack_authority="%s:%d" % (m.amb.ip4, 8090), cert="side", timeout=60)
    assert "error" not in out, out
    h, mis = out["healthy"], out["misbehaving"]
    assert mis.get("status") == 200 and h["fail"] == 0 and h["after"] and h["ok"] >= 10, out
    if scenario == "garbage":
        assert mis["closed_by_server"], out
    if scenario == "rst":
        assert mis["status_after"] == 200 and mis["echo_after"], out
    if scenario == "noack":
        assert 0 < mis["received"] <= hbone_peers.CLIENT_STREAM_WINDOW, out


# ------------------------------------------------------------------ Outrigger's HBONE server

def _server_ready(m, resources=None, pa_mode=None, proxy=None):
    m.apps(m.side)
    res = resources if resources is not None else m.workloads()
    if pa_mode:
        res = res + [{"@type": PA, "mtls": {"mode": pa_mode}}]
    sc = m.start_sidecar(res, proxy=proxy)
    wait_for(lambda: hbone_listening(m.side), timeout=10, what="the sidecar listening on 15008")
    return sc


def test_ztunnel_client_to_sidecar(m, outrigger_bin, init_bin):
    """ambient stand-in client -> our 15008: 200 and the bytes; the app sees the bytes; our
    sidecar logs the client's SPIFFE ID as the stream's peer; 400 for another pod's IP and for a
    non-CONNECT; 503 for a closed app port; a certificate of another trust domain refused."""
    sc = _server_ready(m)
    auth = "%s:%d" % (m.side.ip4, ECHO)
    ok = m.h2client(m.amb, m.side.ip4, auth, payload="from ambient\n")
    assert ok.get("status") == 200 and ok["reply"] == "from ambient\n", ok
    assert ok["peer_id"] == ID_SIDE and ok["tls"] == "TLSv1.3"
    wait_for(lambda: "peer " + ID_AMB in sc.log(), what="the peer identity in the sidecar's log")
    assert m.h2client(m.amb, m.side.ip4, "%s:%d" % (m.amb.ip4, ECHO))["status"] == 400
    assert m.h2client(m.amb, m.side.ip4, auth, method="GET")["status"] == 400
    assert m.h2client(m.amb, m.side.ip4, "%s:%d" % (m.side.ip4, 9))["status"] == 503
    bad = m.h2client(m.amb, m.side.ip4, auth, cert="stranger")
    assert bad.get("status") != 200, bad
    assert sc.alive()


@pytest.mark.parametrize("limit", [None, 1000])
def test_1000_streams_one_connection(m, outrigger_bin, init_bin, limit):
    """1,000 CONNECT streams on one connection to our 15008, all answered. By default we
    advertise ztunnel's SETTINGS_MAX_CONCURRENT_STREAMS, 200, and the client keeps 200 open at
    once; with proxy.hboneMaxConcurrentStreams 1000 all 1,000 are open at once."""
    _server_ready(m, proxy={"hboneMaxConcurrentStreams": limit} if limit else None)
    out = m.h2client(m.amb, m.side.ip4, "%s:%d" % (m.side.ip4, ECHO), scenario="echo", streams=1000,
                     timeout=180)
    print("max_concurrent_streams advertised: %s, peak %s" % (out.get("max_concurrent_streams"),
                                                             out.get("peak_concurrent")))
    assert out.get("answered") == 1000 and out.get("failed") == 0, out
    assert out["max_concurrent_streams"] == (limit or 200), out
    assert out["peak_concurrent"] == (limit or 200), out
    assert out["goaway"] is None, out


@pytest.mark.parametrize("scenario", ["garbage", "rst", "noack", "vanish"])
def test_misbehaving_peer_harms_only_itself(m, outrigger_bin, init_bin, scenario):
    """A peer that sends garbage frames, resets a stream mid-stream, never sends WINDOW_UPDATE
    or vanishes mid-stream: a healthy stream (its own connection; for rst the same connection)
    keeps echoing throughout and after; the sidecar lives; the garbage connection is closed."""
    m.side.app(["sink", "--port", 8090, "--reply-bytes", 64 << 20])
    sc = _server_ready(m)
    rss0 = rss_kib(sc)
    out = m.h2client(m.amb, m.side.ip4, "%s:%d" % (m.side.ip4, ECHO), scenario=scenario, hold=3,
                     noack_authority="%s:%d" % (m.side.ip4, 8090), timeout=60)
    grew = rss_kib(sc) - rss0
    print("%s: sidecar RSS grew by %d KiB" % (scenario, grew))
    # noack: the app offers 64 MiB that the client never makes room for; the sidecar must
    # stop reading it (back-pressure), not buffer it.
    assert grew < 32 << 10, grew
    assert "error" not in out, out
    h, mis = out["healthy"], out["misbehaving"]
    assert mis.get("status") == 200, out
    assert h["fail"] == 0 and h["after"] and h["ok"] >= 10, out
    if scenario == "garbage":
        assert mis["closed_by_server"], out
    if scenario == "rst":
        assert mis["status_after"] == 200 and mis["echo_after"], out
    if scenario == "noack":
        assert 0 < mis["received"] <= hbone_peers.CLIENT_STREAM_WINDOW, out
    assert sc.alive()
    # The client is gone: every HBONE connection and stream (and its app connection) released.
    wait_for(lambda: sc.stats().get("listener.hbone.hbone_cx_active") == 0
             and sc.stats().get("listener.hbone.downstream_cx_active") == 0, timeout=15,
             what="HBONE connections and streams released: %s" % {
                 k: v for k, v in sc.stats().items() if k.startswith("listener.hbone.")})
    if scenario == "garbage":
        st = sc.stats()
        assert st["listener.hbone.hbone_cx_protocol_error"] >= 1, (out, {k: v for k, v in st.items() if "hbone" in k})
    ok = m.h2client(m.amb, m.side.ip4, "%s:%d" % (m.side.ip4, ECHO), payload="still here\n")
    assert ok.get("reply") == "still here\n", ok


# ------------------------------------------------------------------ Outrigger's HBONE client

def test_sidecar_to_ambient(m, outrigger_bin, init_bin):
    """sidecar -> ambient pod (Workload HBONE): the app's connection to amb:8080 goes over HBONE
    to nghttpx on amb:15008, which logs our certificate; the bytes arrive."""
    m.apps(m.amb, sink=False)
    t = hbone_peers.NghttpxTerminator(m.amb, m.certs["ambient"], [ECHO, HTTP])
    sc = m.start_sidecar(m.workloads())
    code, body = m.side.curl("http://%s:%d/" % (m.amb.ip4, HTTP), user="nobody")
    assert code == 200 and "hello from amb" in body, body
    assert sc.stats().get("listener.outbound.upstream_cx_hbone") == 1
    wait_for(lambda: "peer " + ID_AMB in sc.log(), what="the ambient pod's identity in our log")
    wait_for(lambda: t.accesses(), what="nghttpx's access log")
    acc = t.accesses()[-1]
    assert acc["request"].startswith("CONNECT %s:%d" % (m.amb.ip4, HTTP)), acc
    assert acc["fp"] == hbone_peers.cert_fingerprint(m.certs["side"]), acc
    assert acc["tls"] == "TLSv1.3" and acc["status"] == 200, acc


def test_sidecar_to_ambient_pooled(m, outrigger_bin, init_bin):
    """300 connections at once from the sidecar pod's app to the ambient pod, one worker: all
    echoed, carried as CONNECT streams on 3 pooled HBONE connections (100 streams each, as
    ztunnel's pool) to nghttpx, which saw 300 CONNECTs from 3 client ports."""
    m.apps(m.amb, sink=False, http=False)
    # nghttpx does not pass a half-close on to its HTTP/1 backend: each tunnel then ends at
    # nghttpx's backend read timeout (default 1 min), made short here.
    t = hbone_peers.NghttpxTerminator(m.amb, m.certs["ambient"], [ECHO],
                                      extra_args=["--backend-read-timeout=3s"])
    cfg = meshres.config(m.workloads(), proxy={"logLevel": "info"})
    sc = m.side.start_sidecar(config=cfg, proxy_args=("--cert-dir", m.certs["side"], "--concurrency", "1"),
                              env={"POD_NAMESPACE": "default"})
    wait_for(lambda: sc.stats().get("server.cert_updates", 0) >= 1, what="certificate")
    r, out = m.side.client(["conns", "--host", m.amb.ip4, "--port", ECHO, "--count", 300, "--bytes", 64,
                            "--timeout", 60], timeout=90)
    print("conns:", out)
    assert out and out.get("ok") == 300, (r.stdout[-2000:], r.stderr[-2000:])
    assert sc.stats().get("listener.outbound.upstream_cx_hbone") == 300
    wait_for(lambda: len(t.accesses()) >= 300, timeout=20, what="300 CONNECTs in nghttpx's log")
    acc = t.accesses()
    assert all(a["status"] == 200 and a["request"].startswith("CONNECT %s:%d" % (m.amb.ip4, ECHO)) for a in acc)
    ports = {a["port"] for a in acc}
    print("HBONE connections to nghttpx: %d" % len(ports))
    assert len(ports) == 3, ports


def test_sidecar_to_ambient_half_close(m, outrigger_bin, init_bin):
    """sidecar -> ambient (the python3-h2 terminator, which passes a half-close on as ztunnel
    does): 16 MiB to the sink, our FIN becomes END_STREAM, the sink's checksum and its reply
    come back after it (nghttpx -s does not pass END_STREAM on to an HTTP/1 CONNECT backend,
    so this one needs the terminator)."""
    m.apps(m.amb, echo=False, http=False, reply=1 << 20)
    hbone_peers.start_terminator(m.amb, m.certs["ambient"])
    sc = m.start_sidecar(m.workloads())
    r, out = m.side.client(["send", "--host", m.amb.ip4, "--port", SINK, "--bytes", 16 << 20,
                            "--timeout", 60], timeout=90)
    assert out and out.get("ok"), (r.stdout[-2000:], r.stderr[-2000:])
    assert sc.stats().get("listener.outbound.upstream_cx_hbone") == 1


def test_sidecar_to_ambient_h2_terminator_identity_headers(m, outrigger_bin, init_bin):
    """sidecar -> ambient pod whose 15008 is the python3-h2 terminator: it sees our SPIFFE ID,
    :authority podIP:port and ztunnel's headers (forwarded, baggage, traceparent)."""
    m.apps(m.amb, sink=False)
    p, log = hbone_peers.start_terminator(m.amb, m.certs["ambient"])
    m.start_sidecar(m.workloads())
    code, body = m.side.curl("http://%s:%d/" % (m.amb.ip4, HTTP), user="nobody")
    assert code == 200 and "hello from amb" in body, body
    recs = [r for r in hbone_peers.read_jsonl(log) if r.get("event") == "stream"]
    assert recs, hbone_peers.read_jsonl(log)
    r = recs[-1]
    assert r["peer_id"] == ID_SIDE and r["authority"] == "%s:%d" % (m.amb.ip4, HTTP), r
    for h in ("forwarded", "baggage", "traceparent"):
        assert h in r["headers"], r


def test_sidecar_to_sidecar_hbone(m, outrigger_bin, init_bin):
    """Two Outrigger sidecars, the server's Workload HBONE: the client's sidecar sends HBONE, the
    server's terminates it; the app sees the bytes; both sidecars log the other's identity; no
    plaintext reached the server's 15006 (only 15008 was used)."""
    client = m.L.add_pod("side2")
    m.apps(m.side, sink=False)
    wls = m.workloads() + [meshres.workload("Kubernetes//Pod/default/side2", "side2", [client.ip4],
                                            serviceAccount="side2", tunnelProtocol="HBONE")]
    srv = m.start_sidecar(wls + [{"@type": PA, "mtls": {"mode": "STRICT"}}])
    cli = m.start_sidecar(wls, pod=client, cert="side2")
    r = tcp_exchange(client, m.side.ip4, ECHO, b"sidecar to sidecar\n")
    assert r == b"sidecar to sidecar\n", r
    wait_for(lambda: "peer " + ID_SIDE2 in srv.log(), what="the client's identity in the server's log")
    wait_for(lambda: "peer " + ID_SIDE in cli.log(), what="the server's identity in the client's log")
    assert cli.stats().get("listener.outbound.upstream_cx_hbone") == 1


@pytest.mark.parametrize("tunnel", ["HBONE", "LEGACY_ISTIO_MTLS"])
def test_1gib_stream_sidecar_to_sidecar(m, outrigger_bin, init_bin, tunnel):
    """One 1 GiB stream over HBONE between two Outrigger sidecars, checked end to end (the
    sink's SHA-256), within 120 s; the rate is printed (MB/s), and the same over Istio mTLS
    for comparison (a bound on time only: speed is the bench's business)."""
    client = m.L.add_pod("side2")
    m.side.app(["sink", "--port", SINK])
    wls = m.workloads(side_tunnel=tunnel) + [meshres.workload(
        "Kubernetes//Pod/default/side2", "side2", [client.ip4], serviceAccount="side2", tunnelProtocol=tunnel)]
    m.start_sidecar(wls, log_level="info")
    cli = m.start_sidecar(wls, pod=client, cert="side2", log_level="info")
    t0 = time.monotonic()
    r, out = client.client(["send", "--host", m.side.ip4, "--port", SINK, "--bytes", 1 << 30,
                            "--timeout", 120], timeout=150)
    dt = time.monotonic() - t0
    assert out and out.get("ok"), (r.stdout[-2000:], r.stderr[-2000:])
    print("1 GiB over %s in %.1f s: %.0f MB/s" % (tunnel, dt, (1 << 30) / dt / 1e6))
    assert dt < 120
    st = cli.stats()
    if tunnel == "HBONE":
        assert st.get("listener.outbound.upstream_cx_hbone") == 1, st
    else:
        assert st.get("listener.outbound.upstream_cx_tls_handshake") == 1, st


@pytest.mark.parametrize("bad", ["wrong-identity", "other-root"])
def test_sidecar_refuses_ambient_with_wrong_certificate(m, outrigger_bin, init_bin, bad):
    """The ambient pod's 15008 presents a certificate whose SPIFFE ID is not its Workload's
    (service account ambient), or one from another root: our sidecar refuses the HBONE
    connection (counted), nothing reaches nghttpx's backend, the app's call fails."""
    m.apps(m.amb, sink=False)
    t = hbone_peers.NghttpxTerminator(m.amb, m.certs["side2" if bad == "wrong-identity" else "stranger"],
                                      [ECHO, HTTP])
    sc = m.start_sidecar(m.workloads())
    code, body = m.side.curl("http://%s:%d/" % (m.amb.ip4, HTTP), user="nobody")
    assert code == 0, (code, body)
    st = sc.stats()
    assert st.get("listener.outbound.upstream_cx_hbone_fail", 0) >= 1, st
    assert st.get("listener.outbound.upstream_cx_hbone", 0) == 0, st
    assert not any(a.get("status") == 200 for a in t.accesses()), t.accesses()


def test_sidecar_to_plain(m, outrigger_bin, init_bin):
    """sidecar -> plain pod (no tunnel in its Workload): plaintext; the app sees our bytes."""
    m.apps(m.plain, sink=False)
    m.start_sidecar(m.workloads())
    assert tcp_exchange(m.side, m.plain.ip4, ECHO, b"plain\n") == b"plain\n"
    code, body = m.side.curl("http://%s:%d/" % (m.plain.ip4, HTTP), user="nobody")
    assert code == 200 and "hello from plain" in body


@pytest.mark.parametrize("src", ["plain", "amb"])
def test_plaintext_in_permissive_and_strict(m, outrigger_bin, init_bin, src):
    """plain pod -> sidecar, and ztunnel-style plaintext from the ambient pod (the WDS says NONE
    for our pod): accepted under PERMISSIVE, refused under STRICT."""
    m.apps(m.side, sink=False)
    pod = m.plain if src == "plain" else m.amb
    res = m.workloads(side_tunnel=None)
    sc = m.start_sidecar(res + [{"@type": PA, "mtls": {"mode": "PERMISSIVE"}}])
    assert tcp_exchange(pod, m.side.ip4, ECHO, b"permissive\n") == b"permissive\n"
    sc.stop()
    m.side.sidecar = None
    sc = m.side.start_sidecar(config=meshres.config(res + [{"@type": PA, "mtls": {"mode": "STRICT"}}],
                                                    proxy={"logLevel": "debug"}),
                              proxy_args=("--cert-dir", m.certs["side"]), run_init=False,
                              env={"POD_NAMESPACE": "default"})
    wait_for(lambda: sc.stats().get("server.cert_updates", 0) >= 1, what="certificate")
    assert tcp_exchange(pod, m.side.ip4, ECHO, b"strict\n") in (None, b"")
    # STRICT still takes mTLS: HBONE from the ambient pod (ztunnel's python3-h2 stand-in).
    wait_for(lambda: hbone_listening(m.side), what="15008")
    ok = m.h2client(m.amb, m.side.ip4, "%s:%d" % (m.side.ip4, ECHO), payload="strict hbone\n")
    assert ok.get("status") == 200 and ok.get("reply") == "strict hbone\n", ok


def test_demo_mesh_mixed(repo, root, outrigger_bin, init_bin):
    """Guards the README's `./tests/demo --mesh-mixed`: the three-pod mixed mesh prints the
    transport and identity of every call and passes."""
    r = subprocess.run([PY, os.path.join(repo, "tests", "lab", "demo.py"), "--mesh-mixed"],
                       capture_output=True, text=True, timeout=240)
    print(r.stdout[-6000:])
    assert r.returncode == 0 and "demo --mesh-mixed: PASS" in r.stdout, r.stdout[-6000:] + r.stderr[-3000:]
    for call in ("side -> ambient", "side -> plain", "ambient -> side", "plain -> side"):
        assert call in r.stdout
