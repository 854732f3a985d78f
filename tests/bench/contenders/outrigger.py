"""Contender "outrigger": our sidecar in both pods, started through the pod lab
(tests/lab: start_sidecar) from the optimised bench build, after Istio's capture rules.
It forwards each connection to its original destination (SO_ORIGINAL_DST); inbound it
connects from 127.0.0.6 like Envoy."""
import os
import signal
import subprocess
import time

import benchlib

NAME = "outrigger"
LABEL = "Outrigger"
ORDER = 20
NOTE = ("Both sidecars forward to the original destination (SO_ORIGINAL_DST); inbound from "
        "127.0.0.6, as Envoy. L4 tunnel with splice(2).")


def available(env):
    b = env.bins.get("outrigger")
    if not b or not os.access(b, os.X_OK):
        return False, "outrigger binary not built"
    return True, ""


class Handle:
    def __init__(self, env, sidecars):
        self.env, self.sc = env, sidecars
        r = subprocess.run([env.bins["outrigger"], "--version"], capture_output=True, text=True)
        self.version = (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else "?"

    def pids(self):
        return {side: [sc.proc.pid] for side, sc in self.sc.items() if sc.alive()}

    def counters(self):
        out = {}
        for side, sc in self.sc.items():
            for k, v in sc.stats().items():
                out["%s.%s" % (side, k)] = v
        return out

    def traffic_keys(self):
        # The client's sidecar sees the traffic outbound, the server's inbound.
        return ["client.listener.outbound.downstream_cx_total",
                "client.listener.outbound.downstream_cx_rx_bytes_total",
                "server.listener.inbound.downstream_cx_total",
                "server.listener.inbound.downstream_cx_rx_bytes_total"]

    def stop(self):
        # A second SIGTERM ends the drain at once (the first starts the 5 s drain period).
        for sc in self.sc.values():
            if sc.alive():
                sc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        for sc in self.sc.values():
            try:
                sc.stop()
            except Exception:
                pass


def start(env):
    os.environ["OUTRIGGER_BIN"] = env.bins["outrigger"]
    sidecars = {}
    for side, pod in (("client", env.client), ("server", env.server)):
        benchlib.intercept(pod)
        sidecars[side] = pod.start_sidecar(
            run_init=False,
            proxy_args=("--concurrency", str(env.workers), "--log-level", "warn"))
    h = Handle(env, sidecars)
    benchlib.pin([p for v in h.pids().values() for p in v], env.cpu_proxy)
    return h
