"""Contender "outrigger-prev": the same sidecars built from an earlier commit
(run.sh --baseline REF, or ORBENCH_BASELINE=REF), so that a change to the data path is
measured against what it replaces in the same run, on the same machine, interleaved
round by round. Started exactly as "outrigger" but with no configuration file: the
earlier build forwards every connection to its original destination."""
import importlib.util
import os
import subprocess

import benchlib

NAME = "outrigger-prev"
LABEL = "Baseline Outrigger"
ORDER = 21
NOTE = ("The baseline build (run.sh --baseline REF): both sidecars forward to the original "
        "destination, with the built-in defaults.")

_spec = importlib.util.spec_from_file_location(
    "contenders_outrigger_base", os.path.join(os.path.dirname(__file__), "outrigger.py"))
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def available(env):
    b = env.bins.get("outrigger-prev")
    if not b or not os.access(b, os.X_OK):
        return False, "no baseline build (run.sh --baseline REF)"
    return True, ""


class Handle(_base.Handle):
    def __init__(self, env, sidecars):
        self.env, self.sc = env, sidecars
        r = subprocess.run([env.bins["outrigger-prev"], "--version"], capture_output=True, text=True)
        out = (r.stdout or r.stderr).strip().splitlines()
        ref = os.environ.get("ORBENCH_BASELINE_REF", "?")
        self.version = "%s (%s)" % (out[0] if out else "?", ref)


def start(env):
    os.environ["OUTRIGGER_BIN"] = env.bins["outrigger-prev"]
    sidecars = {}
    for side, pod in (("client", env.client), ("server", env.server)):
        benchlib.intercept(pod)
        sidecars[side] = pod.start_sidecar(
            run_init=False,
            proxy_args=("--concurrency", str(env.workers), "--log-level", "warn"))
    h = Handle(env, sidecars)
    benchlib.pin([p for v in h.pids().values() for p in v], env.cpu_proxy)
    return h
