"""Contender "outrigger-authz": "outrigger-mtls" with 100 L4 authorization policies bound to
the server pod's Workload (issue 12, "Performance": CPU per 1,000 connections with 100 policies
within 5 % of no policy). The server sidecar judges every inbound connection against all of
them: 99 WORKLOAD_SELECTOR DENY policies that each look at a principal, a namespace, a source
CIDR and a port that the client does not have (so every one is evaluated and none matches),
and one ALLOW policy whose only match is the client's SPIFFE principal, listed last. Runs the
"mtls" scenario, beside "outrigger-mtls" (the same pair without policies)."""
import importlib.util
import os

import mtlspki

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("contender_outrigger_for_authz", os.path.join(_here, "outrigger.py"))
outrigger_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(outrigger_base)

NAME = "outrigger-authz"
LABEL = "Outrigger pair, Istio mTLS, 100 authorization policies"
ORDER = 26
SCENARIOS = ("mtls",)
NOTE = ("As outrigger-mtls, plus 100 authorization policies bound to the server Workload: 99 DENY "
        "policies that do not match the client (principal, namespace, source CIDR, port), evaluated "
        "for every connection, and one ALLOW on the client's principal.")
POLICIES = 100
AUTHZ = "type.googleapis.com/istio.security.Authorization"


def available(env):
    return outrigger_base.available(env)


def policies():
    """The 100 policies (proto3 JSON) and their "ns/name" list for the Workload."""
    out = []
    for i in range(POLICIES - 1):
        match = {"principals": [{"exact": "cluster.local/ns/other%d/sa/caller" % i}],
                 "namespaces": [{"exact": "other%d" % i}],
                 "sourceIps": [{"address": "CgAAAA==", "length": 8}],
                 "destinationPorts": [10000 + i]}
        out.append({"@type": AUTHZ, "name": "deny-%d" % i, "namespace": "default",
                    "scope": "WORKLOAD_SELECTOR", "action": "DENY",
                    "groups": [{"rules": [{"matches": [match]}]}]})
    client = mtlspki.CLIENT_ID[len("spiffe://"):]
    out.append({"@type": AUTHZ, "name": "allow-client", "namespace": "default",
                "scope": "WORKLOAD_SELECTOR", "action": "ALLOW",
                "groups": [{"rules": [{"matches": [{"principals": [{"exact": client}]}]}]}]})
    return out, ["default/" + p["name"] for p in out]


def start(env):
    pki = mtlspki.make(env)
    pols, names = policies()
    cfg = outrigger_base.mesh_resources(env, server_extra={"serviceAccount": "server",
                                                            "tunnelProtocol": "LEGACY_ISTIO_MTLS",
                                                            "authorizationPolicies": names})
    cfg["resources"].extend(pols)
    h = outrigger_base.start(env, cfg, {"client": ["--cert-dir", pki["client"]],
                                        "server": ["--cert-dir", pki["server"]]})
    # The harness checks these grew: the connections were mTLS, and the server sidecar judged
    # them and allow-client allowed them.
    h.extra_traffic = ["client.listener.outbound.upstream_cx_tls_handshake",
                       "server.authz.default/allow-client.authz_policy_allow"]
    return h
