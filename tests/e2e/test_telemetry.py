"""Istio's standard TCP metrics end to end (issue 12, "Istio standard metrics"): real traffic
through two sidecars with development-CA identities, the scrape of :15090/stats/prometheus
parsed by python3-prometheus-client's text parser (not by our own code):

    app (client pod) -> VIP 198.19.0.11:80 -> client sidecar 15001 (reporter="source")
        -> Istio mTLS -> server pod :8081 -> server sidecar 15006 (reporter="destination")
        -> sink app :8081

The label values asserted are those of the WDS Workloads given to the sidecars (workloadName,
canonicalName / canonicalRevision, namespace, clusterId), the Service routed through, and the
SPIFFE IDs of the certificates. ztunnel's conventions (src/proxy/metrics.rs, src/copy.rs):
bytes from downstream are "received", bytes to downstream "sent"; app and version labels are
the canonical service and revision; a missing fact is "unknown".
"""
import os

import pytest

import certs
import meshres
from lab import wait_for

prom_parser = pytest.importorskip("prometheus_client.parser")

VIP, PORT, SINK = "198.19.0.11", 80, 8081
ECHO_VIP, ECHO = "198.19.0.10", 8080
SERVER_NS = "shop"
ID_CLIENT = certs.spiffe_id("default", "client")
ID_SERVER = certs.spiffe_id(SERVER_NS, "server")
SINK_HOST = "sink.%s.svc.cluster.local" % SERVER_NS
FAMILIES = ("istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
            "istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total")
LABELS = ["reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
          "source_workload_namespace", "source_principal", "source_app", "source_version",
          "source_cluster", "destination_service", "destination_service_namespace",
          "destination_service_name", "destination_workload", "destination_canonical_service",
          "destination_canonical_revision", "destination_workload_namespace",
          "destination_principal", "destination_app", "destination_version", "destination_cluster",
          "request_protocol", "response_flags", "connection_security_policy"]


def scrape(pod, port=15090):
    """GET /stats/prometheus on port inside pod: {sample name: [(labels, value)]}, and the text."""
    r = pod.run(["curl", "-sS", "-m", "5", "http://127.0.0.1:%d/stats/prometheus" % port],
                check=True, timeout=10)
    out = {}
    for fam in prom_parser.text_string_to_metric_families(r.stdout):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out, r.stdout


def istio(samples, name, **match):
    """The samples of family name whose labels include match."""
    return [(lab, v) for lab, v in samples.get(name, []) if all(lab.get(k) == w for k, w in match.items())]


def total(samples, name, **match):
    return sum(v for _, v in istio(samples, name, **match))


class Mesh:
    def __init__(self, L):
        self.L = L
        d = os.path.join(L.dir, "pki")
        self.ca = certs.CA(os.path.join(d, "ca"))
        self.client_certs = os.path.join(d, "client")
        self.server_certs = os.path.join(d, "server")
        self.ca.issue(self.client_certs, ID_CLIENT)
        self.ca.issue(self.server_certs, ID_SERVER)
        for root, dirs, files in os.walk(d):
            os.chmod(root, 0o755)
        self.client = L.add_pod("client")
        self.server = L.add_pod("server")
        self.other = L.add_pod("other")
        self.sink = self.server.app(["sink", "--port", SINK, "--reply-bytes", 777])
        self.echo = self.server.app(["echo", "--port", ECHO])

    def resources(self):
        c, s, o = self.client.ip4, self.server.ip4, self.other.ip4
        svc = {meshres.key("sink", SERVER_NS): [(PORT, SINK)], meshres.key("echo", SERVER_NS): [(PORT, ECHO)]}
        return [
            meshres.service("sink", [VIP], [(PORT, SINK)], namespace=SERVER_NS),
            meshres.service("echo", [ECHO_VIP], [(PORT, ECHO)], namespace=SERVER_NS),
            meshres.workload("Kubernetes//Pod/default/client-7d9f", "client-7d9f", [c],
                             serviceAccount="client", workloadName="client", canonicalName="client-app",
                             canonicalRevision="v1", clusterId="cluster-a",
                             tunnelProtocol="LEGACY_ISTIO_MTLS"),
            meshres.workload("Kubernetes//Pod/shop/server-5c4b", "server-5c4b", [s], svc,
                             namespace=SERVER_NS, serviceAccount="server", workloadName="server",
                             canonicalName="server-app", canonicalRevision="v2", clusterId="cluster-b",
                             tunnelProtocol="LEGACY_ISTIO_MTLS"),
            meshres.workload("Kubernetes//Pod/default/other-1", "other-1", [o], serviceAccount="other",
                             workloadName="other", canonicalName="other-app", canonicalRevision="v9",
                             clusterId="cluster-a"),
        ]

    def config(self, telemetry=None):
        cfg = meshres.config(self.resources(), proxy={"logLevel": "debug", "concurrency": 1})
        if telemetry:
            cfg["telemetry"] = dict(telemetry)
        return cfg

    def start(self, client=True, telemetry=None):
        if client:
            self.csc = self.client.start_sidecar(config=self.config(telemetry),
                                                 proxy_args=("--cert-dir", self.client_certs))
        self.ssc = self.server.start_sidecar(config=self.config(telemetry),
                                             proxy_args=("--cert-dir", self.server_certs),
                                             env={"POD_NAMESPACE": SERVER_NS})
        for sc in ([self.csc] if client else []) + [self.ssc]:
            wait_for(lambda: sc.stats().get("server.cert_updates", 0) >= 1, timeout=10,
                     what="the sidecar's certificate loaded")

    def send(self, n, pod=None, host=VIP, port=PORT):
        """apps.py send: n bytes to the sink, its reply read whole; returns the bytes received."""
        r, out = (pod or self.client).client(["send", "--host", host, "--port", port, "--bytes", n])
        assert out and out["ok"], (r.stdout, r.stderr)
        return out


def reply_len(out):
    """The sink's reply as it went on the wire: its header line and the reply bytes."""
    return len(("%d %s %d %s\n" % (out["server_count"], out["server_sha"], out["reply_expected"],
                                   out["reply_expected_sha"])).encode()) + out["reply_bytes"]


@pytest.fixture
def mesh(pod_lab, outrigger_bin, init_bin):
    return Mesh(pod_lab)


def test_outbound_and_inbound_mtls_labels_and_bytes(mesh):
    """One connection through both sidecars: each reports it once (opened == closed == 1
    after the close) with the label values of both Workloads, the Service and the SPIFFE IDs;
    received = the bytes the client sent, sent = the sink's reply, on both sides."""
    m = mesh
    m.start()
    out = m.send(12345)
    rl = reply_len(out)
    for sc in (m.csc, m.ssc):
        wait_for(lambda: sc.stats().get("listener.outbound.downstream_cx_active", 0) == 0 and
                 sc.stats().get("listener.inbound.downstream_cx_active", 0) == 0, timeout=10,
                 what="connections closed")

    common = {
        "source_workload": "client", "source_canonical_service": "client-app",
        "source_canonical_revision": "v1", "source_workload_namespace": "default",
        "source_principal": ID_CLIENT, "source_app": "client-app", "source_version": "v1",
        "source_cluster": "cluster-a",
        "destination_workload": "server", "destination_canonical_service": "server-app",
        "destination_canonical_revision": "v2", "destination_workload_namespace": SERVER_NS,
        "destination_principal": ID_SERVER, "destination_app": "server-app",
        "destination_version": "v2", "destination_cluster": "cluster-b",
        "request_protocol": "tcp", "response_flags": "-", "connection_security_policy": "mutual_tls",
    }
    # Outbound, on the client's sidecar: the service routed through is known.
    s, text = scrape(m.client)
    src = dict(common, reporter="source", destination_service=SINK_HOST,
               destination_service_name="sink", destination_service_namespace=SERVER_NS)
    for fam in FAMILIES:
        got = istio(s, fam)
        assert len(got) == 1, (fam, got, text)
        assert got[0][0] == src, (fam, got[0][0])
        assert list(got[0][0]) == LABELS or sorted(got[0][0]) == sorted(LABELS)
    assert total(s, FAMILIES[0]) == 1 and total(s, FAMILIES[1]) == 1
    assert total(s, "istio_tcp_received_bytes_total") == 12345
    assert total(s, "istio_tcp_sent_bytes_total") == rl
    # The exposition's own label order is Istio's.
    line = next(x for x in text.splitlines() if x.startswith("istio_tcp_connections_opened_total{"))
    assert [kv.split("=")[0] for kv in line[line.index("{") + 1:line.index("}")].split('",')] == LABELS

    # Inbound, on the server's sidecar (15006): reporter destination.
    s, text = scrape(m.server)
    # The service is the one the server's Workload lists for the target port (8081: sink).
    dst = dict(common, reporter="destination", destination_service=SINK_HOST,
               destination_service_name="sink", destination_service_namespace=SERVER_NS)
    got = istio(s, "istio_tcp_connections_opened_total", reporter="destination")
    assert len(got) == 1, text
    for k, v in dst.items():
        assert got[0][0][k] == v, (k, got[0][0])
    assert total(s, "istio_tcp_connections_opened_total") == 1
    assert total(s, "istio_tcp_connections_closed_total") == 1
    assert total(s, "istio_tcp_received_bytes_total") == 12345
    assert total(s, "istio_tcp_sent_bytes_total") == rl
    # 15090 serves the same families as the admin's /stats/prometheus.
    a, _ = scrape(m.server, port=15000)
    for fam in FAMILIES:
        assert istio(a, fam) == istio(s, fam)
    assert "outrigger_istio_metrics_overflow_total" in a


def test_many_connections_one_label_set(mesh):
    """Five connections of the same peers share one label set: opened == closed == 5, and the
    byte counters are the sums."""
    m = mesh
    m.start()
    rx = tx = 0
    for i in range(5):
        out = m.send(1000 + i)
        rx += 1000 + i
        tx += reply_len(out)
    wait_for(lambda: total(scrape(m.server)[0], "istio_tcp_connections_closed_total") == 5, timeout=10,
             what="5 closed on the server")
    for pod in (m.client, m.server):
        s, text = scrape(pod)
        assert len(istio(s, "istio_tcp_connections_opened_total")) == 1, text
        assert total(s, "istio_tcp_connections_opened_total") == 5
        assert total(s, "istio_tcp_connections_closed_total") == 5
        assert total(s, "istio_tcp_received_bytes_total") == rx
        assert total(s, "istio_tcp_sent_bytes_total") == tx


def test_plaintext_inbound_peer_without_sidecar(mesh):
    """A plaintext client (a pod with a Workload and no sidecar) reaches the server sidecar:
    source labels from its Workload, source_principal "unknown" (no certificate),
    connection_security_policy "none" (Istio's value for a destination report without mTLS)."""
    m = mesh
    m.start(client=False)
    # The other pod has a Workload but no sidecar: plaintext, source facts from its Workload.
    out = m.send(500, pod=m.other, host=m.server.ip4, port=SINK)
    wait_for(lambda: total(scrape(m.server)[0], "istio_tcp_connections_closed_total") == 1, timeout=10,
             what="closed")
    s, text = scrape(m.server)
    got = istio(s, "istio_tcp_connections_closed_total")
    assert len(got) == 1, text
    lab = got[0][0]
    assert lab["reporter"] == "destination"
    assert lab["source_workload"] == "other" and lab["source_app"] == "other-app"
    assert lab["source_principal"] == "unknown"
    assert lab["destination_workload"] == "server"
    assert lab["connection_security_policy"] == "none"
    assert total(s, "istio_tcp_received_bytes_total") == 500
    assert total(s, "istio_tcp_sent_bytes_total") == reply_len(out)


def test_overflow_counted_no_crash(mesh):
    """telemetry.maxLabelSets 1 and two different peers: the second peer's set does not fit;
    outrigger_istio_metrics_overflow_total is 1, the first set is intact, the proxy serves on."""
    m = mesh
    m.start(client=False, telemetry={"maxLabelSets": 1})
    m.send(100, pod=m.other, host=m.server.ip4, port=SINK)
    wait_for(lambda: total(scrape(m.server)[0], "istio_tcp_connections_closed_total") == 1, timeout=10,
             what="first closed")
    m.send(200, pod=m.client, host=m.server.ip4, port=SINK)   # no client sidecar: plaintext, another peer
    wait_for(lambda: m.ssc.stats().get("listener.inbound.downstream_cx_destroy", 0) == 2, timeout=10,
             what="second closed")
    s, text = scrape(m.server)
    assert total(s, "outrigger_istio_metrics_overflow_total") == 1, text
    got = istio(s, "istio_tcp_connections_opened_total")
    assert len(got) == 1 and got[0][0]["source_workload"] == "other" and got[0][1] == 1
    assert total(s, "istio_tcp_received_bytes_total") == 100
    # Still serving, and the same peer again still counts in its set.
    m.send(300, pod=m.other, host=m.server.ip4, port=SINK)
    wait_for(lambda: total(scrape(m.server)[0], "istio_tcp_connections_closed_total") == 2, timeout=10,
             what="third closed")
    assert total(scrape(m.server)[0], "outrigger_istio_metrics_overflow_total") == 1
    assert m.ssc.alive()


def test_periodic_report_of_open_connection(mesh):
    """telemetry.tcpReportingInterval 1s: a connection still open has its bytes reported
    (opened 1, closed 0, received and sent the echoed bytes) before it closes."""
    m = mesh
    m.start(telemetry={"tcpReportingInterval": "1s"})
    c = m.client.interactive(ECHO_VIP, PORT)
    try:
        assert c.connected, c.hello
        assert c.cmd("echo 4000") == "OK 4000"
        for pod in (m.client, m.server):
            wait_for(lambda: total(scrape(pod)[0], "istio_tcp_received_bytes_total") == 4000, timeout=5,
                     what="bytes of the open connection reported")
            s, text = scrape(pod)
            assert total(s, "istio_tcp_sent_bytes_total") == 4000, text
            assert total(s, "istio_tcp_connections_opened_total") == 1
            assert total(s, "istio_tcp_connections_closed_total") == 0
        assert c.cmd("echo 1000") == "OK 1000"
        wait_for(lambda: total(scrape(m.client)[0], "istio_tcp_received_bytes_total") == 5000, timeout=5,
                 what="the next report")
    finally:
        c.close()
    wait_for(lambda: total(scrape(m.client)[0], "istio_tcp_connections_closed_total") == 1, timeout=10,
             what="closed")
    s, _ = scrape(m.client)
    assert total(s, "istio_tcp_received_bytes_total") == 5000
    assert total(s, "istio_tcp_sent_bytes_total") == 5000


def test_without_periodic_report_bytes_at_close(mesh):
    """tcpReportingInterval 0s: an open connection's bytes are not reported until it closes."""
    m = mesh
    m.start(client=False, telemetry={"tcpReportingInterval": "0s"})
    c = m.other.interactive(m.server.ip4, ECHO)
    try:
        assert c.connected, c.hello
        assert c.cmd("echo 3000") == "OK 3000"
        import time
        time.sleep(1.5)
        s, _ = scrape(m.server)
        assert total(s, "istio_tcp_connections_opened_total") == 1
        assert total(s, "istio_tcp_received_bytes_total") == 0
    finally:
        c.close()
    wait_for(lambda: total(scrape(m.server)[0], "istio_tcp_received_bytes_total") == 3000, timeout=10,
             what="bytes at close")


def test_prometheus_port_off(pod_lab, outrigger_bin, init_bin):
    """proxy.prometheusPort 0: nothing listens on 15090; the admin still serves the families."""
    pod = pod_lab.add_pod("solo")
    sc = pod.start_sidecar(config={"proxy": {"prometheusPort": 0}})
    r = pod.run(["curl", "-sS", "-m", "3", "http://127.0.0.1:15090/stats/prometheus"], check=False)
    assert r.returncode != 0
    s, text = scrape(pod, port=15000)
    assert "istio_tcp_connections_opened_total" in text
    assert sc.alive()


AUTHZ = "type.googleapis.com/istio.security.Authorization"
H2CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_hbone_server.py")


def deny_client_policy():
    return {"@type": AUTHZ, "name": "deny-client", "namespace": SERVER_NS, "scope": "NAMESPACE",
            "action": "DENY", "groups": [{"rules": [{"matches": [{"principals": [
                {"exact": "cluster.local/ns/default/sa/client"}]}]}]}]}


def test_denied_connections_opened_and_closed_with_rbac_flag(mesh):
    """A connection authorization denies never forwards: on 15006 (through the client's
    sidecar, mTLS) and on HBONE 15008 (401), the server sidecar still reports it, opened and
    closed once each under response_flags "RBAC" with the peer's labels, no bytes (ztunnel
    records denied connections the same way)."""
    m = mesh
    cfg = m.config()
    cfg["resources"].append(deny_client_policy())
    m.csc = m.client.start_sidecar(config=m.config(), proxy_args=("--cert-dir", m.client_certs))
    m.ssc = m.server.start_sidecar(config=cfg, proxy_args=("--cert-dir", m.server_certs),
                                   env={"POD_NAMESPACE": SERVER_NS})
    for sc in (m.csc, m.ssc):
        wait_for(lambda: sc.stats().get("server.cert_updates", 0) >= 1, timeout=10, what="certs")
    r, out = m.client.client(["send", "--host", VIP, "--port", PORT, "--bytes", 100])
    assert not (out and out.get("ok")), "the connection should have been denied"
    wait_for(lambda: m.ssc.stats().get("listener.inbound.downstream_cx_authz_denied", 0) == 1, timeout=10,
             what="denied on 15006")
    wait_for(lambda: total(scrape(m.server)[0], "istio_tcp_connections_closed_total") == 1, timeout=10,
             what="the denied connection reported")
    s, text = scrape(m.server)
    got = istio(s, "istio_tcp_connections_closed_total")
    assert len(got) == 1, text
    lab = got[0][0]
    assert lab["response_flags"] == "RBAC" and lab["reporter"] == "destination"
    assert lab["source_principal"] == ID_CLIENT and lab["source_workload"] == "client"
    assert lab["destination_workload"] == "server" and lab["destination_service"] == SINK_HOST
    assert total(s, "istio_tcp_connections_opened_total", response_flags="RBAC") == 1
    assert total(s, "istio_tcp_received_bytes_total") == 0

    # HBONE: the CONNECT is answered 401 and reported likewise.
    argv = ["/usr/bin/python3", H2CLIENT, "client", "--host", m.server.ip4,
            "--authority", "%s:%d" % (m.server.ip4, SINK),
            "--ca", os.path.join(m.server_certs, "root-cert.pem"),
            "--certs", m.client_certs, "--send", "x"]
    r = m.other.run(argv, check=False, timeout=40)     # a pod without a sidecar, the client's identity
    assert r.returncode == 0, r.stderr
    import json
    assert json.loads(r.stdout.strip().splitlines()[-1]).get("status") == 401
    wait_for(lambda: total(scrape(m.server)[0], "istio_tcp_connections_closed_total", response_flags="RBAC") == 2,
             timeout=10, what="the denied HBONE stream reported")
    s, text = scrape(m.server)
    got = istio(s, "istio_tcp_connections_closed_total", source_workload="other")
    assert len(got) == 1 and got[0][1] == 1, text
    assert got[0][0]["source_principal"] == ID_CLIENT and got[0][0]["response_flags"] == "RBAC"
    assert got[0][0]["destination_service"] == SINK_HOST
    assert total(s, "istio_tcp_connections_opened_total") == 2


# --- Istio's Workload dashboard, evaluated by a real Prometheus -----------------------------

ISTIO_REPO = os.environ.get("OUTRIGGER_ISTIO_REPO", "/work/.mirror/istio+istio/repo")
DASHBOARD = "manifests/addons/dashboards/istio-workload-dashboard.json"


def _sel(*matchers):
    return "{" + ", ".join(matchers) + "}"


def _irate(metric, sel):
    return "irate(%s%s[$__rate_interval])" % (metric, sel)


def built_tcp_panels():
    """(title, [expr]) of the Workload dashboard's TCP panels, built here from their facts (the
    metric each reads, its label matchers, its aggregation and rounding, as the dashboard's JSON
    has them: checked against Istio's own file by test_dashboard_queries_match_istio's when an
    Istio checkout is at hand), so that the dashboard test runs without one."""
    rep, ns, wl = 'reporter=~"$qrep"', '=~"$namespace"', '=~"$workload"'
    out = []
    for title, side in (("TCP Server Traffic", "destination"), ("TCP Client Traffic", "source")):
        sel = _sel(rep, side + "_workload_namespace" + ns, side + "_workload" + wl)
        out.append((title, ["sum(%s) + sum(%s)" % (_irate("istio_tcp_sent_bytes_total", sel),
                                                     _irate("istio_tcp_received_bytes_total", sel))]))
    inbound = ('destination_workload_namespace' + ns, 'destination_workload' + wl,
               'source_workload=~"$srcwl"', 'source_workload_namespace=~"$srcns"')
    outbound = ('source_workload_namespace' + ns, 'source_workload' + wl, 'destination_service=~"$dstsvc"')
    for title, metric, rows, by in (
            ("Bytes Received from Incoming TCP Connection", "istio_tcp_received_bytes_total", inbound,
             "source_workload, source_workload_namespace"),
            ("Bytes Sent to Incoming TCP Connection", "istio_tcp_sent_bytes_total", inbound,
             "source_workload, source_workload_namespace"),
            # Outgoing: the client's "sent" is what its downstream (the app) sent it: received.
            ("Bytes Sent on Outgoing TCP Connection", "istio_tcp_received_bytes_total", outbound,
             "destination_service"),
            ("Bytes Received from Outgoing TCP Connection", "istio_tcp_sent_bytes_total", outbound,
             "destination_service")):
        r = 'reporter="source"' if rows is outbound else rep
        out.append((title, ["round(sum(%s) by (%s), 0.001)" % (
            _irate(metric, _sel(r, 'connection_security_policy%s"mutual_tls"' % op, *rows)), by)
            for op in ("=", "!=")]))
    return out


def istio_tcp_panels():
    """(title, [expr]) of every panel of Istio's own Workload dashboard whose queries read
    istio_tcp_*, from an Istio checkout (OUTRIGGER_ISTIO_REPO, a git dir); None without one."""
    import json
    import subprocess
    r = subprocess.run(["git", "-C", ISTIO_REPO, "show", "HEAD:" + DASHBOARD], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    out = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            exprs = [t["expr"] for t in p.get("targets", []) if "istio_tcp" in t.get("expr", "")]
            if exprs:
                out.append((p.get("title", ""), exprs))
    walk(json.loads(r.stdout).get("panels", []))
    return out


def _canon(expr):
    """expr with the label matchers inside each {...} sorted and spaces dropped."""
    import re
    return re.sub(r"\{([^}]*)\}", lambda m: "{" + ",".join(sorted(x.strip() for x in m.group(1).split(","))) + "}",
                  expr).replace(" ", "")


def test_dashboard_queries_match_istio():
    """The queries built here are the dashboard's own (matcher order aside), when an Istio
    checkout is at hand: a dashboard that changed shows here first."""
    theirs = istio_tcp_panels()
    if theirs is None:
        pytest.skip("no Istio checkout with %s (set OUTRIGGER_ISTIO_REPO)" % DASHBOARD)
    canon = lambda ps: sorted((t, sorted(_canon(e) for e in es)) for t, es in ps)
    assert canon(built_tcp_panels()) == canon(theirs)


def substitute(expr, v):
    """Grafana's variables as the dashboard would set them; a multi-value variable is a regex
    alternation, $__rate_interval a window holding several 1 s scrapes."""
    for k in sorted(v, key=len, reverse=True):
        expr = expr.replace("$" + k, v[k])
    return expr


def prom_query(pod, q):
    import json
    r = pod.run(["curl", "-sS", "-m", "5", "-G", "--data-urlencode", "query=" + q,
                 "http://127.0.0.1:9090/api/v1/query"], check=False, timeout=10)
    try:
        d = json.loads(r.stdout)
    except ValueError:
        return None
    assert d.get("status") == "success", (q, d)
    return d["data"]["result"]


def test_istio_workload_dashboard_tcp_panels(mesh):
    """Every TCP panel of Istio's Workload dashboard (its PromQL, from Istio's repository when
    a checkout is at hand, else as built_tcp_panels builds it) returns a non-empty series from a real Prometheus (Debian's) scraping both sidecars'
    :15090/stats/prometheus every second: server-side panels with $workload=server
    $namespace=shop, client-side ones with $workload=client $namespace=default. mTLS traffic
    (client sidecar -> server sidecar) and plaintext traffic (the other pod -> server) run
    meanwhile, so the mutual_tls and the non-mutual_tls queries of the incoming panels each
    have data; the outgoing panels' non-mTLS queries have none (all outbound here is mTLS)."""
    import shutil
    import subprocess
    import time
    if not shutil.which("prometheus"):
        pytest.skip("prometheus (Debian package) not installed")
    panels = istio_tcp_panels() or built_tcp_panels()
    assert len(panels) >= 6, panels
    m = mesh
    m.start()
    d = os.path.join(m.L.dir, "prometheus")
    os.makedirs(os.path.join(d, "data"))
    with open(os.path.join(d, "prometheus.yml"), "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: sidecars\n    metrics_path: /stats/prometheus\n"
                "    static_configs:\n      - targets: ['%s:15090', '%s:15090']\n"
                % (m.server.ip4, m.client.ip4))
    for root, dirs, files in os.walk(d):
        os.chmod(root, 0o777)
    log = open(os.path.join(m.L.dir, "prometheus.log"), "wb")
    # In the pod without a sidecar: 15090 is left out of the capture (outrigger-init -d), so
    # it scrapes both pods' sidecars over the pod network.
    m.other.popen(["prometheus", "--config.file=" + os.path.join(d, "prometheus.yml"),
                   "--storage.tsdb.path=" + os.path.join(d, "data"),
                   "--web.listen-address=127.0.0.1:9090"], user="nobody", stdout=log,
                  stderr=subprocess.STDOUT)
    log.close()
    wait_for(lambda: prom_query(m.other, "up") is not None and
             len([r for r in prom_query(m.other, "up") if r["value"][1] == "1"]) == 2,
             timeout=30, what="Prometheus scraping both sidecars")
    # Traffic over several scrapes (irate needs two samples that differ).
    for i in range(6):
        m.send(1000 + i)
        m.send(500 + i, pod=m.other, host=m.server.ip4, port=SINK)
        time.sleep(0.5)
    server_vars = {"qrep": "source|destination", "namespace": SERVER_NS, "workload": "server",
                   "srcns": "default", "srcwl": "client|other", "__rate_interval": "10s"}
    client_vars = {"qrep": "source|destination", "namespace": "default", "workload": "client",
                   "dstsvc": SINK_HOST, "__rate_interval": "10s"}
    failures = []
    for title, exprs in panels:
        v = client_vars if ("Outgoing" in title or "Client" in title) else server_vars
        results = [(e, prom_query(m.other, substitute(e, v))) for e in exprs]
        if not any(r for _, r in results):
            failures.append((title, [substitute(e, v) for e in exprs]))
        for e, r in results:
            # The mTLS queries always have data; the non-mTLS ones only where plaintext ran.
            plain = 'connection_security_policy!="mutual_tls"' in e
            if (not plain or "Incoming" in title) and not r:
                failures.append((title, substitute(e, v)))
    assert not failures, failures


def test_outbound_source_from_instance_ip(mesh):
    """Outbound, when the app's address is no Workload's, the source is the Workload at this
    pod's INSTANCE_IP (as the injector sets it): here the client's Workload is listed at
    another address, named by INSTANCE_IP; without it the source would be "unknown"."""
    m = mesh
    res = m.resources()
    for r in res:
        wl = r.get("workload")
        if wl and wl["name"] == "client-7d9f":
            wl["addresses"] = [meshres._b64("10.250.0.7")]
    cfg = meshres.config(res, proxy={"logLevel": "debug", "concurrency": 1})
    m.csc = m.client.start_sidecar(config=cfg, proxy_args=("--cert-dir", m.client_certs),
                                   env={"INSTANCE_IP": "10.250.0.7"})
    m.ssc = m.server.start_sidecar(config=m.config(), proxy_args=("--cert-dir", m.server_certs),
                                   env={"POD_NAMESPACE": SERVER_NS})
    for sc in (m.csc, m.ssc):
        wait_for(lambda: sc.stats().get("server.cert_updates", 0) >= 1, timeout=10, what="certs")
    m.send(100)
    wait_for(lambda: total(scrape(m.client)[0], "istio_tcp_connections_closed_total") == 1, timeout=10,
             what="closed")
    got = istio(scrape(m.client)[0], "istio_tcp_connections_closed_total")
    assert len(got) == 1
    assert got[0][0]["source_workload"] == "client" and got[0][0]["source_cluster"] == "cluster-a"


def test_connect_failure_reported_with_uf(mesh):
    """The app's port refuses: the inbound connection never forwards; it is reported opened and
    closed once under response_flags "UF" (Envoy's upstream connection failure; ztunnel records
    a failed connect the same way), with no bytes."""
    m = mesh
    m.start(client=False)
    c = m.other.interactive(m.server.ip4, 9999)
    c.close()
    wait_for(lambda: total(scrape(m.server)[0], "istio_tcp_connections_closed_total") == 1, timeout=10,
             what="the failed connection reported")
    s, text = scrape(m.server)
    got = istio(s, "istio_tcp_connections_opened_total")
    assert len(got) == 1 and got[0][1] == 1, text
    assert got[0][0]["response_flags"] == "UF" and got[0][0]["source_workload"] == "other"
    assert got[0][0]["destination_service"] == "unknown"     # no service of the server targets 9999
    assert total(s, "istio_tcp_received_bytes_total") == 0


def test_prometheus_port_serves_only_the_scrape(pod_lab, outrigger_bin, init_bin):
    """15090 answers GET (and HEAD) /stats/prometheus with the admin's exposition and 404 for
    every other path (the admin API's /config_dump etc. stay on 127.0.0.1:15000); it listens on
    0.0.0.0, so another pod scrapes it over the pod network (15090 is left out of the capture)."""
    pod = pod_lab.add_pod("solo")
    peer = pod_lab.add_pod("peer")
    pod.start_sidecar(config={"proxy": {"concurrency": 1}})

    def status(p, url, head=False):
        r = p.run(["curl", "-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}"] + (["-I"] if head else [])
                  + [url], check=False)
        return r.stdout.strip()
    base = "http://%s:15090" % pod.ip4
    assert status(peer, base + "/stats/prometheus") == "200"
    assert status(peer, base + "/stats/prometheus", head=True) == "200"
    for path in ("/stats", "/config_dump", "/", "/certs", "/ready"):
        assert status(peer, base + path) == "404", path
    r = peer.run(["curl", "-sS", "-m", "3", base + "/stats/prometheus"], check=True)
    names = {s.name for fam in prom_parser.text_string_to_metric_families(r.stdout) for s in fam.samples}
    assert "outrigger_listener_downstream_cx_total" in names
    assert "outrigger_istio_metrics_overflow_total" in names


def test_policy_change_closes_under_rbac(mesh):
    """An open connection that a new policy denies is reset (closeDeniedConnections, the
    default): its close is counted under response_flags "RBAC" while its open and its bytes
    stay under "-", as ztunnel records the close with the flag the connection ended with."""
    import json
    import signal
    m = mesh
    m.start()
    c = m.client.interactive(ECHO_VIP, PORT)
    try:
        assert c.connected, c.hello
        assert c.cmd("echo 2000") == "OK 2000"
        cfg = m.config()
        cfg["resources"].append(deny_client_policy())
        before = m.ssc.stats().get("server.config_reload_success", 0)
        with open(m.ssc.config_path, "w") as f:
            json.dump(cfg, f)
        m.ssc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: m.ssc.stats().get("server.config_reload_success", 0) > before, timeout=10,
                 what="the reload")
        wait_for(lambda: m.ssc.stats().get("listener.inbound.downstream_cx_authz_closed", 0) == 1, timeout=10,
                 what="the open connection reset")
    finally:
        c.close()
    wait_for(lambda: total(scrape(m.server)[0], "istio_tcp_connections_closed_total") == 1, timeout=10,
             what="closed")
    s, text = scrape(m.server)
    assert total(s, "istio_tcp_connections_closed_total", response_flags="RBAC") == 1, text
    assert total(s, "istio_tcp_connections_closed_total", response_flags="-") == 0
    assert total(s, "istio_tcp_connections_opened_total", response_flags="-") == 1
    assert total(s, "istio_tcp_connections_opened_total", response_flags="RBAC") == 0
    assert total(s, "istio_tcp_received_bytes_total", response_flags="-") == 2000
    assert total(s, "istio_tcp_sent_bytes_total", response_flags="-") == 2000


def test_hbone_inbound_reported(mesh):
    """A CONNECT on 15008 (python3-h2 client with the client's certificate, from a pod without a
    sidecar) to the echo app: reporter destination, source_principal the client's SPIFFE ID,
    source_workload the Workload at the HBONE peer's address, the echo service, mutual_tls,
    and the stream's bytes both ways."""
    import json
    m = mesh
    m.start(client=False)
    argv = ["/usr/bin/python3", H2CLIENT, "client", "--host", m.server.ip4,
            "--authority", "%s:%d" % (m.server.ip4, ECHO),
            "--ca", os.path.join(m.server_certs, "root-cert.pem"),
            "--certs", m.client_certs, "--size", "3000"]
    r = m.other.run(argv, check=False, timeout=40)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out.get("status") == 200 and out.get("echo_ok"), out
    wait_for(lambda: total(scrape(m.server)[0], "istio_tcp_connections_closed_total") == 1, timeout=10,
             what="the stream's connection closed")
    s, text = scrape(m.server)
    got = istio(s, "istio_tcp_connections_closed_total")
    assert len(got) == 1, text
    lab = got[0][0]
    assert lab["reporter"] == "destination" and lab["source_principal"] == ID_CLIENT
    assert lab["source_workload"] == "other" and lab["destination_workload"] == "server"
    assert lab["destination_service"] == "echo.%s.svc.cluster.local" % SERVER_NS
    assert lab["connection_security_policy"] == "mutual_tls" and lab["response_flags"] == "-"
    assert total(s, "istio_tcp_received_bytes_total") == 3000
    assert total(s, "istio_tcp_sent_bytes_total") == 3000


# --- connections refused before connecting, and destinations outside the mesh (review 12) ---

def _closed(pod, **match):
    return total(scrape(pod)[0], "istio_tcp_connections_closed_total", **match)


def test_no_healthy_upstream_counted_under_uh(mesh):
    """Outbound to a Service VIP with no endpoint: refused before any connect (UH); counted
    opened and closed under response_flags UH with the Service as destination_service, as an
    Envoy sidecar's stats report it (the refusal was missing from istio_tcp_*)."""
    m = mesh
    empty_vip = "198.19.0.13"
    extra = meshres.service("empty", [empty_vip], [(PORT, 9)], namespace=SERVER_NS)
    m.resources = (lambda base: lambda: base() + [extra])(m.resources)
    m.start()
    m.client.client(["echo-client", "--host", empty_vip, "--port", PORT, "--count", 1, "--timeout", 3])
    wait_for(lambda: _closed(m.client, response_flags="UH") == 1, timeout=10, what="the UH refusal counted")
    s, text = scrape(m.client)
    got = istio(s, "istio_tcp_connections_opened_total", response_flags="UH")
    assert len(got) == 1 and got[0][1] == 1, text
    assert got[0][0]["destination_service"] == "empty.%s.svc.cluster.local" % SERVER_NS, got


def test_blackhole_and_passthrough_destinations(pod_lab, outrigger_bin, init_bin):
    """REGISTRY_ONLY refuses an address the mesh does not know (NR): counted with
    destination_service and destination_service_name "BlackHoleCluster"; under ALLOW_ANY the
    same address is passed through: "PassthroughCluster" (the names an Istio sidecar reports,
    which the external-traffic dashboards select on), not "unknown"."""
    m = Mesh(pod_lab)
    pod = pod_lab.add_pod("outside")     # no Workload, no Service: outside the mesh
    pod.app(["echo", "--port", 9090])
    outside = pod.ip4
    for registry_only, name, flags in ((True, "BlackHoleCluster", "NR"), (False, "PassthroughCluster", "-")):
        cfg = meshres.config(m.resources(), registry_only=registry_only, proxy={"concurrency": 1})
        sc = m.client.start_sidecar(config=cfg, proxy_args=("--cert-dir", m.client_certs))
        m.client.client(["echo-client", "--host", outside, "--port", 9090, "--count", 1, "--timeout", 3])
        wait_for(lambda: _closed(m.client, destination_service=name) == 1, timeout=10,
                 what="the connection counted under %s" % name)
        s, text = scrape(m.client)
        got = istio(s, "istio_tcp_connections_closed_total", destination_service=name)
        assert got[0][0]["destination_service_name"] == name and got[0][0]["response_flags"] == flags, got
        assert not istio(s, "istio_tcp_connections_closed_total", destination_service="unknown"), text
        sc.stop()


def test_prometheus_port_on_ipv6(pod_lab, outrigger_bin, init_bin):
    """15090 answers on the pod's IPv6 address too (Istio's bootstrap listens on the wildcard and
    the additional IPv6 wildcard): Prometheus scrapes a dual-stack or IPv6 pod (it bound only
    0.0.0.0; found by the outsider review)."""
    pod = pod_lab.add_pod("solo6", ipv6=True)
    peer = pod_lab.add_pod("peer6", ipv6=True)
    pod.start_sidecar(config={"proxy": {"concurrency": 1}})
    for ip in (pod.ip4, "[%s]" % pod.ip6):
        r = peer.run(["curl", "-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}",
                      "http://%s:15090/stats/prometheus" % ip], check=False)
        assert r.stdout.strip() == "200", (ip, r.stdout, r.stderr)
