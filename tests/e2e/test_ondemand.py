"""On-demand workload discovery end-to-end (issue 10, "On-demand workload discovery"): the
client's sidecar runs with XDS_ON_DEMAND=true against a delta ADS server in its pod
(tests/lab/od_xds_server.py: python3-grpcio, the real Envoy discovery protos, istiod's
on-demand answers). Nothing about the mesh is in the sidecar's file: the service VIP
198.19.0.20 (which the lab does not DNAT) and the server pods are known only by asking.

    app(client pod) -> 198.19.0.20:80 --nat OUTPUT--> client outrigger :15001
        (unknown: waits) --subscribe "/198.19.0.20"--> od_xds_server (127.0.0.1, client pod)
        <-- Service echo + Workload server-a --  the snapshot, then the connection resumes
        -> server-a:8080
"""
import json
import os
import time

import pytest

import lab
from lab import wait_for

VIP = "198.19.0.20"
PORT = 8080
HOST = "echo.default.svc.cluster.local"


def _who(body):
    assert body.startswith("hello from "), body
    return body.split()[2]


class OdServer:
    """od_xds_server.py in pod `pod`, on 127.0.0.1 (not captured: loopback)."""

    def __init__(self, pod, mesh=None, generate=None):
        self.pod = pod
        self.dir = os.path.join(pod.lab.dir, "odxds-%s" % pod.name)
        os.makedirs(self.dir, exist_ok=True)
        argv = [lab.PYTHON, os.path.join(lab.HERE, "od_xds_server.py"), "--dir", self.dir,
                "--listen", "127.0.0.1:0"]
        if generate:
            argv += ["--generate", str(generate[0]), str(generate[1])]
        else:
            path = os.path.join(self.dir, "mesh.json")
            with open(path, "w") as f:
                json.dump(mesh, f)
            argv += ["--mesh", path]
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = pod.popen(argv, user="root", stdout=self.log, stderr=self.log)
        wait_for(lambda: os.path.exists(os.path.join(self.dir, "port")) or self.proc.poll() is not None,
                 timeout=120, what="the on-demand xDS server listening")
        assert self.proc.poll() is None, open(self.log.name).read()
        with open(os.path.join(self.dir, "port")) as f:
            self.port = int(f.read())

    def control(self, **ctl):
        with open(os.path.join(self.dir, "control.json.tmp"), "w") as f:
            json.dump(ctl, f)
        os.rename(os.path.join(self.dir, "control.json.tmp"), os.path.join(self.dir, "control.json"))

    def requests(self, type_="Address"):
        try:
            with open(os.path.join(self.dir, "requests.jsonl")) as f:
                rs = [json.loads(line) for line in f if line.strip()]
        except OSError:
            return []
        return [r for r in rs if r["type"] == type_]

    def subscribed(self):
        """Every name subscribed, in order (lookups and what they brought)."""
        return [n for r in self.requests() for n in r["sub"] if n != "*"]

    def lookups(self):
        """The "<network>/<ip>" names subscribed (network "" here)."""
        return [n for n in self.subscribed() if n.startswith("/")]

    def unsubscribed(self):
        return [n for r in self.requests() for n in r["unsub"] if n != "*"]


def _mesh(pods):
    return {
        "services": [{"name": "echo", "namespace": "default", "hostname": HOST, "vip": VIP,
                      "ports": [[80, PORT]]}],
        "workloads": [{"uid": "Kubernetes//Pod/default/" + p.name, "name": p.name, "namespace": "default",
                       "ip": p.ip4, "services": {"default/" + HOST: [[80, PORT]]}} for p in pods],
    }


def _start(L, n_servers=2, xds=None, registry_only=False, concurrency=2):
    pods = []
    for i in range(n_servers):
        p = L.add_pod("server-%s" % "ab"[i])
        p.app(["http", "--port", PORT, "--name", p.name])
        pods.append(p)
    c = L.add_pod("client")
    srv = OdServer(c, _mesh(pods))
    cfg = {"xds": dict({"onDemandTimeout": "2s"}, **(xds or {})), "proxy": {"concurrency": concurrency}}
    if registry_only:
        cfg["mesh"] = {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}
    sc = c.start_sidecar(config=cfg, env={"XDS_ADDRESS": "http://127.0.0.1:%d" % srv.port,
                                          "XDS_ON_DEMAND": "true"})
    return pods, c, srv, sc


def test_first_connection_waits_for_one_lookup(pod_lab, outrigger_bin, init_bin):
    """The first connection to the VIP waits for one lookup of "/198.19.0.20" and reaches
    the endpoint the answer brought (the VIP is reachable through nothing else); the next
    one is known and does not wait."""
    pods, c, srv, sc = _start(pod_lab)
    assert sc.stats()["server.ondemand_cached"] == 0
    assert srv.subscribed() == []
    code, body = c.curl("http://%s/" % VIP, user="nobody")
    assert code == 200, body
    assert _who(body) in ("server-a", "server-b")
    assert srv.lookups() == ["/" + VIP]
    # What the VIP brought (the Service, its endpoints) is subscribed by name, as istiod
    # merged it into the subscription.
    assert set(srv.subscribed()) == {"/" + VIP, "default/" + HOST, "Kubernetes//Pod/default/server-a",
                                     "Kubernetes//Pod/default/server-b"}
    st = sc.stats()
    assert st["server.ondemand_lookups"] == 1
    assert st["server.ondemand_waits"] == 1
    assert st["server.ondemand_cached"] == 1
    assert st["listener.outbound.downstream_cx_no_route"] == 0
    for _ in range(3):
        code, body = c.curl("http://%s/" % VIP, user="nobody")
        assert code == 200, body
    st = sc.stats()
    assert st["server.ondemand_lookups"] == 1
    assert st["server.ondemand_waits"] == 1
    assert srv.lookups() == ["/" + VIP]


def test_concurrent_connections_share_one_subscribe(pod_lab, outrigger_bin, init_bin):
    """20 connections at once to a pod address nobody asked for yet (on two workers): one
    subscription, one lookup; every connection succeeds."""
    pods, c, srv, sc = _start(pod_lab, concurrency=2)
    ip = pods[1].ip4
    r = c.run(["sh", "-c", "for i in $(seq 20); do curl -s -m 10 -o /dev/null -w '%%{http_code}\\n' "
               "http://%s:%d/ & done; wait" % (ip, PORT)], user="nobody", timeout=30)
    codes = r.stdout.split()
    assert codes == ["200"] * 20, r.stdout
    assert srv.lookups() == ["/" + ip]
    st = sc.stats()
    assert st["server.ondemand_lookups"] == 1
    assert 1 <= st["server.ondemand_waits"] <= 20


def test_unknown_times_out_allow_any(pod_lab, outrigger_bin, init_bin):
    """A lookup the server never answers: after xds.onDemandTimeout (1 s) the connection
    follows ALLOW_ANY to the original destination; counted once. An address the server
    answers "not there" (removed_resources) passes at once, counted as not found, and
    within the negative cache the next connection does not ask again."""
    other = pod_lab.add_pod("other")
    other.app(["http", "--port", PORT, "--name", "other"])
    stranger = pod_lab.add_pod("stranger")
    stranger.app(["http", "--port", PORT, "--name", "stranger"])
    pods, c, srv, sc = _start(pod_lab, n_servers=1, xds={"onDemandTimeout": "1s"})
    srv.control(silent=[other.ip4])
    t0 = time.monotonic()
    code, body = c.curl("http://%s:%d/" % (other.ip4, PORT), user="nobody")
    took = time.monotonic() - t0
    assert code == 200 and _who(body) == "other", body
    assert took >= 0.9, took
    wait_for(lambda: sc.stats()["server.ondemand_timeouts"] == 1, timeout=5, what="the timeout counted")

    t0 = time.monotonic()
    code, body = c.curl("http://%s:%d/" % (stranger.ip4, PORT), user="nobody")
    assert code == 200 and _who(body) == "stranger", body
    assert time.monotonic() - t0 < 0.9
    st = sc.stats()
    assert st["server.ondemand_not_found"] == 1
    code, body = c.curl("http://%s:%d/" % (stranger.ip4, PORT), user="nobody")
    assert code == 200
    assert srv.lookups().count("/" + stranger.ip4) == 1


def test_unknown_times_out_registry_only(pod_lab, outrigger_bin, init_bin):
    """REGISTRY_ONLY: an unanswered lookup ends in a reset after the timeout (no_route
    counted); the looked-up workload still works."""
    other = pod_lab.add_pod("other")
    other.app(["http", "--port", PORT, "--name", "other"])
    pods, c, srv, sc = _start(pod_lab, n_servers=1, xds={"onDemandTimeout": "1s"}, registry_only=True)
    srv.control(silent=[other.ip4])
    r = c.run(["curl", "-sS", "-m", "5", "http://%s:%d/" % (other.ip4, PORT)], user="nobody", check=False)
    assert r.returncode != 0 and not r.stdout, r
    st = sc.stats()
    assert st["listener.outbound.downstream_cx_no_route"] == 1
    code, body = c.curl("http://%s:%d/" % (pods[0].ip4, PORT), user="nobody")
    assert code == 200 and _who(body) == "server-a", body


def test_idle_expiry_unsubscribes(pod_lab, outrigger_bin, init_bin):
    """xds.onDemandIdle 1 s: an address no connection used for that long is unsubscribed
    (the server sees resource_names_unsubscribe, with the resource's own name) and dropped:
    the next connection looks it up again."""
    pods, c, srv, sc = _start(pod_lab, n_servers=1, xds={"onDemandIdle": "1s"})
    ip = pods[0].ip4
    code, _ = c.curl("http://%s:%d/" % (ip, PORT), user="nobody")
    assert code == 200
    assert sc.stats()["server.ondemand_cached"] == 1
    wait_for(lambda: "/" + ip in srv.unsubscribed(), timeout=6, what="the unsubscribe")
    assert "Kubernetes//Pod/default/server-a" in srv.unsubscribed()
    st = sc.stats()
    assert st["server.ondemand_evictions"] == 1
    assert st["server.ondemand_cached"] == 0
    code, _ = c.curl("http://%s:%d/" % (ip, PORT), user="nobody")
    assert code == 200
    assert srv.lookups().count("/" + ip) == 2
    assert sc.stats()["server.ondemand_lookups"] == 2


def test_cache_bound_evicts(pod_lab, outrigger_bin, init_bin):
    """xds.onDemandCacheSize 1: looking up a second address unsubscribes the first."""
    pods, c, srv, sc = _start(pod_lab, n_servers=2, xds={"onDemandCacheSize": 1})
    a, b = pods[0].ip4, pods[1].ip4
    assert c.curl("http://%s:%d/" % (a, PORT), user="nobody")[0] == 200
    assert c.curl("http://%s:%d/" % (b, PORT), user="nobody")[0] == 200
    wait_for(lambda: "/" + a in srv.unsubscribed(), timeout=5, what="the first address evicted")
    assert "/" + b not in srv.unsubscribed()
    st = sc.stats()
    assert st["server.ondemand_evictions"] == 1
    assert st["server.ondemand_cached"] == 1
