"""Contender "nghttpx-hbone": an HBONE pair whose server half is nghttpx (Debian's
nghttp2-proxy, `-s` forward-proxy mode, --verify-client, TLS 1.3, h2, ztunnel-sized windows) in
front of tinyproxy (which makes the app connection for each CONNECT), the stand-in for a remote
ztunnel of tests/lab/hbone_peers.py; no sidecar and no capture rules in the server pod.

The client half is the Outrigger sidecar, as in "outrigger-hbone": nothing packaged turns a
captured plain TCP connection into an HTTP/2 CONNECT stream (nghttpx's frontend takes HTTP
requests, not raw TCP with SO_ORIGINAL_DST; h2load and nghttp are HTTP clients, not
tunnels; HAProxy 2.6 cannot originate CONNECT), so the pair compares our HBONE server half
with nghttpx + tinyproxy on the same client half. Its "server" CPU is nghttpx plus tinyproxy's
processes. Runs only the "hbone" scenario."""
import importlib.util
import os
import signal
import subprocess

import benchlib
import hbone_peers
import mtlspki

_spec = importlib.util.spec_from_file_location(
    "contender_outrigger_for_nghttpx", os.path.join(os.path.dirname(os.path.abspath(__file__)), "outrigger.py"))
outrigger_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(outrigger_base)

NAME = "nghttpx-hbone"
LABEL = "HBONE to nghttpx + tinyproxy"
ORDER = 28
SCENARIOS = ("hbone",)
NOTE = ("Client half: the Outrigger sidecar's HBONE client (as outrigger-hbone). Server half: nghttpx -s "
        "--verify-client on server:15008 (TLS 1.3, h2, 4 MiB / 16 MiB windows, --workers threads) in front of "
        "tinyproxy on 127.0.0.1:3128, which connects to the app; no server sidecar, no capture rules.")


def available(env):
    for tool in ("nghttpx", "tinyproxy"):
        if subprocess.run(["sh", "-c", "command -v " + tool], capture_output=True).returncode:
            return False, tool + " not installed"
    return outrigger_base.available(env)


class Handle:
    def __init__(self, env, client_h, term):
        self.env, self.client_h, self.term = env, client_h, term
        self.version = client_h.version + " / " + subprocess.run(
            ["nghttpx", "--version"], capture_output=True, text=True).stdout.strip()

    def pids(self):
        out = {"client": self.client_h.pids().get("client", [])}
        out["server"] = [p.pid for p in (self.term.proc, self.term.proxy) if p.poll() is None]
        return out

    def counters(self):
        out = self.client_h.counters()
        out["server.nghttpx.requests"] = len(self.term.accesses())
        return out

    def traffic_keys(self):
        return ["client.listener.outbound.downstream_cx_total", "client.listener.outbound.upstream_cx_hbone"]

    def stop(self):
        for p in (self.term.proc, self.term.proxy):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        self.client_h.stop()


def start(env):
    pki = mtlspki.make(env)
    term = hbone_peers.NghttpxTerminator(env.server, pki["server"], [benchlib.APP_PORT, benchlib.HTTP_PORT],
                                         workers=env.workers)
    cfg = outrigger_base.mesh_resources(env, server_extra={"serviceAccount": "server",
                                                            "tunnelProtocol": "HBONE"})
    # The client sidecar only: the server pod has nghttpx and no capture rules.
    os.environ["OUTRIGGER_BIN"] = env.bins["outrigger"]
    benchlib.intercept(env.client)
    sc = env.client.start_sidecar(run_init=False, config=cfg,
                                  proxy_args=["--concurrency", str(env.workers), "--log-level", "warn",
                                              "--cert-dir", pki["client"]])
    client_h = outrigger_base.Handle(env, {"client": sc})
    h = Handle(env, client_h, term)
    benchlib.pin([p for v in h.pids().values() for p in v], env.cpu_proxy)
    return h
