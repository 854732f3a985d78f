"""Scenario "closeclient": connection churn where the CLIENT closes first: orbench-load
connects, sends 1 KiB, reads the 1 KiB echo from orbench-server and closes; the server
closes when it reads the EOF. Closed loop on 16 and 64 connections in flight; latency is
per connection (connect to close), closed loop. The companion of `closeserver` (the same
churn with the server closing first); `connect` measures this shape open loop.

Runs with the harness's POD_SYSCTLS (tcp_tw_reuse=1, ports 1024-65000): when the client
closes first its own socket keeps TIME_WAIT on (pod IP, port) -> destination whatever the
proxy does (with no proxy too), and with the kernel defaults that alone caps every
contender at the port range / 60 s. Each phase starts with no TIME_WAIT socket in either
pod (benchlib.flush_time_wait), as `closeserver`."""
import benchlib

NAME = "closeclient"
TITLE = "New connection per 1 KiB request, client closes first"
ORDER = 45
# Churn: a fresh lab of its own, so that its TIME_WAIT sockets and conntrack entries tax
# no other scenario (orbench.lab_groups).
OWN_LAB = True
CONNS = (16, 64)
ROWS = []
for _c in CONNS:
    _k = "c%d_" % _c
    ROWS += [(_k + "ops", "connections/s, %d in flight (closed loop)" % _c, "ops/s", "high"),
             (_k + "p50", "p50, %d in flight" % _c, "us", "low"),
             (_k + "p99", "p99, %d in flight" % _c, "us", "low"),
             (_k + "cpu_ms_1k", "proxy CPU-ms per 1k connections, %d in flight (both)" % _c, "ms", "low")]


def run(ctx):
    out = {"errors": 0, "ops_total": 0}
    for conns in (CONNS if not ctx.smoke else CONNS[:1]):
        k = "c%d_" % conns
        benchlib.flush_time_wait(ctx)
        res, m = ctx.measured(lambda: ctx.load("connect", conns=conns, rate=0, duration=ctx.pick(5, 1)))
        lat = res["lat_us"]
        out[k + "ops"] = res["ops_per_s"]
        out[k + "p50"] = lat["p50"] if lat["n"] else None
        out[k + "p99"] = lat["p99"] if lat["n"] else None
        out.update(benchlib.cpu_figures(k, m, res["ops"]))
        out["errors"] += res["errors"]
        out["ops_total"] += res["ops"]
    return out
