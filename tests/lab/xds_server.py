#!/usr/bin/python3
"""A test xDS control plane: Envoy's AggregatedDiscoveryService (DeltaAggregatedResources and
StreamAggregatedResources) on a real gRPC implementation (python3-grpcio), encoding with the
REAL Envoy API protos (envoy_protos.py: compiled at run time from @grpc/grpc-js-xds) and with
the Istio messages istio.workload.* and istio.security.* built here, programmatically, from
the field table below (taken from istio/ztunnel proto/workload.proto and
proto/authorization.proto; nothing of Outrigger's own schema is used, so a wrong field number
on our side fails the tests).

    cp = XdsServer()                  # 127.0.0.1, a free port; tls=(cert, key[, client_ca]) for https
    cp.start(); cp.address            # "http://127.0.0.1:PORT"
    cp.set(ADDRESS, meshres.workload(...))          # store and push to every open stream
    cp.set_many([(ADDRESS, js), ...]); cp.remove(ADDRESS, "uid")
    cp.wait_ack(cp.set(...))          # the nonces a push sent; raises on NACK or timeout
    cp.requests(ADDRESS); cp.acks(); cp.nacks(); cp.metadata()
    cp.push_raw(b"junk"); cp.push_duplicate(ADDRESS, "uid"); cp.push_bad(ADDRESS)
    cp.close_mid_message(); cp.stall(); cp.unstall(); cp.drop_connections()
    cp.stop(); cp.start()             # restart on the same port

Behaviour, as istiod's:
- Delta: a type is wildcard when its first request subscribes nothing (legacy) or "*" (only
  for the wildcard types Address, Workload, Authorization, Cluster, Listener; an empty first
  request of EDS/RDS subscribes nothing). By-name subscriptions get only those names; a name
  may be an alias ("<network>/<ip>", as on-demand lookups use): it resolves to the Workload or
  Service that has it (a Service's address also brings the Workloads that list it), sent
  under its primary name with its aliases, and what was sent joins the subscription (istiod
  merges it); an unknown name is answered in removed_resources. initial_resource_versions: unchanged resources are not sent
  again, names the server no longer has are sent as removed (wildcard). Every first request
  of a type is answered (even empty), later ones only when they subscribe something.
- SotW: full state for the wildcard types, the named resources for EDS/RDS/SDS; version_info
  counts per type; an ACK (or a stale nonce) gets no response; a NACK (error_detail) is
  recorded and not answered: the server keeps its state and the client its last good one
  (reference xds-hbone.md §5.3); a new resource_names list is answered.
- Versions: the given one, else a hash of the encoded resource (so unchanged means equal).

The listening socket is a small TCP (or TLS, ALPN h2) relay in front of grpcio on another
loopback port: it is what lets the server cut a message in half, stall below gRPC, drop
connections, and listen inside a pod's network namespace (netns=) while grpcio stays on the
host's loopback.

CLI: xds_server.py --port N --resources FILE.json   (a sidecar config's "resources" list, or a
list; each entry an Any in proto3 JSON, as tests/lab/meshres.py makes) serves a static set.
"""
import ctypes
import hashlib
import ipaddress
import itertools
import json
import os
import queue
import socket
import ssl
import struct
import sys
import threading
import time
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, json_format

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import envoy_protos  # noqa: E402

T = "type.googleapis.com/"
ADDRESS = T + "istio.workload.Address"
WORKLOAD = T + "istio.workload.Workload"
AUTHORIZATION = T + "istio.security.Authorization"
CLUSTER = T + "envoy.config.cluster.v3.Cluster"
LISTENER = T + "envoy.config.listener.v3.Listener"
ENDPOINT = T + "envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTE = T + "envoy.config.route.v3.RouteConfiguration"
SECRET = T + "envoy.extensions.transport_sockets.tls.v3.Secret"
WILDCARD_TYPES = (ADDRESS, WORKLOAD, AUTHORIZATION, CLUSTER, LISTENER)
ADS = "envoy.service.discovery.v3.AggregatedDiscoveryService"

# ---------------------------------------------------------------------------------------------
# The Istio messages, from the upstream field definitions (istio/ztunnel @ 62d8265,
# proto/workload.proto and proto/authorization.proto). One line per field:
#   name type number [oneof]     type: a scalar, a message or enum (nested first, then the
#   package, or fully qualified with a dot), *T repeated, ?T proto3 optional, map<K,V>.
# An enum: "=NAME N NAME N ...".

ISTIO = {
    "istio.workload": (("google/protobuf/wrappers.proto", "google/protobuf/any.proto"), {
        "Address": """workload Workload 1 type
                      service Service 2 type""",
        "Service": """name string 1
                      namespace string 2
                      hostname string 3
                      addresses *NetworkAddress 4
                      ports *Port 5
                      subject_alt_names *string 6
                      waypoint GatewayAddress 7
                      load_balancing LoadBalancing 8
                      ip_families IPFamilies 9
                      extensions *Extension 10
                      canonical bool 11
                      ingress_use_waypoint bool 12
                      weighted_waypoints *WeightedWaypoint 13
                      visibility Visibility 14""",
        "Service.Visibility": "=PUBLIC 0 NAMESPACE 1",
        "IPFamilies": "=AUTOMATIC 0 IPV4_ONLY 1 IPV6_ONLY 2 DUAL 3",
        "NetworkMode": "=STANDARD 0 HOST_NETWORK 1",
        "LoadBalancing": """routing_preference *Scope 1
                            mode Mode 2
                            health_policy HealthPolicy 3""",
        "LoadBalancing.Scope": "=UNSPECIFIED_SCOPE 0 REGION 1 ZONE 2 SUBZONE 3 NODE 4 CLUSTER 5 NETWORK 6",
        "LoadBalancing.Mode": "=UNSPECIFIED_MODE 0 STRICT 1 FAILOVER 2 PASSTHROUGH 3",
        "LoadBalancing.HealthPolicy": "=ONLY_HEALTHY 0 ALLOW_ALL 1",
        "Workload": """uid string 20
                       name string 1
                       namespace string 2
                       addresses *bytes 3
                       hostname string 21
                       network string 4
                       tunnel_protocol TunnelProtocol 5
                       trust_domain string 6
                       service_account string 7
                       waypoint GatewayAddress 8
                       network_gateway GatewayAddress 19
                       node string 9
                       canonical_name string 10
                       canonical_revision string 11
                       workload_type WorkloadType 12
                       workload_name string 13
                       native_tunnel bool 14
                       application_tunnel ApplicationTunnel 23
                       services map<string,PortList> 22
                       authorization_policies *string 16
                       status WorkloadStatus 17
                       cluster_id string 18
                       locality Locality 24
                       network_mode NetworkMode 25
                       extensions *Extension 26
                       capacity .google.protobuf.UInt32Value 27""",
        "Locality": """region string 1
                       zone string 2
                       subzone string 3""",
        "WorkloadStatus": "=HEALTHY 0 UNHEALTHY 1",
        "WorkloadType": "=DEPLOYMENT 0 CRONJOB 1 POD 2 JOB 3",
        "PortList": "ports *Port 1",
        "Port": """service_port uint32 1
                   target_port uint32 2
                   app_protocol AppProtocol 3""",
        "AppProtocol": "=UNKNOWN 0 HTTP11 1 HTTP2 2 GRPC 3 TCP 4 TLS 5",
        "TunnelProtocol": "=NONE 0 HBONE 1 LEGACY_ISTIO_MTLS 2",
        "ApplicationTunnel": """protocol Protocol 1
                                port uint32 2""",
        "ApplicationTunnel.Protocol": "=NONE 0 PROXY 1",
        "GatewayAddress": """hostname NamespacedHostname 1 destination
                             address NetworkAddress 2 destination
                             hbone_mtls_port uint32 3""",
        "WeightedWaypoint": """destination GatewayAddress 1
                               weight uint32 2""",
        "NetworkAddress": """network string 1
                             address bytes 2
                             length ?uint32 3""",
        "NamespacedHostname": """namespace string 1
                                 hostname string 2""",
        "Extension": """name string 1
                        config .google.protobuf.Any 2""",
    }),
    "istio.security": (("google/protobuf/empty.proto", "outrigger-lab/istio.workload.proto"), {
        "Authorization": """name string 1
                            namespace string 2
                            scope Scope 3
                            action Action 4
                            rules *Rule 5
                            dry_run bool 6
                            extensions *.istio.workload.Extension 7""",
        "Rule": "clauses *Clause 1",
        "Clause": "matches *Match 2",
        "Match": """namespaces *StringMatch 1
                    not_namespaces *StringMatch 2
                    service_accounts *ServiceAccountMatch 11
                    not_service_accounts *ServiceAccountMatch 12
                    principals *StringMatch 3
                    not_principals *StringMatch 4
                    source_ips *Address 5
                    not_source_ips *Address 6
                    destination_ips *Address 7
                    not_destination_ips *Address 8
                    destination_ports *uint32 9
                    not_destination_ports *uint32 10
                    extensions *.istio.workload.Extension 13""",
        "Address": """address bytes 1
                      length uint32 2""",
        "ServiceAccountMatch": """namespace string 1
                                  serviceAccount string 2""",
        "StringMatch": """exact string 1 match_type
                          prefix string 2 match_type
                          suffix string 3 match_type
                          presence .google.protobuf.Empty 4 match_type""",
        "Scope": "=GLOBAL 0 NAMESPACE 1 WORKLOAD_SELECTOR 2",
        "Action": "=ALLOW 0 DENY 1",
    }),
}

_FD = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _FD.TYPE_STRING, "bytes": _FD.TYPE_BYTES, "bool": _FD.TYPE_BOOL,
            "uint32": _FD.TYPE_UINT32, "int32": _FD.TYPE_INT32, "uint64": _FD.TYPE_UINT64,
            "int64": _FD.TYPE_INT64, "double": _FD.TYPE_DOUBLE, "float": _FD.TYPE_FLOAT}


def _camel(name):
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _istio_file(package, deps, table):
    """A FileDescriptorProto for one package of the table."""
    fdp = descriptor_pb2.FileDescriptorProto(name="outrigger-lab/%s.proto" % package,
                                             package=package, syntax="proto3")
    fdp.dependency.extend(deps)
    enums = {k for k, v in table.items() if v.startswith("=")}
    msgs = {}

    def container(path):
        """The DescriptorProto (or the file) that holds the type named by path."""
        if "." not in path:
            return fdp
        return msgs[path.rsplit(".", 1)[0]]

    for tname in sorted(table, key=lambda k: k.count(".")):
        spec = table[tname]
        short = tname.rsplit(".", 1)[-1]
        parent = container(tname)
        if spec.startswith("="):
            ed = parent.enum_type.add(name=short)
            toks = spec[1:].split()
            for n, v in zip(toks[::2], toks[1::2]):
                ed.value.add(name=n, number=int(v))
            continue
        md = (parent.message_type if parent is fdp else parent.nested_type).add(name=short)
        msgs[tname] = md

    def resolve(scope, t):
        if t.startswith("."):
            return t, _FD.TYPE_MESSAGE  # the qualified names in the table are all messages
        for cand in (scope + "." + t, t):
            if cand in enums:
                return ".%s.%s" % (package, cand), _FD.TYPE_ENUM
            if cand in msgs:
                return ".%s.%s" % (package, cand), _FD.TYPE_MESSAGE
        raise KeyError("%s: unknown type %s" % (scope, t))

    def add_field(md, scope, fname, t, num, oneof):
        f = md.field.add(name=fname, number=num, json_name=_camel(fname), label=_FD.LABEL_OPTIONAL)
        if t.startswith("*"):
            f.label, t = _FD.LABEL_REPEATED, t[1:]
        elif t.startswith("?"):
            t = t[1:]
            f.proto3_optional = True
            oneof = "_" + fname
        if t.startswith("map<"):
            k, v = t[4:-1].split(",")
            entry = md.nested_type.add(name="".join(w.capitalize() for w in fname.split("_")) + "Entry")
            entry.options.map_entry = True
            add_field(entry, scope, "key", k, 1, None)
            add_field(entry, scope, "value", v, 2, None)
            f.label, f.type = _FD.LABEL_REPEATED, _FD.TYPE_MESSAGE
            f.type_name = ".%s.%s.%s" % (package, scope, entry.name)
        elif t in _SCALARS:
            f.type = _SCALARS[t]
        else:
            f.type_name, f.type = resolve(scope, t)
        if oneof:
            names = [o.name for o in md.oneof_decl]
            if oneof not in names:
                md.oneof_decl.add(name=oneof)
                names.append(oneof)
            f.oneof_index = names.index(oneof)

    for tname, md in msgs.items():
        for line in table[tname].strip().splitlines():
            parts = line.split()
            add_field(md, tname, parts[0], parts[1], int(parts[2]), parts[3] if len(parts) > 3 else None)
        # proto3 optional's synthetic oneofs must come after the real ones.
        real = [i for i, o in enumerate(md.oneof_decl) if not o.name.startswith("_")]
        if real and len(real) != len(md.oneof_decl) and real != list(range(len(real))):
            raise ValueError("%s: declare real oneofs before optional fields" % tname)
    return fdp


_istio_lock = threading.Lock()
_istio_done = False


def istio_protos():
    """Add istio.workload and istio.security to the Envoy pool (once)."""
    global _istio_done
    with _istio_lock:
        if not _istio_done:
            for package, (deps, table) in ISTIO.items():
                envoy_protos.add_file(_istio_file(package, deps, table))
            _istio_done = True
    return envoy_protos.pool()


def msg(full_name):
    istio_protos()
    return envoy_protos.message(full_name)


def type_name(type_url):
    return type_url.rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------------------------
# Resources

def _ip_text(raw):
    return str(ipaddress.ip_address(bytes(raw)))


def resource_name(type_url, m):
    """The xDS name of a resource, as istiod names it (reference §1.1)."""
    if type_url == ADDRESS:
        if m.HasField("workload"):
            return m.workload.uid
        return "%s/%s" % (m.service.namespace, m.service.hostname)
    if type_url == WORKLOAD:
        return m.uid
    if type_url == AUTHORIZATION:
        return "%s/%s" % (m.namespace, m.name)
    if type_url == ENDPOINT:
        return m.cluster_name
    return m.name


def resource_aliases(type_url, m):
    """The aliases istiod gives an Address: "<network>/<ip>" (and "/<len>" for a CIDR)."""
    out = []
    if type_url == ADDRESS and m.HasField("workload"):
        out = ["%s/%s" % (m.workload.network, _ip_text(a)) for a in m.workload.addresses]
    elif type_url == ADDRESS and m.HasField("service"):
        for a in m.service.addresses:
            s = "%s/%s" % (a.network, _ip_text(a.address))
            if a.HasField("length"):
                s += "/%d" % a.length
            out.append(s)
    return out


class Entry:
    """One stored resource: its name, version, aliases and its encoding as an Any."""

    def __init__(self, type_url, name, version, aliases, any_msg, message=None):
        self.type_url, self.name, self.version = type_url, name, version
        self.aliases, self.any, self.message = list(aliases), any_msg, message

    def __repr__(self):
        return "Entry(%s %s v%s)" % (type_name(self.type_url), self.name, self.version)


def make_entry(type_url, resource, name=None, version=None, aliases=()):
    """An Entry from proto3 JSON (a dict, with or without "@type"), or a message."""
    istio_protos()
    pool = envoy_protos.pool()
    Any = envoy_protos.message("google.protobuf.Any")
    if isinstance(resource, (dict, str)):
        js = json.loads(resource) if isinstance(resource, str) else dict(resource)
        if "@type" in js:
            if type_url and js["@type"] != type_url:
                raise ValueError("resource @type %s is not %s" % (js["@type"], type_url))
            type_url = js["@type"]
            a = Any()
            json_format.ParseDict(js, a, descriptor_pool=pool)
            m = msg(type_name(type_url))()
            m.ParseFromString(a.value)
        else:
            m = msg(type_name(type_url))()
            json_format.ParseDict(js, m, descriptor_pool=pool)
    else:
        m = resource
        type_url = type_url or T + m.DESCRIPTOR.full_name
    a = Any()
    a.type_url = type_url
    a.value = m.SerializeToString(deterministic=True)
    if version is None:
        version = hashlib.sha256(a.value).hexdigest()[:16]
    al = list(resource_aliases(type_url, m)) + [x for x in aliases]
    return Entry(type_url, name or resource_name(type_url, m), str(version), al, a, m)


def to_dict(m):
    return json_format.MessageToDict(m, descriptor_pool=envoy_protos.pool(),
                                     preserving_proto_field_name=True)


# ---------------------------------------------------------------------------------------------
# The relay: TCP (or TLS) in front of grpcio; cuts a message, stalls, drops, lives in a netns.

_CLONE_NEWNET = 0x40000000


def _listen_in(netns, host, port):
    """A listening socket in network namespace netns (None: ours). setns() moves only the
    calling thread, so a short-lived thread makes the socket."""
    out = {}

    def mk():
        try:
            if netns:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open("/run/netns/%s" % netns, os.O_RDONLY)
                try:
                    if libc.setns(fd, _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns(%s)" % netns)
                finally:
                    os.close(fd)
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(64)
            out["s"] = s
        except Exception as e:  # reported to the caller
            out["e"] = e

    t = threading.Thread(target=mk)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out["s"]


class _Conn:
    def __init__(self, down, up):
        self.down, self.up = down, up
        self.closed = False
        self.lock = threading.Lock()

    def close(self):
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.down, self.up):
            if s is None:
                continue
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


class _Relay:
    def __init__(self, owner, host, port, netns, tls):
        self.owner = owner
        self.sock = _listen_in(netns, host, port)
        self.port = self.sock.getsockname()[1]
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(tls[0], tls[1])
            if len(tls) > 2 and tls[2]:
                self.ctx.verify_mode = ssl.CERT_REQUIRED
                self.ctx.load_verify_locations(tls[2])
            self.ctx.set_alpn_protocols(["h2"])
        self.conns = []
        self.lock = threading.Lock()
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.running:
            try:
                c, peer = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c, peer), daemon=True).start()

    def _serve(self, c, peer):
        own = self.owner
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if own._stall_tcp:
            conn = _Conn(c, None)
            with self.lock:
                self.conns.append(conn)
            own._event("tcp-stalled", peer=peer)
            try:
                while c.recv(65536):
                    pass
            except OSError:
                pass
            conn.close()
            return
        if self.ctx:
            try:
                c.settimeout(10)
                c = self.ctx.wrap_socket(c, server_side=True)
                c.settimeout(None)
                own._event("tls", peer=peer, alpn=c.selected_alpn_protocol(), cert=c.getpeercert())
            except (OSError, ssl.SSLError) as e:
                own._event("tls-failed", peer=peer, error=str(e))
                c.close()
                return
        try:
            up = socket.create_connection(("127.0.0.1", own._grpc_port), timeout=5)
            up.settimeout(None)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            c.close()
            return
        conn = _Conn(c, up)
        with self.lock:
            self.conns.append(conn)
            own.connections_total += 1
        threading.Thread(target=self._c2s, args=(conn,), daemon=True).start()
        self._s2c(conn)

    def _c2s(self, conn):
        try:
            while True:
                b = conn.down.recv(65536)
                if not b:
                    break
                conn.up.sendall(b)
        except OSError:
            pass
        conn.close()

    def _s2c(self, conn):
        """Forward whole HTTP/2 frames from grpcio to the client; when a cut is armed,
        send half of the next gRPC message's DATA frame and close the connection."""
        buf = b""
        try:
            while True:
                b = conn.up.recv(65536)
                if not b:
                    break
                buf += b
                out = []
                while len(buf) >= 9:
                    ln = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + ln:
                        break
                    frame, buf = buf[:9 + ln], buf[9 + ln:]
                    ftype, flags = frame[3], frame[4]
                    if ftype == 0 and ln >= 6 and not flags & 0x8 and self.owner._take_cut():
                        keep = 5 + (ln - 5) // 2
                        cut = struct.pack(">I", keep)[1:] + bytes([0, 0]) + frame[5:9] + frame[9:9 + keep]
                        conn.down.sendall(b"".join(out) + cut)
                        self.owner._event("cut", sent=keep, of=ln)
                        conn.close()
                        return
                    out.append(frame)
                if out:
                    conn.down.sendall(b"".join(out))
        except OSError:
            pass
        conn.close()

    def drop(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            c.close()
        return len(conns)

    def close(self):
        self.running = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone would not)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.drop()


# ---------------------------------------------------------------------------------------------
# The server

class _Watch:
    """One type on one stream."""

    def __init__(self):
        self.wildcard = False
        self.names = set()      # delta: subscribed names (aliases included); sotw: resource_names
        self.known = {}         # delta: name -> version the client holds
        self.last_nonce = None  # sotw
        self.sent_version = None


class _Stream:
    def __init__(self, sid, kind, md, peer):
        self.id, self.kind, self.md, self.peer = sid, kind, md, peer
        self.q = queue.Queue()
        self.pending = []       # requests that came while stalled
        self.watches = {}       # type_url -> _Watch
        self.node = None
        self.open = True


class XdsServer:
    def __init__(self, host="127.0.0.1", port=0, tls=None, netns=None, workers=32):
        istio_protos()
        self.host, self.port, self.tls, self.netns = host, port, tls, netns
        self.workers = workers
        self.C = {k: envoy_protos.message("envoy.service.discovery.v3." + k) for k in (
            "DiscoveryRequest", "DiscoveryResponse", "DeltaDiscoveryRequest", "DeltaDiscoveryResponse",
            "Resource")}
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.res = {}                # type_url -> {name: Entry}
        self._aliases = {}           # type_url -> {alias: name}
        self._members = {}           # Service name -> {Workload uid} (the Workloads listing it)
        self.type_version = {}       # type_url -> int (SotW version_info)
        self.nonces = itertools.count(1)
        self.nonce_prefix = "n"     # a test may make nonces long (any length is valid)
        self.stream_ids = itertools.count(1)
        self._requests = []          # dicts, in arrival order
        self._sent = []              # dicts, in order
        self._events = []
        self._streams = []
        self._all_streams = []
        self._stall = False
        self._stall_tcp = False
        self._cuts = 0
        self.connections_total = 0
        self.on_request = None       # called (under the lock) with each request recorded
        self.server = None
        self.relay = None
        self._grpc_port = None

    # ---- life ----
    @property
    def address(self):
        return "%s://%s:%d" % ("https" if self.tls else "http",
                               "[%s]" % self.host if ":" in self.host else self.host, self.port)

    def start(self):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.workers),
                                  options=[("grpc.max_receive_message_length", 256 << 20),
                                           ("grpc.max_send_message_length", 256 << 20)])
        ser = lambda m: m if isinstance(m, bytes) else m.SerializeToString()  # noqa: E731
        h = grpc.method_handlers_generic_handler(ADS, {
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._delta, request_deserializer=self.C["DeltaDiscoveryRequest"].FromString,
                response_serializer=ser),
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._sotw, request_deserializer=self.C["DiscoveryRequest"].FromString,
                response_serializer=ser),
        })
        self.server.add_generic_rpc_handlers((h,))
        self._grpc_port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.relay = _Relay(self, self.host, self.port, self.netns, self.tls)
        self.port = self.relay.port
        return self

    def stop(self):
        """Vanish: close the listener, every connection and stream; the resources stay, and
        start() binds the same port again."""
        if self.relay:
            self.relay.close()
            self.relay = None
        if self.server:
            with self.lock:
                for st in self._streams:
                    st.q.put(None)
            self.server.stop(0).wait(5)
            self.server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- stream handlers ----
    def _open(self, kind, ctx):
        md = {}
        for k, v in ctx.invocation_metadata():
            md[k] = v
        with self.lock:
            return _Stream(next(self.stream_ids), kind, md, ctx.peer())

    def _run(self, st, it, handle):
        def on_request(req, q):
            with self.lock:
                try:
                    handle(st, req)
                except Exception as e:  # a bug here must show in events(), not hang a test
                    self._event("handler-error", stream=st.id, error=repr(e))
                    raise
                self.cond.notify_all()

        def on_end():
            with self.lock:
                st.open = False
                if st in self._streams:
                    self._streams.remove(st)
                self.cond.notify_all()

        with self.lock:  # listed before its first request is read: no push can miss it
            self._streams.append(st)
            self._all_streams.append(st)
            self.cond.notify_all()
        return envoy_protos.duplex(it, on_request, on_end, st.q)[1]

    def _delta(self, it, ctx):
        return self._run(self._open("delta", ctx), it, self._on_delta)

    def _sotw(self, it, ctx):
        return self._run(self._open("sotw", ctx), it, self._on_sotw)

    def _record(self, st, req, delta):
        d = {"seq": len(self._requests), "stream": st.id, "kind": st.kind, "time": time.monotonic(),
             "type_url": req.type_url, "node": to_dict(req.node) if req.HasField("node") else None,
             "response_nonce": req.response_nonce,
             "error_detail": ({"code": req.error_detail.code, "message": req.error_detail.message}
                              if req.HasField("error_detail") else None)}
        if delta:
            d["subscribe"] = list(req.resource_names_subscribe)
            d["unsubscribe"] = list(req.resource_names_unsubscribe)
            d["initial_resource_versions"] = dict(req.initial_resource_versions)
        else:
            d["version_info"] = req.version_info
            d["resource_names"] = list(req.resource_names)
        if d["node"] is not None and st.node is None:
            st.node = d["node"]
        self._requests.append(d)
        if self.on_request:
            self.on_request(d)
        return d

    # -- delta
    def _lookup(self, type_url, name):
        """The Entry named name, or having it as an alias."""
        byname = self.res.get(type_url, {})
        e = byname.get(name)
        if e is None:
            e = byname.get(self._aliases.get(type_url, {}).get(name))
        return e

    def _store(self, e):
        self._unstore(e.type_url, e.name)
        self.res.setdefault(e.type_url, {})[e.name] = e
        al = self._aliases.setdefault(e.type_url, {})
        for a in e.aliases:
            al[a] = e.name
        if e.type_url == ADDRESS and e.message.HasField("workload"):
            for k in e.message.workload.services:
                self._members.setdefault(k, set()).add(e.name)

    def _unstore(self, t, name):
        e = self.res.get(t, {}).pop(name, None)
        if e is None:
            return None
        al = self._aliases.get(t, {})
        for a in e.aliases:
            if al.get(a) == name:
                del al[a]
        if t == ADDRESS and e.message.HasField("workload"):
            for k in e.message.workload.services:
                self._members.get(k, set()).discard(name)
        return e

    def _resolve(self, t, name):
        """What a by-name subscription returns: the resource named (or aliased) so, and for
        a Service's address also every Workload that lists the Service (istiod's on-demand
        answer for a VIP)."""
        e = self._lookup(t, name)
        if e is None:
            return []
        out = [e]
        if t == ADDRESS and e.message.HasField("service") and name != e.name:
            out += [self.res[t][u] for u in sorted(self._members.get(e.name, ()))]
        return out

    @staticmethod
    def _subscribed(w, e):
        return w.wildcard or e.name in w.names or any(a in w.names for a in e.aliases)

    def _begin(self, st, req, replay):
        """What both protocols do first: record the request; keep it for unstall() while
        stalled; the type's watch, and whether this is the type's first request. None: no
        more to do."""
        if not replay:
            self._record(st, req, st.kind == "delta")
        if self._stall:
            st.pending.append(req)  # answered by unstall(), as if it came then
            return None
        t = req.type_url
        first = t not in st.watches
        if first and req.response_nonce:
            return None  # the answer to a response of a type it never asked for (unwatched)
        return t, first, st.watches.setdefault(t, _Watch())

    def _on_delta(self, st, req, replay=False):
        b = self._begin(st, req, replay)
        if b is None:
            return
        t, first, w = b
        sub, unsub = list(req.resource_names_subscribe), list(req.resource_names_unsubscribe)
        if first:
            if not sub and not unsub and t in WILDCARD_TYPES:
                w.wildcard = True
            w.known = dict(req.initial_resource_versions)
        for n in sub:
            if n == "*":
                w.wildcard = True
            else:
                w.names.add(n)
        for n in unsub:
            if n == "*":
                w.wildcard = False
            else:
                w.names.discard(n)
                e = self._lookup(t, n)
                if e and not self._subscribed(w, e):
                    w.known.pop(e.name, None)
        send, removed = {}, []
        if first:
            # a (re)connect: what the client lacks or has in another version; what it has
            # that is gone (istiod: removed = subscribed - have)
            if w.wildcard:
                for e in self.res.get(t, {}).values():
                    if w.known.get(e.name) != e.version:
                        send[e.name] = e
            for n in sorted(w.names):
                found = self._resolve(t, n)
                for e in found:
                    if w.known.get(e.name) != e.version:
                        send[e.name] = e
                if not found and n not in removed:
                    removed.append(n)
            for n in list(w.known):
                if n not in self.res.get(t, {}):
                    if n not in removed:
                        removed.append(n)
                    del w.known[n]
            if not w.wildcard:
                w.names.update(e.name for n in list(w.names) for e in self._resolve(t, n))
        else:
            # every name subscribed is (re)sent; an unknown one answered as removed
            for n in sub:
                if n == "*":
                    for e in self.res.get(t, {}).values():
                        if w.known.get(e.name) != e.version:
                            send[e.name] = e
                    continue
                found = self._resolve(t, n)
                for e in found:
                    send[e.name] = e
                if not found and n not in removed:
                    removed.append(n)
            if not w.wildcard:
                w.names.update(send)  # istiod merges what it returned into the watch
            if not send and not removed:
                return
        self._send_delta(st, t, list(send.values()), removed)

    def _send_delta(self, st, t, entries, removed, raw_resources=None):
        r = self.C["DeltaDiscoveryResponse"]()
        r.type_url = t
        r.system_version_info = str(self.type_version.get(t, 0))
        r.nonce = "%s%d" % (self.nonce_prefix, next(self.nonces))
        w = st.watches.get(t)
        for e in entries:
            x = r.resources.add()
            x.name, x.version = e.name, e.version
            x.aliases.extend(e.aliases)
            x.resource.CopyFrom(e.any)
            if w is not None:
                w.known[e.name] = e.version
        for x in raw_resources or ():
            r.resources.add().CopyFrom(x)
        r.removed_resources.extend(removed)
        if w is not None:
            for n in removed:
                w.known.pop(n, None)
        self._sent.append({"stream": st.id, "kind": "delta", "type_url": t, "nonce": r.nonce,
                           "names": [x.name for x in r.resources], "removed": list(removed),
                           "time": time.monotonic()})
        st.q.put(r)
        return r.nonce

    # -- sotw
    def _on_sotw(self, st, req, replay=False):
        b = self._begin(st, req, replay)
        if b is None:
            return
        t, first, w = b
        names = set(req.resource_names)
        if first:
            w.wildcard = "*" in names or (not names and t in WILDCARD_TYPES)
            w.names = names - {"*"}
        else:
            if req.response_nonce and req.response_nonce != w.last_nonce:
                return  # stale: superseded by a later response (istiod ignores it)
            if req.HasField("error_detail"):
                return  # NACK: keep serving the same state, expect nothing more
            wild = "*" in names or (not names and t in WILDCARD_TYPES and w.wildcard)
            if names - {"*"} == w.names and wild == w.wildcard:
                return  # ACK
            w.wildcard, w.names = wild, names - {"*"}
        self._send_sotw(st, t)

    def _sotw_entries(self, w, t):
        if w.wildcard:
            return list(self.res.get(t, {}).values())
        out = {}
        for n in sorted(w.names):
            e = self._lookup(t, n)
            if e:
                out[e.name] = e
        return list(out.values())

    def _send_sotw(self, st, t, entries=None, raw_any=None, w=None):
        w = st.watches[t] if w is None else w
        r = self.C["DiscoveryResponse"]()
        r.type_url = t
        r.version_info = str(self.type_version.get(t, 0))
        r.nonce = "%s%d" % (self.nonce_prefix, next(self.nonces))
        ents = self._sotw_entries(w, t) if entries is None else entries
        for e in ents:
            r.resources.add().CopyFrom(e.any)
        for a in raw_any or ():
            r.resources.add().CopyFrom(a)
        w.last_nonce, w.sent_version = r.nonce, r.version_info
        self._sent.append({"stream": st.id, "kind": "sotw", "type_url": t, "nonce": r.nonce,
                           "version_info": r.version_info, "names": [e.name for e in ents],
                           "removed": [], "time": time.monotonic()})
        st.q.put(r)
        return r.nonce

    # ---- what to serve ----
    def _push(self, changed, removed):
        """changed/removed: {type_url: [Entry]} / {type_url: [name]}; one response per stream
        and type. Returns the nonces sent."""
        nonces = []
        if self._stall:
            return nonces
        for st in list(self._streams):
            for t in set(changed) | set(removed):
                w = st.watches.get(t)
                if w is None:
                    continue
                if st.kind == "delta":
                    ents = [e for e in changed.get(t, ()) if self._subscribed(w, e)]
                    gone = [n for n in removed.get(t, ()) if w.wildcard or n in w.known]
                    if ents or gone:
                        nonces.append(self._send_delta(st, t, ents, gone))
                else:
                    touched = w.wildcard or any(
                        e.name in w.names or set(e.aliases) & w.names for e in changed.get(t, ())) \
                        or any(n in w.names for n in removed.get(t, ()))
                    if touched:
                        nonces.append(self._send_sotw(st, t))
        self.cond.notify_all()
        return nonces

    def set(self, type_url, resource, name=None, version=None, aliases=()):
        """Store one resource (proto3 JSON, as meshres.py makes, or a message) and push it.
        Returns the nonces of the responses sent."""
        return self.set_many([(type_url, resource, name, version, aliases)])

    def set_many(self, items):
        """items: (type_url, resource[, name[, version[, aliases]]]) tuples or Entry objects;
        all stored, then one response per stream and type."""
        ents = [x if isinstance(x, Entry) else make_entry(*x) for x in items]
        with self.lock:
            changed = {}
            for e in ents:
                self._store(e)
                changed.setdefault(e.type_url, []).append(e)
            for t in changed:
                self.type_version[t] = self.type_version.get(t, 0) + 1
            return self._push(changed, {})

    def remove(self, type_url, name):
        return self.remove_many([(type_url, name)])

    def remove_many(self, items):
        with self.lock:
            removed = {}
            for t, n in items:
                if self._unstore(t, n) is not None:
                    removed.setdefault(t, []).append(n)
            for t in removed:
                self.type_version[t] = self.type_version.get(t, 0) + 1
            return self._push({}, removed)

    def clear(self, type_url=None):
        with self.lock:
            items = [(t, n) for t, d in self.res.items() if type_url in (None, t) for n in d]
        return self.remove_many(items)

    def resources(self, type_url):
        with self.lock:
            return dict(self.res.get(type_url, {}))

    # ---- misbehaviour ----
    def push_raw(self, data):
        """Bytes that need not be a response at all, to every open stream."""
        with self.lock:
            for st in self._streams:
                st.q.put(bytes(data))
                self._sent.append({"stream": st.id, "kind": "raw", "type_url": None, "nonce": None,
                                   "names": [], "removed": [], "time": time.monotonic()})
            return len(self._streams)

    def push_entries(self, type_url, entries, removed=(), raw_any=(), sotw_extra=None, unwatched=False):
        """One response per stream watching type_url (unwatched=True: every stream, as if it
        had asked), nothing stored. Delta: exactly these Entries (duplicates kept) and
        removed names; SotW: the full state (what a SotW response must hold) plus sotw_extra
        (default: entries). Both: raw_any, (name, Any) pairs, after them."""
        with self.lock:
            nonces = []
            for st in list(self._streams):
                if type_url not in st.watches and not unwatched:
                    continue
                if st.kind == "delta":
                    raws = []
                    for name, a in raw_any:
                        x = self.C["Resource"]()
                        x.name, x.version = name, "bad"
                        x.resource.CopyFrom(a)
                        raws.append(x)
                    nonces.append(self._send_delta(st, type_url, list(entries), list(removed), raws))
                else:
                    w = st.watches.get(type_url) or _Watch()
                    full = self._sotw_entries(w, type_url)
                    extra = list(entries if sotw_extra is None else sotw_extra)
                    nonces.append(self._send_sotw(st, type_url, full + extra, [a for _, a in raw_any], w))
            return nonces

    def push_duplicate(self, type_url, name):
        """The stored resource `name` twice in one response (a client must NACK it)."""
        with self.lock:
            e = self.res[type_url][name]
            return self.push_entries(type_url, [e, e], sotw_extra=[e])

    def bad_any(self, type_url, kind="garbage"):
        """An Any that fails: "garbage" (not a protobuf), "wrong_type" (a type URL that is not
        the response's)."""
        a = envoy_protos.message("google.protobuf.Any")()
        if kind == "garbage":
            a.type_url, a.value = type_url, b"\xff\xff\xff\xff\x0f\x0a"
        elif kind == "wrong_type":
            other = CLUSTER if type_url != CLUSTER else LISTENER
            a.type_url = other
            a.value = msg(type_name(other))(name="wrong-type").SerializeToString()
        else:
            raise ValueError(kind)
        return a

    def push_bad(self, type_url, name="bad", kind="garbage", good=()):
        """One bad resource named `name` (delta; SotW has no names outside the resource)
        beside the good Entries `good` (e.g. from make_entry; SotW: the full state), in one
        response. The good ones are stored (they should apply)."""
        with self.lock:
            good = [x if isinstance(x, Entry) else make_entry(*x) for x in good]
            for e in good:
                self._store(e)
            return self.push_entries(type_url, good, raw_any=[(name, self.bad_any(type_url, kind))],
                                     sotw_extra=[])

    def close_mid_message(self):
        """The next response's message is cut in half and its connection closed."""
        with self.lock:
            self._cuts += 1

    def _take_cut(self):
        with self.lock:
            if self._cuts:
                self._cuts -= 1
                return True
            return False

    def stall(self, tcp=False):
        """Never answer: gRPC level (streams open, requests recorded, nothing sent, not even
        pushes), or with tcp=True also new connections accepted and read but sent no byte
        (not even SETTINGS)."""
        with self.lock:
            self._stall, self._stall_tcp = True, bool(tcp)

    def unstall(self):
        """Answer again: the requests that came while stalled are handled now, in order."""
        with self.lock:
            self._stall = self._stall_tcp = False
            for st in self._streams:
                pending, st.pending = st.pending, []
                for req in pending:
                    (self._on_delta if st.kind == "delta" else self._on_sotw)(st, req, replay=True)
            self.cond.notify_all()

    def drop_connections(self):
        """Close every TCP connection (the listener stays): the clients must reconnect."""
        return self.relay.drop() if self.relay else 0

    # ---- what the clients said ----
    def _event(self, kind, **kw):
        with self.lock:
            self._events.append(dict(kw, kind=kind, time=time.monotonic()))
            self.cond.notify_all()

    def events(self, kind=None):
        with self.lock:
            return [e for e in self._events if kind in (None, e["kind"])]

    def requests(self, type_url=None, since=0, stream=None):
        with self.lock:
            return [dict(r) for r in self._requests[since:]
                    if type_url in (None, r["type_url"]) and stream in (None, r["stream"])]

    def mark(self):
        """The index of the next request (for requests(since=...))."""
        with self.lock:
            return len(self._requests)

    def acks(self, type_url=None, since=0):
        return [r for r in self.requests(type_url, since) if r["response_nonce"] and not r["error_detail"]]

    def nacks(self, type_url=None, since=0):
        return [r for r in self.requests(type_url, since) if r["error_detail"]]

    def sent(self, type_url=None):
        with self.lock:
            return [dict(s) for s in self._sent if type_url in (None, s["type_url"])]

    def metadata(self):
        """The gRPC metadata of each stream ever opened (authorization, clusterid, ...)."""
        with self.lock:
            return [dict(st.md) for st in self._all_streams]

    def streams(self):
        with self.lock:
            return [{"id": st.id, "kind": st.kind, "node": st.node, "peer": st.peer,
                     "types": {t: {"wildcard": w.wildcard, "names": sorted(w.names),
                                   "known": dict(w.known)} for t, w in st.watches.items()}}
                    for st in self._streams]

    def open_streams(self):
        with self.lock:
            return len(self._streams)

    # ---- waiting (each raises AssertionError on timeout) ----
    def wait(self, pred, timeout=10.0, what="condition"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                bugs = [e for e in self._events if e["kind"] == "handler-error"]
                if bugs:
                    raise AssertionError("xds_server: a request handler failed: %s" % bugs)
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("xds_server: timed out after %.1fs waiting for %s; "
                                         "last requests: %s" % (timeout, what, self._requests[-5:]))
                self.cond.wait(min(left, 0.2))

    def wait_streams(self, n=1, timeout=10.0):
        return self.wait(lambda: len(self._streams) >= n and len(self._streams), timeout,
                         "%d open stream(s)" % n)

    def wait_request(self, pred=None, type_url=None, since=0, timeout=10.0, what=None):
        """The first request (from index since) of type_url matching pred."""
        def find():
            for r in self._requests[since:]:
                if type_url in (None, r["type_url"]) and (pred is None or pred(r)):
                    return dict(r)
            return None
        return self.wait(find, timeout, what or "a request of %s" % type_url)

    def wait_ack(self, nonces, timeout=10.0):
        """Wait until every nonce (one or a list) is ACKed; a NACK of one raises."""
        nonces = [nonces] if isinstance(nonces, str) else list(nonces)
        want = set(nonces)

        def done():
            got = {}
            for r in self._requests:
                if r["response_nonce"] in want:
                    if r["error_detail"]:
                        raise AssertionError("xds_server: nonce %s NACKed: %s" % (
                            r["response_nonce"], r["error_detail"]))
                    got[r["response_nonce"]] = r
            return [got[n] for n in nonces] if len(got) == len(want) else None
        return self.wait(done, timeout, "ACK of %s" % sorted(want))

    def wait_nack(self, nonce=None, type_url=None, since=0, timeout=10.0):
        return self.wait_request(lambda r: r["error_detail"] and nonce in (None, r["response_nonce"]),
                                 type_url, since, timeout, "a NACK of %s" % (nonce or type_url))


# ---------------------------------------------------------------------------------------------

def load_resources(path):
    """Entries from a JSON file: a list, or an object with "resources" (a sidecar config)."""
    with open(path) as f:
        js = json.load(f)
    items = js["resources"] if isinstance(js, dict) else js
    return [make_entry(None, r) for r in items]


def main():
    import argparse
    ap = argparse.ArgumentParser(description="A test xDS control plane (ADS, delta and SotW) "
                                 "serving a static set of resources.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--resources", help="JSON: a list of Any resources, or {\"resources\": [...]}")
    ap.add_argument("--tls", nargs="+", metavar=("CERT", "KEY"), help="CERT KEY [CLIENT_CA]: https")
    ap.add_argument("--port-file", help="write the port here once listening")
    a = ap.parse_args()
    cp = XdsServer(a.host, a.port, tls=tuple(a.tls) if a.tls else None)

    def log(r):
        what = "NACK %s" % r["error_detail"]["message"] if r["error_detail"] else (
            "ACK %s" % r["response_nonce"] if r["response_nonce"] else "request")
        print("stream %d %s %s %s%s" % (
            r["stream"], r["kind"], type_name(r["type_url"]), what,
            " from %s" % r["node"]["id"] if r["node"] else ""), flush=True)
    cp.on_request = log
    if a.resources:
        cp.set_many(load_resources(a.resources))
    cp.start()
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            f.write("%d\n" % cp.port)
        os.rename(a.port_file + ".tmp", a.port_file)
    print("serving ADS on %s: %d resources (Ctrl-C stops)" % (
        cp.address, sum(len(d) for d in cp.res.values())), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
