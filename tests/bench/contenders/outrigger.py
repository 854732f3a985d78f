"""Contender "outrigger": our sidecar in both pods, started through the pod lab
(tests/lab: start_sidecar) from the optimised bench build, after Istio's capture rules.
Both sidecars get the mesh as static resources (mesh_resources below), so every
connection goes through the model's lookups, as in a mesh: outbound, the destination
(the server pod's IP, as for every contender) is no service VIP but a known Workload, so
it goes there directly; inbound, the destination is looked up as the local workload.
Inbound it connects from 127.0.0.6 like Envoy."""
import ipaddress
import os
import signal
import subprocess
import time

import benchlib
import meshres

# Resources besides the two pods, so that the lookups run on tables of a realistic size
# (a namespace of a mid-sized mesh), not on a model of two entries.
FILLER_WORKLOADS = 500
FILLER_SERVICES = 100

NAME = "outrigger"
LABEL = "Outrigger"
ORDER = 20
NOTE = ("Both sidecars hold the mesh as static resources (the two pods' Workloads, a Service "
        "of the server, %d other workloads and %d services): outbound, the original "
        "destination (SO_ORIGINAL_DST) is looked up and is a known workload, so it goes there; "
        "inbound, the local workload is looked up; then from 127.0.0.6, as Envoy. L4 tunnel "
        "with splice(2)." % (FILLER_WORKLOADS, FILLER_SERVICES))


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

    extra_traffic = ()

    def traffic_keys(self):
        # The client's sidecar sees the traffic outbound, the server's inbound.
        return ["client.listener.outbound.downstream_cx_total",
                "client.listener.outbound.downstream_cx_rx_bytes_total",
                "server.listener.inbound.downstream_cx_total",
                "server.listener.inbound.downstream_cx_rx_bytes_total"] + list(self.extra_traffic)

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


def mesh_resources(env, server_extra=None):
    """The -c FILE of both sidecars: Service "bench" (VIP 198.19.0.30, ports 8080 and 8081
    as the harness's apps), the server pod's Workload in it (with server_extra's fields:
    outrigger-mtls marks it), the client pod's Workload, and the fillers (addresses in
    10.0.0.0/8, which nothing in the lab uses)."""
    key = meshres.key("bench")
    ports = [(benchlib.APP_PORT, benchlib.APP_PORT), (benchlib.HTTP_PORT, benchlib.HTTP_PORT)]
    res = [meshres.service("bench", ["198.19.0.30"], ports),
           meshres.workload("Kubernetes//Pod/default/server", "server", [env.server.ip4], {key: ports},
                            **(server_extra or {})),
           meshres.workload("Kubernetes//Pod/default/client", "client", [env.client.ip4])]
    base = int(ipaddress.ip_address("10.0.0.0"))
    for i in range(FILLER_SERVICES):
        res.append(meshres.service("svc%d" % i, [str(ipaddress.ip_address(base + (200 << 16) + i))],
                                   [(80, 8080)]))
    for i in range(FILLER_WORKLOADS):
        res.append(meshres.workload("Kubernetes//Pod/default/wl%d" % i, "wl%d" % i,
                                    [str(ipaddress.ip_address(base + 1 + i))],
                                    {meshres.key("svc%d" % (i % FILLER_SERVICES)): [(80, 8080)]}))
    return meshres.config(res)


def start(env, cfg=None, extra_args=None):
    """Both sidecars on cfg (default: mesh_resources), each with extra_args[side]."""
    os.environ["OUTRIGGER_BIN"] = env.bins["outrigger"]
    sidecars = {}
    cfg = cfg or mesh_resources(env)
    for side, pod in (("client", env.client), ("server", env.server)):
        benchlib.intercept(pod)
        sidecars[side] = pod.start_sidecar(
            run_init=False, config=cfg,
            proxy_args=["--concurrency", str(env.workers), "--log-level", "warn"] +
            list((extra_args or {}).get(side, ())))
    h = Handle(env, sidecars)
    benchlib.pin([p for v in h.pids().values() for p in v], env.cpu_proxy)
    return h
