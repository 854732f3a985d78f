"""Scenario "pingpong": 1 KiB request, 1 KiB echoed response, on persistent connections.
Latency is open loop at fixed rates on 16 connections (Istio's perf setup uses 16),
measured from each request's intended send time. Saturation is closed loop on 64
connections, one request outstanding on each (16 would leave the proxy core idle part of
the time: throughput would then measure round-trip latency, not capacity). CPU per 1,000
requests is taken at saturation and at 1,000/s (Istio's point)."""
import benchlib

NAME = "pingpong"
TITLE = "Request/response, 1 KiB, 16 persistent connections"
ORDER = 30
CONNS = 16
SAT_CONNS = 64
RATES = (1000, 10000)

ROWS = [
    ("sat_ops", "requests/s at saturation (closed loop, 64 conns)", "ops/s", "high"),
    ("sat_cpu_ms_1k", "proxy CPU-ms per 1k requests at saturation (both)", "ms", "low"),
]
for _r in RATES:
    _k = "r%d_" % _r
    ROWS += [
        (_k + "ops_per_s", "completed/s @ %d/s (open loop)" % _r, "ops/s", "high"),
        (_k + "p50", "p50 @ %d/s" % _r, "us", "low"),
        (_k + "p90", "p90 @ %d/s" % _r, "us", "low"),
        (_k + "p99", "p99 @ %d/s" % _r, "us", "low"),
        (_k + "p999", "p99.9 @ %d/s" % _r, "us", "low"),
    ]
ROWS += [
    ("r1000_cpu_ms_1k_client", "CPU-ms per 1k req @ 1000/s, client sidecar", "ms", "low"),
    ("r1000_cpu_ms_1k_server", "CPU-ms per 1k req @ 1000/s, server sidecar", "ms", "low"),
    ("r1000_rss_kib", "RSS @ 1000/s (larger sidecar)", "KiB", "low"),
]


def run(ctx, conns=CONNS, rates=RATES, size=1024):
    out = {"errors": 0, "ops_total": 0}
    sat, m = ctx.measured(lambda: ctx.load("pingpong", conns=SAT_CONNS, rate=0, size=size,
                                            duration=ctx.pick(5, 1)))
    out["sat_ops"] = sat["ops_per_s"]
    out["sat_lat"] = sat["lat_us"]
    out.update(benchlib.cpu_figures("sat_", m, sat["ops"]))
    out["sat_rss_kib"] = benchlib.max_rss(m)
    out["errors"] += sat["errors"]
    out["ops_total"] += sat["ops"]
    for rate in (rates if not ctx.smoke else (1000,)):
        dur = ctx.pick(15 if rate <= 1000 else 10, 1)
        res, m = ctx.measured(lambda: ctx.load("pingpong", conns=conns, rate=rate, size=size,
                                               duration=dur))
        benchlib.add_rate_figures(out, "r%d_" % rate, res, m)
    return out
