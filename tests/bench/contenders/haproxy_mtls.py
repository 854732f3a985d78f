"""Contender "haproxy-mtls": the HAProxy pair doing TLS with client certificates between
the sidecars, the reference for "outrigger-mtls" (issue 9, "Performance"). As "haproxy"
(mode tcp, original destination, inbound from 127.0.0.6), plus: the client's outbound
server line `ssl verify required ca-file ROOT crt CLIENT alpn istio`, the server's inbound
`bind ... ssl crt SERVER ca-file ROOT verify required`. The same certificates as
outrigger-mtls (mtlspki.py) and the same TLS 1.3 suite pinned on both sides
(TLS_AES_256_GCM_SHA384, what two OpenSSL 3 defaults negotiate, as the Outrigger pair
does); HAProxy resumes sessions by default (its per-server session cache, tickets).
Runs only the "mtls" scenario."""
import importlib.util
import os

import benchlib
import mtlspki

_spec = importlib.util.spec_from_file_location(
    "contender_haproxy_for_mtls", os.path.join(os.path.dirname(os.path.abspath(__file__)), "haproxy.py"))
haproxy_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(haproxy_base)

NAME = "haproxy-mtls"
LABEL = "HAProxy pair, TLS with client certificates"
ORDER = 35
SCENARIOS = ("mtls", "hbone")
SUITE = "TLS_AES_256_GCM_SHA384"
NOTE = ("mode tcp; outbound `server 0.0.0.0:0 ssl verify required ca-file ROOT crt CLIENT alpn istio`, "
        "inbound `bind :15006 ssl crt SERVER ca-file ROOT verify required`; TLS 1.3 %s pinned on "
        "both sides; EC P-256 certificates of one root (the same as outrigger-mtls); session "
        "resumption on (HAProxy's defaults). No SPIFFE ID check (HAProxy verifies the chain only)."
        % SUITE)

CONFIG = """global
    nbthread {workers}
    maxconn 9900
    stats socket {dir}/stats.sock mode 600 level admin
    ssl-default-bind-ciphersuites {suite}
    ssl-default-server-ciphersuites {suite}
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend outbound
    bind 0.0.0.0:15001
    default_backend outbound

backend outbound
    server dst 0.0.0.0:0 ssl verify required ca-file {root} crt {client} alpn istio

frontend inbound
    bind 0.0.0.0:15006 ssl crt {server} ca-file {root} verify required
    default_backend inbound

backend inbound
    server app 0.0.0.0:0 source 127.0.0.6
"""


def available(env):
    return haproxy_base.available(env)


class Handle(haproxy_base.Handle):
    def counters(self):
        out = super().counters()
        for side, d in self.dirs.items():
            for line in benchlib.unix_query(os.path.join(d, "stats.sock"), "show info").splitlines():
                k, _, v = (x.strip() for x in line.partition(":"))
                if k in ("CumSslConns", "SslFrontendSessionReuse_pct") and v.isdigit():
                    out["%s.info.%s" % (side, k)] = int(v)
        return out

    def traffic_keys(self):
        # CumSslConns: TLS connections (frontend + backend): proves TLS is on.
        return super().traffic_keys() + ["client.info.CumSslConns", "server.info.CumSslConns"]


def start(env):
    pki = mtlspki.make(env)
    client_pem, server_pem = mtlspki.combined(pki["client"]), mtlspki.combined(pki["server"])
    procs, dirs = {}, {}
    for side, pod in (("client", env.client), ("server", env.server)):
        benchlib.intercept(pod)
        d = env.piddir("haproxy-mtls-" + side)
        procs[side] = haproxy_base.launch(pod, d, CONFIG.format(
            workers=env.workers, dir=d, suite=SUITE, root=pki["root"], client=client_pem, server=server_pem))
        dirs[side] = d
    h = Handle(procs, dirs)
    benchlib.pin([p for v in h.pids().values() for p in v], env.cpu_proxy)
    return h
