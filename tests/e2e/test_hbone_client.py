"""The HBONE client end to end (issue 11, "HBONE client"), against an independent HBONE server:
nghttpx (nghttp2-proxy) in HTTP/2 forward-proxy mode (-s) with --verify-client and TLS 1.3 on
the server pod's 15008 stands in for a remote ztunnel, and tinyproxy behind it opens the
CONNECT's target, the app.

    app(client pod, curl) -> VIP 198.19.0.20:80 (or the pod IP:8080) -> client outrigger
        -> TLS 1.3 + h2 to <server pod IP>:15008: nghttpx -s --verify-client
        -> HTTP/1.1 CONNECT <server pod IP>:8080 to tinyproxy (127.0.0.1:8888)
        -> the app (tests/lab/apps.py http on 8080)

The server pod's Workload says tunnelProtocol HBONE (an ambient pod, an Outrigger sidecar), or
its EDS endpoint says envoy.transport_socket_match {tunnel: "http"} in the EnvoyInternalAddress
form istiod sends. nghttpx's access log shows the CONNECT's authority, the forwarded, baggage and
traceparent headers and our client certificate; a server whose SPIFFE ID is not the workload's
is refused before any CONNECT.
"""
import os
import re
import subprocess

import pytest

import certs
import lab
import meshres
from lab import wait_for

VIP, PORT, TARGET = "198.19.0.20", 80, 8080
SVC = meshres.key("hello")
HOST = "hello.default.svc.cluster.local"
ID_CLIENT = certs.spiffe_id("default", "client")
ID_SERVER = certs.spiffe_id("default", "server")
HB = "listener.outbound.upstream_cx_hbone"
# One line per request; the fields are nghttpx's (nghttpx(1), --accesslog-format).
# For a CONNECT, $path is the authority; a quote in a value is logged as \x22.
LOGFMT = ('method=$method port=$remote_port authority=$path status=$status tls=$tls_protocol cipher=$tls_cipher sni=$tls_sni alpn=$alpn '
          'client=$tls_client_fingerprint_sha256 forwarded="$http_forwarded" baggage="$http_baggage" '
          'traceparent="$http_traceparent"')


def _tools():
    for b in ("/usr/sbin/nghttpx", "/usr/bin/tinyproxy"):
        if not os.access(b, os.X_OK):
            pytest.fail("%s is missing: packaging/install-deps.sh installs nghttp2-proxy and tinyproxy" % b)


class Ztunnel:
    """nghttpx -s on the pod's 15008 (its certificate: cert_dir's) in front of tinyproxy."""

    def __init__(self, L, pod, cert_dir, ca_root):
        _tools()
        d = os.path.join(L.dir, "%s-hbone" % pod.name)
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)
        self.access = os.path.join(d, "access.log")
        self.errors = os.path.join(d, "error.log")
        tp_conf = os.path.join(d, "tinyproxy.conf")
        with open(tp_conf, "w") as f:
            # No ConnectPort line: CONNECT to any port. Only nghttpx (loopback) may use it.
            f.write("Port 8888\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\nAllow 127.0.0.1\n"
                    "LogLevel Info\nLogFile \"%s\"\n" % os.path.join(d, "tinyproxy.log"))
        self.tp = pod.popen(["/usr/bin/tinyproxy", "-d", "-c", tp_conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
        wait_for(lambda: pod.run(["ss", "-Hltn", "sport = :8888"], check=False).stdout.strip(),
                 timeout=10, what="tinyproxy listening")
        self.proc = pod.popen(
            ["/usr/sbin/nghttpx", "-s", "--frontend=%s,15008" % pod.ip4, "--backend=127.0.0.1,8888",
             "--conf=/dev/null", "--verify-client", "--verify-client-cacert=" + ca_root,
             "--tls-min-proto-version=TLSv1.3", "--tls-max-proto-version=TLSv1.3",
             "--no-ocsp", "--single-thread", "--no-via",
             "--accesslog-file=" + self.access, "--accesslog-format=" + LOGFMT,
             "--errorlog-file=" + self.errors,
             os.path.join(cert_dir, "key.pem"), os.path.join(cert_dir, "cert-chain.pem")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: pod.run(["ss", "-Hltn", "sport = :15008"], check=False).stdout.strip(),
                 timeout=10, what="nghttpx listening on 15008")

    def lines(self):
        try:
            with open(self.access, errors="replace") as f:
                return [l.replace("\\x22", "'") for l in f.read().splitlines() if l.strip()]
        except FileNotFoundError:
            return []


def _fingerprint(chain):
    """The leaf's SHA-256 fingerprint as nghttpx logs it (lower-case hex, no colons)."""
    r = subprocess.run(["openssl", "x509", "-in", chain, "-noout", "-fingerprint", "-sha256"],
                       capture_output=True, text=True, check=True)
    return r.stdout.strip().split("=", 1)[1].replace(":", "").lower()


def _field(line, name):
    m = re.search(r'%s="([^"]*)"' % name, line) or re.search(r"%s=(\S*)" % name, line)
    return m.group(1) if m else None


@pytest.fixture
def pki(pod_lab):
    d = os.path.join(pod_lab.dir, "pki")
    ca = certs.CA(os.path.join(d, "ca"))
    ca.issue(os.path.join(d, "client"), ID_CLIENT)
    ca.issue(os.path.join(d, "server"), ID_SERVER)
    ca.issue(os.path.join(d, "impostor"), certs.spiffe_id("default", "impostor"))
    for root, dirs, files in os.walk(d):
        os.chmod(root, 0o755)
    return {"ca": ca, "client": os.path.join(d, "client"), "server": os.path.join(d, "server"),
            "impostor": os.path.join(d, "impostor")}


def _wds(server, tunnel="HBONE"):
    extra = {"serviceAccount": "server"}
    if tunnel:
        extra["tunnelProtocol"] = tunnel
    return [meshres.service("hello", [VIP], [(PORT, TARGET)]),
            meshres.workload("Kubernetes//Pod/default/server", "server", [server.ip4],
                             {SVC: [(PORT, TARGET)]}, **extra)]


def _eds_internal(ip, port, cluster):
    """istiod's HBONE endpoint (reference xds-hbone.md §3.6)."""
    target = "%s:%d" % (ip, port)
    return {"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "clusterName": cluster,
            "endpoints": [{"lbEndpoints": [{
                "endpoint": {"address": {"envoyInternalAddress": {
                    "serverListenerName": "connect_originate", "endpointId": target}}},
                "metadata": {"filterMetadata": {
                    "envoy.filters.listener.original_dst": {"local": target},
                    "envoy.transport_socket_match": {"tunnel": "http"}}}}]}]}


def _app(pod):
    return pod.app(["http", "--port", TARGET, "--name", "the-app"])


def _sidecar(pod, resources, cert_dir, env=None, proxy=None):
    return pod.start_sidecar(config=meshres.config(resources, proxy=dict({"logLevel": "debug"}, **(proxy or {}))),
                             proxy_args=["--cert-dir", cert_dir, "--concurrency", "1"], env=env)


def test_hbone_workload_via_service(pod_lab, pki, outrigger_bin, init_bin):
    """A Workload marked HBONE behind a VIP: two requests reach the app through nghttpx and
    tinyproxy over ONE pooled TLS 1.3 h2 connection; each CONNECT's authority is
    <pod IP>:<target port>, with forwarded for="<client>";host=<service hostname>, our baggage
    and a fresh traceparent each; nghttpx saw our client certificate; the sidecar verified the
    server's SPIFFE ID (the close line's peer)."""
    client, server = pod_lab.add_pod("client"), pod_lab.add_pod("server")
    _app(server)
    zt = Ztunnel(pod_lab, server, pki["server"], pki["ca"].cert)
    sc = _sidecar(client, _wds(server), pki["client"],
                  env={"POD_NAMESPACE": "default", "POD_NAME": "client-abc", "ISTIO_META_WORKLOAD_NAME": "client"})
    for i in range(2):
        code, body = client.curl("http://%s/" % VIP, user="nobody")
        assert code == 200, body
        assert "hello from the-app" in body
    wait_for(lambda: len(zt.lines()) >= 2, what="nghttpx access log lines")
    lines = zt.lines()
    assert len(lines) == 2, lines
    fp = _fingerprint(os.path.join(pki["client"], "cert-chain.pem"))
    tps = []
    for l in lines:
        assert _field(l, "method") == "CONNECT", l
        assert _field(l, "authority") == "%s:%d" % (server.ip4, TARGET), l
        assert _field(l, "status") == "200", l
        assert _field(l, "tls") == "TLSv1.3", l
        assert _field(l, "alpn") == "h2", l
        assert _field(l, "cipher") in ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"), l
        assert _field(l, "sni") == "-", l          # no SNI, as ztunnel
        fwd = _field(l, "forwarded")
        assert re.fullmatch(r"for='%s:\d+';host=%s" % (re.escape(client.ip4), re.escape(HOST)), fwd), l
        assert _field(l, "client") == fp, l        # our client certificate, as nghttpx received it
        bag = _field(l, "baggage")
        assert "k8s.namespace.name=default" in bag and "k8s.deployment.name=client" in bag, l
        assert "service.name=client" in bag, l
        tp = _field(l, "traceparent")
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", tp), l
        tps.append(tp)
    assert tps[0] != tps[1]
    # Both streams on one pooled connection: the same client port at nghttpx.
    assert _field(lines[0], "port") == _field(lines[1], "port"), lines
    wait_for(lambda: sc.stats().get("listener.outbound.downstream_cx_active") == 0, what="connections closed")
    st = sc.stats()
    assert st[HB] == 2
    assert st["server.hbone_client_cx_total"] == 1        # one pooled connection for both
    assert st["server.hbone_client_cx_active"] == 1       # kept for the next stream
    assert st["listener.outbound.upstream_cx_hbone_fail"] == 0
    assert st["listener.outbound.upstream_cx_tls_handshake"] == 0      # not the Istio mTLS path
    assert st["listener.outbound.upstream_cx_connect_fail"] == 0
    log = sc.log()
    assert "HBONE peer %s" % ID_SERVER in log
    assert re.search(r"closed \(was .*\) peer %s" % re.escape(ID_SERVER), log), log[-3000:]


def test_hbone_eds_internal_address(pod_lab, pki, outrigger_bin, init_bin):
    """A pod outside the WDS, known only by an EDS endpoint in istiod's HBONE form
    (EnvoyInternalAddress endpoint_id "<ip>:<port>", transport_socket_match tunnel "http"):
    a connection to its address goes over HBONE; forwarded has no host (no service)."""
    client, server = pod_lab.add_pod("client"), pod_lab.add_pod("server")
    _app(server)
    zt = Ztunnel(pod_lab, server, pki["server"], pki["ca"].cert)
    res = [_eds_internal(server.ip4, TARGET, "outbound|8080||hello.default.svc.cluster.local")]
    sc = _sidecar(client, res, pki["client"])
    code, body = client.curl("http://%s:%d/" % (server.ip4, TARGET), user="nobody")
    assert code == 200, body
    assert "hello from the-app" in body
    wait_for(lambda: zt.lines(), what="nghttpx access log")
    l = zt.lines()[0]
    assert _field(l, "authority") == "%s:%d" % (server.ip4, TARGET), l
    assert re.fullmatch(r"for='%s:\d+'" % re.escape(client.ip4), _field(l, "forwarded")), l
    assert sc.stats()[HB] == 1


def test_hbone_wrong_identity_refused(pod_lab, pki, outrigger_bin, init_bin):
    """nghttpx presents a certificate of the mesh whose SPIFFE ID is not the workload's: the
    sidecar refuses it during the handshake (no CONNECT reaches nghttpx), the client is reset,
    the failure is counted as a connect failure and logged with its reason."""
    client, server = pod_lab.add_pod("client"), pod_lab.add_pod("server")
    _app(server)
    zt = Ztunnel(pod_lab, server, pki["impostor"], pki["ca"].cert)
    sc = _sidecar(client, _wds(server), pki["client"])
    code, body = client.curl("http://%s/" % VIP, user="nobody")
    assert code == 0
    wait_for(lambda: sc.stats().get("listener.outbound.upstream_cx_hbone_fail", 0) >= 1,
             what="the HBONE failure counted")
    st = sc.stats()
    assert st[HB] == 0
    assert st["server.hbone_client_cx_fail"] == 1
    assert st["server.hbone_client_cx_active"] == 0
    assert st["listener.outbound.upstream_cx_connect_fail"] >= 1
    assert zt.lines() == []
    log = sc.log()
    assert "HBONE %s:15008 (expecting %s): identity" % (server.ip4, ID_SERVER) in log, log[-3000:]


def test_hbone_to_outrigger_sidecar(pod_lab, pki, outrigger_bin, init_bin):
    """Sidecar to sidecar: the server pod's own Outrigger terminates the HBONE (its 15008);
    the app sees the bytes, and each side logs the other's verified SPIFFE ID."""
    client, server = pod_lab.add_pod("client"), pod_lab.add_pod("server")
    _app(server)
    ss = _sidecar(server, _wds(server), pki["server"])
    sc = _sidecar(client, _wds(server), pki["client"])
    code, body = client.curl("http://%s/" % VIP, user="nobody")
    assert code == 200, body
    assert "hello from the-app" in body
    wait_for(lambda: sc.stats().get("listener.outbound.downstream_cx_active") == 0, what="connections closed")
    assert sc.stats()[HB] == 1
    assert "HBONE peer %s" % ID_SERVER in sc.log()
    wait_for(lambda: ID_CLIENT in ss.log(), what="the server sidecar logging the client's identity")


def test_hbone_failed_connection_tries_next_endpoint(pod_lab, pki, outrigger_bin, init_bin):
    """Two HBONE endpoints behind one VIP, one of which has nothing on 15008: every request
    still succeeds, a failed HBONE connection being a connect failure like a refused TCP
    connect (the next endpoint is tried); only the streams that waited for it failed."""
    client, server, dead = pod_lab.add_pod("client"), pod_lab.add_pod("server"), pod_lab.add_pod("dead")
    _app(server)
    zt = Ztunnel(pod_lab, server, pki["server"], pki["ca"].cert)
    res = [meshres.service("hello", [VIP], [(PORT, TARGET)]),
           meshres.workload("Kubernetes//Pod/default/server", "server", [server.ip4], {SVC: [(PORT, TARGET)]},
                            serviceAccount="server", tunnelProtocol="HBONE"),
           meshres.workload("Kubernetes//Pod/default/dead", "dead", [dead.ip4], {SVC: [(PORT, TARGET)]},
                            serviceAccount="server", tunnelProtocol="HBONE")]
    sc = _sidecar(client, res, pki["client"])
    for i in range(4):
        code, body = client.curl("http://%s/" % VIP, user="nobody")
        assert code == 200, body
    wait_for(lambda: sc.stats().get("listener.outbound.downstream_cx_active") == 0, what="connections closed")
    st = sc.stats()
    assert st[HB] == 4
    assert st["listener.outbound.upstream_cx_hbone_fail"] >= 1
    assert st["listener.outbound.upstream_cx_connect_retry"] == st["listener.outbound.upstream_cx_hbone_fail"]
    assert len(zt.lines()) == 4


def test_hbone_idle_connection_released(pod_lab, pki, outrigger_bin, init_bin):
    """proxy.hbonePoolIdleTimeout: a pooled connection left without streams is closed (GOAWAY
    through h2s) after it; the next request dials a new one (another client port at nghttpx)."""
    client, server = pod_lab.add_pod("client"), pod_lab.add_pod("server")
    _app(server)
    zt = Ztunnel(pod_lab, server, pki["server"], pki["ca"].cert)
    sc = _sidecar(client, _wds(server), pki["client"], proxy={"hbonePoolIdleTimeout": "0.5s"})
    code, body = client.curl("http://%s/" % VIP, user="nobody")
    assert code == 200, body
    wait_for(lambda: "HBONE %s:15008: no stream for" % server.ip4 in sc.log(), what="the idle release")
    wait_for(lambda: not server.run(["ss", "-Htn", "state", "established", "sport = :15008"],
                                    check=False).stdout.strip(), what="the connection closed at nghttpx")
    code, body = client.curl("http://%s/" % VIP, user="nobody")
    assert code == 200, body
    wait_for(lambda: len(zt.lines()) == 2, what="two requests at nghttpx")
    lines = zt.lines()
    assert _field(lines[0], "port") != _field(lines[1], "port"), lines
    st = sc.stats()
    assert st[HB] == 2
    assert st["server.hbone_client_cx_total"] == 2
    assert st["server.hbone_client_cx_idle_released"] == 1
