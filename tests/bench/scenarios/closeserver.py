"""Scenario "closeserver": connection churn where the SERVER closes first, the shape real
HTTP/1.1 servers produce: wrk sends `GET /1k` with `Connection: close` to nginx in the
server pod, nginx answers 1 KiB and closes; wrk reads the response, closes and reconnects.
Closed loop (wrk, one thread) on 16 and 64 connections; wrk's percentiles are closed-loop
latency, which is what shows a stall that holds some connections (issue 7 §1: a 20-100 ms
tail that cut the rate up to tenfold under concurrency).

Runs with the kernel's default TIME_WAIT settings in both pods (tcp_tw_reuse=2, ports
32768-60999), as real pods have: the harness's POD_SYSCTLS (tw_reuse=1) recycle TIME_WAIT
at once and hid exactly this bug, a proxy whose FIN reaches the app after the response so
that the app closes first and its TIME_WAIT fills the ports of the sidecar's own
connect()s. Each phase starts with no TIME_WAIT socket in either pod
(benchlib.flush_time_wait): earlier scenarios leave tens of thousands, as many as the
contender carried, for a minute."""
import benchlib

NAME = "closeserver"
TITLE = "New connection per HTTP request, server closes first (nginx, Connection: close)"
ORDER = 35
# Churn: a fresh lab of its own, so that its TIME_WAIT sockets and conntrack entries tax
# no other scenario (orbench.lab_groups).
OWN_LAB = True
CONNS = (16, 64)
# Contenders that cannot carry it, and why (orbench.py skips them for this scenario).
SKIP = {"nginx": "fixed upstreams: its stream sidecars send every port to 8080 (orbench-server), "
                 "not to the HTTP backend on %d" % benchlib.HTTP_PORT}
ROWS = []
for _c in CONNS:
    _k = "c%d_" % _c
    ROWS += [(_k + "ops", "requests/s, %d connections (closed loop)" % _c, "ops/s", "high"),
             (_k + "p50", "p50, %d connections" % _c, "us", "low"),
             (_k + "p99", "p99, %d connections" % _c, "us", "low"),
             (_k + "cpu_ms_1k", "proxy CPU-ms per 1k requests, %d connections (both)" % _c, "ms", "low")]


def run(ctx):
    out = {"errors": 0, "ops_total": 0}
    with benchlib.kernel_defaults(ctx), benchlib.nginx_backend(ctx) as (host, port):
        url = "http://%s:%d/1k" % (host, port)
        for conns in (CONNS if not ctx.smoke else CONNS[:1]):
            k = "c%d_" % conns
            benchlib.flush_time_wait(ctx)
            res, m = ctx.measured(lambda: benchlib.wrk(ctx, url, conns, ctx.pick(5, 1),
                                                       headers=("Connection: close",)))
            out[k + "ops"] = res["ops_per_s"]
            out[k + "p50"] = res["lat_us"].get("p50")
            out[k + "p99"] = res["lat_us"].get("p99")
            out.update(benchlib.cpu_figures(k, m, res["ops"]))
            out["errors"] += res["errors"]
            out["ops_total"] += res["ops"]
    return out
