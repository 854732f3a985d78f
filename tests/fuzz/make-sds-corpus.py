#!/usr/bin/python3
"""Write the seed corpus of fuzz_sds (tests/fuzz/corpus/sds/) with a REAL
protobuf implementation and the REAL Envoy protos (tests/lab/sds_server.py's
classes, from @grpc/grpc-js-xds) and certificates from the openssl CLI
(tests/lab/certs.py). Run from the top of the tree:
    /usr/bin/python3 tests/fuzz/make-sds-corpus.py
"""
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lab"))
import certs  # noqa: E402
import sds_server as S  # noqa: E402

OUT = os.path.join(HERE, "corpus", "sds")


def response(secrets, version="1", nonce="n1", type_url=S.SECRET_TYPE):
    C = S.classes()
    r = C["DiscoveryResponse"](version_info=version, nonce=nonce, type_url=type_url)
    for s in secrets:
        r.resources.add().Pack(s)
    return r.SerializeToString(deterministic=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="or-sds-corpus-")
    ca = certs.CA(os.path.join(tmp, "ca"))
    leaf, old = os.path.join(tmp, "leaf"), os.path.join(tmp, "old")
    ca.issue(leaf, certs.spiffe_id("default", "client"))
    ca.issue(old, certs.spiffe_id("default", "client"), days=-1)
    C = S.classes()
    cases = {
        "both-inline-bytes": [S.cert_secret(leaf), S.roots_secret(leaf)],
        "both-inline-string": [S.cert_secret(leaf, form="inline_string"),
                               S.roots_secret(leaf, form="inline_string")],
        "cert-only": [S.cert_secret(leaf)],
        "roots-only": [S.roots_secret(leaf)],
        "expired": [S.cert_secret(old), S.roots_secret(old)],
        "spire-names": [S.cert_secret(leaf, name="spiffe://cluster.local/ns/default/sa/client"),
                        S.roots_secret(leaf, name="spiffe://cluster.local"),
                        S.roots_secret(leaf, name="spiffe://other.org")],
        "empty": [],
    }
    for name, secrets in cases.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(response(secrets))
    bad = C["Secret"](name="default")
    bad.tls_certificate.certificate_chain.inline_bytes = b"garbage"
    bad.tls_certificate.private_key.inline_bytes = b"garbage"
    with open(os.path.join(OUT, "garbage-pem"), "wb") as f:
        f.write(response([bad]))
    wrong = C["Secret"](name="ROOTCA")
    wrong.tls_certificate.certificate_chain.filename = "/nonexistent"
    with open(os.path.join(OUT, "wrong-kind-filename"), "wb") as f:
        f.write(response([wrong]))
    with open(os.path.join(OUT, "wrong-type"), "wb") as f:
        f.write(response([S.cert_secret(leaf)], type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster"))
    print("wrote", len(os.listdir(OUT)), "files to", OUT)


if __name__ == "__main__":
    main()
