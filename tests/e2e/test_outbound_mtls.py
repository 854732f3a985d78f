"""Outbound Istio mTLS end to end (issue 9, "Outbound Istio mTLS" and "the peer identity"):
the client pod's sidecar loads its certificate with --cert-dir (certificates minted by
tests/lab/certs.py, i.e. the openssl CLI) and speaks Istio mTLS to endpoints the mesh marks
as Istio-mTLS peers: a Workload with tunnelProtocol LEGACY_ISTIO_MTLS, or an EDS endpoint
with envoy.transport_socket_match.tlsMode "istio". The peer standing in for an Envoy sidecar
is `openssl s_server -Verify 1 -verify_return_error -CAfile root -alpn istio -trace` (client
certificate required): its trace shows the SNI, the ALPN offer and our client certificate.

    app(client pod, plain HTTP) -> VIP 198.19.0.10:80 (or the pod IP) -> client outrigger
        -> Istio mTLS -> server pod 8443: openssl s_server -www
"""
import os
import re
import subprocess

import pytest

import certs
import lab
import meshres
from lab import wait_for

VIP, PORT, TARGET = "198.19.0.10", 80, 8443
SVC = meshres.key("hello")
SNI_SVC = "outbound|80||hello.default.svc.cluster.local"
ID_CLIENT = certs.spiffe_id("default", "client")
ID_SERVER = certs.spiffe_id("default", "server")
MTLS = "listener.outbound.upstream_cx_tls_handshake"


class SServer:
    """openssl s_server in a pod: -www answers each connection with a page; -naccept n, then
    it exits; -trace writes every handshake message (with -servername: the SNI received)."""

    def __init__(self, L, pod, cert_dir, ca_root, n=1, port=TARGET):
        self.log = os.path.join(L.dir, "%s-s_server-%d.log" % (pod.name, len(pod._procs)))
        out = open(self.log, "wb")
        self.proc = pod.popen(
            ["openssl", "s_server", "-4", "-accept", str(port), "-naccept", str(n), "-www",
             "-Verify", "1", "-verify_return_error", "-CAfile", ca_root,
             "-cert", os.path.join(cert_dir, "cert-chain.pem"), "-key", os.path.join(cert_dir, "key.pem"),
             # -servername needs a second certificate; it makes s_server print the SNI.
             "-servername", "sni.invalid", "-cert2", os.path.join(cert_dir, "cert-chain.pem"),
             "-key2", os.path.join(cert_dir, "key.pem"), "-alpn", "istio", "-trace"],
            user="nobody", stdout=out, stderr=subprocess.STDOUT)
        out.close()
        wait_for(lambda: pod.run(["ss", "-Hltn", "sport = :%d" % port], check=False).stdout.strip(),
                 timeout=10, what="s_server listening on %d" % port)

    def text(self):
        """The trace, once s_server has served its connections and exited."""
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with open(self.log, errors="replace") as f:
            return f.read()


def sni_seen(text):
    return re.findall(r'Hostname in TLS extension: "([^"]*)"', text)


def alpn_offers(text):
    """The ALPN list of each ClientHello in the trace (one protocol a line under the extension)."""
    offers = []
    for hello in text.split("ClientHello")[1:]:
        m = re.search(r"extension_type=application_layer_protocol_negotiation\(16\), length=\d+\n((?:\s+[^\s].*\n)+?)\s+extension_type=", hello)
        offers.append(m.group(1).split() if m else [])
    return offers


@pytest.fixture
def pki(pod_lab):
    d = os.path.join(pod_lab.dir, "pki")
    ca = certs.CA(os.path.join(d, "ca"))
    ca.issue(os.path.join(d, "client"), ID_CLIENT)
    ca.issue(os.path.join(d, "server"), ID_SERVER)
    other = certs.CA(os.path.join(d, "other"), name="another mesh root")
    other.issue(os.path.join(d, "server-other-root"), ID_SERVER)
    for root, dirs, files in os.walk(d):
        os.chmod(root, 0o755)
    return {"dir": d, "ca": ca, "client": os.path.join(d, "client"), "server": os.path.join(d, "server"),
            "server_other_root": os.path.join(d, "server-other-root")}


def _wds(server, sa="server", tunnel="LEGACY_ISTIO_MTLS"):
    """Service hello (VIP:80 -> 8443) and the server pod's Workload, marked as Istio mTLS."""
    extra = {"serviceAccount": sa}
    if tunnel:
        extra["tunnelProtocol"] = tunnel
    return [meshres.service("hello", [VIP], [(PORT, TARGET)]),
            meshres.workload("Kubernetes//Pod/default/server", "server", [server.ip4],
                             {SVC: [(PORT, TARGET)]}, **extra)]


def _eds(ip, port, cluster, tls_mode="istio"):
    md = {"filterMetadata": {"istio": {"workload": "server;default;server;;Kubernetes"}}}
    if tls_mode:
        md["filterMetadata"]["envoy.transport_socket_match"] = {"tlsMode": tls_mode}
    return {"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "clusterName": cluster,
            "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {"socketAddress": {
                "address": ip, "portValue": port}}}, "metadata": md}]}]}


def _sidecar(pod, resources, cert_dir, args=()):
    args = (["--cert-dir", cert_dir] if cert_dir else []) + list(args)
    return pod.start_sidecar(config=meshres.config(resources, proxy={"logLevel": "debug"}), proxy_args=args)


def _pods(L):
    return L.add_pod("client"), L.add_pod("server")


def test_wds_legacy_istio_mtls(pod_lab, pki, outrigger_bin, init_bin):
    """(a) A Workload marked LEGACY_ISTIO_MTLS behind a VIP: the bytes arrive over mTLS;
    s_server saw our client certificate (SPIFFE ID of the client), an ALPN offer of exactly
    ["istio"] and SNI outbound|80||hello.default.svc.cluster.local; the sidecar verified the
    server's SPIFFE ID and logs it, also in the connection's close line. (d) The second
    connection resumes the first's session (one worker: the session cache is per worker)."""
    client, server = _pods(pod_lab)
    ss = SServer(pod_lab, server, pki["server"], pki["ca"].cert, n=2)
    sc = _sidecar(client, _wds(server), pki["client"], args=("--concurrency", "1"))
    for i in range(2):
        code, body = client.curl("http://%s/" % VIP, user="nobody")
        assert code == 200, body
        assert "s_server" in body
    text = ss.text()
    assert sni_seen(text) == [SNI_SVC, SNI_SVC]
    assert alpn_offers(text) == [["istio"], ["istio"]]
    assert "URI:%s" % ID_CLIENT in text              # our client certificate, as s_server received it
    wait_for(lambda: sc.stats().get("listener.outbound.downstream_cx_active") == 0, what="connections closed")
    st = sc.stats()
    assert st[MTLS] == 2
    assert st["listener.outbound.upstream_cx_tls_resumed"] == 1
    assert st["listener.outbound.upstream_cx_tls_handshake_fail"] == 0
    log = sc.log()
    assert "mTLS peer %s" % ID_SERVER in log
    assert re.search(r"closed \(was forwarding.*\) peer %s" % re.escape(ID_SERVER), log), log[-3000:]


def test_eds_tls_mode_istio(pod_lab, pki, outrigger_bin, init_bin):
    """(a) An EDS endpoint with tlsMode istio, called at its own address (no Workload, no
    VIP): mTLS, SNI = the endpoint's cluster name; the same sidecar still reaches an
    endpoint outside the mesh (e) in plaintext."""
    client, server = _pods(pod_lab)
    server.app(["http", "--port", 8080, "--name", "server"])
    cluster = "outbound|8443||db.default.svc.cluster.local"
    ss = SServer(pod_lab, server, pki["server"], pki["ca"].cert)
    sc = _sidecar(client, [_eds(server.ip4, TARGET, cluster)], pki["client"])
    code, body = client.curl("http://%s:%d/" % (server.ip4, TARGET), user="nobody")
    assert code == 200 and "s_server" in body, body
    text = ss.text()
    assert sni_seen(text) == [cluster]
    assert alpn_offers(text) == [["istio"]]
    assert "URI:%s" % ID_CLIENT in text
    # (e) plaintext to an address the mesh does not mark, as before.
    code, body = client.curl("http://%s:8080/" % server.ip4, user="nobody")
    assert code == 200 and body.startswith("hello from server"), body
    wait_for(lambda: sc.stats().get("listener.outbound.downstream_cx_active") == 0, what="connections closed")
    st = sc.stats()
    assert st[MTLS] == 1
    assert st["listener.outbound.downstream_cx_total"] == 2


@pytest.mark.parametrize("case", ["wrong-identity", "other-root"])
def test_wrong_peer_refused(pod_lab, pki, outrigger_bin, init_bin, case):
    """(b) The server's SPIFFE ID is not the Workload's (its service account says
    "expected"), or its certificate is from another root: the connection is refused (the app
    sees a reset, not the server's page), counted by reason, and logged with why."""
    client, server = _pods(pod_lab)
    if case == "wrong-identity":
        ss = SServer(pod_lab, server, pki["server"], pki["ca"].cert)
        res, metric, why = _wds(server, sa="expected"), "upstream_cx_tls_fail_identity", "is not one expected"
    else:
        ss = SServer(pod_lab, server, pki["server_other_root"], pki["ca"].cert)
        res, metric, why = _wds(server), "upstream_cx_tls_fail_untrusted", "mTLS handshake failed (untrusted)"
    sc = _sidecar(client, res, pki["client"])
    code, body = client.curl("http://%s/" % VIP, user="nobody")
    assert code == 0, body
    ss.text()
    wait_for(lambda: sc.stats().get("listener.outbound.downstream_cx_active") == 0, what="connection closed")
    st = sc.stats()
    assert st["listener.outbound." + metric] == 1
    assert st["listener.outbound.upstream_cx_tls_handshake_fail"] == 1
    assert st["listener.outbound.upstream_cx_connect_fail"] == 1
    assert st[MTLS] == 0
    assert why in sc.log()


def test_no_certificate_refused(pod_lab, pki, outrigger_bin, init_bin):
    """Without a certificate (no --cert-dir) the sidecar never sends plaintext to an
    Istio-mTLS peer (it may be STRICT): refused and counted; nothing reaches s_server."""
    client, server = _pods(pod_lab)
    ss = SServer(pod_lab, server, pki["server"], pki["ca"].cert)
    sc = _sidecar(client, _wds(server), None)
    code, _ = client.curl("http://%s/" % VIP, user="nobody")
    assert code == 0
    wait_for(lambda: sc.stats().get("listener.outbound.upstream_cx_tls_no_local_cert") == 1,
             what="the refusal counted")
    assert sc.stats()["listener.outbound.upstream_cx_connect_fail"] == 0
    assert ss.proc.poll() is None                     # s_server is still waiting for its one connection
    ss.proc.kill()
    assert "ClientHello" not in ss.text()


def _closed_peers(log):
    return re.findall(r"closed \(.*\) peer (spiffe://\S+)", log)


def test_sidecar_to_sidecar(pod_lab, pki, outrigger_bin, init_bin):
    """(c) The client pod's outbound sidecar speaks Istio mTLS to the server pod's inbound
    sidecar, which terminates it (PERMISSIVE: TLS with ALPN istio) and hands the app the
    plaintext: each sidecar's close lines name the SPIFFE ID it verified for the other.
    (d) Between the two sidecars the sessions resume (one worker each: the cache is per
    worker): every connection after the first is resumed."""
    client, server = _pods(pod_lab)
    server.app(["http", "--port", 8080, "--name", "server"])
    res = [meshres.service("hello", [VIP], [(PORT, 8080)]),
           meshres.workload("Kubernetes//Pod/default/server", "server", [server.ip4], {SVC: [(PORT, 8080)]},
                            serviceAccount="server", tunnelProtocol="LEGACY_ISTIO_MTLS")]
    csc = _sidecar(client, res, pki["client"], args=("--concurrency", "1"))
    ssc = _sidecar(server, [], pki["server"], args=("--concurrency", "1"))
    n = 4
    for i in range(n):
        code, body = client.curl("http://%s/" % VIP, user="nobody")
        assert code == 200, body
        assert body.startswith("hello from server") and "peer 127.0.0.6" in body, body
    wait_for(lambda: csc.stats().get("listener.outbound.downstream_cx_active") == 0 and
             ssc.stats().get("listener.inbound.downstream_cx_active") == 0, what="connections closed")
    cst, sst = csc.stats(), ssc.stats()
    assert cst[MTLS] == n
    assert cst["listener.outbound.upstream_cx_tls_resumed"] == n - 1
    assert sst["listener.inbound.downstream_cx_mtls"] == n
    assert sst["listener.inbound.downstream_cx_plaintext"] == 0
    assert _closed_peers(csc.log()) == [ID_SERVER] * n
    assert _closed_peers(ssc.log()) == [ID_CLIENT] * n


def test_sidecar_to_strict_sidecar_without_certificate(pod_lab, pki, outrigger_bin, init_bin):
    """A client sidecar with no certificate never falls back to plaintext towards the
    STRICT server sidecar (refused and counted in the client); one with its certificate
    gets through."""
    client, server = _pods(pod_lab)
    server.app(["http", "--port", 8080, "--name", "server"])
    res = [meshres.service("hello", [VIP], [(PORT, 8080)]),
           meshres.workload("Kubernetes//Pod/default/server", "server", [server.ip4], {SVC: [(PORT, 8080)]},
                            serviceAccount="server", tunnelProtocol="LEGACY_ISTIO_MTLS")]
    strict = {"@type": "type.googleapis.com/istio.security.v1beta1.PeerAuthentication",
              "mtls": {"mode": "STRICT"}}
    ssc = _sidecar(server, [strict], pki["server"])
    csc = _sidecar(client, res, None)
    code, _ = client.curl("http://%s/" % VIP, user="nobody")
    assert code == 0
    wait_for(lambda: csc.stats().get("listener.outbound.upstream_cx_tls_no_local_cert") == 1, what="refusal")
    assert ssc.stats().get("listener.inbound.downstream_cx_total", 0) == 0
    csc.stop()
    csc = _sidecar(client, res, pki["client"])
    code, body = client.curl("http://%s/" % VIP, user="nobody")
    assert code == 200 and body.startswith("hello from server"), body
    wait_for(lambda: ssc.stats().get("listener.inbound.downstream_cx_mtls") == 1, what="mTLS counted")


def _serial(sc):
    """The serial of the certificate a sidecar serves with (/certs)."""
    c = sc.certs()
    chain = (c.get("certificates") or [{}])[0].get("cert_chain") or [{}]
    return chain[0].get("serial_number")


def test_rotation_under_mtls_traffic(pod_lab, pki, outrigger_bin, init_bin):
    """Issue 9, "rotation under load": both sidecars' certificates are replaced several times
    (the files source reloads them) while new mTLS connections keep coming and one
    long-lived mTLS connection stays open: no request fails, the long-lived connection keeps
    working on its old session, every rotation is applied (/certs serial, cert_updates), and
    the server (STRICT) keeps verifying the client under each new certificate."""
    import threading
    import time
    client, server = _pods(pod_lab)
    server.app(["http", "--port", 8080, "--name", "server"])
    server.app(["echo", "--port", 9000])
    res = [meshres.service("hello", [VIP], [(PORT, 8080), (9000, 9000)]),
           meshres.workload("Kubernetes//Pod/default/server", "server", [server.ip4],
                            {SVC: [(PORT, 8080), (9000, 9000)]},
                            serviceAccount="server", tunnelProtocol="LEGACY_ISTIO_MTLS")]
    strict = {"@type": "type.googleapis.com/istio.security.v1beta1.PeerAuthentication",
              "mtls": {"mode": "STRICT"}}
    csc = _sidecar(client, res, pki["client"])
    ssc = _sidecar(server, [strict], pki["server"])
    long_lived = client.interactive(VIP, 9000)
    assert long_lived.cmd("echo 100").startswith("OK")
    results, stop = [], threading.Event()

    def load():
        deadline = time.monotonic() + 60   # bounded whatever happens to the main thread
        while not stop.is_set() and time.monotonic() < deadline:
            code, body = client.curl("http://%s/" % VIP, user="nobody")
            results.append((code, body[:80]))

    t = threading.Thread(target=load, daemon=True)
    t.start()
    rotations = 3
    serials = [(_serial(csc), _serial(ssc))]
    try:
        for i in range(rotations):
            time.sleep(1.0)
            pki["ca"].issue(pki["client"], ID_CLIENT)
            pki["ca"].issue(pki["server"], ID_SERVER)
            for d in (pki["client"], pki["server"]):
                for n in os.listdir(d):
                    os.chmod(os.path.join(d, n), 0o644)
            wait_for(lambda: csc.stats()["server.cert_updates"] == i + 2 and
                     ssc.stats()["server.cert_updates"] == i + 2, timeout=15, interval=0.2,
                     what="rotation %d applied in both sidecars" % (i + 1))
            serials.append((_serial(csc), _serial(ssc)))
            assert long_lived.cmd("echo 100").startswith("OK"), "the long-lived connection after rotation %d" % (i + 1)
        time.sleep(1.0)
    finally:
        stop.set()
        t.join(timeout=30)
    long_lived.close()
    failed = [r for r in results if r[0] != 200 or not r[1].startswith("hello from server")]
    assert len(results) >= 10, "the load made too few requests: %d" % len(results)
    assert not failed, "%d of %d requests failed during rotations: %s" % (len(failed), len(results), failed[:5])
    assert len(set(s[0] for s in serials)) == rotations + 1, serials
    assert len(set(s[1] for s in serials)) == rotations + 1, serials
    sst, cst = ssc.stats(), csc.stats()
    assert sst["listener.inbound.downstream_cx_plaintext_refused"] == 0
    assert sst["listener.inbound.downstream_cx_tls_handshake_fail"] == 0
    assert cst["listener.outbound.upstream_cx_tls_handshake_fail"] == 0
    assert sst["listener.inbound.downstream_cx_mtls"] >= len(results)



@pytest.mark.parametrize("close", ["fin", "rst"])
def test_sidecar_to_sidecar_resumes_under_concurrency(pod_lab, pki, outrigger_bin, init_bin, close):
    """Sessions keep resuming while connections overlap: 16 clients at once, each making 15
    connections one after another (echo 1 KiB, then a FIN, or a reset), through the pair.
    TLS 1.3 tickets are single-use (OpenSSL marks a session not resumable once a handshake
    resumed it), so the client sidecar keeps a few per peer; a ticket arrives before the
    echo, so at most the first 16 connections (one per client) find none and make a full
    handshake. Regressions: with one session per peer, a connection that started while
    another was resuming with it got none (a fifth of the handshakes full); with eight per
    peer, clients in step (16 reconnecting at once) found none half the time; a connection
    freed without having sent close_notify (a reset) marked its ticket not resumable."""
    client, server = _pods(pod_lab)
    server.app(["echo", "--port", 8080])
    res = [meshres.service("echo", [VIP], [(PORT, 8080)]),
           meshres.workload("Kubernetes//Pod/default/server", "server", [server.ip4],
                            {meshres.key("echo"): [(PORT, 8080)]},
                            serviceAccount="server", tunnelProtocol="LEGACY_ISTIO_MTLS")]
    csc = _sidecar(client, res, pki["client"], args=("--concurrency", "1"))
    ssc = _sidecar(server, [], pki["server"], args=("--concurrency", "1"))
    threads, count = 16, 15
    r, out = client.client(["echo-client", "--host", VIP, "--port", PORT, "--threads", threads,
                            "--count", count, "--bytes", 1024, "--timeout", 60]
                           + (["--rst"] if close == "rst" else []), timeout=90)
    assert out and out["ok"] == threads * count, (r.stdout, r.stderr)
    wait_for(lambda: csc.stats().get("listener.outbound.downstream_cx_active") == 0 and
             ssc.stats().get("listener.inbound.downstream_cx_active") == 0, what="connections closed")
    cst = csc.stats()
    assert cst[MTLS] == threads * count
    full = cst[MTLS] - cst["listener.outbound.upstream_cx_tls_resumed"]
    assert full <= threads, "%d full handshakes of %d" % (full, cst[MTLS])
    # Every server conn went to our record layer at the end of its handshake; a client conn
    # does once its ticket is read and nothing else is in flight (the echo may come with
    # the close_notify first); none was kept on OpenSSL's for good.
    sst = ssc.stats()
    assert sst["server.tls_own_records"] == threads * count, sst["server.tls_own_records"]
    assert cst["server.tls_own_records"] > 0
    assert cst["server.tls_openssl_records"] == 0 and sst["server.tls_openssl_records"] == 0
