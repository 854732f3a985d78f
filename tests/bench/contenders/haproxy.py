"""Contender "haproxy": HAProxy in mode tcp as the sidecar of both pods, run as uid 1337
behind Istio's capture rules (REDIRECT), nbthread = the worker count, no logging.

Forwarding: by default both sidecars forward to the original destination. HAProxy reads
SO_ORIGINAL_DST for a frontend's IPv4 destination, and a server at address 0.0.0.0 port 0
means "the address and port the client connected to"; inbound binds 127.0.0.6 as source
(so the capture rules let the connection to the pod's own IP through, as Envoy does).
ORBENCH_HAPROXY_FIXED=1 uses fixed upstreams instead (server pod IP:8080 outbound,
127.0.0.1:8080 inbound)."""
import os
import subprocess

import benchlib

NAME = "haproxy"
LABEL = "HAProxy (mode tcp)"
ORDER = 30

FIXED = os.environ.get("ORBENCH_HAPROXY_FIXED") == "1"
NOTE = ("Fixed upstreams: server pod IP:8080 outbound, 127.0.0.1:8080 inbound." if FIXED else
        "Original destination: `server 0.0.0.0:0` (HAProxy reads SO_ORIGINAL_DST for IPv4 "
        "frontends), inbound `source 127.0.0.6`. Default buffers (tune.bufsize 16 KiB), no splice.")

CONFIG = """global
    nbthread {workers}
    maxconn 9900
    stats socket {dir}/stats.sock mode 600 level admin

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend outbound
    bind 0.0.0.0:15001
    default_backend outbound

backend outbound
    server dst {out_server}

frontend inbound
    bind 0.0.0.0:15006
    default_backend inbound

backend inbound
    server app {in_server}
"""


def available(env):
    if not os.access("/usr/sbin/haproxy", os.X_OK):
        return False, "haproxy not installed"
    return True, ""


class Handle:
    def __init__(self, procs, dirs):
        self.procs, self.dirs = procs, dirs
        r = subprocess.run(["/usr/sbin/haproxy", "-v"], capture_output=True, text=True)
        self.version = r.stdout.splitlines()[0] if r.stdout else "?"

    def pids(self):
        return {side: [p.pid] for side, p in self.procs.items() if p.poll() is None}

    def counters(self):
        out = {}
        for side, d in self.dirs.items():
            csv = benchlib.unix_query(os.path.join(d, "stats.sock"), "show stat")
            lines = csv.splitlines()
            if not lines:
                continue
            hdr = lines[0].lstrip("# ").split(",")
            for line in lines[1:]:
                row = dict(zip(hdr, line.split(",")))
                if row.get("svname") != "FRONTEND":
                    continue
                for k in ("stot", "bin", "bout"):
                    if row.get(k, "").isdigit():
                        out["%s.%s.%s" % (side, row["pxname"], k)] = int(row[k])
        return out

    def traffic_keys(self):
        return ["client.outbound.stot", "client.outbound.bin",
                "server.inbound.stot", "server.inbound.bin"]

    def stop(self):
        benchlib.stop_procs(self.procs.values())


def launch(pod, d, config):
    """haproxy in pod with config (written to d/haproxy.cfg), as the proxy uid; returns its
    process once both capture ports listen (BenchError if it exited)."""
    cfg = os.path.join(d, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(config)
    os.chmod(cfg, 0o644)
    log = open(os.path.join(d, "haproxy.log"), "wb")
    proc = pod.popen(["/usr/sbin/haproxy", "-db", "-f", cfg], user=benchlib.PROXY_UID,
                     stdout=log, stderr=subprocess.STDOUT)
    log.close()
    benchlib.wait_tcp(pod, 15001)
    benchlib.wait_tcp(pod, 15006)
    if proc.poll() is not None:
        raise benchlib.BenchError("haproxy exited: " + open(os.path.join(d, "haproxy.log")).read()[-2000:])
    return proc


def start(env):
    procs, dirs = {}, {}
    for side, pod in (("client", env.client), ("server", env.server)):
        benchlib.intercept(pod)
        d = env.piddir("haproxy-" + side)
        if FIXED:
            out_server, in_server = "%s:%d" % (env.server.ip4, env.app_port), "127.0.0.1:%d" % env.app_port
        else:
            out_server, in_server = "0.0.0.0:0", "0.0.0.0:0 source 127.0.0.6"
        procs[side] = launch(pod, d, CONFIG.format(workers=env.workers, dir=d, out_server=out_server,
                                                   in_server=in_server))
        dirs[side] = d
    h = Handle(procs, dirs)
    benchlib.pin([p for v in h.pids().values() for p in v], env.cpu_proxy)
    return h
