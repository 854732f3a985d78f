"""Issue 11, mixed deployments, the hbext part, end to end on the pod lab: plaintext from
ztunnel under PERMISSIVE / STRICT, and waypoints (mesh.useWaypoints).

Plaintext from ztunnel: when the WDS says NONE for our pod (an Outrigger sidecar that does not
advertise HBONE), an ambient pod's ztunnel sends plaintext TCP to podIP:port (reference
xds-hbone.md §3.6, "ztunnel -> sidecar pod"). The 15006 sniffing stage and PeerAuthentication
must treat it as Envoy sidecars do: PERMISSIVE passes it to the app, STRICT resets it and counts
it. The "ztunnel" is a lab pod holding the ambient source workload's IP (ztunnel spoofs the
source pod's address) that speaks plaintext, with curl and a raw socket.
"""
import json
import os
import subprocess

import pytest

import certs
import meshres
from lab import wait_for

PA = "type.googleapis.com/istio.security.v1beta1.PeerAuthentication"
NS = "shop"
SERVER_ID = certs.spiffe_id(NS, "server")


def pa(mode):
    return {"@type": PA, "mtls": {"mode": mode}}


class Mixed:
    def __init__(self, L):
        self.L = L
        self.ca = certs.CA(os.path.join(L.dir, "ca"))
        self.server_dir = os.path.join(L.dir, "server-certs")
        self.ca.issue(self.server_dir, SERVER_ID)
        for x in (L.dir, self.server_dir):
            os.chmod(x, 0o755)
        self.ztunnel = L.add_pod("ztunnel")
        self.server = L.add_pod("server")
        self.server.app(["http", "--port", 8080, "--name", "server"])

    def resources(self, mode):
        # Our own pod as the WDS sends it: tunnel protocol NONE (no HBONE advertised), so an
        # ambient source's ztunnel sends plaintext. The source: an ambient (HBONE) workload at
        # the "ztunnel" pod's address.
        return [pa(mode),
                meshres.workload("shop/server", "server", [self.server.ip4], namespace=NS,
                                 tunnelProtocol="NONE", serviceAccount="server"),
                meshres.workload("default/sleep", "sleep", [self.ztunnel.ip4],
                                 tunnelProtocol="HBONE", serviceAccount="sleep")]

    def start(self, mode):
        cfg = {"resources": self.resources(mode), "proxy": {"logLevel": "debug"}}
        env = {"POD_NAMESPACE": NS,
               "OUTRIGGER_POD_LABELS": os.path.join(self.L.dir, "no-such-labels-file")}
        self.sc = self.server.start_sidecar(config=cfg, proxy_args=("--cert-dir", self.server_dir), env=env)
        wait_for(lambda: self.sc.stats().get("server.cert_updates", 0) >= 1, timeout=10,
                 what="the sidecar's certificate loaded")
        return self.sc

    def stat(self, name):
        return self.sc.stats().get("listener.inbound." + name, 0)

    def plain(self):
        return self.ztunnel.curl("http://%s:8080/" % self.server.ip4)


@pytest.fixture
def mixed(pod_lab):
    return Mixed(pod_lab)


def test_plaintext_from_ztunnel_permissive_accepted(mixed):
    """PERMISSIVE: ztunnel's plaintext reaches the app, counted as plaintext, nothing refused."""
    m = mixed
    m.start("PERMISSIVE")
    code, body = m.plain()
    assert code == 200 and "hello from server" in body, (code, body)
    wait_for(lambda: m.stat("downstream_cx_plaintext") == 1, what="plaintext counted")
    assert m.stat("downstream_cx_plaintext_refused") == 0
    assert m.stat("downstream_cx_mtls") == 0


def test_plaintext_from_ztunnel_strict_refused(mixed):
    """STRICT: ztunnel's plaintext is reset before the app sees a byte, and counted; a second
    try the same; nothing is passed as plaintext."""
    m = mixed
    m.start("STRICT")
    for i in (1, 2):
        code, body = m.plain()
        assert code == 0 and "hello" not in body, (code, body)
        wait_for(lambda: m.stat("downstream_cx_plaintext_refused") == i, what="plaintext refused %d" % i)
    assert m.stat("downstream_cx_plaintext") == 0
    assert "STRICT" in m.sc.log()


# ------------------------------------------------------------------ waypoints (mesh.useWaypoints)

ID_SIDE = certs.spiffe_id("default", "side")
ID_WP = certs.spiffe_id("default", "waypoint")
ID_OTHER = certs.spiffe_id("default", "not-the-waypoint")
VIP, WP_VIP, PORT = "10.96.7.7", "10.96.7.8", 8082


class Waypointed:
    """A sidecar pod (ours), a destination pod (plaintext, its app answers "hello from dest")
    behind the Service reviews (VIP:8082), and a waypoint pod: the python3-h2 HBONE terminator
    (tests/lab/hbone_peers.py: TLS 1.3, client certificate required, one JSON line a stream with
    the client's SPIFFE ID and :authority) that accepts :authority VIP:8082 and connects there
    inside its own pod, where the VIP is on lo and an app answers "hello from waypoint"."""

    def __init__(self, L):
        self.L = L
        d = os.path.join(L.dir, "pki")
        ca = certs.CA(os.path.join(d, "ca"))
        self.certs = {n: ca.issue(os.path.join(d, n), i)
                      for n, i in (("side", ID_SIDE), ("wp", ID_WP), ("other", ID_OTHER))}
        for root, _, _ in os.walk(d):
            os.chmod(root, 0o755)
        os.chmod(L.dir, 0o755)
        self.side = L.add_pod("side")
        self.dest = L.add_pod("dest")
        self.wp = L.add_pod("wp")
        self.dest.app(["http", "--port", PORT, "--name", "dest"])
        self.wp.run(["ip", "addr", "add", VIP + "/32", "dev", "lo"])
        self.wp.app(["http", "--port", PORT, "--name", "waypoint"])
        self.log = None

    def terminator(self, cert):
        import hbone_peers
        import lab
        self.log = os.path.join(self.L.dir, "wp-terminator-%s.jsonl" % cert)
        open(self.log, "a").close()
        os.chmod(self.log, 0o666)
        p = self.wp.popen([lab.PYTHON, hbone_peers.HERE, "terminator", "--cert-dir", self.certs[cert],
                           "--port", "15008", "--log", self.log, "--pod-ip", self.wp.ip4, "--pod-ip", VIP,
                           "--max-seconds", "120"],
                          stdout=subprocess.PIPE, stderr=open(self.log + ".stderr", "wb"))
        line = lab.read_line(p.stdout, 10)
        assert line.startswith(b"READY"), line
        return p

    def streams(self):
        import hbone_peers
        return [r for r in hbone_peers.read_jsonl(self.log) if r.get("event") == "stream"]

    def resources(self, waypoint):
        wl = lambda pod, sa, **kw: meshres.workload("Kubernetes//Pod/default/" + pod.name, pod.name,
                                                    [pod.ip4], serviceAccount=sa, **kw)
        return [
            meshres.service("reviews", [VIP], [(PORT, PORT)], waypoint=waypoint),
            meshres.service("waypoint", [WP_VIP], [(15008, 15008)]),
            wl(self.dest, "dest", services={meshres.key("reviews"): [(PORT, PORT)]}),
            wl(self.wp, "waypoint", tunnelProtocol="HBONE",
               services={meshres.key("waypoint"): [(15008, 15008)]}),
            wl(self.side, "side", tunnelProtocol="HBONE"),
        ]

    def start(self, waypoint, use=True):
        cfg = {"resources": self.resources(waypoint), "proxy": {"logLevel": "debug"},
               "mesh": {"useWaypoints": use}}
        self.sc = self.side.start_sidecar(config=cfg, proxy_args=("--cert-dir", self.certs["side"]),
                                          env={"POD_NAMESPACE": "default"})
        wait_for(lambda: self.sc.stats().get("server.cert_updates", 0) >= 1, timeout=10,
                 what="the sidecar's certificate loaded")

    def stat(self, name):
        return self.sc.stats().get("listener.outbound." + name, 0)

    def call(self):
        return self.side.curl("http://%s:%d/" % (VIP, PORT), user="nobody")


BY_NAME = {"hostname": {"namespace": "default", "hostname": "waypoint.default.svc.cluster.local"},
           "hboneMtlsPort": 15008}


@pytest.fixture
def wpm(pod_lab):
    return Waypointed(pod_lab)


@pytest.mark.parametrize("how", ["hostname", "address"])
def test_waypoint_reached_over_hbone(wpm, how):
    """useWaypoints: a call to the service's VIP goes over HBONE to the waypoint pod's 15008
    (named by the waypoint Service's hostname, or by the waypoint pod's IP), :authority the
    original VIP:port, our SPIFFE ID presented; the destination pod is not called directly."""
    m = wpm
    m.terminator("wp")
    wp = BY_NAME if how == "hostname" else {"address": {"network": "", "address": meshres._b64(m.wp.ip4)}}
    m.start(wp)
    code, body = m.call()
    assert code == 200 and "hello from waypoint" in body, (code, body)
    recs = m.streams()
    assert recs and recs[-1]["authority"] == "%s:%d" % (VIP, PORT), recs
    assert recs[-1]["peer_id"] == ID_SIDE, recs
    assert m.stat("upstream_cx_waypoint") == 1
    assert m.stat("upstream_cx_hbone") == 1


def test_waypoint_identity_verified(wpm):
    """The waypoint pod presents a certificate of another identity than its workload's: the
    connection fails (never sent to it, nor around it to the destination)."""
    m = wpm
    m.terminator("other")
    m.start(BY_NAME)
    code, body = m.call()
    assert code == 0 and "hello" not in body, (code, body)
    wait_for(lambda: m.stat("upstream_cx_hbone_fail") >= 1, what="the HBONE connection failed")
    assert not m.streams()
    assert m.stat("upstream_cx_waypoint") == 1


def test_waypoint_off_by_default(wpm):
    """useWaypoints false (the default, as Istio sidecars): the destination pod directly."""
    m = wpm
    m.terminator("wp")
    m.start(BY_NAME, use=False)
    code, body = m.call()
    assert code == 200 and "hello from dest" in body, (code, body)
    assert m.stat("upstream_cx_waypoint") == 0 and not m.streams()


def test_waypoint_unknown_refused(wpm):
    """A waypoint the model does not know: refused and counted, never bypassed to the pod."""
    m = wpm
    m.start({"hostname": {"namespace": "default", "hostname": "gone.default.svc.cluster.local"}})
    code, body = m.call()
    assert code == 0 and "hello" not in body, (code, body)
    wait_for(lambda: m.stat("upstream_cx_waypoint_unknown") == 1, what="unknown waypoint counted")
