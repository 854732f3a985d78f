"""Scenario "bulk1": bulk throughput on one connection (client -> server, the server sinks
and reports what it received). Figures: Gbit/s at saturation, proxy CPU-ms per GiB."""
import benchlib

NAME = "bulk1"
TITLE = "Bulk throughput, 1 connection"
ORDER = 10
CONNS = 1
# (key, label, unit, better): better is "high", "low" or None (no ratio).
ROWS = [
    ("gbit_s", "throughput at saturation", "Gbit/s", "high"),
    ("cpu_ms_gib", "proxy CPU per GiB (both sidecars)", "ms", "low"),
    ("rss_load_kib", "RSS under load (larger sidecar)", "KiB", "low"),
]


def run(ctx, conns=CONNS):
    dur = ctx.pick(5, 1)
    res, m = ctx.measured(lambda: ctx.load("bulk", conns=conns, duration=dur))
    gib = res["bytes"] / 2**30
    out = {
        "gbit_s": res["gbit_per_s"],
        "bytes": res["bytes"],
        "errors": res["errors"],
        "ops_total": res["bytes"],
        "rss_load_kib": benchlib.max_rss(m),
        "cpu_s": m["cpu_s"],
    }
    if m["cpu_s"] and gib:
        out["cpu_ms_gib"] = sum(m["cpu_s"].values()) * 1000 / gib
    return out
