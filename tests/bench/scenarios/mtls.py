"""Scenario "mtls" (issue 9, "Performance"): the sidecar pair with mTLS between the two
sidecars, against HAProxy's pair doing TLS with client certificates (contenders
outrigger-mtls and haproxy-mtls, which run only this scenario), with the plaintext pairs
(outrigger, haproxy) in the same scenario for reference. 1 KiB requests:
  * keep-alive: 64 persistent connections at saturation (closed loop), then 1,000/s on 16;
  * a new connection per request (connect, 1 KiB, echo, close): 16 in flight at
    saturation, then 100/s (below both mTLS pairs' saturation on one shared core: beyond
    it open-loop latency only measures queue growth). Every connection is a TLS handshake
    on each sidecar (a resumed one when the sidecar keeps sessions: both pairs do);
  * idle, first (so that the heap freed by the loads does not hide their cost):
    connections held open after one byte each, the RSS they add per connection.
Handshakes/s per core = connections completed / CPU-seconds of that sidecar at connect
saturation (one client handshake in the client's sidecar, one server handshake in the
server's per connection)."""
import time

import benchlib

NAME = "mtls"
TITLE = "Sidecar pair with mTLS between the sidecars (1 KiB; plaintext pairs for reference)"
ORDER = 45
SKIP = {"direct": "no sidecar pair", "nginx": "not a TLS reference here",
        "outrigger-prev": "plaintext baseline: scenario connect"}
IDLE_CONNS = 2000

ROWS = [
    ("ka_sat_ops", "keep-alive requests/s at saturation (64 conns)", "ops/s", "high"),
    ("ka_sat_cpu_ms_1k", "proxy CPU-ms per 1k keep-alive requests at saturation (both)", "ms", "low"),
    ("ka_r1000_cpu_ms_1k", "proxy CPU-ms per 1k keep-alive requests @ 1000/s (both)", "ms", "low"),
    ("ka_r1000_p99", "keep-alive p99 @ 1000/s", "us", "low"),
    ("cx_sat_ops", "new connections/s at saturation (16 in flight)", "ops/s", "high"),
    ("cx_sat_cpu_ms_1k", "proxy CPU-ms per 1k new-connection requests at saturation (both)", "ms", "low"),
    ("cx_r100_cpu_ms_1k", "proxy CPU-ms per 1k new-connection requests @ 100/s (both)", "ms", "low"),
    ("cx_r100_p99", "new connection p99 @ 100/s", "us", "low"),
    ("hs_per_core_client", "handshakes/s per core, client sidecar", "ops/s", "high"),
    ("hs_per_core_server", "handshakes/s per core, server sidecar", "ops/s", "high"),
    ("rss_kib", "RSS max during the load (larger sidecar)", "KiB", "low"),
    ("idle_bytes_per_conn", "RSS per idle connection (larger sidecar)", "B", "low"),
]


def _idle(ctx, out):
    conns = ctx.pick(IDLE_CONNS, 100)
    time.sleep(0.5)
    before = ctx.rss()
    seen = {}

    def holding(ok, failed):
        time.sleep(1.0)
        seen["rss"] = ctx.rss()

    res, _ = ctx.load_hold(holding, conns=conns, hold=ctx.pick(3, 1), duration=ctx.pick(30, 10),
                           conns_parallel=64)
    out["idle_held"] = res["alive_after_hold"]
    out["errors"] += res["errors"]
    out["ops_total"] += res["alive_after_hold"]
    if before and seen.get("rss"):
        grow = {s: seen["rss"][s] - before.get(s, 0) for s in seen["rss"]}
        out["idle_grow_kib"] = grow
        out["idle_bytes_per_conn"] = max(grow.values()) * 1024.0 / max(res["established"], 1)


def run(ctx):
    out = {"errors": 0, "ops_total": 0}
    _idle(ctx, out)
    sat, m = ctx.measured(lambda: ctx.load("pingpong", conns=64, rate=0, size=1024,
                                            duration=ctx.pick(5, 1)))
    out["ka_sat_ops"] = sat["ops_per_s"]
    out.update(benchlib.cpu_figures("ka_sat_", m, sat["ops"]))
    rss = [benchlib.max_rss(m)]
    out["errors"] += sat["errors"]
    out["ops_total"] += sat["ops"]
    res, m = ctx.measured(lambda: ctx.load("pingpong", conns=16, rate=1000, size=1024,
                                           duration=ctx.pick(10, 1)))
    benchlib.add_rate_figures(out, "ka_r1000_", res, m)

    sat, m = ctx.measured(lambda: ctx.load("connect", conns=16, rate=0, duration=ctx.pick(5, 1)))
    out["cx_sat_ops"] = sat["ops_per_s"]
    out.update(benchlib.cpu_figures("cx_sat_", m, sat["ops"]))
    for side, cpu in m["cpu_s"].items():
        out["hs_per_core_" + side] = sat["ops"] / cpu if cpu else None
    rss.append(benchlib.max_rss(m))
    out["errors"] += sat["errors"]
    out["ops_total"] += sat["ops"]
    res, m = ctx.measured(lambda: ctx.load("connect", conns=256, rate=100, duration=ctx.pick(10, 1)))
    benchlib.add_rate_figures(out, "cx_r100_", res, m)
    rss = [r for r in rss + [out.get("ka_r1000_rss_kib"), out.get("cx_r100_rss_kib")] if r]
    out["rss_kib"] = max(rss) if rss else None
    return out
