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
        self.delta = delta
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
        assert r is not None, "stream ended: %s" % self.error
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
        cp.unstall()
        assert cp.wait_streams(1)
        n = cp.set(X.ADDRESS, _wl(6))
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
