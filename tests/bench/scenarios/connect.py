"""Scenario "connect": a new connection per 1 KiB request (connect, send 1 KiB, read the
1 KiB echo, close): the cost of connection set-up through both sidecars. Saturation is
closed loop with 16 operations in flight; latency is open loop (at most 1,024 in flight,
the rest queue and their wait counts). The second rate, 2,500/s, is below every proxy's
saturation here (~3,500-5,000/s): beyond it open-loop latency only measures queue growth."""
import benchlib

NAME = "connect"
TITLE = "New connection per 1 KiB request"
ORDER = 40
RATES = (1000, 2500)
ROWS = [("sat_ops", "connections/s at saturation (16 in flight)", "ops/s", "high"),
         ("sat_cpu_ms_1k", "proxy CPU-ms per 1k connections at saturation (both)", "ms", "low")]
for _r in RATES:
    _k = "r%d_" % _r
    ROWS += [(_k + "ops_per_s", "completed/s @ %d/s (open loop)" % _r, "ops/s", "high"),
             (_k + "p50", "p50 @ %d/s" % _r, "us", "low"),
             (_k + "p90", "p90 @ %d/s" % _r, "us", "low"),
             (_k + "p99", "p99 @ %d/s" % _r, "us", "low"),
             (_k + "p999", "p99.9 @ %d/s" % _r, "us", "low")]
ROWS += [("r1000_cpu_ms_1k_client", "CPU-ms per 1k conn @ 1000/s, client sidecar", "ms", "low"),
         ("r1000_cpu_ms_1k_server", "CPU-ms per 1k conn @ 1000/s, server sidecar", "ms", "low")]


def run(ctx):
    out = {"errors": 0, "ops_total": 0}
    sat, m = ctx.measured(lambda: ctx.load("connect", conns=16, rate=0, duration=ctx.pick(5, 1)))
    out["sat_ops"] = sat["ops_per_s"]
    out["sat_lat"] = sat["lat_us"]
    out.update(benchlib.cpu_figures("sat_", m, sat["ops"]))
    out["errors"] += sat["errors"]
    out["ops_total"] += sat["ops"]
    for rate in (RATES if not ctx.smoke else (1000,)):
        res, m = ctx.measured(lambda: ctx.load("connect", conns=1024, rate=rate,
                                               duration=ctx.pick(10, 1)))
        benchlib.add_rate_figures(out, "r%d_" % rate, res, m)
    return out
