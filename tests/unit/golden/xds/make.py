#!/usr/bin/python3
"""xDS responses for tests/unit/test_xds_store.c (test_golden_delta), encoded
by a REAL protobuf implementation (Debian's python3-protobuf) from the REAL
Envoy API protos of @grpc/grpc-js-xds (compiled by protoc at run time, as
tests/lab/sds_server.py does), so that the field numbers of our
src/proto/envoy/service/discovery/v3/discovery.proto (and of the Cluster,
Listener and HttpConnectionManager fields the store reads) are proven against
the real ones. The Address resources inside are tests/unit/golden/pb's
workload.bin and service.bin (themselves encoded from the real Istio schema),
carried as Any bytes.

    tests/unit/golden/xds/make.py           rewrite the .bin files
    tests/unit/golden/xds/make.py --check   compare instead (exit 1 on a difference)
    tests/unit/golden/xds/make.py --corpus  also write fuzz_xds's seed corpus
                                            (tests/fuzz/corpus/xds)

`make check` runs --check (tests/unit/xds-golden-check.sh; skipped where
protoc, python3-protobuf or the npm package are missing).
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "lab"))
import sds_server  # noqa: E402  (its envoy_deps and protoc workaround)

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402

TYPE = "type.googleapis.com/"
FILES = [
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/route/v3/route.proto",
]
NAMES = {
    "DeltaDiscoveryResponse": "envoy.service.discovery.v3.DeltaDiscoveryResponse",
    "DiscoveryResponse": "envoy.service.discovery.v3.DiscoveryResponse",
    "Cluster": "envoy.config.cluster.v3.Cluster",
    "Listener": "envoy.config.listener.v3.Listener",
    "HttpConnectionManager":
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "ClusterLoadAssignment": "envoy.config.endpoint.v3.ClusterLoadAssignment",
    "RouteConfiguration": "envoy.config.route.v3.RouteConfiguration",
}


def classes():
    d = sds_server.envoy_deps()
    if not d:
        sys.exit("the Envoy API protos of @grpc/grpc-js-xds are not installed (packaging/install-deps.sh)")
    tmp = tempfile.mkdtemp(prefix="or-xds-golden-")
    try:
        pgv = sds_server._pgv_copy(os.path.join(d, "protoc-gen-validate"), tmp)
        out = os.path.join(tmp, "xds.pb")
        subprocess.run(["protoc", "--include_imports", "-o", out,
                        "-I" + os.path.join(d, "envoy-api"), "-I" + os.path.join(d, "xds"),
                        "-I" + os.path.join(d, "googleapis"), "-I" + pgv, "-I/usr/include"] + FILES,
                       check=True, capture_output=True, timeout=120)
        fds = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as f:
            fds.ParseFromString(f.read())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    fac = message_factory.MessageFactory(pool)
    return {k: fac.GetPrototype(pool.FindMessageTypeByName(v)) for k, v in NAMES.items()}


def pb_golden(name):
    with open(os.path.join(TOP, "tests", "unit", "golden", "pb", name), "rb") as f:
        return f.read()


def delta_address(C):
    r = C["DeltaDiscoveryResponse"](system_version_info="2026-12-02T06:00:00Z/7", nonce="nonce-42",
                                     type_url=TYPE + "istio.workload.Address")
    r.control_plane.identifier = "istiod-7d9f"
    w = r.resources.add(name="Kubernetes//Pod/default/client-5b9c", version="w-v1", aliases=["/10.0.0.1"])
    w.resource.type_url = TYPE + "istio.workload.Address"
    w.resource.value = pb_golden("workload.bin")
    w.ttl.seconds = 30
    w.cache_control.do_not_cache = False
    # A Resource named only by resource_name (field 8).
    s = r.resources.add(version="s-v1")
    s.resource_name.name = "default/server.default.svc.cluster.local"
    s.resource.type_url = TYPE + "istio.workload.Address"
    s.resource.value = pb_golden("service.bin")
    s.metadata.filter_metadata["istio"]["x"] = "y"
    r.removed_resources.append("Kubernetes//Pod/default/gone-1")
    r.removed_resource_names.add(name="Kubernetes//Pod/default/gone-2")
    return r.SerializeToString(deterministic=True)


def sotw_cluster(C):
    r = C["DiscoveryResponse"](version_info="v9", nonce="n-9", type_url=TYPE + "envoy.config.cluster.v3.Cluster",
                               canary=True)
    r.control_plane.identifier = "istiod-7d9f"
    eds = C["Cluster"](name="outbound|9080||reviews.default.svc.cluster.local",
                       type=C["Cluster"].DiscoveryType.Value("EDS"))
    eds.eds_cluster_config.eds_config.ads.SetInParent()
    eds.connect_timeout.seconds = 10
    r.resources.add().Pack(eds)
    stat = C["Cluster"](name="BlackHoleCluster", type=C["Cluster"].DiscoveryType.Value("STATIC"))
    r.resources.add().Pack(stat)
    return r.SerializeToString(deterministic=True)


def delta_listener(C):
    r = C["DeltaDiscoveryResponse"](system_version_info="l1", nonce="n-l1",
                                     type_url=TYPE + "envoy.config.listener.v3.Listener")
    ls = C["Listener"](name="0.0.0.0_9080")
    ls.address.socket_address.address = "0.0.0.0"
    ls.address.socket_address.port_value = 9080
    hcm = C["HttpConnectionManager"](stat_prefix="outbound_0.0.0.0_9080")
    hcm.rds.route_config_name = "9080"
    hcm.rds.config_source.ads.SetInParent()
    fc = ls.filter_chains.add()
    f = fc.filters.add(name="envoy.filters.network.http_connection_manager")
    f.typed_config.Pack(hcm)
    res = r.resources.add(name="0.0.0.0_9080", version="l-v1")
    res.resource.Pack(ls)
    return r.SerializeToString(deterministic=True)


def corpus(C):
    """fuzz_xds inputs: byte 0 (bit 0 delta, bit 1 two messages with a
    2-byte little-endian length of the first), then the message(s)."""
    out = os.path.join(TOP, "tests", "fuzz", "corpus", "xds")
    os.makedirs(out, exist_ok=True)
    addr = TYPE + "istio.workload.Address"

    def two(kind, a, b):
        return bytes([kind | 2, len(a) & 0xff, len(a) >> 8]) + a + b

    # A removal and a new version of the service, after delta-address.
    r = C["DeltaDiscoveryResponse"](nonce="n2", type_url=addr)
    r.removed_resources.append("Kubernetes//Pod/default/client-5b9c")
    s = r.resources.add(name="default/server.default.svc.cluster.local", version="s-v2")
    s.resource.type_url = addr
    s.resource.value = pb_golden("service.bin")
    removal = r.SerializeToString(deterministic=True)
    # The wrong type inside, and one name twice.
    r = C["DeltaDiscoveryResponse"](nonce="n3", type_url=addr)
    x = r.resources.add(name="c")
    x.resource.Pack(C["Cluster"](name="c"))
    for v in ("1", "2"):
        x = r.resources.add(name="Kubernetes//Pod/default/client-5b9c", version=v)
        x.resource.type_url = addr
        x.resource.value = pb_golden("workload.bin")
    wrong = r.SerializeToString(deterministic=True)
    # SotW: only the black hole left (reviews removed: full state).
    r = C["DiscoveryResponse"](version_info="v10", nonce="n-10", type_url=TYPE + "envoy.config.cluster.v3.Cluster")
    r.resources.add().Pack(C["Cluster"](name="BlackHoleCluster", type=C["Cluster"].DiscoveryType.Value("STATIC")))
    fewer = r.SerializeToString(deterministic=True)
    # SotW EDS and RDS (not full state).
    cla = C["ClusterLoadAssignment"](cluster_name="outbound|9080||reviews.default.svc.cluster.local")
    ep = cla.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    ep.address, ep.port_value = "10.0.0.7", 9080
    r = C["DiscoveryResponse"](version_info="e1", nonce="n-e1",
                               type_url=TYPE + "envoy.config.endpoint.v3.ClusterLoadAssignment")
    r.resources.add().Pack(cla)
    eds = r.SerializeToString(deterministic=True)
    rc = C["RouteConfiguration"](name="9080")
    vh = rc.virtual_hosts.add(name="reviews", domains=["*"])
    rt = vh.routes.add()
    rt.match.prefix = "/"
    rt.route.cluster = "outbound|9080||reviews.default.svc.cluster.local"
    r = C["DeltaDiscoveryResponse"](nonce="n-r1", type_url=TYPE + "envoy.config.route.v3.RouteConfiguration")
    r.resources.add(name="9080", version="r1").resource.Pack(rc)
    rds = r.SerializeToString(deterministic=True)
    cases = {
        "delta-address": b"\x01" + delta_address(C),
        "sotw-cluster": b"\x00" + sotw_cluster(C),
        "delta-listener": b"\x01" + delta_listener(C),
        "delta-then-removal": two(1, delta_address(C), removal),
        "delta-wrong-type-and-twice": b"\x01" + wrong,
        "sotw-full-state": two(0, sotw_cluster(C), fewer),
        "sotw-eds": b"\x00" + eds,
        "delta-rds": b"\x01" + rds,
        "garbage": b"\x01\xff\xff\xff\x0f",
    }
    for name, data in cases.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def main():
    check = "--check" in sys.argv[1:]
    C = classes()
    if "--corpus" in sys.argv[1:]:
        corpus(C)
    bad = 0
    for name, fn in (("delta-address.bin", delta_address), ("sotw-cluster.bin", sotw_cluster),
                     ("delta-listener.bin", delta_listener)):
        data = fn(C)
        path = os.path.join(HERE, name)
        if check:
            with open(path, "rb") as f:
                if f.read() != data:
                    print("%s: differs from what the real protos make (run make.py)" % name)
                    bad += 1
        else:
            with open(path, "wb") as f:
                f.write(data)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
