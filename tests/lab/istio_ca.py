#!/usr/bin/python3
"""A test Istio CA on a real gRPC implementation (python3-grpcio): serves
/istio.v1.auth.IstioCertificateService/CreateCertificate with generic method
handlers and message classes built at run time from a protoc descriptor set
of OUR src/proto/istio/security/v1alpha1/ca.proto (so it also checks that our
schema is what a real implementation speaks). Signs CSRs with
python3-cryptography (exact lifetimes in seconds, for rotation tests).

    istio_ca.py --dir D --listen 127.0.0.1:15012 --token T [--cluster-id C] [--plaintext]

D/root-cert.pem (made with tests/lab/certs.py, the openssl CLI, when missing)
is the mesh root, which signs both the workloads and the CA's own TLS
certificate (DNS istiod.istio-system.svc, localhost; IP 127.0.0.1, ::1), as
istiod's self-signed CA does. Behaviour comes from D/control.json, re-read at
every request, so a test can change it while the CA runs:

    {"mode": "ok" | "refuse" | "garbage" | "hang" | "empty" | "bad-chain" | "new-root",
     "ttl": seconds (overrides the request's validity_duration)}

  refuse     UNAUTHENTICATED "request authenticate failure" (as istiod)
  garbage    a response message that is no IstioCertificateResponse
  hang       never answers (until the client gives up)
  empty      an IstioCertificateResponse with no cert_chain
  bad-chain  a leaf signed by another key, with the mesh root last (does not verify)
  new-root   a chain from another root, that root last (a root rotation: the
             client trusts the root the authenticated CA sends, as pilot-agent)

Every request is appended to D/requests.jsonl: its metadata (authorization,
clusterid, ...), validity_duration, and what the CSR holds (the SANs, whether
the SAN extension is critical, the subject, the key type). A bad token or
clusterid is refused with UNAUTHENTICATED, as istiod does. The port is
written to D/port once the server listens (--listen HOST:0 picks one).
"""
import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "src", "proto")
CA_PROTO = "istio/security/v1alpha1/ca.proto"
SERVICE = "istio.v1.auth.IstioCertificateService"


def message_classes(proto_dir=PROTO_DIR):
    """(Request, Response) classes from protoc's descriptor set of our ca.proto."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "ca.pb")
        subprocess.run(["protoc", "-I", proto_dir, "--include_imports", "--descriptor_set_out=" + out,
                        os.path.join(proto_dir, CA_PROTO)], check=True, capture_output=True, timeout=30)
        fds = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as f:
            fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    fac = message_factory.MessageFactory(pool)
    get = lambda n: fac.GetPrototype(pool.FindMessageTypeByName(n))
    return get("istio.v1.auth.IstioCertificateRequest"), get("istio.v1.auth.IstioCertificateResponse")


def _load_or_make_root(d):
    sys.path.insert(0, HERE)
    import certs
    ca = certs.CA(d, trust_domain="cluster.local", name="test istio CA root")
    with open(ca.key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    with open(ca.cert, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return key, cert


def _sign(csr_pub, subject_sans, issuer_key, issuer_cert, not_before, not_after, critical=True,
          server_names=None):
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([]) if server_names is None else
                       x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "istiod")]))
         .issuer_name(issuer_cert.subject)
         .public_key(csr_pub)
         .serial_number(x509.random_serial_number())
         .not_valid_before(not_before)
         .not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                        critical=False)
         .add_extension(x509.SubjectAlternativeName(subject_sans), critical=critical))
    return b.sign(issuer_key, hashes.SHA256())


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class TestCA:
    def __init__(self, d, token, cluster_id=None, proto_dir=PROTO_DIR):
        self.dir, self.token, self.cluster_id = d, token, cluster_id
        os.makedirs(d, exist_ok=True)
        self.root_key, self.root = _load_or_make_root(d)
        self.Req, self.Resp = message_classes(proto_dir)
        self.lock = threading.Lock()
        self.other = None

    def control(self):
        try:
            with open(os.path.join(self.dir, "control.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def record(self, entry):
        with self.lock, open(os.path.join(self.dir, "requests.jsonl"), "a") as f:
            f.write(json.dumps(entry) + "\n")

    def server_cert(self):
        """The CA's own TLS key and certificate, signed by the mesh root (istiod's layout)."""
        import ipaddress
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        sans = [x509.DNSName("istiod.istio-system.svc"), x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
        cert = _sign(key.public_key(), sans, self.root_key, self.root, now - datetime.timedelta(minutes=5),
                     now + datetime.timedelta(days=2), critical=False, server_names=True)
        kp = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
        return kp, _pem(cert).encode()

    def _other_root(self):
        if self.other is None:
            self.other = _load_or_make_root(os.path.join(self.dir, "other-root"))
        return self.other

    def create(self, raw, context):
        """The handler: raw request bytes in (the deserializer is ours, so a request our
        schema cannot read is recorded as such), response bytes out."""
        md = {k: v for k, v in context.invocation_metadata()}
        entry = {"t": time.time(), "metadata": md}
        ctl = self.control()
        mode = ctl.get("mode", "ok")
        entry["mode"] = mode
        try:
            req = self.Req.FromString(raw)
        except Exception as e:  # noqa: BLE001 - a test CA reports, never dies
            entry["error"] = "undecodable request: %s" % e
            self.record(entry)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "undecodable request")
        entry["validity_duration"] = req.validity_duration
        try:
            csr = x509.load_pem_x509_csr(req.csr.encode())
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            entry["csr"] = {
                "signature_valid": csr.is_signature_valid,
                "subject": csr.subject.rfc4514_string(),
                "san_critical": san.critical,
                "uris": san.value.get_values_for_type(x509.UniformResourceIdentifier),
                "dns": san.value.get_values_for_type(x509.DNSName),
                "n_extensions": len(csr.extensions),
                "key": "%s %s" % (type(csr.public_key()).__name__, getattr(csr.public_key().curve, "name", "")),
                "hash": csr.signature_hash_algorithm.name,
                "key_sha256": hashlib.sha256(csr.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest(),
            }
        except Exception as e:  # noqa: BLE001
            entry["error"] = "bad CSR: %s" % e
            self.record(entry)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad CSR")
        if md.get("authorization") != "Bearer " + self.token or \
                (self.cluster_id is not None and md.get("clusterid") != self.cluster_id):
            entry["refused"] = "token or clusterid"
            self.record(entry)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "request authenticate failure")
        self.record(entry)
        if mode == "refuse":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "request authenticate failure")
        if mode == "hang":
            end = time.monotonic() + 120
            while context.is_active() and time.monotonic() < end:
                time.sleep(0.05)
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "hung on purpose")
        if mode == "garbage":
            return b"\xff\xff\xff\xff garbage"
        if mode == "empty":
            return self.Resp().SerializeToString()
        ttl = int(ctl.get("ttl") or req.validity_duration or 86400)
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        key, root = (self._other_root() if mode in ("bad-chain", "new-root") else (self.root_key, self.root))
        uris = entry["csr"]["uris"]
        leaf = _sign(csr.public_key(), [x509.UniformResourceIdentifier(u) for u in uris], key, root,
                     now, now + datetime.timedelta(seconds=ttl))
        # istiod: one certificate per element, the root appended last.
        resp = self.Resp(cert_chain=[_pem(leaf), _pem(self.root if mode == "bad-chain" else root)])
        return resp.SerializeToString()


def serve(args):
    ca = TestCA(args.dir, args.token, args.cluster_id)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "CreateCertificate": grpc.unary_unary_rpc_method_handler(
            ca.create, request_deserializer=None, response_serializer=None),
    })
    server.add_generic_rpc_handlers((handler,))
    if args.plaintext:
        port = server.add_insecure_port(args.listen)
    else:
        creds = grpc.ssl_server_credentials([ca.server_cert()])
        port = server.add_secure_port(args.listen, creds)
    if not port:
        sys.exit("istio_ca.py: cannot listen on %s" % args.listen)
    server.start()
    with open(os.path.join(args.dir, "port.tmp"), "w") as f:
        f.write("%d\n" % port)
    os.rename(os.path.join(args.dir, "port.tmp"), os.path.join(args.dir, "port"))
    print("istio_ca.py: serving %s on port %d (%s)" % (SERVICE, port, "plaintext" if args.plaintext else "TLS"),
          flush=True)
    server.wait_for_termination()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--token", required=True, help="the bearer token to accept")
    ap.add_argument("--cluster-id", default=None, help="the clusterid to accept (default: any)")
    ap.add_argument("--plaintext", action="store_true", help="h2c, no TLS")
    serve(ap.parse_args())


if __name__ == "__main__":
    main()
