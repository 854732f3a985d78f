"""The xDS client end to end (issue 10): the real binary on loopback against an ADS server on a
real gRPC implementation (python3-grpcio) that encodes resources with the REAL Envoy API protos
of @grpc/grpc-js-xds: delta and state of the world, ACK and NACK (a bad resource among good
ones), EDS following the Clusters, removal, a server restart answered with
initial_resource_versions, the token and clusterid headers, readiness, a garbage response, an
oversized one, a server that never answers, TLS with XDS_ROOT_CA and a refused server name.

What the proxy holds is read from /config_dump ("xds" and "resources") and /stats; what it
sent is what the server recorded.

The ADS server here (Ads) is a stopgap, kept small, until the cplane branch's
tests/lab/xds_server.py is merged; the tests only use start/stop, set/remove, push_raw and
the recorded requests and metadata.
"""
import json
import os
import queue
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent import futures

import pytest

import certs
import sds_server
from lab import wait_for

TYPE = "type.googleapis.com/"
CDS = TYPE + "envoy.config.cluster.v3.Cluster"
EDS = TYPE + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = TYPE + "envoy.config.listener.v3.Listener"
RDS = TYPE + "envoy.config.route.v3.RouteConfiguration"
ADDRESS = TYPE + "istio.workload.Address"
AUTHZ = TYPE + "istio.security.Authorization"
WILDCARD = (CDS, LDS, ADDRESS, AUTHZ)
SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
TOKEN = "tok-%d" % os.getpid()

_C = None

WORKLOAD_PROTO = """
syntax = "proto3";
package istio.workload;
message Address { oneof type { Workload workload = 1; Service service = 2; } }
message Workload {
  string uid = 20; string name = 1; string namespace = 2; repeated bytes addresses = 3;
  string service_account = 7; map<string, PortList> services = 22;
}
message PortList { repeated Port ports = 1; }
message Port { uint32 service_port = 1; uint32 target_port = 2; }
message NetworkAddress { string network = 1; bytes address = 2; }
message Service {
  string name = 1; string namespace = 2; string hostname = 3; repeated NetworkAddress addresses = 4;
  repeated Port ports = 5;
}
"""


def C():
    """The message classes of the real protos (compiled once)."""
    global _C
    if _C:
        return _C
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    d = sds_server.envoy_deps()
    if not d:
        pytest.fail("the Envoy protos of @grpc/grpc-js-xds are missing: run packaging/install-deps.sh")
    tmp = tempfile.mkdtemp(prefix="or-xds-e2e-")
    pgv = sds_server._pgv_copy(os.path.join(d, "protoc-gen-validate"), tmp)
    out = os.path.join(tmp, "x.pb")
    subprocess.run(["protoc", "--include_imports", "-o", out, "-I" + d + "/envoy-api", "-I" + d + "/xds",
                    "-I" + d + "/googleapis", "-I" + pgv, "-I/usr/include",
                    "envoy/service/discovery/v3/ads.proto", "envoy/config/cluster/v3/cluster.proto",
                    "envoy/config/endpoint/v3/endpoint.proto"], check=True, capture_output=True, timeout=120)
    fds = descriptor_pb2.FileDescriptorSet()
    with open(out, "rb") as f:
        fds.ParseFromString(f.read())
    # istio.workload.Address: no package ships it; the fields used here, with upstream's
    # numbers (istio/ztunnel proto/workload.proto; xds-hbone.md 1.2).
    wl = os.path.join(tmp, "istio", "workload")
    os.makedirs(wl)
    with open(os.path.join(wl, "workload.proto"), "w") as f:
        f.write(WORKLOAD_PROTO)
    out2 = os.path.join(tmp, "w.pb")
    subprocess.run(["protoc", "-o", out2, "-I" + tmp, "istio/workload/workload.proto"], check=True,
                   capture_output=True, timeout=60)
    with open(out2, "rb") as f:
        w = descriptor_pb2.FileDescriptorSet()
        w.ParseFromString(f.read())
        fds.file.extend(w.file)
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    fac = message_factory.MessageFactory(pool)
    names = {"DeltaReq": "envoy.service.discovery.v3.DeltaDiscoveryRequest",
             "DeltaResp": "envoy.service.discovery.v3.DeltaDiscoveryResponse",
             "Req": "envoy.service.discovery.v3.DiscoveryRequest",
             "Resp": "envoy.service.discovery.v3.DiscoveryResponse",
             "Cluster": "envoy.config.cluster.v3.Cluster",
             "CLA": "envoy.config.endpoint.v3.ClusterLoadAssignment",
             "Address": "istio.workload.Address"}
    _C = {k: fac.GetPrototype(pool.FindMessageTypeByName(v)) for k, v in names.items()}
    return _C


def cluster(name, lb_policy=0):
    c = C()["Cluster"]()
    c.name = name
    c.type = 3  # EDS
    c.eds_cluster_config.service_name = name
    c.connect_timeout.seconds = 1
    c.lb_policy = lb_policy  # 77: no such value, refused by name
    return c


def cla(name, ip="10.1.1.1"):
    e = C()["CLA"]()
    e.cluster_name = name
    sa = e.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    sa.address, sa.port_value = ip, 80
    return e


def address_service(name, vip, port, target, ns="default"):
    a = C()["Address"]()
    s = a.service
    s.name, s.namespace, s.hostname = name, ns, "%s.%s.svc.cluster.local" % (name, ns)
    s.addresses.add().address = socket.inet_aton(vip)
    p = s.ports.add()
    p.service_port, p.target_port = port, target
    return "%s/%s" % (ns, s.hostname), a


def address_workload(name, ip, svc_key, port, target, ns="default"):
    a = C()["Address"]()
    w = a.workload
    w.uid = "cluster1//Pod/%s/%s" % (ns, name)
    w.name, w.namespace, w.service_account = name, ns, "sa-" + name
    w.addresses.append(socket.inet_aton(ip))
    p = w.services[svc_key].ports.add()
    p.service_port, p.target_port = port, target
    return w.uid, a


class _Stream:
    def __init__(self, md):
        self.q = queue.Queue()
        self.md = md
        self.subs = {}          # type_url -> None (wildcard) or set of names
        self.nonce = 0


class Ads:
    """A small ADS server (delta or SotW) holding resources per type; answers each
    subscription with what it has (delta: skipping the initial_resource_versions that match,
    as istiod does), pushes changes to the streams that subscribe, records every request."""

    def __init__(self, sotw=False, hang=False, creds=None):
        self.sotw, self.hang, self.creds = sotw, hang, creds
        self.lock = threading.Lock()
        self.res = {}             # type_url -> {name: (version, message)}
        self.requests = []        # (stream number, request)
        self.streams = []
        self.nstreams = 0
        self.version = 0
        self.port = None
        self.server = None

    def start(self):
        import grpc
        c = C()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        h = {"DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._stream, request_deserializer=c["DeltaReq"].FromString,
                response_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString()),
             "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._stream, request_deserializer=c["Req"].FromString,
                response_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString())}
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, h),))
        addr = "127.0.0.1:%d" % (self.port or 0)
        self.port = (self.server.add_secure_port(addr, self.creds) if self.creds else
                     self.server.add_insecure_port(addr))
        self.server.start()
        return self

    def stop(self):
        with self.lock:
            for st in self.streams:
                st.q.put(None)
        if self.server:
            self.server.stop(0).wait(5)
            self.server = None

    # ---- what it serves ----
    def set(self, type_url, name, msg):
        with self.lock:
            self.version += 1
            v = "v%d" % self.version
            self.res.setdefault(type_url, {})[name] = (v, msg)
            for st in self.streams:
                if self._wants(st, type_url, name):
                    st.q.put(self._resp(st, type_url, [name]))

    def remove(self, type_url, name):
        with self.lock:
            self.version += 1
            self.res.get(type_url, {}).pop(name, None)
            for st in self.streams:
                if self._wants(st, type_url, name):
                    st.q.put(self._resp(st, type_url, [], removed=[name]))

    def push_raw(self, data):
        with self.lock:
            for st in self.streams:
                st.q.put(data)

    # ---- what it saw ----
    def reqs(self, type_url=None, stream=None):
        with self.lock:
            return [r for s, r in self.requests if (type_url is None or r.type_url == type_url) and
                    (stream is None or s == stream)]

    def metadata(self, stream=0):
        with self.lock:
            return dict(self._md[stream])

    # ---- serving ----
    def _wants(self, st, t, name):
        if t not in st.subs:
            return False
        return st.subs[t] is None or name in st.subs[t]

    def _resp(self, st, t, names, removed=(), initial=None):
        c = C()
        st.nonce += 1
        have = self.res.get(t, {})
        if self.sotw:
            r = c["Resp"]()
            r.version_info = "v%d" % self.version
            # SotW: every resource of the type the stream asked for.
            for n, (v, m) in sorted(have.items()):
                if self._wants(st, t, n):
                    r.resources.add().Pack(m)
        else:
            r = c["DeltaResp"]()
            r.system_version_info = "v%d" % self.version
            for n in names:
                if n in have and (initial or {}).get(n) != have[n][0]:
                    x = r.resources.add()
                    x.name, x.version = n, have[n][0]
                    x.resource.Pack(have[n][1])
            r.removed_resources.extend(removed)
        r.type_url = t
        r.nonce = "%s-%d" % (t.rsplit(".", 1)[-1], st.nonce)
        return r

    def _stream(self, it, ctx):
        st = _Stream(dict(ctx.invocation_metadata()))
        with self.lock:
            num = self.nstreams
            self.nstreams += 1
            self.streams.append(st)
            if not hasattr(self, "_md"):
                self._md = {}
            self._md[num] = st.md

        def reader():
            try:
                for req in it:
                    with self.lock:
                        self.requests.append((num, req))
                        if self.hang:
                            continue
                        self._on_request(st, req)
            except Exception:
                pass
            st.q.put(None)

        threading.Thread(target=reader, daemon=True).start()
        try:
            while True:
                m = st.q.get()
                if m is None:
                    return
                yield m
        finally:
            with self.lock:
                if st in self.streams:
                    self.streams.remove(st)

    def _on_request(self, st, req):
        t = req.type_url
        if self.sotw:
            if req.response_nonce and req.HasField("error_detail"):
                return
            names = None if t in WILDCARD else set(req.resource_names)
            changed = st.subs.get(t, "none") != names
            st.subs[t] = names
            if not req.response_nonce or changed:
                st.q.put(self._resp(st, t, []))
            return
        if req.response_nonce:
            return  # an ACK or NACK
        first = t not in st.subs
        if first:
            st.subs[t] = None if (t in WILDCARD and not req.resource_names_subscribe) else set()
        subs = st.subs[t]
        new = list(req.resource_names_subscribe)
        if subs is not None:
            if "*" in new and "*" in req.resource_names_unsubscribe:
                new = []
            subs.update(new)
            subs.difference_update(req.resource_names_unsubscribe)
        names = sorted(self.res.get(t, {})) if subs is None else new
        if first or names:
            st.q.put(self._resp(st, t, names, initial=dict(req.initial_resource_versions)))


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


CLUSTER = "envoy.config.cluster.v3.Cluster"
CLA = "envoy.config.endpoint.v3.ClusterLoadAssignment"


@pytest.fixture
def env(tmp_path, outrigger_bin):
    d = str(tmp_path)
    with open(os.path.join(d, "token"), "w") as f:
        f.write(TOKEN + "\n")
    made = []

    class E:
        pass

    e = E()
    e.dir = d

    def ads(**kw):
        s = Ads(**kw).start()
        made.append(s)
        return s

    def proxy(address, **kw):
        p = Proxy(outrigger_bin, d, address, **kw).start()
        made.append(p)
        return p

    e.ads, e.proxy = ads, proxy
    yield e
    for m in reversed(made):
        m.stop()


def serve_mesh(ads):
    for n in ("c1", "c2"):
        ads.set(CDS, n, cluster(n))
        ads.set(EDS, n, cla(n))


@pytest.mark.parametrize("sotw", [False, True], ids=["delta", "sotw"])
def test_ack_nack_eds_headers(env, sotw):
    """Good clusters applied and ACKed, their ClusterLoadAssignments subscribed by name; a bad
    cluster among good ones NACKed by name while the good one applies; headers and node."""
    ads = env.ads(sotw=sotw)
    serve_mesh(ads)
    p = env.proxy("http://127.0.0.1:%d" % ads.port, env={"XDS_SOTW": "true" if sotw else "false",
                                                          "CLUSTER_ID": "east",
                                                          "XDS_HEADER_X_REVISION": "canary"})
    wait_for(lambda: p.ready()[0] == 200, timeout=15, what="ready after the first responses")
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], what="the ClusterLoadAssignments")
    assert p.names(CLUSTER) == ["c1", "c2"]
    eds = p.xtype(CLA)
    assert eds["subscription"] == ["c1", "c2"]
    md = ads.metadata(0)
    assert md.get("authorization") == "Bearer " + TOKEN
    assert md.get("clusterid") == "east"
    assert md.get("x_revision") == "canary"
    # The node on the stream's first request only; CDS asked first.
    all_reqs = ads.reqs(stream=0)
    assert all_reqs[0].type_url == CDS
    assert all_reqs[0].node.id == "sidecar~10.0.0.5~client-1.demo~demo.svc.cluster.local"
    assert all(not r.HasField("node") for r in all_reqs[1:])
    # A bad cluster with a good one.
    ads.set(CDS, "c3", cluster("c3", lb_policy=77))
    ads.set(CDS, "c4", cluster("c4"))
    wait_for(lambda: "c4" in p.names(CLUSTER), what="the good cluster")
    nacks = [r for r in ads.reqs(CDS) if r.HasField("error_detail")]
    assert nacks and "c3" in nacks[0].error_detail.message, [str(r) for r in ads.reqs(CDS)]
    assert "c3" not in p.names(CLUSTER)
    x = p.xtype(CLUSTER)
    assert x["nacks"] >= 1 and "c3" in x["lastNack"]["error"]
    st = p.stats()
    assert int(st["server.xds_nacks"]) >= 1 and int(st["server.xds_acks"]) >= 4
    assert st["server.xds_connected"] == "1"
    if sotw:
        # The NACK carries the previous good version; an ACK the one it answers.
        acked = [r for r in ads.reqs(CDS) if r.response_nonce and not r.HasField("error_detail")]
        assert acked and all(r.version_info for r in acked)
        assert nacks[0].version_info != "" and nacks[0].version_info in [r.version_info for r in acked]
    else:
        assert all(not r.HasField("error_detail") or r.response_nonce for r in ads.reqs(CDS))


def test_removal_and_reconnect(env):
    """A removed resource goes; a server restart: the new stream asks with
    initial_resource_versions of what the proxy holds, and the mesh serves on meanwhile."""
    ads = env.ads()
    serve_mesh(ads)
    p = env.proxy("http://127.0.0.1:%d" % ads.port)
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=15, what="the mesh")
    ads.remove(CDS, "c2")
    wait_for(lambda: p.names(CLUSTER) == ["c1"], what="c2 removed")
    wait_for(lambda: p.xtype(CLA)["subscription"] == ["c1"], what="c2's endpoints unsubscribed")
    unsub = [r for r in ads.reqs(EDS) if "c2" in r.resource_names_unsubscribe]
    assert unsub
    port = ads.port
    ads.stop()
    wait_for(lambda: p.dump()["xds"]["connected"] is False, what="the stream down")
    assert p.names(CLUSTER) == ["c1"]      # the last good state serves on
    ads2 = Ads()
    ads2.port = port
    ads2.res = ads.res
    ads2.start()
    env_made = ads2  # stopped below
    try:
        wait_for(lambda: ads2.reqs(CDS), timeout=20, what="a new stream")
        first = ads2.reqs(CDS)[0]
        assert dict(first.initial_resource_versions) == {"c1": ads.res[CDS]["c1"][0]}
        e = ads2.reqs(EDS)[0]
        assert list(e.resource_names_subscribe) == ["c1"]
        assert dict(e.initial_resource_versions) == {"c1": ads.res[EDS]["c1"][0]}
        wait_for(lambda: p.dump()["xds"]["connected"], what="connected again")
        assert int(p.stats()["server.xds_reconnects"]) >= 1
    finally:
        env_made.stop()


def test_readiness_waits_and_server_never_answers(env):
    """A server that takes the stream and never answers: not ready, the body says what it waits
    for; the stream stays, nothing crashes. xds.readyTimeout ends the wait."""
    ads = env.ads(hang=True)
    p = env.proxy("http://127.0.0.1:%d" % ads.port, cfg={"xds": {"readyTimeout": "3s"}})
    wait_for(lambda: ads.reqs(CDS), what="the stream")
    code, body = p.ready()
    assert code == 503 and "envoy.config.cluster.v3.Cluster" in body, (code, body)
    wait_for(lambda: p.ready()[0] == 200, timeout=10, what="ready at xds.readyTimeout")
    assert p.proc.poll() is None


def test_garbage_and_oversized(env):
    """A response that is no DiscoveryResponse ends the stream (no nonce to NACK), counted;
    one above xds.maxMessage too (RESOURCE_EXHAUSTED); the proxy reconnects each time and
    applies what comes next."""
    ads = env.ads()
    serve_mesh(ads)
    p = env.proxy("http://127.0.0.1:%d" % ads.port, cfg={"xds": {"maxMessage": 65536}})
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=15, what="the mesh")
    ads.push_raw(b"\xff\xff\xff garbage, not protobuf")
    wait_for(lambda: ads.nstreams >= 2, timeout=10, what="a reconnect after garbage")
    assert int(p.stats()["server.xds_bad_responses"]) >= 1
    assert "does not decode" in p.dump()["xds"]["lastError"] or ads.nstreams >= 2
    ads.set(CDS, "big", cluster("x" * 70000))
    wait_for(lambda: ads.nstreams >= 3, timeout=10, what="a reconnect after the oversized message")
    wait_for(lambda: "RESOURCE_EXHAUSTED" in p.dump()["xds"]["lastError"] or p.dump()["xds"]["connected"],
             what="the error")
    assert p.proc.poll() is None
    assert "c1" in p.names(CLUSTER)


def test_tls_root_and_san(env):
    """https with XDS_ROOT_CA: the server's certificate chains to it and carries the name; a name
    mismatch (ISTIOD_SAN) is refused: no stream, the reason in lastError."""
    import grpc
    ca = certs.CA(os.path.join(env.dir, "ca"))
    leaf = ca.issue(os.path.join(env.dir, "istiod"), "spiffe://cluster.local/ns/istio-system/sa/istiod",
                    extra_sans=["DNS:istiod.istio-system.svc", "IP:127.0.0.1"])
    with open(os.path.join(leaf, "key.pem"), "rb") as f:
        key = f.read()
    with open(os.path.join(leaf, "cert-chain.pem"), "rb") as f:
        chain = f.read()
    creds = grpc.ssl_server_credentials([(key, chain)])
    ads = env.ads(creds=creds)
    serve_mesh(ads)
    root = os.path.join(leaf, "root-cert.pem")
    p = env.proxy("https://127.0.0.1:%d" % ads.port, env={"XDS_ROOT_CA": root,
                                                           "ISTIOD_SAN": "istiod.istio-system.svc"})
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=15, what="the mesh over TLS")
    p.stop()
    n = ads.nstreams
    bad = env.proxy("https://127.0.0.1:%d" % ads.port, env={"XDS_ROOT_CA": root, "ISTIOD_SAN": "evil.example"})
    wait_for(lambda: bad.dump()["xds"]["reconnects"] >= 2, timeout=10, what="refused attempts")
    assert ads.nstreams == n
    assert bad.dump()["xds"]["connected"] is False
    assert bad.dump()["xds"]["lastError"], bad.dump()["xds"]
    assert bad.ready()[0] == 503


def test_state_file_restart(env):
    """The last acknowledged state is written to xds.stateFile; a restart with the control plane
    down serves it at once (ready, in /config_dump, said in the log and /stats) until the server
    answers, then the server's state."""
    state = os.path.join(env.dir, "xds-state.pb")
    ads = env.ads()
    serve_mesh(ads)
    cfg = {"xds": {"stateFile": state}}
    p = env.proxy("http://127.0.0.1:%d" % ads.port, cfg=cfg)
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=15, what="the mesh")
    wait_for(lambda: int(p.stats()["server.xds_state_writes"]) >= 1, timeout=5, what="a state write")
    assert p.stop() == 0
    assert os.path.getsize(state) > 0
    port = ads.port
    ads.stop()
    q = env.proxy("http://127.0.0.1:%d" % port, cfg=cfg)
    assert q.ready()[0] == 200
    assert q.names(CLUSTER) == ["c1", "c2"] and q.names(CLA) == ["c1", "c2"]
    assert q.stats()["server.xds_state_loaded"] == "1"
    assert q.dump()["xds"]["servingStateFile"] is True
    assert "from the state file %s" % state in q.logtext()
    # The control plane back with one cluster changed: its word replaces the file's.
    ads2 = Ads()
    ads2.port = port
    ads2.res = {t: dict(v) for t, v in ads.res.items()}
    ads2.start()
    try:
        ads2.set(CDS, "c5", cluster("c5"))
        wait_for(lambda: "c5" in q.names(CLUSTER), timeout=20, what="the server's state")
        assert q.stats()["server.xds_state_loaded"] == "0"
        # Asked by version for what the file held.
        assert set(dict(ads2.reqs(CDS)[0].initial_resource_versions)) == {"c1", "c2"}
    finally:
        ads2.stop()


def test_state_file_serves_traffic_with_control_plane_down(env, pod_lab, init_bin):
    """A sidecar started with the control plane unreachable routes a VIP that only its state
    file knows (REGISTRY_ONLY: anything unknown is reset). The file was written by an earlier
    run from the xDS server's Address resources."""
    L = pod_lab
    client = L.add_pod("client")
    server = L.add_pod("server")
    server.app(["echo", "--port", 8080])
    vip = "198.19.0.99"
    ads = env.ads()
    key, svc = address_service("echo99", vip, 80, 8080)
    uid, wl = address_workload("echo-server", server.ip, key, 80, 8080)
    ads.set(ADDRESS, key, svc)
    ads.set(ADDRESS, uid, wl)
    state = os.path.join(env.dir, "state.pb")
    p = env.proxy("http://127.0.0.1:%d" % ads.port, cfg={"xds": {"stateFile": state}})
    wait_for(lambda: len(p.names("istio.workload.Address")) == 2, timeout=15, what="the Addresses")
    wait_for(lambda: int(p.stats()["server.xds_state_writes"]) >= 1, timeout=5, what="a state write")
    p.stop()
    ads.stop()
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
    # Something the file does not know is refused: the route above was the file's.
    r, out = client.client(["echo-client", "--host", "198.19.0.98", "--port", 80, "--count", 1,
                            "--timeout", 5])
    assert not out or out.get("ok", 0) == 0, out


def test_unknown_type_nacked(env):
    """A response of a type we never asked for is NACKed by its nonce (the stream stays)."""
    ads = env.ads()
    serve_mesh(ads)
    p = env.proxy("http://127.0.0.1:%d" % ads.port)
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=15, what="the mesh")
    r = C()["DeltaResp"]()
    r.type_url, r.nonce = TYPE + "envoy.config.core.v3.TypedExtensionConfig", "odd-1"
    ads.push_raw(r.SerializeToString())
    wait_for(lambda: [q for q in ads.reqs() if q.response_nonce == "odd-1"], what="the NACK")
    q = [q for q in ads.reqs() if q.response_nonce == "odd-1"][0]
    assert q.HasField("error_detail") and q.type_url == r.type_url, q
    assert ads.nstreams == 1
    assert p.names(CLUSTER) == ["c1", "c2"]


def test_on_demand_initial_request(env):
    """xds.onDemand: Address starts subscribed to nothing ("*" in and out); the rest as usual."""
    ads = env.ads()
    p = env.proxy("http://127.0.0.1:%d" % ads.port, env={"XDS_ON_DEMAND": "true"})
    wait_for(lambda: ads.reqs(ADDRESS), what="the Address request")
    a = ads.reqs(ADDRESS)[0]
    assert list(a.resource_names_subscribe) == ["*"] and list(a.resource_names_unsubscribe) == ["*"]
    assert p.xtype("istio.workload.Address")["subscription"] == []
    # Readiness does not wait for Address, which is not a wildcard now.
    wait_for(lambda: p.ready()[0] == 200, timeout=10, what="ready")


def test_sighup_keeps_xds_resources(env):
    """SIGHUP with xDS: the file's resources are rebuilt with the xDS state, which stays."""
    import signal
    ads = env.ads()
    serve_mesh(ads)
    static = {"@type": CDS, "name": "static1", "type": "STATIC", "connectTimeout": "1s"}
    p = env.proxy("http://127.0.0.1:%d" % ads.port)
    with open(p.cfg) as f:
        conf = json.load(f)
    conf["resources"] = [static]
    with open(p.cfg, "w") as f:
        json.dump(conf, f)
    wait_for(lambda: p.names(CLA) == ["c1", "c2"], timeout=15, what="the mesh")
    p.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "static1" in p.names(CLUSTER), what="the reloaded file")
    assert p.names(CLUSTER) == ["c1", "c2", "static1"]
    assert p.names(CLA) == ["c1", "c2"]
    ads.set(CDS, "c6", cluster("c6"))
    wait_for(lambda: "c6" in p.names(CLUSTER), what="xDS after the reload")
    assert "static1" in p.names(CLUSTER)
