#!/usr/bin/env python3
"""The control-plane push, end to end (issue 10, Performance): tests/lab/xds_server.py
(python3-grpcio, the real Envoy protos) in a lab pod's netns pushes N workloads and N/5
services (delta, wildcard Address) to a running outrigger in that pod, then pushes one
changed workload at a time. For each push it reads what the client itself measured, the
gauge server.xds_apply_us (from the response's arrival to the snapshot's publish), once
the push is ACKed; and the sidecar's VmRSS before the full push and after it.

Run by `tests/bench/run.sh --scenarios xdspush` (which builds the optimised binaries), or
directly: OUTRIGGER_BIN=... xdspush.py [--workloads 10000] [--incremental 21] [--repeat 3]
[--out DIR]. Bounded: one lab per round, every ACK waited for at most 300 s. Nothing is
asserted about speed; the exit status says whether it worked.
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lab"))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))

import lab  # noqa: E402
import meshres  # noqa: E402
import xds_server as X  # noqa: E402


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ms(pid):
    """utime + stime of every thread of pid, in ms (10 ms ticks)."""
    with open("/proc/%d/stat" % pid) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


def ip(base, i):
    return "10.%d.%d.%d" % (base + (i >> 16), (i >> 8) & 255, i & 255)


def svc(j):
    return meshres.service("svc-%d" % j, [ip(96, j + 1)], [(80, 8080), (443, 8443)], namespace="ns-%d" % (j % 50))


def wl(i, nsvc, moved=0):
    j = i // 5 % nsvc
    return meshres.workload("Kubernetes//Pod/ns-%d/name-%d" % (j % 50, i), "name-%d" % i,
                            [ip(200 if moved else 0, (moved << 14 | i) if moved else i)],
                            {meshres.key("svc-%d" % j, "ns-%d" % (j % 50)): [(80, 8080), (443, 8443)]},
                            namespace="ns-%d" % (j % 50), serviceAccount="svc-%d" % j,
                            tunnelProtocol="HBONE", locality={"region": "us-east1", "zone": "us-east1-b"})


def run_round(nwl, ninc):
    nsvc = max(1, nwl // 5)
    with lab.Lab(prefix="orbench-xp") as L:
        c = L.add_pod("client")
        cp = X.XdsServer(netns=c.netns).start()
        try:
            sc = c.start_sidecar(config={"proxy": {"discoveryAddress": cp.address}},
                                 env={"POD_NAME": "client", "POD_NAMESPACE": "default",
                                      "INSTANCE_IP": c.ip4, "XDS_SOTW": "false"},
                                 proxy_args=("--concurrency", "2"), ready_timeout=60)
            time.sleep(0.5)
            rss0 = rss_kib(sc.proc.pid)
            items = [(X.ADDRESS, svc(j)) for j in range(nsvc)] + [(X.ADDRESS, wl(i, nsvc)) for i in range(nwl)]
            t0, c0 = time.monotonic(), cpu_ms(sc.proc.pid)
            cp.wait_ack(cp.set_many(items), timeout=300)
            acked_s, full_cpu = time.monotonic() - t0, cpu_ms(sc.proc.pid) - c0
            st = sc.stats()
            full_us = st.get("server.xds_apply_us")
            if st.get("server.resources_address") != nsvc + nwl:
                raise RuntimeError("the sidecar holds %s Addresses, not %d" % (st.get("server.resources_address"),
                                                                            nsvc + nwl))
            time.sleep(0.5)
            rss1 = rss_kib(sc.proc.pid)
            inc = []
            prof = None
            if os.environ.get("XDSPUSH_PERF"):
                # A profile of the sidecar during the incremental pushes (perf record).
                import subprocess
                prof = subprocess.Popen(["perf", "record", "-o", os.environ["XDSPUSH_PERF"], "-p",
                                         str(sc.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            c0 = cpu_ms(sc.proc.pid)
            for k in range(ninc):
                cp.wait_ack(cp.set(X.ADDRESS, wl((k * 997) % nwl, nsvc, moved=k + 1)), timeout=60)
                inc.append(sc.stats().get("server.xds_apply_us"))
            inc_cpu = (cpu_ms(sc.proc.pid) - c0) / max(1, ninc)
            if prof:
                prof.send_signal(2)
                prof.wait(timeout=60)
            return {"workloads": nwl, "services": nsvc, "full_apply_ms": full_us / 1000.0,
                    "full_sidecar_cpu_ms": full_cpu, "incremental_sidecar_cpu_ms": round(inc_cpu, 2),
                    "full_acked_s": round(acked_s, 2), "rss_before_kib": rss0, "rss_after_kib": rss1,
                    "rss_growth_mib": round((rss1 - rss0) / 1024.0, 1),
                    "incremental_apply_ms": statistics.median(inc) / 1000.0 if inc else None,
                    "incremental_all_ms": [x / 1000.0 for x in inc]}
        finally:
            cp.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", type=int, default=10000)
    ap.add_argument("--incremental", type=int, default=21)
    ap.add_argument("--repeat", type=int, default=1, help="rounds; medians reported")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "xdspush-" + time.strftime("%Y%m%d-%H%M%S")))
    ap.add_argument("--bins", help="directory with outrigger (and outrigger-init)")
    a, _ = ap.parse_known_args()
    if a.bins:
        os.environ["OUTRIGGER_BIN"] = os.path.join(a.bins, "outrigger")
        if os.path.exists(os.path.join(a.bins, "outrigger-init")):
            os.environ["OUTRIGGER_INIT_BIN"] = os.path.join(a.bins, "outrigger-init")
    os.makedirs(a.out, exist_ok=True)
    rounds = []
    for i in range(a.repeat):
        r = run_round(a.workloads, a.incremental)
        print("[xdspush] round %d: %s" % (i + 1, json.dumps({k: v for k, v in r.items() if k != "incremental_all_ms"})),
              flush=True)
        rounds.append(r)
    med = {k: statistics.median([r[k] for r in rounds]) for k in ("full_apply_ms", "rss_growth_mib",
                                                                  "incremental_apply_ms")}
    with open(os.path.join(a.out, "xdspush.json"), "w") as f:
        json.dump({"median": med, "rounds": rounds}, f, indent=1)
    print("| | measured (median of %d) | target |\n|---|---:|---:|" % a.repeat)
    print("| full push, xds_apply_us | %.1f ms | < 200 ms |" % med["full_apply_ms"])
    print("| RSS growth | %.1f MiB | < 25 MiB |" % med["rss_growth_mib"])
    print("| incremental push of 1 workload, xds_apply_us | %.2f ms | < 5 ms |" % med["incremental_apply_ms"])
    print("[xdspush] results in %s" % a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
