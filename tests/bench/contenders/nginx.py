"""Contender "nginx": nginx's stream module as the sidecar of both pods, run as uid 1337
behind Istio's capture rules (REDIRECT), worker_processes = the worker count.

nginx stream cannot read SO_ORIGINAL_DST ($server_addr is the redirected local address),
so each sidecar forwards to a fixed upstream: the server pod IP:8080 outbound (client
side), 127.0.0.1:8080 inbound (server side).

Counters: open-source nginx stream keeps none, so in smoke mode each sidecar writes an
unbuffered stream access log ($bytes_received per session) and the harness sums it. A full
run does not log (it would cost nginx a write per connection that the others do not pay);
there the check is that the workers' CPU time grew."""
import os
import subprocess

import benchlib

NAME = "nginx"
LABEL = "nginx (stream)"
ORDER = 40
NOTE = ("Fixed upstreams (stream cannot read SO_ORIGINAL_DST): server pod IP:8080 outbound, "
        "127.0.0.1:8080 inbound. proxy_half_close on (as the others); default proxy_buffer_size "
        "(16 KiB), no splice.")
MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

CONFIG = """load_module {module};
worker_processes {workers};
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;

events {{
    worker_connections 19900;
}}

stream {{
    {access_log}
    server {{
        listen 15001 reuseport;
        proxy_pass {server_ip}:{port};
        proxy_timeout 1h;
        proxy_half_close on;
    }}
    server {{
        listen 15006 reuseport;
        proxy_pass 127.0.0.1:{port};
        proxy_timeout 1h;
        proxy_half_close on;
    }}
}}
"""


def available(env):
    if not os.access("/usr/sbin/nginx", os.X_OK):
        return False, "nginx not installed"
    if not os.path.exists(MODULE):
        return False, "libnginx-mod-stream not installed"
    return True, ""


class Handle:
    def __init__(self, procs, dirs, logging):
        self.procs, self.dirs, self.logging = procs, dirs, logging
        r = subprocess.run(["/usr/sbin/nginx", "-v"], capture_output=True, text=True)
        self.version = (r.stderr or r.stdout).strip()

    def pids(self):
        return {side: [p.pid] for side, p in self.procs.items() if p.poll() is None}

    def counters(self):
        out = {}
        for side, pids in self.pids().items():
            out["%s.cpu_ticks" % side] = int(sum(benchlib.cpu_seconds(p) for p in
                                                 benchlib.descendants(pids)) * benchlib.CLK_TCK)
            if not self.logging:
                continue
            sessions = received = 0
            try:
                with open(os.path.join(self.dirs[side], "access.log")) as f:
                    for line in f:
                        port, _, n = line.partition(" ")
                        if n.strip().isdigit():
                            sessions += 1
                            received += int(n)
            except OSError:
                pass
            out["%s.sessions" % side] = sessions
            out["%s.bytes_received" % side] = received
        return out

    def traffic_keys(self):
        if self.logging:
            return ["client.sessions", "client.bytes_received", "server.sessions", "server.bytes_received"]
        return ["client.cpu_ticks", "server.cpu_ticks"]

    def stop(self):
        benchlib.stop_procs(self.procs.values())


def start(env):
    procs, dirs = {}, {}
    logging = bool(env.opts.smoke)
    for side, pod in (("client", env.client), ("server", env.server)):
        benchlib.intercept(pod)
        d = env.piddir("nginx-" + side)
        cfg = os.path.join(d, "nginx.conf")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(module=MODULE, workers=env.workers, dir=d,
                                  server_ip=env.server.ip4, port=env.app_port,
                                  access_log=("log_format orbench '$server_port $bytes_received';\n"
                                              "    access_log %s/access.log orbench;" % d)
                                  if logging else "access_log off;"))
        os.chmod(cfg, 0o644)
        log = open(os.path.join(d, "nginx.out"), "wb")
        procs[side] = pod.popen(["/usr/sbin/nginx", "-e", os.path.join(d, "error.log"), "-p", d, "-c", cfg],
                                user=benchlib.PROXY_UID, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        dirs[side] = d
        benchlib.wait_tcp(pod, 15001)
        benchlib.wait_tcp(pod, 15006)
        if procs[side].poll() is not None:
            raise benchlib.BenchError("nginx exited: " + open(os.path.join(d, "error.log")).read()[-2000:])
    h = Handle(procs, dirs, logging)
    benchlib.pin([p for v in h.pids().values() for p in v], env.cpu_proxy)
    return h
