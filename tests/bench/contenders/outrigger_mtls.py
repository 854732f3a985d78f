"""Contender "outrigger-mtls": the Outrigger pair with Istio mTLS between the sidecars
(issue 9, "Performance"). As "outrigger", plus: each sidecar loads its certificate with
--cert-dir (mtlspki.py: EC P-256 SPIFFE leaves of one root), and the client's mesh marks the
server pod's Workload LEGACY_ISTIO_MTLS with service account "server", so its outbound
connections speak Istio mTLS (ALPN istio, the server's SPIFFE ID verified, TLS 1.3; sessions
resumed from the worker's cache) and the server's inbound terminates it (PERMISSIVE: TLS
with an Istio ALPN). Runs only the "mtls" scenario."""
import importlib.util
import os

import mtlspki

# The plain contender's module (contenders are loaded by path, not imported by name).
_spec = importlib.util.spec_from_file_location(
    "contender_outrigger_for_mtls", os.path.join(os.path.dirname(os.path.abspath(__file__)), "outrigger.py"))
outrigger_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(outrigger_base)

NAME = "outrigger-mtls"
LABEL = "Outrigger pair, Istio mTLS"
ORDER = 25
SCENARIOS = ("mtls", "hbone")
NOTE = ("Both sidecars load EC P-256 SPIFFE certificates (--cert-dir); the client's mesh marks the "
        "server Workload LEGACY_ISTIO_MTLS: outbound Istio mTLS (TLS 1.3, OpenSSL 3 default suites: "
        "TLS_AES_256_GCM_SHA384; ALPN istio; SPIFFE ID checked; session tickets resumed per worker), "
        "terminated by the server sidecar's inbound. Otherwise as Outrigger.")


def available(env):
    return outrigger_base.available(env)


def start(env):
    pki = mtlspki.make(env)
    cfg = outrigger_base.mesh_resources(env, server_extra={"serviceAccount": "server",
                                                            "tunnelProtocol": "LEGACY_ISTIO_MTLS"})
    h = outrigger_base.start(env, cfg, {"client": ["--cert-dir", pki["client"]],
                                        "server": ["--cert-dir", pki["server"]]})
    h.extra_traffic = ["client.listener.outbound.upstream_cx_tls_handshake"]
    return h
