"""Scenario "idle": hold many idle connections open through both sidecars and measure the
memory they cost. Each connection exchanges one byte first (so it is proven end to end),
then stays silent for the hold time; at the end each must still echo a byte.

Sizing: the open-files limit here is 20,000 and cannot be raised. A sidecar holds two
descriptors per proxied connection (plus its pipe cache and listeners), so 10,000
connections need more than 20,000 descriptors in each sidecar: they do not fit. The load
client runs in its own process (one descriptor each). We hold 9,000 and report per-1,000
figures."""
import time

import benchlib

NAME = "idle"
TITLE = "Idle connections held open"
ORDER = 50
CONNS = 9000
ROWS = [
    ("held", "connections held (all alive after the hold)", "count", "high"),
    ("kib_per_1k", "RSS per 1,000 idle connections (larger sidecar)", "KiB", "low"),
    ("bytes_per_conn", "RSS per idle connection (larger sidecar)", "B", "low"),
    ("rss_hold_kib", "RSS holding them (larger sidecar)", "KiB", "low"),
    ("hold_cpu_ms", "proxy CPU while holding (both, whole hold)", "ms", "low"),
]


def run(ctx):
    conns = ctx.pick(CONNS, 200)
    hold = ctx.pick(6, 1)
    time.sleep(0.5)
    before = ctx.rss()
    seen = {}

    def holding(ok, failed):
        time.sleep(1.0)               # let the last set-ups settle
        seen["rss"] = ctx.rss()
        c0 = ctx.cpu()
        time.sleep(max(hold - 2.5, 0.5))
        c1 = ctx.cpu()
        seen["cpu"] = {s: c1[s] - c0.get(s, 0) for s in c1}
        seen["ok"], seen["failed"] = ok, failed

    res, _ = ctx.load_hold(holding, conns=conns, hold=hold, duration=ctx.pick(40, 10),
                           conns_parallel=256)
    out = {
        "held": res["alive_after_hold"],
        "established": res["established"],
        "errors": res["errors"],
        "ops_total": res["alive_after_hold"],
        "open_per_s": res["open_per_s"],
        "rss_before_kib": before,
        "rss_hold": seen.get("rss"),
    }
    if before and seen.get("rss"):
        grow = {s: seen["rss"][s] - before.get(s, 0) for s in seen["rss"]}
        g = max(grow.values())
        n = max(res["established"], 1)
        out["rss_hold_kib"] = max(seen["rss"].values())
        out["kib_per_1k"] = g * 1000.0 / n
        out["bytes_per_conn"] = g * 1024.0 / n
        out["grow_kib"] = grow
        out["hold_cpu_ms"] = sum(seen["cpu"].values()) * 1000
    return out
