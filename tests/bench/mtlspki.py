"""Certificates for the mTLS pair contenders (outrigger-mtls, haproxy-mtls): one mesh root
and a SPIFFE leaf per side, made with the openssl CLI (tests/lab/certs.py), in Istio's file
layout, readable by the proxy uid. Both contenders get the same kind of certificate: EC P-256,
signed by the root directly."""
import os

import certs

CLIENT_ID = certs.spiffe_id("default", "client")
SERVER_ID = certs.spiffe_id("default", "server")


def make(env):
    """{"root": path, "client": dir, "server": dir} under the contender's work directory."""
    d = os.path.join(env.workdir, "pki")
    ca = certs.CA(os.path.join(d, "ca"))
    out = {"root": ca.cert, "client": os.path.join(d, "client"), "server": os.path.join(d, "server")}
    if not os.path.exists(os.path.join(out["client"], "cert-chain.pem")):
        ca.issue(out["client"], CLIENT_ID)
        ca.issue(out["server"], SERVER_ID)
    for root, _, _ in os.walk(d):
        os.chmod(root, 0o755)
    return out


def combined(cert_dir):
    """cert-chain.pem + key.pem in one file (HAProxy's crt), next to them."""
    path = os.path.join(cert_dir, "crt-and-key.pem")
    with open(os.path.join(cert_dir, "cert-chain.pem")) as c, open(os.path.join(cert_dir, "key.pem")) as k, \
            open(path, "w") as f:
        f.write(c.read() + k.read())
    os.chmod(path, 0o644)
    return path
