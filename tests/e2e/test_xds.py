"""The xDS client end to end (issue 10): the real binary against tests/lab/xds_server.py (the
test control plane: python3-grpcio, the REAL Envoy API protos of @grpc/grpc-js-xds, the Istio
messages from ztunnel's field table): delta and state of the world, ACK and NACK (a bad
resource among good ones), EDS following the Clusters, removal, a server restart answered with
initial_resource_versions, the token, clusterid and XDS_HEADER_* metadata, readiness, a
garbage response, an unknown type, an oversized message, a server that never answers, TLS with
XDS_ROOT_CA and a refused server name, SIGHUP, on-demand's first request, and the state file:
a restart with the control plane down serves from it, also for traffic in the pod lab.

The proxies here run on loopback with free ports (no capture) except the last test; what they
hold is read from /config_dump ("xds" and "resources") and /stats, what they sent from the
server's record. (The cplane branch's tests/e2e/test_xds_lab.py proves the server itself.)
"""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import certs
import envoy_protos
import meshres
import xds_server as X
from lab import wait_for

TOKEN = "tok-%d" % os.getpid()
CLUSTER = "envoy.config.cluster.v3.Cluster"
CLA = "envoy.config.endpoint.v3.ClusterLoadAssignment"
ADDRESS = "istio.workload.Address"


def cluster(name):
    return {"name": name, "type": "EDS", "edsClusterConfig": {"serviceName": name}, "connectTimeout": "1s"}


def cla(name, ip="10.1.1.1"):
    return {"clusterName": name, "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {
        "socketAddress": {"address": ip, "portValue": 80}}}}]}]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    def __init__(self, binary, d, xds_address, env=None, cfg=None):
        self.dir = d
        self.admin, self.health = free_port(), free_port()
        conf = {"proxy": {"proxyListenPort": free_port(), "proxyInboundListenPort": free_port(),
                          "proxyAdminPort": self.admin, "healthPort": self.health, "concurrency": 1,
                          # Several proxies share this (root) namespace: no fixed 15090 or 15020.
                          "prometheusPort": 0, "statusPort": 0,
                          "terminationDrainDuration": "0s"},
                "identity": {"tokenFile": os.path.join(d, "token")}}
        for k, v in (cfg or {}).items():
            conf.setdefault(k, {}).update(v)
        self.cfg = os.path.join(d, "outrigger.json")
        with open(self.cfg, "w") as f:
            json.dump(conf, f)
        e = {k: v for k, v in os.environ.items() if not k.startswith(("XDS_", "ISTIO_", "PROXY_CONFIG"))}
        e.update({"XDS_ADDRESS": xds_address, "POD_NAME": "client-1", "POD_NAMESPACE": "demo",
                  "INSTANCE_IP": "10.0.0.5"})
        e.update(env or {})
        self.env, self.binary = e, binary
        self.proc = None
        self.logpath = os.path.join(d, "outrigger.log")

    def start(self):
        self.log = open(self.logpath, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", self.cfg], env=self.env, stdout=self.log,
                                     stderr=self.log)
        wait_for(lambda: self._get("/ready", self.admin) is not None or self.proc.poll() is not None,
                 timeout=15, what="the admin port")
        assert self.proc.poll() is None, self.logtext()
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
        rc = self.proc.returncode if self.proc else 0
        self.proc = None
        return rc

    def logtext(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def _get(self, path, port):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return None

    def ready(self):
        return self._get("/healthz/ready", self.health)

    def dump(self):
        return json.loads(self._get("/config_dump", self.admin)[1])

    def stats(self):
        out = {}
        for line in self._get("/stats", self.admin)[1].splitlines():
            k, _, v = line.partition(": ")
            out[k] = v
        return out

    def names(self, type_name):
        return sorted(r["name"] for r in self.dump()["resources"][type_name])

    def xtype(self, type_name):
        return self.dump()["xds"]["types"][type_name]


CLUSTER_T, CLA_T, ADDRESS_T = X.CLUSTER, X.ENDPOINT, X.ADDRESS


@pytest.fixture
def env(tmp_path, outrigger_bin):
    if envoy_protos.envoy_deps() is None:
        pytest.fail("the Envoy protos of @grpc/grpc-js-xds are missing: run packaging/install-deps.sh")
    d = str(tmp_path)
    with open(os.path.join(d, "token"), "w") as f:
        f.write(TOKEN + "\n")
    made = []

    class E:
        pass

    e = E()
    e.dir = d

    def cp(**kw):
        s = X.XdsServer(**kw)
        s.start()
        made.append(s)
        return s

    def proxy(address, **kw):
        p = Proxy(outrigger_bin, d, address, **kw).start()
        made.append(p)
        return p

    e.cp, e.proxy = cp, proxy
    yield e
    for m in reversed(made):
        m.stop()


def serve_mesh(cp):
    cp.set_many([(CLUSTER_T, cluster("c1")), (CLUSTER_T, cluster("c2")), (CLA_T, cla("c1")), (CLA_T, cla("c2"))])


@pytest.mark.parametrize("sotw", [False, True], ids=["delta", "sotw"])
def test_ack_nack_eds_headers(env, sotw):
    """Good clusters applied and ACKed, their ClusterLoadAssignments subscribed by name; a bad
    cluster among good ones NACKed by name while the good one applies; metadata and node."""
    cp = env.cp()
    serve_mesh(cp)
    p = env.proxy(cp.address, env={"XDS_SOTW": "true" if sotw else "false", "CLUSTER_ID": "east",
                                   "XDS_HEADER_X_REVISION": "canary"})
    wait_for(lambda: p.ready()[0] == 200, timeout=15, what="ready after the first responses")
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], what="the ClusterLoadAssignments")
    assert p.names(CLUSTER) == ["c1", "c2"]
    assert p.xtype(CLA)["subscription"] == ["c1", "c2"]
    md = cp.metadata()[0]
    assert md.get("authorization") == "Bearer " + TOKEN
    assert md.get("clusterid") == "east"
    assert md.get("x_revision") == "canary"
    # The node on the stream's first request only; CDS asked first (istiod's push order).
    reqs = cp.requests(stream=cp.requests()[0]["stream"])
    assert reqs[0]["type_url"] == CLUSTER_T
    assert reqs[0]["node"]["id"] == "sidecar~10.0.0.5~client-1.demo~demo.svc.cluster.local"
    assert reqs[0]["node"]["metadata"]["NAMESPACE"] == "demo"
    assert all(r["node"] is None for r in reqs[1:])
    # A bad cluster beside a good one: NACKed naming it, the good one applied.
    mark = cp.mark()
    nonces = cp.push_bad(CLUSTER_T, name="c3", good=[(CLUSTER_T, cluster("c4"))])
    nack = cp.wait_nack(nonce=nonces[0], since=mark)
    # Delta names the resource; a SotW resource is a bare Any: its place names it (after the
    # full state c1, c2, c4: xds_server sends a SotW response whole).
    assert ("resources[3]" if sotw else "c3") in nack["error_detail"]["message"], nack
    assert nack["error_detail"]["code"] == 3  # INVALID_ARGUMENT (HACKING.md)
    wait_for(lambda: "c4" in p.names(CLUSTER), what="the good cluster")
    assert "c3" not in p.names(CLUSTER)
    x = p.xtype(CLUSTER)
    assert x["nacks"] >= 1 and x["lastNack"]["error"] == nack["error_detail"]["message"]
    st = p.stats()
    assert int(st["server.xds_nacks"]) >= 1 and int(st["server.xds_acks"]) >= 4
    assert st["server.xds_connected"] == "1"
    if sotw:
        # An ACK carries the version it answers, the NACK the previous good one.
        acked = [r for r in cp.acks(CLUSTER_T) if r["seq"] < nack["seq"]]
        assert acked and nack["version_info"] == acked[-1]["version_info"] != ""


def test_removal_and_reconnect(env):
    """A removed resource goes (and the endpoints it named are unsubscribed and dropped); a
    server restart: the new stream asks with initial_resource_versions of what the proxy holds,
    and the last good state serves meanwhile."""
    cp = env.cp()
    serve_mesh(cp)
    p = env.proxy(cp.address)
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=15, what="the mesh")
    cp.remove(CLUSTER_T, "c2")
    wait_for(lambda: p.names(CLUSTER) == ["c1"], what="c2 removed")
    wait_for(lambda: p.xtype(CLA)["subscription"] == ["c1"], what="c2's endpoints unsubscribed")
    assert [r for r in cp.requests(CLA_T) if "c2" in r["unsubscribe"]]
    assert p.names(CLA) == ["c1"]
    versions = {t: {n: e.version for n, e in cp.resources(t).items()} for t in (CLUSTER_T, CLA_T)}
    cp.stop()
    wait_for(lambda: p.dump()["xds"]["connected"] is False, what="the stream down")
    assert p.names(CLUSTER) == ["c1"]
    mark = cp.mark()
    cp.start()
    first = cp.wait_request(type_url=CLUSTER_T, since=mark, timeout=20)
    assert first["initial_resource_versions"] == {"c1": versions[CLUSTER_T]["c1"]}
    e = cp.wait_request(type_url=CLA_T, since=mark)
    assert e["subscribe"] == ["c1"]
    assert e["initial_resource_versions"] == {"c1": versions[CLA_T]["c1"]}
    wait_for(lambda: p.dump()["xds"]["connected"], what="connected again")
    assert int(p.stats()["server.xds_reconnects"]) >= 1


def test_readiness_waits_and_server_never_answers(env):
    """A server that takes the stream and never answers: not ready, the body names what it
    waits for; nothing crashes; xds.readyTimeout ends the wait."""
    cp = env.cp()
    cp.stall()
    p = env.proxy(cp.address, cfg={"xds": {"readyTimeout": "3s"}})
    cp.wait_request(type_url=CLUSTER_T)
    code, body = p.ready()
    assert code == 503 and "envoy.config.cluster.v3.Cluster" in body, (code, body)
    wait_for(lambda: p.ready()[0] == 200, timeout=10, what="ready at xds.readyTimeout")
    assert p.proc.poll() is None
    cp.unstall()


def test_garbage_cut_and_oversized(env):
    """A response that is no DiscoveryResponse ends the stream (no nonce to NACK), counted; one
    cut mid-message and one above xds.maxMessage too (RESOURCE_EXHAUSTED); the proxy
    reconnects each time and the last good state serves."""
    cp = env.cp()
    serve_mesh(cp)
    p = env.proxy(cp.address, cfg={"xds": {"maxMessage": 65536}})
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=15, what="the mesh")
    cp.push_raw(b"\xff\xff\xff garbage, not protobuf")
    wait_for(lambda: len(cp.metadata()) >= 2, timeout=10, what="a reconnect after garbage")
    assert int(p.stats()["server.xds_bad_responses"]) >= 1
    cp.close_mid_message()
    cp.set(CLUSTER_T, cluster("c7"))
    wait_for(lambda: len(cp.metadata()) >= 3, timeout=10, what="a reconnect after a cut message")
    wait_for(lambda: "c7" in p.names(CLUSTER), timeout=10, what="c7 after the reconnect")
    cp.set(CLUSTER_T, cluster("x" * 70000))
    wait_for(lambda: len(cp.metadata()) >= 4, timeout=10, what="a reconnect after the oversized one")
    assert p.proc.poll() is None
    assert {"c1", "c2", "c7"} <= set(p.names(CLUSTER))


def test_unknown_type_nacked(env):
    """A response of a type we never asked for is NACKed by its nonce; the stream stays."""
    cp = env.cp()
    serve_mesh(cp)
    p = env.proxy(cp.address)
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=15, what="the mesh")
    r = cp.C["DeltaDiscoveryResponse"]()
    r.type_url, r.nonce = X.T + "envoy.config.core.v3.TypedExtensionConfig", "odd-1"
    cp.push_raw(r.SerializeToString())
    q = cp.wait_nack(nonce="odd-1")
    assert q["type_url"] == r.type_url
    assert len(cp.metadata()) == 1
    assert p.names(CLUSTER) == ["c1", "c2"]


def test_missing_cluster_load_assignment_reported(env):
    """A Cluster naming a ClusterLoadAssignment the server never sends: after xds.missingTimeout
    it is logged once, counted and shown as "missing" in /config_dump; when it comes, it goes."""
    cp = env.cp()
    cp.set_many([(CLUSTER_T, cluster("c1")), (CLUSTER_T, cluster("lonely")), (CLA_T, cla("c1"))])
    p = env.proxy(cp.address, cfg={"xds": {"missingTimeout": "1s"}})
    wait_for(lambda: p.names(CLA) == ["c1"], timeout=15, what="the mesh")
    wait_for(lambda: p.xtype(CLA).get("missing") == ["lonely"], timeout=10, what="lonely reported missing")
    assert p.stats()["server.xds_resources_missing"] == "1"
    log = p.logtext()
    assert "ClusterLoadAssignment lonely, named by a Cluster, has not come in 1 s" in log, log
    time.sleep(2.5)  # more checks: reported once, not at every check
    assert p.logtext().count("ClusterLoadAssignment lonely") == 1
    assert p.stats()["server.xds_resources_missing"] == "1"
    cp.set(CLA_T, cla("lonely"))
    wait_for(lambda: "missing" not in p.xtype(CLA), timeout=10, what="lonely no longer missing")
    assert p.names(CLA) == ["c1", "lonely"]


def test_on_demand_initial_request(env):
    """xds.onDemand: Address starts subscribed to nothing ("*" in and out)."""
    cp = env.cp()
    p = env.proxy(cp.address, env={"XDS_ON_DEMAND": "true"})
    a = cp.wait_request(type_url=ADDRESS_T)
    assert a["subscribe"] == ["*"] and a["unsubscribe"] == ["*"]
    assert p.xtype(ADDRESS)["subscription"] == []
    # Readiness does not wait for Address, not a wildcard now.
    wait_for(lambda: p.ready()[0] == 200, timeout=10, what="ready")


def test_sighup_keeps_xds_resources(env):
    """SIGHUP with xDS: the file's resources are rebuilt with the xDS state, which stays."""
    cp = env.cp()
    serve_mesh(cp)
    p = env.proxy(cp.address)
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=15, what="the mesh")
    with open(p.cfg) as f:
        conf = json.load(f)
    conf["resources"] = [dict(cluster("static1"), **{"@type": CLUSTER_T, "type": "STATIC"})]
    conf["resources"][0].pop("edsClusterConfig")
    with open(p.cfg, "w") as f:
        json.dump(conf, f)
    p.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "static1" in p.names(CLUSTER), what="the reloaded file")
    assert p.names(CLUSTER) == ["c1", "c2", "static1"]
    assert p.names(CLA) == ["c1", "c2"]
    cp.set(CLUSTER_T, cluster("c6"))
    wait_for(lambda: "c6" in p.names(CLUSTER), what="xDS after the reload")
    assert "static1" in p.names(CLUSTER)


def test_tls_root_and_san(env):
    """https with XDS_ROOT_CA: the server's certificate chains to it and carries the name; a
    name mismatch (ISTIOD_SAN) is refused: no stream, the reason in lastError, not ready."""
    ca = certs.CA(os.path.join(env.dir, "ca"))
    leaf = ca.issue(os.path.join(env.dir, "istiod"), "spiffe://cluster.local/ns/istio-system/sa/istiod",
                    extra_sans=["DNS:istiod.istio-system.svc", "IP:127.0.0.1"])
    cp = env.cp(tls=(os.path.join(leaf, "cert-chain.pem"), os.path.join(leaf, "key.pem")))
    serve_mesh(cp)
    root = os.path.join(leaf, "root-cert.pem")
    p = env.proxy(cp.address, env={"XDS_ROOT_CA": root, "ISTIOD_SAN": "istiod.istio-system.svc"})
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=15, what="the mesh over TLS")
    p.stop()
    n = len(cp.metadata())
    bad = env.proxy(cp.address, env={"XDS_ROOT_CA": root, "ISTIOD_SAN": "evil.example"})
    wait_for(lambda: bad.dump()["xds"]["reconnects"] >= 2, timeout=10, what="refused attempts")
    assert len(cp.metadata()) == n
    x = bad.dump()["xds"]
    assert x["connected"] is False and x["lastError"], x
    assert bad.ready()[0] == 503


def test_state_file_restart(env):
    """The last acknowledged state is written to xds.stateFile; a restart with the control
    plane down serves it at once (ready, in /config_dump, said in the log and /stats) until the
    server answers, then the server's state."""
    state = os.path.join(env.dir, "xds-state.pb")
    cp = env.cp()
    serve_mesh(cp)
    cfg = {"xds": {"stateFile": state}}
    p = env.proxy(cp.address, cfg=cfg)
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=15, what="the mesh")
    wait_for(lambda: int(p.stats()["server.xds_state_writes"]) >= 1, timeout=5, what="a state write")
    assert p.stop() == 0
    cp.stop()
    q = env.proxy(cp.address, cfg=cfg)
    assert q.ready()[0] == 200
    assert q.names(CLUSTER) == ["c1", "c2"] and q.names(CLA) == ["c1", "c2"]
    assert q.stats()["server.xds_state_loaded"] == "1"
    assert q.dump()["xds"]["servingStateFile"] is True
    assert "from the state file %s" % state in q.logtext()
    mark = cp.mark()
    cp.start()
    cp.set(CLUSTER_T, cluster("c5"))
    wait_for(lambda: "c5" in q.names(CLUSTER), timeout=20, what="the server's state")
    assert q.stats()["server.xds_state_loaded"] == "0"
    first = cp.wait_request(type_url=CLUSTER_T, since=mark)
    assert set(first["initial_resource_versions"]) == {"c1", "c2"}


def test_state_file_serves_traffic_with_control_plane_down(env, pod_lab, init_bin):
    """A pod-lab sidecar started with the control plane unreachable routes a VIP that only its
    state file knows (REGISTRY_ONLY: anything unknown is reset). The file was written by an
    earlier run from the xDS server's Address resources."""
    L = pod_lab
    client = L.add_pod("client")
    server = L.add_pod("server")
    server.app(["echo", "--port", 8080])
    vip = "198.19.0.99"
    cp = env.cp()
    key = meshres.key("echo99")
    cp.set_many([(ADDRESS_T, meshres.service("echo99", [vip], [(80, 8080)])),
                 (ADDRESS_T, meshres.workload("cluster1//Pod/default/echo-server", "echo-server", [server.ip],
                                              services={key: [(80, 8080)]}))])
    state = os.path.join(env.dir, "state.pb")
    p = env.proxy(cp.address, cfg={"xds": {"stateFile": state}})
    wait_for(lambda: len(p.names(ADDRESS)) == 2, timeout=15, what="the Addresses")
    wait_for(lambda: int(p.stats()["server.xds_state_writes"]) >= 1, timeout=5, what="a state write")
    p.stop()
    cp.stop()
    shared = os.path.join(L.dir, "xds-state.pb")
    with open(state, "rb") as f, open(shared, "wb") as g:
        g.write(f.read())
    os.chmod(shared, 0o666)
    csc = client.start_sidecar(config={"mesh": {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}},
                                       "xds": {"stateFile": shared}},
                               env={"XDS_ADDRESS": "http://127.0.0.1:9"})
    assert csc.stats()["server.xds_state_loaded"] == 1
    assert "from the state file" in csc.log()
    r, out = client.client(["echo-client", "--host", vip, "--port", 80, "--count", 2, "--timeout", 10])
    assert out is not None and out["ok"] == 2, (out, csc.log()[-3000:])
    # What the file does not know is refused: the route above was the file's.
    r, out = client.client(["echo-client", "--host", "198.19.0.98", "--port", 80, "--count", 1,
                            "--timeout", 5])
    assert not out or out.get("ok", 0) == 0, out


def test_state_file_rate_limited_last_written(env):
    """A burst of pushes writes the state file at most about once a second, and the last state
    is always written: a restart from the file alone has the burst's last resource."""
    state = os.path.join(env.dir, "xds-state.pb")
    cp = env.cp()
    serve_mesh(cp)
    p = env.proxy(cp.address, cfg={"xds": {"stateFile": state}})
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=15, what="the mesh")
    before = int(p.stats()["server.xds_state_writes"])
    t0 = time.monotonic()
    for i in range(30):
        cp.wait_ack(cp.set(CLUSTER_T, cluster("burst%02d" % i)))
    acks = int(p.stats()["server.xds_acks"])
    writes = int(p.stats()["server.xds_state_writes"]) - before
    elapsed = time.monotonic() - t0
    assert writes <= elapsed + 2 and writes < 30, (writes, elapsed, acks)
    assert p.stop() == 0        # a pending write goes out at exit
    cp.stop()
    q = env.proxy(cp.address, cfg={"xds": {"stateFile": state}})
    assert "burst29" in q.names(CLUSTER)


def test_sotw_long_nonce_subscription_change(env):
    """State of the world: a change of the EDS names echoes the last EDS response's nonce,
    whole. Nonces are opaque strings of any length; one cut to 127 bytes was a stale nonce
    to the server (istiod ignores such a request), so a new cluster's endpoints never came."""
    cp = env.cp()
    cp.nonce_prefix = "n" * 300
    cp.set_many([(CLUSTER_T, cluster("c1")), (CLA_T, cla("c1")), (CLA_T, cla("c2"))])
    p = env.proxy(cp.address, env={"XDS_SOTW": "true"})
    wait_for(lambda: p.names(CLA) == ["c1"], timeout=15, what="c1's endpoints")
    cp.set(CLUSTER_T, cluster("c2"))
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=10, what="c2's endpoints")


def test_sotw_reconnect_sends_versions_and_names(env):
    """State of the world, server restart: the first requests of the new stream carry the
    version_info last ACKed and the full resource_names list of the by-name types."""
    cp = env.cp()
    serve_mesh(cp)
    p = env.proxy(cp.address, env={"XDS_SOTW": "true"})
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=15, what="the mesh")
    wait_for(lambda: cp.acks(CLA_T), what="an EDS ACK")
    last = {t: cp.acks(t)[-1]["version_info"] for t in (CLUSTER_T, CLA_T)}
    cp.stop()
    wait_for(lambda: p.dump()["xds"]["connected"] is False, what="the stream down")
    mark = cp.mark()
    cp.start()
    c = cp.wait_request(type_url=CLUSTER_T, since=mark, timeout=20)
    assert c["version_info"] == last[CLUSTER_T] != "" and c["response_nonce"] == ""
    e = cp.wait_request(type_url=CLA_T, since=mark)
    assert e["resource_names"] == ["c1", "c2"] and e["version_info"] == last[CLA_T]
