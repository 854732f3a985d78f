"""A test SDS server (Envoy's SecretDiscoveryService, state of the world
StreamSecrets) on a Unix socket, as pilot-agent and the SPIRE agent serve it:
a real gRPC implementation (python3-grpcio) and the REAL Envoy API protos,
compiled by protoc at run time from the npm package @grpc/grpc-js-xds
(envoy_protos.py). Nothing of Outrigger's is used.

    srv = SdsServer("/tmp/x/sds.sock", "/tmp/x/certs")   # Istio's layout: cert-chain.pem...
    srv.start()
    srv.rotate("/tmp/x/certs2")         # push a new "default" (and "ROOTCA") to every stream
    srv.push_raw(b"garbage")            # a response that is no DiscoveryResponse
    srv.nacks()                          # the error_detail messages the client sent
    srv.stop(); srv.start()              # vanish and come back on the same path

It serves "default" (tls_certificate: certificate_chain + private_key) and
"ROOTCA" (validation_context: trusted_ca), each DataSource as inline_bytes
(pilot-agent's and SPIRE's form), inline_string or filename; answers the
first request of a stream with the names asked for and later requests
(ACKs / NACKs) with nothing, as pilot-agent does.
"""
import itertools
import os
import sys
import threading
import time
from concurrent import futures

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import envoy_protos  # noqa: E402
# re-exported: test_sds.py, test_xds.py and tests/unit/golden/xds/make.py use these names
from envoy_protos import GRPC_JS_XDS, envoy_deps, pgv_copy as _pgv_copy  # noqa: E402,F401

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"

_NAMES = {
    "DiscoveryRequest": "envoy.service.discovery.v3.DiscoveryRequest",
    "DiscoveryResponse": "envoy.service.discovery.v3.DiscoveryResponse",
    "Secret": "envoy.extensions.transport_sockets.tls.v3.Secret",
    "Any": "google.protobuf.Any",
}


def classes():
    """{short name: message class} built from the real protos (envoy_protos.py)."""
    return {k: envoy_protos.message(v) for k, v in _NAMES.items()}


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _set_ds(ds, data, form, path=None):
    if form == "inline_bytes":
        ds.inline_bytes = data
    elif form == "inline_string":
        ds.inline_string = data.decode()
    elif form == "filename":
        ds.filename = path
    else:
        raise ValueError(form)


def cert_secret(cert_dir, name="default", form="inline_bytes"):
    """A tls_certificate Secret from cert_dir/{cert-chain.pem,key.pem}."""
    s = classes()["Secret"]()
    s.name = name
    chain, key = os.path.join(cert_dir, "cert-chain.pem"), os.path.join(cert_dir, "key.pem")
    _set_ds(s.tls_certificate.certificate_chain, _read(chain), form, chain)
    _set_ds(s.tls_certificate.private_key, _read(key), form, key)
    return s


def roots_secret(cert_dir, name="ROOTCA", form="inline_bytes"):
    """A validation_context Secret from cert_dir/root-cert.pem."""
    s = classes()["Secret"]()
    s.name = name
    roots = os.path.join(cert_dir, "root-cert.pem")
    _set_ds(s.validation_context.trusted_ca, _read(roots), form, roots)
    return s


class _Stream:
    def __init__(self):
        self.q = None
        self.names = None


class SdsServer:
    def __init__(self, socket_path, cert_dir=None, form="inline_bytes"):
        self.path, self.form = socket_path, form
        self.C = classes()
        self.lock = threading.Lock()
        self.secrets = {}           # name -> Secret
        self.version = 0
        self.nonces = itertools.count(1)
        self.requests = []          # every DiscoveryRequest received, in order
        self.sent = []              # (nonce, version) of every response sent
        self.streams = []
        self.streams_total = 0
        self.server = None
        if cert_dir:
            self.set_secrets([cert_secret(cert_dir, form=form), roots_secret(cert_dir, form=form)])

    # ---- serving ----
    def start(self):
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        h = grpc.method_handlers_generic_handler(SERVICE, {
            "StreamSecrets": grpc.stream_stream_rpc_method_handler(
                self._stream, request_deserializer=self.C["DiscoveryRequest"].FromString,
                response_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString()),
        })
        self.server.add_generic_rpc_handlers((h,))
        self.server.add_insecure_port("unix:" + self.path)
        self.server.start()
        os.chmod(self.path, 0o777)  # the proxy runs as uid 1337

    def stop(self):
        """Vanish: close every stream and the socket."""
        if self.server:
            with self.lock:
                for st in self.streams:
                    st.q.put(None)
            self.server.stop(0).wait(5)
            self.server = None
        if os.path.exists(self.path):
            os.unlink(self.path)

    def _response(self, secrets):
        r = self.C["DiscoveryResponse"]()
        r.version_info = str(self.version)
        r.type_url = SECRET_TYPE
        r.nonce = "n%d" % next(self.nonces)
        for s in secrets:
            a = r.resources.add()
            a.Pack(s)
        self.sent.append((r.nonce, r.version_info))
        return r

    def _stream(self, it, ctx):
        st = _Stream()

        def on_request(req, q):
            with self.lock:
                self.requests.append(req)
                if st.names is None:
                    st.names = list(req.resource_names)
                    want = [self.secrets[n] for n in st.names if n in self.secrets]
                    if want:
                        q.put(self._response(want))

        def on_end():
            with self.lock:
                if st in self.streams:
                    self.streams.remove(st)

        with self.lock:
            st.q, gen = envoy_protos.duplex(it, on_request, on_end)
            self.streams.append(st)
            self.streams_total += 1
        return gen

    # ---- what to serve ----
    def set_secrets(self, secrets, push=False):
        """Replace the named secrets (a new version); push them to every open stream that
        asked for them (only those: a rotation of "default" sends just "default", as
        pilot-agent does)."""
        with self.lock:
            self.version += 1
            for s in secrets:
                self.secrets[s.name] = s
            if push:
                for st in self.streams:
                    want = [s for s in secrets if st.names and s.name in st.names]
                    if want:
                        st.q.put(self._response(want))

    def rotate(self, cert_dir, roots=True):
        secrets = [cert_secret(cert_dir, form=self.form)]
        if roots:
            secrets.append(roots_secret(cert_dir, form=self.form))
        self.set_secrets(secrets, push=True)

    def push_secrets(self, secrets):
        """Push these secrets (any content) in one response without keeping them."""
        with self.lock:
            self.version += 1
            for st in self.streams:
                st.q.put(self._response(secrets))

    def push_raw(self, data):
        """Push bytes that are not a DiscoveryResponse at all."""
        with self.lock:
            self.sent.append(("", ""))
            for st in self.streams:
                st.q.put(bytes(data))

    # ---- what the client said ----
    def nacks(self):
        with self.lock:
            return [r.error_detail.message for r in self.requests if r.HasField("error_detail")]

    def acks(self):
        with self.lock:
            return [(r.version_info, r.response_nonce) for r in self.requests
                    if r.response_nonce and not r.HasField("error_detail")]

    def open_streams(self):
        with self.lock:
            return len(self.streams)


def main():
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", required=True)
    ap.add_argument("--certs", required=True, help="a directory in Istio's layout")
    ap.add_argument("--form", default="inline_bytes", choices=["inline_bytes", "inline_string", "filename"])
    a = ap.parse_args()
    srv = SdsServer(a.socket, a.certs, a.form)
    srv.start()
    print("serving SDS on unix:%s (Ctrl-C stops)" % a.socket, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    sys.exit(main())
