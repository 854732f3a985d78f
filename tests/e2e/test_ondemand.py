"""On-demand workload discovery end-to-end (issue 10, "On-demand workload discovery"): the
client's sidecar runs with XDS_ON_DEMAND=true against the test control plane
(tests/lab/xds_server.py: python3-grpcio, the real Envoy discovery protos, istiod's on-demand
answers: an alias resolves to its Workload or Service, a VIP brings the Workloads that list
it, what was sent joins the watch, an unknown name comes back in removed_resources),
listening on 127.0.0.1 inside the client pod. Nothing about the mesh is in the sidecar's
file: the service VIP 198.19.0.20 (which the lab does not DNAT) and the server pods are
known only by asking.

    app(client pod) -> 198.19.0.20:80 --nat OUTPUT--> client outrigger :15001
        (unknown: waits) --subscribe "/198.19.0.20"--> xds_server (127.0.0.1, client pod)
        <-- Service echo + Workloads --  the snapshot, then the connection resumes
        -> server-a or server-b :8080
"""
import os
import time

import pytest

import meshres
import xds_server as X
from lab import wait_for

VIP = "198.19.0.20"
PORT = 8080
HOST = "echo.default.svc.cluster.local"
SVC = meshres.key("echo")


def _who(body):
    assert body.startswith("hello from "), body
    return body.split()[2]


def _uid(p):
    return "Kubernetes//Pod/default/" + p.name


class Cp:
    """xds_server.XdsServer in the client pod's network namespace, and what it was asked."""

    def __init__(self, pod, pods, others=()):
        try:
            self.s = X.XdsServer(netns=pod.netns)
            self.s.start()
        except RuntimeError as e:
            pytest.fail("the test control plane cannot start (%s): run packaging/install-deps.sh" % e)
        items = [(X.ADDRESS, meshres.service("echo", [VIP], [(80, PORT)]))]
        items += [(X.ADDRESS, meshres.workload(_uid(p), p.name, [p.ip4], {SVC: [(80, PORT)]})) for p in pods]
        items += [(X.ADDRESS, meshres.workload(_uid(p), p.name, [p.ip4])) for p in others]
        self.s.set_many(items)

    def stop(self):
        self.s.stop()

    def _reqs(self):
        return self.s.requests(X.ADDRESS)

    def subscribed(self):
        """Every name subscribed, in order (lookups and what they brought)."""
        return [n for r in self._reqs() for n in r["subscribe"] if n != "*"]

    def lookups(self):
        """The "<network>/<ip>" names subscribed (network "" here)."""
        return [n for n in self.subscribed() if n.startswith("/")]

    def unsubscribed(self):
        return [n for r in self._reqs() for n in r["unsubscribe"] if n != "*"]


def _start(L, n_servers=2, xds=None, registry_only=False, concurrency=2, others=()):
    pods = []
    for i in range(n_servers):
        p = L.add_pod("server-%s" % "ab"[i])
        p.app(["http", "--port", PORT, "--name", p.name])
        pods.append(p)
    c = L.add_pod("client")
    cp = Cp(c, pods, others)
    L.cp = cp
    cfg = {"xds": dict({"onDemandTimeout": "2s"}, **(xds or {})), "proxy": {"concurrency": concurrency}}
    if registry_only:
        cfg["mesh"] = {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}
    sc = c.start_sidecar(config=cfg, env={"XDS_ADDRESS": "http://127.0.0.1:%d" % cp.s.port,
                                          "XDS_ON_DEMAND": "true"})
    return pods, c, cp, sc


@pytest.fixture
def lab_cp(pod_lab, outrigger_bin, init_bin):
    """The pod lab; the control plane a test starts (_start) is stopped after it."""
    pod_lab.cp = None
    yield pod_lab
    if pod_lab.cp:
        pod_lab.cp.stop()


def test_first_connection_waits_for_one_lookup(lab_cp):
    """The first connection to the VIP waits for one lookup of "/198.19.0.20" and reaches
    the endpoint the answer brought (the VIP is reachable through nothing else); the next
    one is known and does not wait."""
    pods, c, cp, sc = _start(lab_cp)
    assert sc.stats()["server.ondemand_cached"] == 0
    assert cp.subscribed() == []    # on demand: the first Address request asks for nothing
    code, body = c.curl("http://%s/" % VIP, user="nobody")
    assert code == 200, body
    assert _who(body) in ("server-a", "server-b")
    assert cp.lookups() == ["/" + VIP]
    # What the VIP brought (the Service, its endpoints) is subscribed by name, as istiod
    # merged it into the subscription.
    assert set(cp.subscribed()) == {"/" + VIP, SVC, _uid(pods[0]), _uid(pods[1])}
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
    assert cp.lookups() == ["/" + VIP]


def test_concurrent_connections_share_one_subscribe(lab_cp):
    """20 connections at once to a pod address nobody asked for yet (on two workers): one
    subscription, one lookup; every connection succeeds."""
    pods, c, cp, sc = _start(lab_cp, concurrency=2)
    ip = pods[1].ip4
    r = c.run(["sh", "-c", "for i in $(seq 20); do curl -s -m 10 -o /dev/null -w '%%{http_code}\\n' "
               "http://%s:%d/ & done; wait" % (ip, PORT)], user="nobody", timeout=30)
    codes = r.stdout.split()
    assert codes == ["200"] * 20, r.stdout
    assert cp.lookups() == ["/" + ip]
    st = sc.stats()
    assert st["server.ondemand_lookups"] == 1
    assert 1 <= st["server.ondemand_waits"] <= 20


def test_unknown_times_out_allow_any(lab_cp):
    """A lookup the server does not answer (stalled): after xds.onDemandTimeout (1 s) the
    connection follows ALLOW_ANY to the original destination; counted once. An address
    the server answers "not there" (removed_resources) passes at once, counted as not
    found, and within the negative cache the next connection does not ask again."""
    stranger = lab_cp.add_pod("stranger")
    stranger.app(["http", "--port", PORT, "--name", "stranger"])
    pods, c, cp, sc = _start(lab_cp, n_servers=1, xds={"onDemandTimeout": "1s"})
    cp.s.stall()
    t0 = time.monotonic()
    code, body = c.curl("http://%s:%d/" % (pods[0].ip4, PORT), user="nobody")
    took = time.monotonic() - t0
    assert code == 200 and _who(body) == "server-a", body
    assert took >= 0.9, took
    wait_for(lambda: sc.stats()["server.ondemand_timeouts"] == 1, timeout=5, what="the timeout counted")
    assert sc.stats()["listener.outbound.downstream_cx_no_route"] == 0
    cp.s.unstall()

    t0 = time.monotonic()
    code, body = c.curl("http://%s:%d/" % (stranger.ip4, PORT), user="nobody")
    assert code == 200 and _who(body) == "stranger", body
    assert time.monotonic() - t0 < 0.9
    st = sc.stats()
    assert st["server.ondemand_not_found"] == 1
    code, body = c.curl("http://%s:%d/" % (stranger.ip4, PORT), user="nobody")
    assert code == 200
    assert cp.lookups().count("/" + stranger.ip4) == 1


def test_unknown_times_out_registry_only(lab_cp):
    """REGISTRY_ONLY: an unanswered lookup ends in a reset after the timeout (no_route
    counted); once the server answers again, the looked-up workload works."""
    pods, c, cp, sc = _start(lab_cp, n_servers=2, xds={"onDemandTimeout": "1s"}, registry_only=True)
    cp.s.stall()
    r = c.run(["curl", "-sS", "-m", "5", "http://%s:%d/" % (pods[1].ip4, PORT)], user="nobody", check=False)
    assert r.returncode != 0 and not r.stdout, r
    st = sc.stats()
    assert st["listener.outbound.downstream_cx_no_route"] == 1
    assert st["server.ondemand_timeouts"] == 1
    cp.s.unstall()
    code, body = c.curl("http://%s:%d/" % (pods[0].ip4, PORT), user="nobody")
    assert code == 200 and _who(body) == "server-a", body


def test_idle_expiry_unsubscribes(lab_cp):
    """xds.onDemandIdle 1 s: an address no connection used for that long is unsubscribed
    (the server sees resource_names_unsubscribe, with the resource's own name) and dropped:
    the next connection looks it up again."""
    pods, c, cp, sc = _start(lab_cp, n_servers=1, xds={"onDemandIdle": "1s"})
    ip = pods[0].ip4
    code, _ = c.curl("http://%s:%d/" % (ip, PORT), user="nobody")
    assert code == 200
    assert sc.stats()["server.ondemand_cached"] == 1
    wait_for(lambda: "/" + ip in cp.unsubscribed(), timeout=6, what="the unsubscribe")
    assert _uid(pods[0]) in cp.unsubscribed()
    st = sc.stats()
    assert st["server.ondemand_evictions"] == 1
    assert st["server.ondemand_cached"] == 0
    code, _ = c.curl("http://%s:%d/" % (ip, PORT), user="nobody")
    assert code == 200
    assert cp.lookups().count("/" + ip) == 2
    assert sc.stats()["server.ondemand_lookups"] == 2


def test_idle_expiry_unsubscribes_what_the_server_added(lab_cp):
    """istiod grows an on-demand subscription itself: a Workload that joins a subscribed
    Service later is pushed without being asked for, and joins the watch
    (pilot/pkg/xds/workload.go: AdditionalPodSubscriptions, w.ResourceNames merged). When
    the Service is evicted that Workload must be unsubscribed too, though the client never
    subscribed it, or istiod pushes it for ever and the cache's bound means nothing."""
    pods, c, cp, sc = _start(lab_cp, n_servers=1, xds={"onDemandIdle": "1s"})
    code, body = c.curl("http://%s/" % VIP, user="nobody")
    assert code == 200, body
    late = lab_cp.add_pod("server-late")
    n = len(cp.s.acks(X.ADDRESS))
    cp.s.push_entries(X.ADDRESS, [X.make_entry(X.ADDRESS, meshres.workload(
        _uid(late), late.name, [late.ip4], {SVC: [(80, PORT)]}))])
    wait_for(lambda: len(cp.s.acks(X.ADDRESS)) > n, timeout=5, what="the pushed Workload ACKed")
    wait_for(lambda: "/" + VIP in cp.unsubscribed(), timeout=6, what="the unsubscribe")
    gone = cp.unsubscribed()
    assert SVC in gone and _uid(pods[0]) in gone
    assert _uid(late) in gone, gone
    assert sc.stats()["server.ondemand_cached"] == 0


def test_state_file_addresses_not_subscribed_for_ever(lab_cp):
    """On demand with xds.stateFile: a restart holds the Addresses the last run looked up,
    but no cache entry does. They are not told to the server as initial_resource_versions
    (istiod subscribes a client to every name it lists there, pilot/pkg/xds/delta.go, and
    nothing would ever unsubscribe them: every restart would add a cache's worth), and at
    the server's first answer they are dropped: the next connection looks its address up."""
    d = os.path.join(lab_cp.dir, "odstate")
    os.makedirs(d)
    os.chmod(d, 0o777)
    xds = {"stateFile": os.path.join(d, "state.pb")}
    pods, c, cp, sc = _start(lab_cp, n_servers=1, xds=xds)
    assert c.curl("http://%s/" % VIP, user="nobody")[0] == 200
    assert sc.stop() == 0
    mark = cp.s.mark()
    sc = c.start_sidecar(config={"xds": dict({"onDemandTimeout": "2s"}, **xds),
                                 "proxy": {"concurrency": 2}}, run_init=False,
                         env={"XDS_ADDRESS": "http://127.0.0.1:%d" % cp.s.port, "XDS_ON_DEMAND": "true"})
    wait_for(lambda: cp.s.acks(X.ADDRESS, since=mark), timeout=10, what="the first Address ACK")
    first = cp.s.requests(X.ADDRESS, since=mark)[0]
    assert first["initial_resource_versions"] == {}, first
    assert c.curl("http://%s/" % VIP, user="nobody")[0] == 200
    assert sc.stats()["server.ondemand_lookups"] == 1
    assert [r for r in cp.s.requests(X.ADDRESS, since=mark) if "/" + VIP in r["subscribe"]]


def test_idle_expiry_unsubscribes_what_a_removed_service_brought(lab_cp):
    """A VIP's lookup brought its Service and the Service's Workloads (subscribed with it).
    The Service is removed; the Workloads stay in the mesh. When the entry expires, the
    model no longer says what the VIP brought, but the Workloads must be unsubscribed all
    the same, or istiod pushes them for ever."""
    pods, c, cp, sc = _start(lab_cp, n_servers=1, xds={"onDemandIdle": "1s"})
    code, body = c.curl("http://%s/" % VIP, user="nobody")
    assert code == 200, body
    n = len(cp.s.acks(X.ADDRESS))
    cp.s.remove(X.ADDRESS, SVC)
    wait_for(lambda: len(cp.s.acks(X.ADDRESS)) > n, timeout=5, what="the removal ACKed")
    wait_for(lambda: "/" + VIP in cp.unsubscribed(), timeout=6, what="the unsubscribe")
    gone = cp.unsubscribed()
    assert _uid(pods[0]) in gone, gone
    assert sc.stats()["server.ondemand_cached"] == 0


def test_cache_bound_evicts(lab_cp):
    """xds.onDemandCacheSize 1: looking up a second address unsubscribes the first."""
    pods, c, cp, sc = _start(lab_cp, n_servers=2, xds={"onDemandCacheSize": 1})
    a, b = pods[0].ip4, pods[1].ip4
    assert c.curl("http://%s:%d/" % (a, PORT), user="nobody")[0] == 200
    assert c.curl("http://%s:%d/" % (b, PORT), user="nobody")[0] == 200
    wait_for(lambda: "/" + a in cp.unsubscribed(), timeout=5, what="the first address evicted")
    assert "/" + b not in cp.unsubscribed()
    st = sc.stats()
    assert st["server.ondemand_evictions"] == 1
    assert st["server.ondemand_cached"] == 1
