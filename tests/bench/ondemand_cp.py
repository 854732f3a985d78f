"""A delta ADS server for on-demand workload discovery, as istiod answers an on-demand
client (pilot/pkg/xds/workload.go generateDeltasOndemand, ambientindex.go Lookup and
AddressInformation): a subscription to "<network>/<ip>" of a workload is answered with
that Workload; of a service VIP with the Service and every Workload that lists it; of an
address nobody has with the name in removed_resources. Every other type (Authorization,
Cluster, Listener, ...) gets an empty response to each request that is not an ACK, so the
client becomes ready. python3-grpcio and the REAL Envoy discovery protos (from
@grpc/grpc-js-xds, as tests/lab/sds_server.py loads them); the istio.workload messages are
written here from the upstream field numbers (istio/istio pkg/workloadapi/workload.proto),
since no package ships them. Nothing of Outrigger's is used.

The on-demand scaling bench's control plane (tests/bench/ondemand.py): it generates a mesh of
100,000 workloads in about a second, where tests/lab/xds_server.py (the e2e tests' control
plane, which keeps every resource as an encoded message) is built for fidelity, not size.

    ondemand_cp.py --dir D --listen 127.0.0.1:0 --mesh mesh.json
    ondemand_cp.py --dir D --listen 127.0.0.1:0 --generate 100000 20000

D/port gets the port; D/requests.jsonl one line per DeltaDiscoveryRequest ({"type",
"sub", "unsub", "nonce", "error"}); D/control.json, re-read at every request, may hold
{"silent": ["<ip>", ...]} (lookups of those are never answered: the client times out).
mesh.json: {"workloads": [{"uid", "name", "namespace", "ip", "services": {"ns/host":
[[port, target]]}}], "services": [{"name", "namespace", "hostname", "vip", "ports":
[[port, target]]}]}. --generate N S: N workloads 10.64.0.0/10 (10.64.0.1, ...) and S
services with VIPs 10.32.0.0/12 (10.32.0.1, ...), workload i serving service i % S; with
--real IP the first --real-services (50) services are served by that pod alone.
"""
import argparse
import ipaddress
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lab"))
import sds_server  # noqa: E402  (the Envoy protos' loader)

ADDRESS = "type.googleapis.com/istio.workload.Address"
SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

F = descriptor_pb2.FieldDescriptorProto


def _field(m, name, num, typ, label=F.LABEL_OPTIONAL, type_name=None):
    f = m.field.add()
    f.name, f.number, f.type, f.label = name, num, typ, label
    if type_name:
        f.type_name = type_name
    return f


def _workload_file():
    """istio.workload's messages this server sends, with upstream's field numbers."""
    fd = descriptor_pb2.FileDescriptorProto()
    fd.name, fd.package, fd.syntax = "od_test/workload.proto", "istio.workload", "proto3"
    m = fd.message_type.add()
    m.name = "Address"
    m.oneof_decl.add().name = "type"
    _field(m, "workload", 1, F.TYPE_MESSAGE, type_name=".istio.workload.Workload").oneof_index = 0
    _field(m, "service", 2, F.TYPE_MESSAGE, type_name=".istio.workload.Service").oneof_index = 0
    m = fd.message_type.add()
    m.name = "NetworkAddress"
    _field(m, "network", 1, F.TYPE_STRING)
    _field(m, "address", 2, F.TYPE_BYTES)
    m = fd.message_type.add()
    m.name = "Port"
    _field(m, "service_port", 1, F.TYPE_UINT32)
    _field(m, "target_port", 2, F.TYPE_UINT32)
    m = fd.message_type.add()
    m.name = "PortList"
    _field(m, "ports", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".istio.workload.Port")
    m = fd.message_type.add()
    m.name = "Service"
    _field(m, "name", 1, F.TYPE_STRING)
    _field(m, "namespace", 2, F.TYPE_STRING)
    _field(m, "hostname", 3, F.TYPE_STRING)
    _field(m, "addresses", 4, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".istio.workload.NetworkAddress")
    _field(m, "ports", 5, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".istio.workload.Port")
    m = fd.message_type.add()
    m.name = "Workload"
    _field(m, "name", 1, F.TYPE_STRING)
    _field(m, "namespace", 2, F.TYPE_STRING)
    _field(m, "addresses", 3, F.TYPE_BYTES, F.LABEL_REPEATED)
    _field(m, "network", 4, F.TYPE_STRING)
    _field(m, "uid", 20, F.TYPE_STRING)
    _field(m, "services", 22, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".istio.workload.Workload.ServicesEntry")
    e = m.nested_type.add()
    e.name = "ServicesEntry"
    e.options.map_entry = True
    _field(e, "key", 1, F.TYPE_STRING)
    _field(e, "value", 2, F.TYPE_MESSAGE, type_name=".istio.workload.PortList")
    return fd


def classes():
    d = sds_server.envoy_deps()
    if not d:
        raise RuntimeError("the Envoy API protos of @grpc/grpc-js-xds are not installed "
                           "(run packaging/install-deps.sh)")
    tmp = tempfile.mkdtemp(prefix="or-odxds-pb-")
    try:
        pgv = sds_server._pgv_copy(os.path.join(d, "protoc-gen-validate"), tmp)
        out = os.path.join(tmp, "ads.pb")
        subprocess.run(["protoc", "--include_imports", "-o", out,
                        "-I" + os.path.join(d, "envoy-api"), "-I" + os.path.join(d, "xds"),
                        "-I" + os.path.join(d, "googleapis"), "-I" + pgv, "-I/usr/include",
                        "envoy/service/discovery/v3/ads.proto"],
                       check=True, capture_output=True, timeout=120)
        fds = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as f:
            fds.ParseFromString(f.read())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    pool.Add(_workload_file())
    fac = message_factory.MessageFactory(pool)
    names = {
        "Req": "envoy.service.discovery.v3.DeltaDiscoveryRequest",
        "Resp": "envoy.service.discovery.v3.DeltaDiscoveryResponse",
        "Address": "istio.workload.Address",
    }
    return {k: fac.GetPrototype(pool.FindMessageTypeByName(v)) for k, v in names.items()}


class Mesh:
    """Workloads and services, indexed as istiod's ambient index is (by uid, by address,
    by service key)."""

    def __init__(self):
        self.wl = {}            # uid -> dict
        self.svc = {}           # "ns/hostname" -> dict
        self.by_ip = {}         # ip -> ("w", uid) or ("s", key)
        self.members = {}       # service key -> [uid]

    def add_workload(self, w):
        self.wl[w["uid"]] = w
        self.by_ip[w["ip"]] = ("w", w["uid"])
        for k in w.get("services", {}):
            self.members.setdefault(k, []).append(w["uid"])

    def add_service(self, s):
        k = "%s/%s" % (s["namespace"], s["hostname"])
        self.svc[k] = s
        self.by_ip[s["vip"]] = ("s", k)

    @classmethod
    def generate(cls, nwl, nsvc, real=None, nreal=0):
        """nwl workloads and nsvc services; with real (an IP), the first nreal services
        are served by that one workload alone (a pod that exists), the others by the
        generated ones (addresses nothing answers at: never dialled)."""
        m = cls()
        wbase = int(ipaddress.ip_address("10.64.0.0"))
        sbase = int(ipaddress.ip_address("10.32.0.0"))
        for j in range(nsvc):
            m.add_service({"name": "svc-%d" % j, "namespace": "ns-%d" % (j % 100),
                           "hostname": "svc-%d.ns-%d.svc.cluster.local" % (j, j % 100),
                           "vip": str(ipaddress.ip_address(sbase + 1 + j)), "ports": [[80, 8080]]})
        def key(j):
            return "ns-%d/svc-%d.ns-%d.svc.cluster.local" % (j % 100, j, j % 100)
        if real:
            m.add_workload({"uid": "Kubernetes//Pod/default/real", "name": "real", "namespace": "default",
                            "ip": real, "services": {key(j): [[80, 8080]] for j in range(nreal)}})
        for i in range(nwl):
            j = nreal + i % (nsvc - nreal) if nsvc > nreal else None
            svcs = {}
            if j is not None:
                svcs[key(j)] = [[80, 8080]]
            m.add_workload({"uid": "Kubernetes//Pod/ns-%d/pod-%d" % (i % 100, i), "name": "pod-%d" % i,
                            "namespace": "ns-%d" % (i % 100), "ip": str(ipaddress.ip_address(wbase + 1 + i)),
                            "services": svcs})
        return m


class Server:
    def __init__(self, d, mesh, network=""):
        self.dir, self.mesh, self.net = d, mesh, network
        self.C = classes()
        self.lock = threading.Lock()
        self.nonces = itertools.count(1)
        self.log = open(os.path.join(d, "requests.jsonl"), "a")

    def _control(self):
        try:
            with open(os.path.join(self.dir, "control.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _address(self, kind, key):
        A = self.C["Address"]
        a = A()
        if kind == "w":
            w = self.mesh.wl[key]
            x = a.workload
            x.uid, x.name, x.namespace, x.network = w["uid"], w["name"], w["namespace"], self.net
            x.addresses.append(ipaddress.ip_address(w["ip"]).packed)
            for k, ports in w.get("services", {}).items():
                pl = x.services[k]
                for sp, tp in ports:
                    p = pl.ports.add()
                    p.service_port, p.target_port = sp, tp
            return w["uid"], ["%s/%s" % (self.net, w["ip"])], a
        s = self.mesh.svc[key]
        x = a.service
        x.name, x.namespace, x.hostname = s["name"], s["namespace"], s["hostname"]
        na = x.addresses.add()
        na.network, na.address = self.net, ipaddress.ip_address(s["vip"]).packed
        for sp, tp in s["ports"]:
            p = x.ports.add()
            p.service_port, p.target_port = sp, tp
        return key, ["%s/%s" % (self.net, s["vip"])], a

    def _lookup(self, name, silent):
        """(resources [(name, aliases, Address)], found) for one subscribed name."""
        net, _, ip = name.rpartition("/")
        if name in self.mesh.wl:
            return [self._address("w", name)], True
        if name in self.mesh.svc:
            return [self._address("s", name)], True
        if net != self.net or ip not in self.mesh.by_ip:
            return [], ip in silent
        kind, key = self.mesh.by_ip[ip]
        if ip in silent:
            return [], True
        out = [self._address(kind, key)]
        if kind == "s":
            out += [self._address("w", u) for u in self.mesh.members.get(key, [])]
        return out, True

    def _respond(self, type_url, resources, removed):
        r = self.C["Resp"]()
        r.type_url = type_url
        r.system_version_info = "1"
        r.nonce = "n%d" % next(self.nonces)
        for name, aliases, msg in resources:
            res = r.resources.add()
            res.name, res.version = name, "1"
            res.aliases.extend(aliases)
            res.resource.Pack(msg)
        r.removed_resources.extend(removed)
        return r

    def stream(self, it, ctx):
        for req in it:
            sub, unsub = list(req.resource_names_subscribe), list(req.resource_names_unsubscribe)
            with self.lock:
                self.log.write(json.dumps({"t": time.time(), "type": req.type_url.rsplit(".", 1)[-1],
                                           "sub": sub, "unsub": unsub, "nonce": req.response_nonce,
                                           "error": req.error_detail.message}) + "\n")
                self.log.flush()
            if req.response_nonce and not sub:
                continue    # an ACK/NACK (or an unsubscribe: no answer, as istiod)
            if req.type_url != ADDRESS:
                yield self._respond(req.type_url, [], [])
                continue
            silent = set(self._control().get("silent", []))
            res, removed, have = [], [], set()
            for name in sub:
                if name == "*":
                    continue
                out, found = self._lookup(name, silent)
                if not found:
                    removed.append(name)
                for rname, aliases, msg in out:
                    if rname not in have:
                        have.add(rname)
                        res.append((rname, aliases, msg))
            if res or removed or req.response_nonce == "":
                yield self._respond(ADDRESS, res, removed)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--mesh")
    ap.add_argument("--generate", nargs=2, type=int, metavar=("WORKLOADS", "SERVICES"))
    ap.add_argument("--network", default="")
    ap.add_argument("--real", help="with --generate: a real pod's IP serving the first --real-services")
    ap.add_argument("--real-services", type=int, default=50)
    a = ap.parse_args()
    if a.generate:
        mesh = Mesh.generate(a.generate[0], a.generate[1], a.real, a.real_services if a.real else 0)
    else:
        mesh = Mesh()
        with open(a.mesh) as f:
            spec = json.load(f)
        for s in spec.get("services", []):
            mesh.add_service(s)
        for w in spec.get("workloads", []):
            mesh.add_workload(w)
    srv = Server(a.dir, mesh, a.network)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_send_message_length", 256 << 20)])
    h = grpc.method_handlers_generic_handler(SERVICE, {
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            srv.stream, request_deserializer=srv.C["Req"].FromString,
            response_serializer=lambda m: m.SerializeToString()),
    })
    server.add_generic_rpc_handlers((h,))
    port = server.add_insecure_port(a.listen)
    server.start()
    with open(os.path.join(a.dir, "port.tmp"), "w") as f:
        f.write(str(port))
    os.rename(os.path.join(a.dir, "port.tmp"), os.path.join(a.dir, "port"))
    print("serving delta ADS on %s port %d: %d workloads, %d services" % (
        a.listen, port, len(mesh.wl), len(mesh.svc)), flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
