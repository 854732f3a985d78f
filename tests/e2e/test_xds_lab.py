"""The xDS control plane of the tests (tests/lab/xds_server.py) and the pod lab driven by it.

First the server itself, proved with grpcio's own client speaking as ztunnel and Envoy do
(delta wildcard, on-demand by alias, SotW, ACK/NACK, initial_resource_versions, restart, the
misbehaviours): these never skip, they are cheap and need no outrigger. Then the lab: a client
pod reaching server pods through a service only xDS described, pushes adding and removing
endpoints, and 1,000 pushes while traffic flows.
"""
import os
import queue
import sys
import threading

import grpc
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lab"))

import envoy_protos  # noqa: E402
import meshres  # noqa: E402
import xds_server as X  # noqa: E402

NODE = "sidecar~198.18.0.10~client.default~default.svc.cluster.local"
SVC_KEY = meshres.key("echo")


def _need_protos():
    if envoy_protos.envoy_deps() is None:
        pytest.fail("the Envoy protos of @grpc/grpc-js-xds are missing: run packaging/install-deps.sh")


class Client:
    """An ADS client on grpcio: requests go in a queue, responses come out of another."""

    def __init__(self, cp, delta=True, metadata=(("authorization", "Bearer tok"), ("clusterid", "c1"))):
        _need_protos()
        self.delta, self.cp = delta, cp
        self.ch = grpc.insecure_channel("127.0.0.1:%d" % cp.port)
        C = cp.C
        self.Req = C["DeltaDiscoveryRequest"] if delta else C["DiscoveryRequest"]
        Resp = C["DeltaDiscoveryResponse"] if delta else C["DiscoveryResponse"]
        method = "/%s/%s" % (X.ADS, "DeltaAggregatedResources" if delta else "StreamAggregatedResources")
        call = self.ch.stream_stream(method, request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=Resp.FromString)
        self.out = queue.Queue()
        self.inq = queue.Queue()
        self.error = None
        self.names = {}   # SotW: the full resource_names list goes in every request

        def gen():
            while True:
                m = self.out.get()
                if m is None:
                    return
                yield m

        self.call = call(gen(), metadata=list(metadata))

        def pump():
            try:
                for r in self.call:
                    self.inq.put(r)
            except grpc.RpcError as e:
                self.error = e
            self.inq.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def send(self, **kw):
        if not self.delta and "resource_names" in kw:
            self.names[kw["type_url"]] = list(kw["resource_names"])
        m = self.Req()
        for k, v in kw.items():
            if k == "node":
                m.node.id = v
            elif k == "error":
                m.error_detail.code, m.error_detail.message = 3, v
            elif k == "initial_resource_versions":
                m.initial_resource_versions.update(v)
            elif isinstance(v, (list, tuple)):
                getattr(m, k).extend(v)
            else:
                setattr(m, k, v)
        self.out.put(m)

    def recv(self, timeout=5):
        try:
            r = self.inq.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no response within %ss" % timeout)
        assert r is not None, "stream ended: %s (server events: %s)" % (
            self.error, self.cp.events() if hasattr(self.cp, "events") else "-")
        return r

    def none(self, wait=0.5):
        """Nothing arrives within `wait` seconds (the server must not answer an ACK)."""
        try:
            r = self.inq.get(timeout=wait)
        except queue.Empty:
            return True
        raise AssertionError("unexpected response: %s" % r)

    def ack(self, r):
        if self.delta:
            self.send(type_url=r.type_url, response_nonce=r.nonce)
        else:
            self.send(type_url=r.type_url, response_nonce=r.nonce, version_info=r.version_info,
                      resource_names=self.names.get(r.type_url, []))

    def close(self):
        self.out.put(None)
        self.call.cancel()
        self.ch.close()


def _unpack(any_msg):
    m = X.msg(X.type_name(any_msg.type_url))()
    m.ParseFromString(any_msg.value)
    return m


def _wl(i, svc=True):
    return meshres.workload("uid-%d" % i, "echo-%d" % i, ["198.18.0.%d" % (20 + i)],
                            {SVC_KEY: [(80, 8080)]} if svc else None)


@pytest.fixture
def cp():
    _need_protos()
    s = X.XdsServer()
    s.start()
    yield s
    s.stop()


def test_cp_istio_messages_are_the_upstream_field_numbers():
    """Spot checks of the table against istio/ztunnel's workload.proto / authorization.proto:
    a wrong row here would make every lab test pass against a wrong decoder."""
    _need_protos()
    W = X.msg("istio.workload.Workload").DESCRIPTOR
    assert W.fields_by_name["uid"].number == 20
    assert W.fields_by_name["services"].number == 22
    assert W.fields_by_name["capacity"].message_type.full_name == "google.protobuf.UInt32Value"
    NA = X.msg("istio.workload.NetworkAddress").DESCRIPTOR
    assert NA.fields_by_name["length"].number == 3 and NA.fields_by_name["length"].has_presence
    M = X.msg("istio.security.Match").DESCRIPTOR
    assert M.fields_by_name["service_accounts"].number == 11
    assert M.fields_by_name["destination_ports"].number == 9
    SA = X.msg("istio.security.ServiceAccountMatch").DESCRIPTOR
    assert SA.fields_by_name["serviceAccount"].json_name == "serviceAccount"
    # proto3 JSON from meshres.py parses into them, the wire form round-trips
    e = X.make_entry(None, _wl(1))
    assert e.name == "uid-1" and e.aliases == ["/198.18.0.21"]
    assert e.message.workload.services[SVC_KEY].ports[0].target_port == 8080
    s = X.make_entry(None, meshres.service("echo", ["198.19.0.10"], [(80, 8080)]))
    assert s.name == SVC_KEY and s.aliases == ["/198.19.0.10"]


def test_cp_delta_wildcard_push_remove_ack(cp):
    cp.set_many([(X.ADDRESS, _wl(1)), (X.ADDRESS, meshres.service("echo", ["198.19.0.10"], [(80, 8080)]))])
    c = Client(cp)
    try:
        c.send(node=NODE, type_url=X.ADDRESS)
        r = c.recv()
        assert r.type_url == X.ADDRESS
        assert sorted(x.name for x in r.resources) == sorted(["uid-1", SVC_KEY])
        wl = [x for x in r.resources if x.name == "uid-1"][0]
        assert list(wl.aliases) == ["/198.18.0.21"] and wl.version
        assert _unpack(wl.resource).workload.uid == "uid-1"
        c.ack(r)
        c.none()
        req = cp.wait_ack(r.nonce)[0]
        assert req["response_nonce"] == r.nonce and req["node"] is None
        first = cp.requests(X.ADDRESS)[0]
        assert first["node"]["id"] == NODE and first["subscribe"] == []
        md = cp.metadata()[0]
        assert md["authorization"] == "Bearer tok" and md["clusterid"] == "c1"
        # an empty wildcard type is answered too (readiness needs a first ACK)
        c.send(type_url=X.AUTHORIZATION)
        r2 = c.recv()
        assert r2.type_url == X.AUTHORIZATION and not r2.resources
        c.ack(r2)
        # a push, then a removal
        n = cp.set(X.ADDRESS, _wl(2))
        r = c.recv()
        assert [x.name for x in r.resources] == ["uid-2"] and [r.nonce] == n
        c.ack(r)
        cp.wait_ack(n)
        n = cp.remove(X.ADDRESS, "uid-1")
        r = c.recv()
        assert list(r.removed_resources) == ["uid-1"] and not r.resources
        c.send(type_url=X.ADDRESS, response_nonce=r.nonce, error="uid-x: bad")
        nack = cp.wait_nack(r.nonce)
        assert nack["error_detail"]["message"] == "uid-x: bad"
        assert [a["response_nonce"] for a in cp.nacks()] == [r.nonce]
        with pytest.raises(AssertionError, match="NACKed"):
            cp.wait_ack(n, timeout=1)
        with pytest.raises(AssertionError, match="timed out"):
            cp.wait_ack("n-never", timeout=0.3)
    finally:
        c.close()


def test_cp_delta_on_demand_alias_and_unknown(cp):
    cp.set_many([(X.ADDRESS, _wl(1)), (X.ADDRESS, meshres.service("echo", ["198.19.0.10"], [(80, 8080)]))])
    c = Client(cp)
    try:
        # ztunnel's on-demand start: subscribe to nothing
        c.send(node=NODE, type_url=X.ADDRESS, resource_names_subscribe=["*"], resource_names_unsubscribe=["*"])
        r = c.recv()
        assert not r.resources and not r.removed_resources
        c.ack(r)
        c.send(type_url=X.ADDRESS, resource_names_subscribe=["/198.19.0.10"])
        r = c.recv()   # the VIP brings the Service and the Workloads that list it
        assert [x.name for x in r.resources] == [SVC_KEY, "uid-1"]
        assert list(r.resources[0].aliases) == ["/198.19.0.10"]
        c.ack(r)
        c.send(type_url=X.ADDRESS, resource_names_subscribe=["/198.18.99.99"])
        r = c.recv()
        assert not r.resources and list(r.removed_resources) == ["/198.18.99.99"]
        c.ack(r)
        # pushes reach only what was subscribed
        cp.set(X.ADDRESS, _wl(3))
        c.none()
        n = cp.set(X.ADDRESS, meshres.service("echo", ["198.19.0.10"], [(80, 8081)]))
        r = c.recv()
        assert [x.name for x in r.resources] == [SVC_KEY] and [r.nonce] == n
        c.ack(r)
        # an alias that comes to exist later is pushed
        cp.set(X.ADDRESS, meshres.workload("uid-late", "late", ["198.18.99.99"]))
        r = c.recv()
        assert [x.name for x in r.resources] == ["uid-late"]
        c.ack(r)
        n = cp.set(X.ADDRESS, _wl(1, svc=False))   # what the lookup brought is watched
        r = c.recv()
        assert [x.name for x in r.resources] == ["uid-1"] and [r.nonce] == n
        c.ack(r)
        c.send(type_url=X.ADDRESS, resource_names_unsubscribe=["/198.19.0.10", SVC_KEY])
        c.none()
        cp.set(X.ADDRESS, meshres.service("echo", ["198.19.0.10"], [(80, 8082)]))
        c.none()
    finally:
        c.close()


def test_cp_delta_named_types_and_initial_versions(cp):
    cla = lambda n, port: {"clusterName": n, "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {  # noqa: E731
        "socketAddress": {"address": "198.18.0.21", "portValue": port}}}}]}]}
    cp.set_many([(X.ENDPOINT, cla("a", 1)), (X.ENDPOINT, cla("b", 2)), (X.ADDRESS, _wl(1)), (X.ADDRESS, _wl(2))])
    c = Client(cp)
    try:
        c.send(node=NODE, type_url=X.ENDPOINT)   # EDS is not wildcard: nothing
        r = c.recv()
        assert not r.resources
        c.ack(r)
        c.send(type_url=X.ENDPOINT, resource_names_subscribe=["a"])
        r = c.recv()
        assert [x.name for x in r.resources] == ["a"]
        assert _unpack(r.resources[0].resource).endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 1
        c.ack(r)
        cp.set(X.ENDPOINT, cla("b", 3))
        c.none()
        versions = {x.name: x.version for x in cp.resources(X.ADDRESS).values()}
    finally:
        c.close()
    # reconnect: uid-1 unchanged, uid-2 changed meanwhile, uid-gone deleted
    cp.set(X.ADDRESS, meshres.workload("uid-2", "echo-2", ["198.18.0.99"]))
    c = Client(cp)
    try:
        c.send(node=NODE, type_url=X.ADDRESS, initial_resource_versions={
            "uid-1": versions["uid-1"], "uid-2": versions["uid-2"], "uid-gone": "7"})
        r = c.recv()
        assert [x.name for x in r.resources] == ["uid-2"]
        assert list(r.removed_resources) == ["uid-gone"]
        assert cp.requests(X.ADDRESS)[-1]["initial_resource_versions"]["uid-gone"] == "7"
    finally:
        c.close()


def test_cp_sotw_full_state_named_and_nack(cp):
    cp.set_many([(X.CLUSTER, {"name": "c1", "type": "EDS"}), (X.CLUSTER, {"name": "c2", "type": "EDS"}),
                 (X.ENDPOINT, {"clusterName": "c1"}), (X.ENDPOINT, {"clusterName": "c2"})])
    c = Client(cp, delta=False)
    try:
        c.send(node={"id": NODE}["id"], type_url=X.CLUSTER)
        r = c.recv()
        assert sorted(_unpack(a).name for a in r.resources) == ["c1", "c2"] and r.version_info
        c.ack(r)
        c.none()
        c.send(type_url=X.ENDPOINT, resource_names=["c1"])
        r = c.recv()
        assert [_unpack(a).cluster_name for a in r.resources] == ["c1"]
        c.ack(r)
        c.none()
        c.send(type_url=X.ENDPOINT, resource_names=["c1", "c2"], response_nonce=r.nonce,
               version_info=r.version_info)
        r = c.recv()
        assert sorted(_unpack(a).cluster_name for a in r.resources) == ["c1", "c2"]
        c.ack(r)
        # a removal: the full state without it
        cp.remove(X.CLUSTER, "c2")
        r = c.recv()
        assert [_unpack(a).name for a in r.resources] == ["c1"]
        old = r.version_info
        cp.set(X.CLUSTER, {"name": "c3", "type": "STATIC"})
        r = c.recv()
        assert r.version_info != old
        # NACK: previous version, error_detail; no answer, the server's state stays
        c.send(type_url=X.CLUSTER, response_nonce=r.nonce, version_info=old, error="c3: no")
        c.none()
        assert cp.nacks(X.CLUSTER)[0]["version_info"] == old
    finally:
        c.close()


def test_cp_misbehaviour_and_restart(cp):
    cp.set(X.ADDRESS, _wl(1))
    c = Client(cp)
    try:
        c.send(node=NODE, type_url=X.ADDRESS)
        c.ack(c.recv())
        cp.push_duplicate(X.ADDRESS, "uid-1")
        r = c.recv()
        assert [x.name for x in r.resources] == ["uid-1", "uid-1"]
        cp.push_bad(X.ADDRESS, name="junk", good=[(X.ADDRESS, _wl(4))])
        r = c.recv()
        assert [x.name for x in r.resources] == ["uid-4", "junk"]
        with pytest.raises(Exception):
            _unpack(r.resources[1].resource)
        cp.close_mid_message()
        cp.set(X.ADDRESS, _wl(5))
        with pytest.raises(AssertionError, match="stream ended"):
            c.recv()
        assert cp.events("cut")
    finally:
        c.close()
    port = cp.port
    cp.stop()
    cp.start()
    assert cp.port == port
    c = Client(cp)
    try:
        cp.stall()
        c.send(node=NODE, type_url=X.ADDRESS)
        c.none()
        cp.wait_request(lambda r: r["node"], X.ADDRESS, since=0)
        assert not cp.set(X.ADDRESS, _wl(6))   # stalled: no push either
        c.none()
        cp.unstall()                          # the waiting request is answered now
        r = c.recv()
        assert sorted(x.name for x in r.resources) == ["uid-1", "uid-4", "uid-5", "uid-6"]
        c.ack(r)
        assert cp.wait_streams(1)
        n = cp.set(X.ADDRESS, _wl(6, svc=False))
        r = c.recv()
        assert [x.name for x in r.resources] == ["uid-6"] and [r.nonce] == n
    finally:
        c.close()


def test_cp_cli_serves_a_file(tmp_path):
    """The CLI (demo and bench) serves a sidecar config's resources."""
    import json
    import subprocess
    import time
    _need_protos()
    cfg = tmp_path / "r.json"
    cfg.write_text(json.dumps(meshres.config([_wl(1), meshres.service("echo", ["198.19.0.10"], [(80, 8080)])])))
    pf = tmp_path / "port"
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "..", "lab", "xds_server.py"), "--port", "0",
                          "--resources", str(cfg), "--port-file", str(pf)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not pf.exists():
            assert p.poll() is None, p.stdout.read()
            assert time.monotonic() < deadline, "CLI did not listen"
            time.sleep(0.05)

        class _P:
            port = int(pf.read_text())
            C = {k: envoy_protos.message("envoy.service.discovery.v3." + k) for k in (
                "DiscoveryRequest", "DiscoveryResponse", "DeltaDiscoveryRequest", "DeltaDiscoveryResponse")}
        c = Client(_P)
        try:
            c.send(node=NODE, type_url=X.ADDRESS)
            r = c.recv(timeout=10)
            assert sorted(x.name for x in r.resources) == sorted(["uid-1", SVC_KEY])
        finally:
            c.close()
    finally:
        p.kill()
        p.wait(10)


# ---------------------------------------------------------------------------------------------
# The pod lab driven by the control plane. The server listens inside the client pod's network
# namespace (127.0.0.1 there, as the test CA does), the sidecar's -c FILE holds no resource:
# only proxy.discoveryAddress. The lab does not DNAT the VIPs, so only what xDS described can
# carry a connection.

import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import lab  # noqa: E402

VIP = "198.19.0.20"
STREAM_VIP = "198.19.0.30"
HTTP_PORT, ECHO_PORT = 8080, 9090
STREAM_KEY = meshres.key("stream")


def _pod_wl(pod, revision="r1"):
    return meshres.workload("Kubernetes//Pod/default/" + pod.name, pod.name, [pod.ip4],
                            {SVC_KEY: [(80, HTTP_PORT)], STREAM_KEY: [(90, ECHO_PORT)]},
                            canonicalRevision=revision)


class XdsLab:
    def __init__(self, L, servers=2, tls=None):
        self.L = L
        self.servers = []
        for i in range(servers):
            p = L.add_pod("server-%s" % "ab"[i])
            p.app(["http", "--port", HTTP_PORT, "--name", p.name])
            p.app(["echo", "--port", ECHO_PORT])
            self.servers.append(p)
        self.client = L.add_pod("client")
        self.cp = X.XdsServer(netns=self.client.netns, tls=tls).start()
        self.sc = None

    def start_sidecar(self, sotw=False, env=None, cfg=None, **kw):
        c = {"proxy": {"discoveryAddress": self.cp.address}}
        for k, v in (cfg or {}).items():
            c.setdefault(k, {}).update(v)
        e = {"POD_NAME": "client", "POD_NAMESPACE": "default", "INSTANCE_IP": self.client.ip4,
             "ISTIO_META_CLUSTER_ID": "lab", "XDS_SOTW": "true" if sotw else "false"}
        e.update(env or {})
        self.sc = self.client.start_sidecar(config=c, env=e, proxy_args=("--concurrency", "1"),
                                            ready_timeout=20, **kw)
        assert "resources" not in json.load(open(self.sc.config_path))
        return self.sc

    def stream(self, n, seconds=120):
        """n long checksummed echo streams through STREAM_VIP (STREAMER); stop with finish()."""
        script = os.path.join(self.L.dir, "streamer.py")
        with open(script, "w") as f:
            f.write(STREAMER)
        os.chmod(script, 0o644)
        p = self.client.popen([lab.PYTHON, script, STREAM_VIP, 90, n, seconds], user="nobody",
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = lab.read_line(p.stdout, 20)
        assert line.startswith(b"READY"), (line, self.sc.log()[-3000:])
        return p

    def finish(self, p, stall_bound):
        """Stop the streams of stream(); every byte back in order, none waited stall_bound."""
        p.stdin.write(b"stop\n")
        p.stdin.flush()
        res = json.loads(lab.read_line(p.stdout, 60))
        assert all(res), res
        for r in res:
            assert r["error"] is None, (r, self.sc.log()[-3000:])
            assert r["sha_ok"] and r["sent"] == r["recv"] and r["recv"] > 0, r
            assert r["max_gap"] < stall_bound, r
        return res

    def who(self, n=1, vip=VIP):
        """The server pods that answered n HTTP requests (one connection each) to vip:80."""
        out = []
        for _ in range(n):
            code, body = self.client.curl("http://%s/" % vip, user="nobody")
            assert code == 200, (code, body, self.sc.log()[-3000:])
            assert body.startswith("hello from "), body
            out.append(body.split()[2])
        return out

    def stop(self):
        self.cp.stop()


@pytest.fixture
def xlab(pod_lab, outrigger_bin, init_bin):
    _need_protos()
    x = XdsLab(pod_lab)
    yield x
    x.stop()


@pytest.mark.parametrize("sotw", [False, True], ids=["delta", "sotw"])
def test_lab_service_only_xds_described(xlab, sotw):
    """The client pod reaches the server pods through a Service that only xDS described; an
    endpoint added by a push is used; a workload removed by a push gets no new connection."""
    a, b = xlab.servers
    cp = xlab.cp
    cp.set_many([(X.ADDRESS, meshres.service("echo", [VIP], [(80, HTTP_PORT)])), (X.ADDRESS, _pod_wl(a))])
    code, _ = xlab.client.curl("http://%s/" % VIP, timeout=2, user="nobody")
    assert code == 0  # the premise: no sidecar, no route to the VIP
    sc = xlab.start_sidecar(sotw=sotw)
    assert cp.requests()[0]["node"]["id"] == "sidecar~%s~client.default~default.svc.cluster.local" % xlab.client.ip4
    first = cp.requests(X.ADDRESS)[0]
    assert first["kind"] == ("sotw" if sotw else "delta")
    if sotw:
        assert first["resource_names"] == []
    else:
        assert first["subscribe"] == [] and first["unsubscribe"] == []
    assert cp.metadata()[0].get("clusterid") == "lab"
    node = cp.requests()[0]["node"]
    md = node["metadata"]
    assert md["CLUSTER_ID"] == "lab" and md["NAMESPACE"] == "default" and md["INSTANCE_IPS"].split(",")[0] == xlab.client.ip4, node
    # INSTANCE_IP first, then the pod's other private addresses (pilot-agent's list), and the
    # node id carries the first
    assert node["id"].startswith("sidecar~%s~" % xlab.client.ip4), node
    assert set(xlab.who(4)) == {"server-a"}
    # an endpoint added by a push is used (one worker: round robin takes both in turn)
    cp.wait_ack(cp.set(X.ADDRESS, _pod_wl(b)))
    assert set(xlab.who(6)) == {"server-a", "server-b"}
    # a workload removed by a push gets no new connection, from the ACK on
    cp.wait_ack(cp.remove(X.ADDRESS, _pod_wl(a)["workload"]["uid"]))
    assert set(xlab.who(8)) == {"server-b"}
    assert not cp.nacks(), cp.nacks()
    st = sc.stats()
    assert st["server.xds_nacks"] == 0 and st["server.xds_acks"] >= 6 and st["server.xds_connected"] == 1, st


STREAMER = r'''
import hashlib, json, random, select, socket, sys, threading, time
host, port, n, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
stop = threading.Event()
res = [None] * n
conns = []
for i in range(n):
    s = socket.create_connection((host, port), timeout=10)
    s.settimeout(10)
    conns.append(s)
def run(i, s):
    rng = random.Random(i)
    hs, hr = hashlib.sha256(), hashlib.sha256()
    r = {"sent": 0, "recv": 0, "max_gap": 0.0, "rounds": 0, "error": None}
    try:
        while not stop.is_set():
            d = rng.randbytes(16384)
            t = time.monotonic()
            s.sendall(d)
            hs.update(d)
            r["sent"] += len(d)
            got = 0
            while got < len(d):
                b = s.recv(len(d) - got)
                if not b:
                    raise EOFError("closed after %d bytes" % r["recv"])
                hr.update(b)
                got += len(b)
                r["recv"] += len(b)
            r["max_gap"] = max(r["max_gap"], time.monotonic() - t)
            r["rounds"] += 1
            time.sleep(0.002)  # paced (about 8 MB/s a stream): traffic, not a CPU hog
        s.shutdown(socket.SHUT_WR)
        if s.recv(1) != b"":
            r["error"] = "no EOF"
    except Exception as e:
        r["error"] = "%s: %s" % (type(e).__name__, e)
    r["sha_ok"] = hs.hexdigest() == hr.hexdigest()
    res[i] = r
    s.close()
ts = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(conns)]
for t in ts:
    t.start()
print("READY", flush=True)
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    if select.select([sys.stdin], [], [], 0.5)[0]:
        sys.stdin.readline()
        break
stop.set()
for t in ts:
    t.join(30)
print(json.dumps(res), flush=True)
'''


@pytest.mark.parametrize("sotw", [False, True], ids=["delta", "sotw"])
def test_lab_1000_pushes_under_traffic(xlab, sotw):
    """1,000 pushes (delta; SotW: the full state each time) of changing workloads (churn workloads of another service set,
    changed and removed; every 100th push a new revision of the two endpoints the streams use)
    while 4 long streams each move a checksummed byte stream through the VIP and a short
    connection opens every 50 pushes: every byte comes back in order (sha256 both ways), no
    stream waits more than STALL_BOUND for its echo, every short connection succeeds, every
    push is ACKed. Bounded: 1,000 pushes, 180 s."""
    STALL_BOUND = 5.0
    a, b = xlab.servers
    cp = xlab.cp
    cp.set_many([(X.ADDRESS, meshres.service("echo", [VIP], [(80, HTTP_PORT)])),
                 (X.ADDRESS, meshres.service("stream", [STREAM_VIP], [(90, ECHO_PORT)])),
                 (X.ADDRESS, meshres.service("churn", ["198.19.0.40"], [(80, 8080)])),
                 (X.ADDRESS, _pod_wl(a)), (X.ADDRESS, _pod_wl(b))])
    sc = xlab.start_sidecar(sotw=sotw)
    p = xlab.stream(4, 240)
    t0 = time.monotonic()
    churn_key = meshres.key("churn")
    short = []
    for i in range(1000):
        assert time.monotonic() - t0 < 180, "1,000 pushes took over 180 s (at %d): %s" % (i, sc.log()[-2000:])
        if i % 100 == 99:
            nonces = cp.set_many([(X.ADDRESS, _pod_wl(a, "r%d" % i)), (X.ADDRESS, _pod_wl(b, "r%d" % i))])
        elif i % 10 == 9:
            nonces = cp.remove(X.ADDRESS, "churn-%d" % ((i - 1) % 50))  # the one set just before
        else:
            k = i % 50
            nonces = cp.set(X.ADDRESS, meshres.workload(
                "churn-%d" % k, "churn-%d" % k, ["198.18.%d.%d" % (100 + k // 200, 1 + k % 200)],
                {churn_key: [(80, 8080)]}, canonicalRevision="v%d" % i))
        assert len(nonces) == 1, (i, nonces)
        cp.wait_ack(nonces, timeout=20)
        if i % 50 == 0:
            r, out = xlab.client.client(["echo-client", "--host", STREAM_VIP, "--port", 90, "--count", 1,
                                         "--bytes", 4096, "--timeout", 10])
            short.append(out)
    elapsed = time.monotonic() - t0
    res = xlab.finish(p, STALL_BOUND)
    assert len(res) == 4
    assert all(o and o["ok"] == 1 for o in short), short
    assert len(short) == 20
    assert not cp.nacks(), cp.nacks()[:3]
    assert len(cp.acks(X.ADDRESS)) >= 1000
    print("1000 pushes in %.1fs; streams moved %s bytes, max echo gap %.3fs" % (
        elapsed, [r["recv"] for r in res], max(r["max_gap"] for r in res)))


def _base(cp, *pods):
    cp.set_many([(X.ADDRESS, meshres.service("echo", [VIP], [(80, HTTP_PORT)])),
                 (X.ADDRESS, meshres.service("stream", [STREAM_VIP], [(90, ECHO_PORT)]))]
                + [(X.ADDRESS, _pod_wl(p)) for p in pods])


def _uid(pod):
    return "Kubernetes//Pod/default/" + pod.name


def test_lab_control_plane_away_and_back(xlab):
    """istiod goes away: the streams and new connections go on from the last snapshot; it comes
    back on the same port: the sidecar reconnects asking by initial_resource_versions for what it
    holds (the versions the server gave), the server sends nothing unchanged, and pushes apply."""
    a, b = xlab.servers
    cp = xlab.cp
    _base(cp, a, b)
    sc = xlab.start_sidecar()
    held = {n: e.version for n, e in cp.resources(X.ADDRESS).items()}
    p = xlab.stream(2)
    cp.stop()
    lab.wait_for(lambda: sc.stats()["server.xds_connected"] == 0, timeout=10, what="the sidecar to notice")
    assert set(xlab.who(6)) == {"server-a", "server-b"}
    mark = cp.mark()
    cp.start()
    req = cp.wait_request(lambda r: r["initial_resource_versions"], X.ADDRESS, since=mark, timeout=30)
    assert req["initial_resource_versions"] == held
    lab.wait_for(lambda: sc.stats()["server.xds_connected"] == 1, timeout=10, what="reconnected")
    answer = [s for s in cp.sent(X.ADDRESS) if s["stream"] == req["stream"]][0]
    assert answer["names"] == [] and answer["removed"] == []
    cp.wait_ack(cp.remove(X.ADDRESS, _uid(a)))
    assert set(xlab.who(6)) == {"server-b"}
    # away again, and meanwhile a is back and b gone: the reconnect's answer says so
    cp.stop()
    lab.wait_for(lambda: sc.stats()["server.xds_connected"] == 0, timeout=10, what="the sidecar to notice")
    cp.set(X.ADDRESS, _pod_wl(a))
    cp.remove(X.ADDRESS, _uid(b))
    mark = cp.mark()
    cp.start()
    req = cp.wait_request(lambda r: r["initial_resource_versions"], X.ADDRESS, since=mark, timeout=30)
    assert _uid(b) in req["initial_resource_versions"] and _uid(a) not in req["initial_resource_versions"]
    answer = [s for s in cp.sent(X.ADDRESS) if s["stream"] == req["stream"]][0]
    assert answer["names"] == [_uid(a)] and answer["removed"] == [_uid(b)]
    cp.wait_ack(answer["nonce"])
    assert set(xlab.who(6)) == {"server-a"}
    # the connection dropped under it (as a GOAWAY'd istiod): reconnected, pushes apply
    connects = sc.stats()["server.xds_connects"]
    assert cp.drop_connections() >= 1
    lab.wait_for(lambda: sc.stats()["server.xds_connects"] > connects and
                 sc.stats()["server.xds_connected"] == 1, timeout=30, what="the reconnect")
    cp.wait_ack(cp.set(X.ADDRESS, _pod_wl(b)))
    assert set(xlab.who(6)) == {"server-a", "server-b"}
    xlab.finish(p, 5.0)
    assert sc.stats()["server.xds_reconnects"] >= 3


@pytest.mark.parametrize("sotw", [False, True], ids=["delta", "sotw"])
def test_lab_bad_pushes_nacked_good_applied(xlab, sotw):
    """A response with a resource that does not decode is NACKed (naming it, in delta) while
    the good one beside it applies; one of a wrong type, a duplicate name, a response of a
    type never asked for: NACKed, the last good state stays (SotW: the NACK carries the last
    good version_info); a response cut mid-message ends the stream, the sidecar reconnects and
    catches up; traffic flows throughout."""
    a, b = xlab.servers
    cp = xlab.cp
    _base(cp, a)
    sc = xlab.start_sidecar(sotw=sotw)
    good_version = cp.acks(X.ADDRESS)[-1].get("version_info")
    p = xlab.stream(2)
    nonces = cp.push_bad(X.ADDRESS, name="junk", good=[(X.ADDRESS, _pod_wl(b))])
    nack = cp.wait_nack(nonces[0])
    if not sotw:
        assert "junk" in nack["error_detail"]["message"], nack
    else:
        assert nack["version_info"] == good_version, nack
    assert set(xlab.who(6)) == {"server-a", "server-b"}   # the good one applied
    nonces = cp.push_bad(X.ADDRESS, name="wrong", kind="wrong_type")
    nack = cp.wait_nack(nonces[0])
    assert "wrong" in nack["error_detail"]["message"] or X.CLUSTER in nack["error_detail"]["message"], nack
    nonces = cp.push_duplicate(X.ADDRESS, _uid(b))
    nack = cp.wait_nack(nonces[0])
    assert _uid(b) in nack["error_detail"]["message"], nack
    nonces = cp.push_entries(X.SECRET, [], unwatched=True)
    nack = cp.wait_nack(nonces[0])
    assert X.SECRET in nack["error_detail"]["message"], nack
    assert set(xlab.who(6)) == {"server-a", "server-b"}   # the last good state stays
    connects = sc.stats()["server.xds_connects"]
    cp.close_mid_message()
    cp.set(X.ADDRESS, _pod_wl(a, "r2"))                   # this response is cut in half
    lab.wait_for(lambda: cp.events("cut"), timeout=10, what="the cut")
    lab.wait_for(lambda: sc.stats()["server.xds_connects"] > connects and
                 sc.stats()["server.xds_connected"] == 1, timeout=30, what="the reconnect")
    cp.wait_ack(cp.remove(X.ADDRESS, _uid(a)))
    assert set(xlab.who(6)) == {"server-b"}
    xlab.finish(p, 5.0)
    st = sc.stats()
    assert st["server.xds_nacks"] == 4 and st["server.xds_resources_refused"] >= 2, st


def test_lab_on_demand(xlab):
    """XDS_ON_DEMAND=true: the sidecar subscribes to nothing at first; the first connection to
    the VIP looks it up by "<network>/<ip>", the server answers with the Service and its
    Workloads, the connection goes through; an address nobody has is answered as removed."""
    a, b = xlab.servers
    cp = xlab.cp
    _base(cp, a)
    xlab.start_sidecar(env={"XDS_ON_DEMAND": "true"})
    st = [s for s in cp.streams() if X.ADDRESS in s["types"]][0]
    assert st["types"][X.ADDRESS]["wildcard"] is False
    assert not [s for s in cp.sent(X.ADDRESS) if s["names"]]   # nothing sent before a lookup
    assert xlab.who(3) == ["server-a"] * 3
    subs = [r for r in cp.requests(X.ADDRESS) if "/" + VIP in r["subscribe"]]
    assert len(subs) == 1, cp.requests(X.ADDRESS)
    code, _ = xlab.client.curl("http://198.19.0.99/", timeout=3, user="nobody")
    assert code == 0
    r = cp.wait_request(lambda r: "/198.19.0.99" in r["subscribe"], X.ADDRESS)
    assert [s for s in cp.sent(X.ADDRESS) if s["removed"] == ["/198.19.0.99"]], cp.sent(X.ADDRESS)
    assert r["stream"] == subs[0]["stream"]


@pytest.fixture
def tls_xlab(pod_lab, outrigger_bin, init_bin):
    import certs
    _need_protos()
    d = os.path.join(pod_lab.dir, "istiod")
    ca = certs.CA(os.path.join(d, "ca"))
    leaf = ca.issue(os.path.join(d, "leaf"), "spiffe://cluster.local/ns/istio-system/sa/istiod",
                    extra_sans=["DNS:istiod.istio-system.svc", "IP:127.0.0.1"])
    for root, dirs, files in os.walk(d):
        os.chmod(root, 0o755)
    root = os.path.join(leaf, "root-cert.pem")
    os.chmod(root, 0o644)
    x = XdsLab(pod_lab, tls=(os.path.join(leaf, "cert-chain.pem"), os.path.join(leaf, "key.pem")))
    x.root = root
    yield x
    x.stop()


def test_lab_tls_control_plane(tls_xlab):
    """https: the sidecar verifies the control plane's certificate against XDS_ROOT_CA and its
    name, speaks h2 by ALPN, sends its token as a Bearer header."""
    x = tls_xlab
    a, b = x.servers
    _base(x.cp, a, b)
    tok = os.path.join(x.L.dir, "istio-token")
    with open(tok, "w") as f:
        f.write("lab-token-1")
    os.chmod(tok, 0o644)
    assert x.cp.address.startswith("https://")
    x.start_sidecar(env={"XDS_ROOT_CA": x.root, "ISTIOD_SAN": "istiod.istio-system.svc"},
                    cfg={"identity": {"tokenFile": tok}})
    assert set(x.who(4)) == {"server-a", "server-b"}
    tls = x.cp.events("tls")
    assert tls and tls[0]["alpn"] == "h2", tls
    assert x.cp.metadata()[0]["authorization"] == "Bearer lab-token-1"


def test_cp_raw_drop_and_tcp_stall(cp):
    """push_raw reaches the client as bytes that are no response; drop_connections ends the
    streams; stall(tcp=True) accepts and never sends a byte (no HTTP/2 SETTINGS either)."""
    cp.set(X.ADDRESS, _wl(1))
    c = Client(cp)
    try:
        c.send(node=NODE, type_url=X.ADDRESS)
        c.ack(c.recv())
        cp.wait_ack([s["nonce"] for s in cp.sent(X.ADDRESS)])
        assert cp.push_raw(b"\xff\xff\xff") == 1
        with pytest.raises(AssertionError, match="stream ended"):
            c.recv()
    finally:
        c.close()
    c = Client(cp)
    try:
        c.send(node=NODE, type_url=X.ADDRESS)
        c.recv()
        assert cp.drop_connections() >= 1
        with pytest.raises(AssertionError, match="stream ended"):
            c.recv()
    finally:
        c.close()
    cp.stall(tcp=True)
    import socket
    s = socket.create_connection(("127.0.0.1", cp.port), timeout=5)
    try:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        s.settimeout(1)
        with pytest.raises(socket.timeout):
            s.recv(1)
        assert cp.events("tcp-stalled")
    finally:
        s.close()


def _json(e):
    from google.protobuf import json_format
    return json_format.MessageToDict(e.message, descriptor_pool=envoy_protos.pool())


def test_lab_resources_as_sent(xlab):
    """Every field of rich Workloads, Services and Authorizations, encoded here from upstream's
    field numbers, is what the sidecar's /config_dump shows it decoded (its own encoder prints
    proto3 JSON as json_format does): a wrong field number or type on either side differs.
    Authorization's rules/clauses are istio/istio's groups/rules (the same numbers)."""
    a, b = xlab.servers
    cp = xlab.cp
    wl = meshres.workload(
        "Kubernetes//Pod/default/rich", "rich", ["198.18.0.200", "fd00:198:18::c8"],
        {SVC_KEY: [(80, 8080)], meshres.key("other"): [(443, 8443)]},
        hostname="rich.example", network="net1", tunnelProtocol="HBONE", trustDomain="td.example",
        serviceAccount="sa-rich", node="node-1", canonicalName="rich-app", canonicalRevision="v7",
        workloadType="POD", workloadName="rich-deploy", nativeTunnel=True,
        applicationTunnel={"protocol": "PROXY", "port": 15088},
        authorizationPolicies=["default/deny-x"], status="UNHEALTHY", clusterId="c-9",
        locality={"region": "r1", "zone": "z1", "subzone": "s1"}, networkMode="HOST_NETWORK",
        capacity=3,
        waypoint={"address": {"network": "net1", "address": "xhIAZA=="}, "hboneMtlsPort": 15008},
        networkGateway={"hostname": {"namespace": "istio-system", "hostname": "gw.example"}})
    svc = meshres.service(
        "echo", [VIP, "fd00:198:19::20"], [(80, HTTP_PORT), (443, 8443)],
        subjectAltNames=["spiffe://td.example/ns/default/sa/echo"],
        loadBalancing={"routingPreference": ["NETWORK", "REGION"], "mode": "FAILOVER",
                       "healthPolicy": "ALLOW_ALL"},
        ipFamilies="DUAL", canonical=True, ingressUseWaypoint=True, visibility="NAMESPACE",
        waypoint={"hostname": {"namespace": "default", "hostname": "wp.default.svc.cluster.local"},
                  "hboneMtlsPort": 15008})
    svc["service"]["ports"][1]["appProtocol"] = "HTTP2"
    svc["service"]["addresses"][0]["length"] = 32
    pol = {"name": "deny-x", "namespace": "default", "scope": "NAMESPACE", "action": "DENY", "dryRun": True,
           "rules": [{"clauses": [{"matches": [{
               "namespaces": [{"exact": "x"}], "notNamespaces": [{"presence": {}}],
               "principals": [{"prefix": "spiffe://cluster.local/ns/x/"}], "notPrincipals": [{"suffix": "/sa/y"}],
               "sourceIps": [{"address": "xhIAAA==", "length": 16}],
               "notSourceIps": [{"address": "xhIAAQ==", "length": 32}],
               "destinationIps": [{"address": "xhMAAA==", "length": 24}],
               "notDestinationIps": [{"address": "xhMAAQ==", "length": 32}],
               "destinationPorts": [8080, 9090], "notDestinationPorts": [22],
               "serviceAccounts": [{"namespace": "x", "serviceAccount": "sa1"}],
               "notServiceAccounts": [{"namespace": "y", "serviceAccount": "sa2"}]}]}]}]}
    sent = [X.make_entry(None, wl), X.make_entry(None, svc), X.make_entry(X.AUTHORIZATION, pol)]
    cp.set_many(sent)
    sc = xlab.start_sidecar()
    dump = sc.config_dump()
    got = {}
    for t in ("istio.workload.Address", "istio.security.Authorization"):
        for r in dump["resources"][t]:
            got[r["name"]] = r
    for e in sent:
        assert e.name in got, (e.name, sorted(got))
        r = dict(got[e.name]["resource"])
        assert r.pop("@type") == e.type_url
        want = _json(e)
        if e.type_url == X.AUTHORIZATION:
            want["groups"] = [{"rules": c["clauses"]} for c in want.pop("rules")]
        assert r == want, (e.name, r, want)
        assert got[e.name]["version"] == e.version


def test_cp_tls_with_client_ca(tmp_path):
    """tls=(cert, key, client_ca): https, ALPN h2, a client certificate required and recorded;
    a client without one is refused."""
    import certs
    _need_protos()
    ca = certs.CA(str(tmp_path / "ca"))
    srv = ca.issue(str(tmp_path / "istiod"), "spiffe://cluster.local/ns/istio-system/sa/istiod",
                   extra_sans=["DNS:istiod.istio-system.svc"])
    cli = ca.issue(str(tmp_path / "client"), "spiffe://cluster.local/ns/default/sa/client")
    rd = lambda d, n: open(os.path.join(d, n), "rb").read()  # noqa: E731
    cp = X.XdsServer(tls=(os.path.join(srv, "cert-chain.pem"), os.path.join(srv, "key.pem"),
                          os.path.join(srv, "root-cert.pem"))).start()
    try:
        assert cp.address == "https://127.0.0.1:%d" % cp.port
        cp.set(X.ADDRESS, _wl(1))
        C = cp.C
        opts = [("grpc.ssl_target_name_override", "istiod.istio-system.svc")]
        creds = grpc.ssl_channel_credentials(rd(srv, "root-cert.pem"), rd(cli, "key.pem"), rd(cli, "cert-chain.pem"))
        ch = grpc.secure_channel("127.0.0.1:%d" % cp.port, creds, opts)
        call = ch.stream_stream("/%s/DeltaAggregatedResources" % X.ADS,
                                request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=C["DeltaDiscoveryResponse"].FromString)
        req = C["DeltaDiscoveryRequest"](type_url=X.ADDRESS)
        req.node.id = NODE
        it = call(iter([req]), timeout=10)
        r = next(it)
        assert [x.name for x in r.resources] == ["uid-1"]
        ch.close()
        ev = cp.events("tls")
        assert ev and ev[0]["alpn"] == "h2" and ev[0]["cert"], ev
        bare = grpc.secure_channel("127.0.0.1:%d" % cp.port, grpc.ssl_channel_credentials(rd(srv, "root-cert.pem")), opts)
        call = bare.stream_stream("/%s/DeltaAggregatedResources" % X.ADS,
                                  request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=C["DeltaDiscoveryResponse"].FromString)
        with pytest.raises(grpc.RpcError):
            next(call(iter([req]), timeout=5))
        bare.close()
        cp.wait(lambda: cp.events("tls-failed"), 5, "the refused handshake")
    finally:
        cp.stop()


def test_lab_ready_only_after_the_control_plane_answers(xlab):
    """A control plane that takes the requests and never answers keeps the sidecar unready
    (xds.readyTimeout 0: no deadline) and the VIP unknown; once it answers, the first ACK of
    every type makes it ready and the Service routes."""
    a, b = xlab.servers
    cp = xlab.cp
    _base(cp, a)
    cp.stall()
    sc = xlab.start_sidecar(ready=False)
    cp.wait_request(lambda r: r["type_url"] == X.ADDRESS, timeout=10)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert sc.health() != 200, "ready before any answer"
        time.sleep(0.2)
    code, _ = xlab.client.curl("http://%s/" % VIP, timeout=2, user="nobody")
    assert code == 0
    cp.unstall()
    lab.wait_for(lambda: sc.health() == 200, timeout=10, what="ready after the answers")
    types = {r["type_url"] for r in cp.acks()}
    assert {X.ADDRESS, X.AUTHORIZATION, X.CLUSTER, X.LISTENER} <= types, types
    assert set(xlab.who(3)) == {"server-a"}
