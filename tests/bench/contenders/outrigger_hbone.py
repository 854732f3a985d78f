"""Contender "outrigger-hbone": the Outrigger pair over HBONE (issue 11, "Performance"). As
"outrigger-mtls" (the same certificates, mtlspki.py), but the server pod's Workload says
tunnelProtocol HBONE: the client sidecar opens one CONNECT stream per proxied connection over
its pooled mTLS HTTP/2 connection to server:15008 (hbone_pool.c), and the server sidecar's
HBONE server (hbone_server.c) terminates it and connects to the app. Runs only the "hbone"
scenario."""
import importlib.util
import os

import mtlspki

_spec = importlib.util.spec_from_file_location(
    "contender_outrigger_for_hbone", os.path.join(os.path.dirname(os.path.abspath(__file__)), "outrigger.py"))
outrigger_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(outrigger_base)

NAME = "outrigger-hbone"
LABEL = "Outrigger pair, HBONE"
ORDER = 27
SCENARIOS = ("hbone",)
NOTE = ("Both sidecars load EC P-256 SPIFFE certificates (--cert-dir); the mesh marks the server "
        "Workload HBONE: outbound, a CONNECT stream per connection over the client sidecar's pooled "
        "TLS 1.3 / h2 connection to server:15008 (SPIFFE ID checked once per pooled connection); the "
        "server sidecar's HBONE server answers 200 once its app connection is up. Otherwise as Outrigger.")


def available(env):
    return outrigger_base.available(env)


def start(env):
    pki = mtlspki.make(env)
    cfg = outrigger_base.mesh_resources(env, server_extra={"serviceAccount": "server",
                                                            "tunnelProtocol": "HBONE"})
    h = outrigger_base.start(env, cfg, {"client": ["--cert-dir", pki["client"]],
                                        "server": ["--cert-dir", pki["server"]]})
    h.extra_traffic = ["client.listener.outbound.upstream_cx_hbone"]
    # The server sidecar sees the traffic on its HBONE listener, not on 15006.
    h.traffic_keys = lambda: ["client.listener.outbound.downstream_cx_total",
                              "client.listener.outbound.upstream_cx_hbone",
                              "server.listener.hbone.downstream_cx_total"]
    return h
