"""The REAL Envoy API protos, compiled by protoc at run time from the npm package
@grpc/grpc-js-xds (its deps/envoy-api, deps/xds, deps/googleapis, deps/protoc-gen-validate;
packaging/install-deps.sh installs it; OUTRIGGER_ENVOY_DEPS or OUTRIGGER_TEST_CACHE point
elsewhere), loaded into one python3-protobuf descriptor pool per process. The test servers
(sds_server.py, xds_server.py) encode with these, so nothing of Outrigger's own schema is
used on the peer's side.

    import envoy_protos as E
    E.message("envoy.config.cluster.v3.Cluster")()     # a message class
    E.pool()                                            # the DescriptorPool (add more files to it)
"""
import os
import queue
import shutil
import subprocess
import tempfile
import threading

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

GRPC_JS_XDS = "1.14.1"

# Everything the test servers serve or nest in an Any (one protoc run, ~0.1 s).
FILES = (
    "envoy/service/secret/v3/sds.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/service/discovery/v3/ads.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "google/protobuf/empty.proto",
    "google/protobuf/wrappers.proto",
)

_lock = threading.RLock()
_pool = None
_factory = None
_classes = {}


def envoy_deps():
    """The deps/ directory of @grpc/grpc-js-xds, or None."""
    cands = []
    if os.environ.get("OUTRIGGER_ENVOY_DEPS"):
        cands.append(os.environ["OUTRIGGER_ENVOY_DEPS"])
    cache = os.environ.get("OUTRIGGER_TEST_CACHE", "/var/cache/outrigger-test")
    cands.append(os.path.join(cache, "npm", "node_modules", "@grpc", "grpc-js-xds", "deps"))
    for d in cands:
        if os.path.isfile(os.path.join(d, "envoy-api", "envoy", "service", "secret", "v3", "sds.proto")):
            return d
    return None


def pgv_copy(src, tmp):
    """protoc 3.21 refuses the Envoy protos of @grpc/grpc-js-xds: their validate
    rules use StringRules.ignore_empty, which the bundled validate.proto lacks;
    a temporary copy declares it (option checking only)."""
    dst = os.path.join(tmp, "pgv")
    shutil.copytree(src, dst)
    p = os.path.join(dst, "validate", "validate.proto")
    with open(p) as f:
        s = f.read()
    if "ignore_empty" not in s.split("message StringRules {", 1)[1].split("\n}", 1)[0]:
        s = s.replace("message StringRules {", "message StringRules {\n  optional bool ignore_empty = 26;", 1)
    with open(p, "w") as f:
        f.write(s)
    return dst


def pool():
    """The DescriptorPool holding FILES and their imports (built once per process)."""
    global _pool, _factory
    with _lock:
        if _pool:
            return _pool
        d = envoy_deps()
        if not d:
            raise RuntimeError("the Envoy API protos of @grpc/grpc-js-xds@%s are not installed "
                               "(run packaging/install-deps.sh)" % GRPC_JS_XDS)
        tmp = tempfile.mkdtemp(prefix="or-envoy-pb-")
        try:
            pgv = pgv_copy(os.path.join(d, "protoc-gen-validate"), tmp)
            out = os.path.join(tmp, "envoy.pb")
            subprocess.run(["protoc", "--include_imports", "-o", out,
                            "-I" + os.path.join(d, "envoy-api"), "-I" + os.path.join(d, "xds"),
                            "-I" + os.path.join(d, "googleapis"), "-I" + pgv, "-I/usr/include"]
                           + list(FILES), check=True, capture_output=True, timeout=120)
            fds = descriptor_pb2.FileDescriptorSet()
            with open(out, "rb") as f:
                fds.ParseFromString(f.read())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        p = descriptor_pool.DescriptorPool()
        for fd in fds.file:
            p.Add(fd)
        _factory = message_factory.MessageFactory(p)
        _pool = p
        return _pool


def add_file(fdp):
    """Add a FileDescriptorProto built by a test (e.g. the Istio messages) to the pool."""
    with _lock:
        p = pool()
        try:
            p.FindFileByName(fdp.name)
        except KeyError:
            p.Add(fdp)


def message(full_name):
    """The message class of full_name (e.g. "envoy.config.cluster.v3.Cluster")."""
    with _lock:
        c = _classes.get(full_name)
        if c is None:
            pool()
            c = _classes[full_name] = _factory.GetPrototype(_pool.FindMessageTypeByName(full_name))
        return c


def duplex(it, on_request, on_end):
    """The body of a test server's bidirectional stream handler (grpcio): a thread reads the
    requests of `it` into on_request(req, q), which may queue responses (messages or raw
    bytes) on q; the generator returned yields them until None is queued (the stream is
    over: the client went away or the server stops); on_end() runs when it ends."""
    q = queue.Queue()

    def reader():
        try:
            for req in it:
                on_request(req, q)
        except Exception:  # grpc.RpcError: the client went away; anything else ends it too
            pass
        q.put(None)

    def gen():
        try:
            while True:
                m = q.get()
                if m is None:
                    return
                yield m
        finally:
            on_end()

    threading.Thread(target=reader, daemon=True).start()
    return q, gen()
