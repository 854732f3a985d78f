#!/usr/bin/python3
"""The benchmark driver (tests/bench): every scenario against every contender, in one run,
on the same pod-lab topology, then a Markdown table, a PNG chart and results.json.

    /usr/bin/python3 tests/bench/orbench.py --bins DIR [--smoke] [--results DIR]
        [--contenders direct,outrigger,...] [--scenarios bulk1,...] [--workers 1]
        [--cpu-load 0] [--cpu-proxy 1] [--profile]

For each contender: a fresh lab (client pod, server pod), orbench-server in the server
pod, the contender's sidecars, then each scenario (scenarios/*.py) in order; a scenario
with OWN_LAB = True (the churn ones) gets a fresh lab of its own, and so does the next. Contenders
are contenders/*.py. Run as root with /usr/bin/python3 (run.sh does all of this).

Exit status: 0 when every contender carried every scenario's traffic (ops > 0, and the
proxy's own counters moved); 1 otherwise. Speed is never asserted.
"""
import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback

sys.dont_write_bytecode = True      # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "scenarios"))
sys.path.insert(0, os.path.join(HERE, "..", "lab"))

import benchlib  # noqa: E402
from benchlib import log  # noqa: E402


def load_modules(sub, names=None):
    d = os.path.join(HERE, sub)
    mods = []
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".py") or fn.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location("%s_%s" % (sub, fn[:-3]), os.path.join(d, fn))
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        mods.append(m)
    mods.sort(key=lambda m: (getattr(m, "ORDER", 100), m.NAME))
    if names:
        want = names.split(",")
        unknown = set(want) - {m.NAME for m in mods}
        if unknown:
            raise SystemExit("unknown %s: %s" % (sub, ", ".join(sorted(unknown))))
        mods = [m for m in mods if m.NAME in want]
    return mods


def start_backend(env):
    """orbench-server in the server pod, as nobody, on the load CPU."""
    p = env.server.popen(["taskset", "-c", env.cpu_load, env.bins["server"], "--port", str(env.app_port),
                          "--max-seconds", "1800"], user="nobody",
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    import lab
    line = lab.read_line(p.stdout, 10)
    if not line.startswith(b"READY"):
        raise benchlib.BenchError("orbench-server did not start: %r" % line)
    return p


def profile(ctx, outdir, label, fn, seconds):
    """perf record (cpu-clock, call graphs) on the proxy processes while fn() runs."""
    pids = [p for v in ctx.proxy_pids().values() for p in v]
    if not pids or not shutil.which("perf"):
        return None
    data = os.path.join(outdir, "perf-%s-%s.data" % (ctx.name, label))
    rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-g",
                            "-p", ",".join(map(str, pids)), "-o", data, "--", "sleep", str(seconds)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)
    res = None
    try:
        res = fn()
    finally:
        rec.wait(timeout=seconds + 30)
    txt = os.path.join(outdir, "profile-%s-%s.txt" % (ctx.name, label))
    with open(txt, "w") as f:
        f.write("# perf record -e cpu-clock -g on %s sidecars (pids %s) during %s; load: %s\n"
                % (ctx.name, pids, label, json.dumps(res.get("args") if res else None)))
        for sort, extra in (("comm,dso,sym", ["--no-children"]), ("dso", ["--no-children"])):
            r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", sort,
                                "--percent-limit", "0.7", "-g", "none"] + extra,
                               capture_output=True, text=True, timeout=120)
            f.write("\n## perf report --sort %s\n" % sort)
            f.write("\n".join(l for l in r.stdout.splitlines() if l and not l.startswith("#")))
            f.write("\n")
        r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--children", "--sort", "sym",
                            "--percent-limit", "3", "-g", "caller,0.5,callee,function,percent",
                            "--max-stack", "12"], capture_output=True, text=True, timeout=120)
        f.write("\n## perf report --children (call chains)\n")
        f.write("\n".join(r.stdout.splitlines()[:400]))
    with open(txt) as f:
        text = f.read()
    if os.environ.get("ORBENCH_KEEP_PERF") != "1":
        os.unlink(data)
    return {"file": os.path.basename(txt), "text": text, "load": res}


def syscalls(ctx, outdir, label, fn):
    """strace -c -f on the proxy processes while fn() runs: system calls per operation
    (a count, not a time: it does not depend on the machine's noise, so it can judge a
    churn change when timings cannot). strace slows the proxy down; the load's own
    figures from this run are not reported."""
    pids = [p for v in ctx.proxy_pids().values() for p in v]
    if not pids or not shutil.which("strace"):
        return None
    out = os.path.join(outdir, "syscalls-%s-%s.txt" % (ctx.name, label))
    argv = ["strace", "-c", "-f", "-o", out]
    for p in pids:
        argv += ["-p", str(p)]
    tr = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        res = fn()
    finally:
        tr.send_signal(signal.SIGINT)
        tr.wait(timeout=30)
    calls = {}
    with open(out) as f:
        for line in f:
            w = line.split()
            if len(w) >= 5 and w[-1] != "total" and w[3].isdigit():
                calls[w[-1]] = int(w[3])
    ops = max(res.get("ops", 0), 1)
    per = {k: round(v / ops, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}
    with open(out, "a") as f:
        f.write("\n# %d operations (%s): %.2f system calls per operation, all sidecars\n# %s\n"
                % (ops, label, sum(calls.values()) / ops, json.dumps(per)))
    return {"file": os.path.basename(out), "per_op": round(sum(calls.values()) / ops, 2), "calls": per}


def lab_groups(scenarios):
    """Scenarios in run order, cut into the groups that share one lab: a scenario with
    OWN_LAB = True gets a fresh lab of its own (churn leaves thousands of TIME_WAIT
    sockets and conntrack entries behind that would tax whatever runs next in that lab:
    closeserver before connect raised connect's p99 at 1,000/s from ~1.4 to ~12 ms)."""
    groups, cur = [], []
    for S in scenarios:
        if getattr(S, "OWN_LAB", False):
            if cur:
                groups.append(cur)
                cur = []
            groups.append([S])
        else:
            cur.append(S)
    if cur:
        groups.append(cur)
    return groups


def run_contender(C, scenarios, opts, bins, outdir):
    """One contender, every scenario, each group of them in its own fresh lab (lab_groups).
    Returns its result dict."""
    rec = {"label": C.LABEL, "note": C.NOTE, "scenarios": {}, "checks": [], "raw": {},
           "profiles": {}}
    workdir = os.path.join(opts.workdir, C.NAME)
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    os.chmod(workdir, 0o755)
    only = getattr(C, "SCENARIOS", None)    # a contender made for some scenarios only
    if only:
        scenarios = [S for S in scenarios if S.NAME in only]
    groups = lab_groups(scenarios) or [[]]
    for gi, group in enumerate(groups):
        if not run_lab(C, group, opts, bins, outdir, workdir, rec, first=gi == 0,
                       last=gi == len(groups) - 1):
            break
    return rec


def run_lab(C, group, opts, bins, outdir, workdir, rec, first, last):
    """The scenarios of one group in a fresh lab (client pod, server pod, backend, the
    contender's sidecars). The idle RSS is taken in the first lab, the profiles in the
    last. False when the contender is not available here."""
    import lab
    with lab.Lab(prefix="orbench") as L:
        client, server = L.add_pod("client"), L.add_pod("server")
        for p in (client, server):
            benchlib.tune_pod(p)
        env = benchlib.Env(L, client, server, opts, bins, workdir)
        ok, why = C.available(env)
        if not ok:
            rec["skipped"] = why
            log("%s: skipped (%s)" % (C.NAME, why))
            return False
        start_backend(env)
        log("%s: starting sidecars%s" % (C.NAME, "" if first else " (a fresh lab for %s)" %
                                         ",".join(S.NAME for S in group)))
        h = C.start(env)
        rec["version"] = h.version
        ctx = benchlib.Ctx(env, C, h, opts.smoke)
        try:
            time.sleep(1.0)
            if first:
                rec["rss_idle_kib"] = ctx.rss()
                rec["pids"] = ctx.proxy_pids()
            for S in group:
                why = getattr(S, "SKIP", {}).get(C.NAME)
                if why:
                    log("%s: %s skipped (%s)" % (C.NAME, S.NAME, why))
                    continue
                log("%s: %s" % (C.NAME, S.NAME))
                c0 = h.counters()
                t0 = time.monotonic()
                try:
                    fig = S.run(ctx)
                except Exception as e:
                    traceback.print_exc()
                    fig = None
                    rec["checks"].append({"scenario": S.NAME, "ok": False,
                                          "msg": "scenario failed: %s" % str(e)[:500]})
                c1 = h.counters()
                rec["raw"][S.NAME] = ctx.raw
                ctx.raw = []
                if fig is None:
                    continue
                fig["wall_s"] = time.monotonic() - t0
                rec["scenarios"][S.NAME] = fig
                rec["checks"].extend(check(C, h, S, fig, c0, c1, opts.smoke))
                brief = {k: fig.get(k) for k in ("gbit_s", "sat_ops", "r1000_p50", "r1000_p99",
                                                 "held", "kib_per_1k", "errors") if k in fig}
                log("%s: %s -> %s" % (C.NAME, S.NAME, json.dumps(brief)))
            if last and opts.profile and C.NAME in opts.profile.split(","):
                for label, fn in (
                        ("pingpong", lambda: ctx.load("pingpong", conns=64, rate=0, duration=6)),
                        ("connect", lambda: ctx.load("connect", conns=16, rate=0, duration=6)),
                        ("bulk1", lambda: ctx.load("bulk", conns=1, duration=6))):
                    log("%s: profiling %s" % (C.NAME, label))
                    pr = profile(ctx, outdir, label, fn, 5)
                    if pr:
                        rec["profiles"][label] = {"file": pr["file"]}
            if last and opts.syscalls and C.NAME in opts.syscalls.split(","):
                for label, conns in (("connect16", 16), ("connect64", 64)):
                    log("%s: counting system calls, %s" % (C.NAME, label))
                    sc = syscalls(ctx, outdir, label, lambda: ctx.load("connect", conns=conns, rate=0,
                                                                       duration=4))
                    if sc:
                        rec.setdefault("syscalls", {})[label] = sc
                        log("%s: %s: %.2f system calls per connection (both sidecars)"
                            % (C.NAME, label, sc["per_op"]))
        finally:
            h.stop()
    return True


def merge_rounds(rounds):
    """One result per contender from several rounds: each numeric figure is the median of
    the rounds that have it (None where none has); every round's failed checks are kept; the
    per-round figures stay in "rounds" for anyone who wants the spread."""
    if len(rounds) == 1:
        return rounds[0]
    out = {}
    for name, last in rounds[-1].items():
        rec = dict(last)
        rec["scenarios"] = {}
        for scen, fig in last.get("scenarios", {}).items():
            merged = dict(fig)
            for k, v in fig.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    vals = [r[name]["scenarios"][scen][k] for r in rounds
                            if isinstance(r.get(name, {}).get("scenarios", {}).get(scen, {}).get(k),
                                          (int, float))]
                    merged[k] = statistics.median(vals) if vals else None
            rec["scenarios"][scen] = merged
        idle = [r[name].get("rss_idle_kib") for r in rounds if isinstance(r[name].get("rss_idle_kib"), dict)]
        if idle:   # {sidecar: KiB}: the median per sidecar
            rec["rss_idle_kib"] = {k: statistics.median([d[k] for d in idle if k in d]) for k in idle[-1]}
        rec["checks"] = [c for r in rounds for c in r[name].get("checks", [])
                         if not c.get("ok", True)] + [c for c in last.get("checks", []) if c.get("ok", True)]
        rec["rounds"] = [r[name].get("scenarios", {}) for r in rounds]
        out[name] = rec
    return out


def check(C, h, S, fig, c0, c1, smoke):
    """Did the contender carry this scenario's traffic? Nothing about speed."""
    out = []
    ok = fig.get("ops_total", 0) > 0
    out.append({"scenario": S.NAME, "ok": ok, "msg": "operations completed: %s" % fig.get("ops_total")})
    if smoke and fig.get("errors"):
        out.append({"scenario": S.NAME, "ok": False, "msg": "errors: %s" % fig.get("errors")})
    for k in h.traffic_keys():
        d = c1.get(k, 0) - c0.get(k, 0)
        out.append({"scenario": S.NAME, "ok": d > 0, "msg": "proxy counter %s +%d" % (k, d)})
    return out


def machine_info():
    info = {"kernel": platform.release(), "cpus": os.cpu_count()}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    try:
        info["nofile"] = int(subprocess.run(["sh", "-c", "ulimit -n"], capture_output=True,
                                            text=True).stdout)
    except ValueError:
        pass
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bins", required=True, help="directory with outrigger, orbench-load, orbench-server")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--smoke", action="store_true", help="seconds-long run proving the harness works")
    ap.add_argument("--contenders")
    ap.add_argument("--scenarios")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cpu-load", default="0", help="CPU list for the load client and the backend")
    ap.add_argument("--cpu-proxy", default="1", help="CPU list for the sidecars")
    ap.add_argument("--profile", default="", help="comma list of contenders to profile with perf")
    ap.add_argument("--syscalls", default="", help="comma list of contenders whose system calls "
                    "per connection strace -c counts (churn, client closes first)")
    ap.add_argument("--model-bench", help="output of tests/bench/bench-model.sh, for the report")
    ap.add_argument("--authz-bench", help="output of tests/bench/bench-model.sh --authz, for the report")
    ap.add_argument("--workdir", default="/tmp/orbench/run")
    ap.add_argument("--tag", default="")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds, contenders interleaved within each; every figure is the median")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the pod lab needs network namespaces)")
    if os.cpu_count() < 2:
        opts.cpu_proxy = opts.cpu_load = "0"

    bins = {n: os.path.join(opts.bins, n) for n in ("outrigger", "orbench-load", "orbench-server")}
    bins["load"], bins["server"] = bins.pop("orbench-load"), bins.pop("orbench-server")
    # Optional: the baseline build for the "outrigger-prev" contender (run.sh --baseline).
    if os.access(os.path.join(opts.bins, "outrigger-prev"), os.X_OK):
        bins["outrigger-prev"] = os.path.join(opts.bins, "outrigger-prev")
    for n in ("load", "server"):
        if not os.access(bins[n], os.X_OK):
            raise SystemExit("missing %s" % bins[n])
    contenders = load_modules("contenders", opts.contenders)
    if "outrigger-prev" not in bins:
        contenders = [C for C in contenders if C.NAME != "outrigger-prev"]
    scenarios = load_modules("scenarios", opts.scenarios)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-smoke" if opts.smoke else "") + opts.tag
    outdir = os.path.join(opts.results, stamp)
    os.makedirs(outdir, exist_ok=True)
    os.makedirs(opts.workdir, exist_ok=True)

    results = {
        "meta": {
            "timestamp": stamp, "mode": "smoke" if opts.smoke else "full",
            "machine": machine_info(), "workers": opts.workers,
            "cpu_load": opts.cpu_load, "cpu_proxy": opts.cpu_proxy,
            "interception": benchlib.interception_kind(),
            "pod_sysctls": benchlib.POD_SYSCTLS,
        },
        "scenarios": {S.NAME: {"title": S.TITLE, "rows": S.ROWS, "doc": (S.__doc__ or "").strip()}
                      for S in scenarios},
        "contenders": {},
    }
    t0 = time.monotonic()
    rounds = []
    profile = opts.profile
    syscalls_for = opts.syscalls
    for r in range(max(1, opts.repeat)):
        # Interleaved rounds: a disturbance on the machine hits every contender alike.
        # Profiles only in the last round (they add load and time).
        opts.profile = profile if r == opts.repeat - 1 else ""
        opts.syscalls = syscalls_for if r == opts.repeat - 1 else ""
        rr = {}
        for C in contenders:
            log("contender %s (round %d of %d)" % (C.NAME, r + 1, opts.repeat))
            try:
                rr[C.NAME] = run_contender(C, scenarios, opts, bins, outdir)
            except Exception as e:
                traceback.print_exc()
                rr[C.NAME] = {"label": C.LABEL, "note": C.NOTE, "scenarios": {},
                              "checks": [{"scenario": "-", "ok": False,
                                          "msg": "contender failed: %s" % str(e)[:800]}]}
        rounds.append(rr)
    results["contenders"] = merge_rounds(rounds)
    for key, path in (("model_build", opts.model_bench), ("authz_check", opts.authz_bench)):
        if path:
            with open(path) as f:
                text = f.read()
            js = [l[len("json: "):] for l in text.splitlines() if l.startswith("json: ")]
            results[key] = {"text": text, "figures": json.loads(js[-1]) if js else None}
    results["meta"]["rounds"] = len(rounds)
    results["meta"]["wall_s"] = time.monotonic() - t0

    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    import report
    md = report.write(results, outdir)
    # Only a full run (every scenario, every contender) stands for "latest": a focused
    # rerun would otherwise replace the figures the README quotes with a subset.
    full = not opts.smoke and not opts.scenarios and not opts.contenders
    if full:
        # latest.md sits one level up: point its links into the run's folder.
        with open(md) as f:
            text = f.read()
        text = text.replace("](chart.png)", "](latest.png)").replace("](profile-", "](%s/profile-" % stamp)
        with open(os.path.join(opts.results, "latest.md"), "w") as f:
            f.write(text)
        # The chart beside latest.md, so that its image link works.
        png = os.path.join(outdir, "chart.png")
        if os.path.exists(png):
            shutil.copyfile(png, os.path.join(opts.results, "latest.png"))
    failed = [(n, c) for n, r in results["contenders"].items() for c in r.get("checks", []) if not c["ok"]]
    for n, c in failed:
        log("CHECK FAILED: %s %s: %s" % (n, c["scenario"], c["msg"]))
    log("results: %s" % md)
    if full:
        log("latest:  %s" % os.path.join(opts.results, "latest.md"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
