"""Issue 11, mixed deployments, the hbext part, end to end on the pod lab.

Plaintext from ztunnel: when the WDS says NONE for our pod (an Outrigger sidecar that does not
advertise HBONE), an ambient pod's ztunnel sends plaintext TCP to podIP:port (reference
xds-hbone.md §3.6, "ztunnel -> sidecar pod"). The 15006 sniffing stage and PeerAuthentication
must treat it as Envoy sidecars do: PERMISSIVE passes it to the app, STRICT resets it and counts
it. The "ztunnel" is a lab pod holding the ambient source workload's IP (ztunnel spoofs the
source pod's address) that speaks plaintext, with curl and a raw socket.
"""
import json
import os

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
