#!/usr/bin/env python3
"""The on-demand scaling scenario (issue 10, Performance): a control plane holding N
workloads and N/5 services (tests/bench/ondemand_cp.py --generate, in the client pod on
127.0.0.1); a sidecar in on-demand mode (XDS_ON_DEMAND=true) whose app talks to 50 of
the services (VIPs 10.32.0.1-50, served by the one server pod). For each mesh size
(1k, 10k, 100k workloads by default) it reports:

  * the sidecar's RSS (VmRSS) when ready, and after the 50 services were looked up and
    used (target: under 8 MiB whatever the mesh size);
  * the first connection to a new destination (connect, one HTTP request, the answer)
    against a connection to a known one, p50/p99 over the 50 services.

Run by `tests/bench/run.sh --scenarios ondemand` (which builds the optimised binaries),
or directly: OUTRIGGER_BIN=... OUTRIGGER_INIT_BIN=... ondemand.py [--sizes 1000,10000]
[--repeat 3] [--out DIR]. Bounded: each size is one lab, 50 x 6 connections, each with a
10 s timeout. Nothing is asserted about speed; the exit status says whether it worked.
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
from lab import wait_for  # noqa: E402

NDEST = 50
PORT = 8080

# Runs in the client pod as nobody (so its connections are captured): per VIP, one
# connection when it is new, then KNOWN connections; prints the timings as JSON.
CLIENT = r'''
import json, socket, sys, time
vips, known = sys.argv[1].split(","), int(sys.argv[2])
def one(ip):
    t = time.perf_counter()
    s = socket.create_connection((ip, 80), timeout=10)
    s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    got = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += b
    s.close()
    assert got.startswith(b"HTTP/1.") and b" 200 " in got.split(b"\r\n", 1)[0], got[:80]
    return (time.perf_counter() - t) * 1000.0
first, again = [], []
for ip in vips:
    first.append(one(ip))
    for _ in range(known):
        again.append(one(ip))
print(json.dumps({"first": first, "known": again}))
'''


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_size(nwl, out):
    nsvc = max(NDEST + 1, nwl // 5)
    with lab.Lab(prefix="orbench-od") as L:
        server = L.add_pod("server")
        server.app(["http", "--port", PORT, "--name", "server"])
        c = L.add_pod("client")
        d = os.path.join(L.dir, "odxds")
        os.makedirs(d)
        log = open(os.path.join(d, "server.log"), "wb")
        t0 = time.monotonic()
        srv = c.popen([lab.PYTHON, os.path.join(HERE, "ondemand_cp.py"), "--dir", d,
                       "--listen", "127.0.0.1:0", "--generate", str(nwl), str(nsvc),
                       "--real", server.ip4, "--real-services", str(NDEST)],
                      user="root", stdout=log, stderr=log)
        wait_for(lambda: os.path.exists(os.path.join(d, "port")) or srv.poll() is not None, timeout=300,
                 what="the control plane generating %d workloads" % nwl)
        if srv.poll() is not None:
            raise RuntimeError(open(log.name).read())
        gen_s = time.monotonic() - t0
        with open(os.path.join(d, "port")) as f:
            port = int(f.read())
        sc = c.start_sidecar(config={"proxy": {"concurrency": 1}},
                             env={"XDS_ADDRESS": "http://127.0.0.1:%d" % port, "XDS_ON_DEMAND": "true"},
                             ready_timeout=30)
        time.sleep(1.0)
        rss_ready = rss_kib(sc.proc.pid)
        vips = ["10.32.0.%d" % (i + 1) for i in range(NDEST)]
        r = c.run([lab.PYTHON, "-c", CLIENT, ",".join(vips), "5"], user="nobody", timeout=600)
        t = json.loads(r.stdout.strip().splitlines()[-1])
        time.sleep(1.0)
        rss_used = rss_kib(sc.proc.pid)
        st = sc.stats()
        return {
            "workloads": nwl, "services": nsvc, "control_plane_generate_s": round(gen_s, 1),
            "rss_ready_kib": rss_ready, "rss_after_50_kib": rss_used,
            "first_p50_ms": round(pct(t["first"], 50), 3), "first_p99_ms": round(pct(t["first"], 99), 3),
            "known_p50_ms": round(pct(t["known"], 50), 3), "known_p99_ms": round(pct(t["known"], 99), 3),
            "lookups": st.get("server.ondemand_lookups"), "waits": st.get("server.ondemand_waits"),
            "cached": st.get("server.ondemand_cached"),
            "address_resources": st.get("server.resources_address"),
            "no_route": st.get("listener.outbound.downstream_cx_no_route"),
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--repeat", type=int, default=1, help="rounds per size; medians reported")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "ondemand-" + time.strftime("%Y%m%d-%H%M%S")))
    ap.add_argument("--bins", help="directory with outrigger (and outrigger-init)")
    a, _ = ap.parse_known_args()
    if a.bins:
        os.environ["OUTRIGGER_BIN"] = os.path.join(a.bins, "outrigger")
        if os.path.exists(os.path.join(a.bins, "outrigger-init")):
            os.environ["OUTRIGGER_INIT_BIN"] = os.path.join(a.bins, "outrigger-init")
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for n in [int(x) for x in a.sizes.split(",")]:
        rounds = []
        for i in range(a.repeat):
            r = run_size(n, a.out)
            print("[ondemand] %d workloads round %d: %s" % (n, i + 1, json.dumps(r)), flush=True)
            if r["no_route"] or r["lookups"] != NDEST:
                print("[ondemand] harness problem: %d lookups, %s no_route" % (r["lookups"], r["no_route"]),
                      file=sys.stderr)
                return 1
            rounds.append(r)
        med = {k: (statistics.median([r[k] for r in rounds]) if isinstance(rounds[0][k], (int, float)) else
                   rounds[0][k]) for k in rounds[0]}
        med["rounds"] = rounds
        rows.append(med)
    with open(os.path.join(a.out, "ondemand.json"), "w") as f:
        json.dump(rows, f, indent=1)
    lines = ["| workloads | services | RSS ready | RSS after 50 | first conn p50 / p99 | known conn p50 / p99 |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append("| %d | %d | %.1f MiB | %.1f MiB | %.2f / %.2f ms | %.2f / %.2f ms |" % (
            r["workloads"], r["services"], r["rss_ready_kib"] / 1024.0, r["rss_after_50_kib"] / 1024.0,
            r["first_p50_ms"], r["first_p99_ms"], r["known_p50_ms"], r["known_p99_ms"]))
    lines.append("")
    lines.append("Target: RSS under 8 MiB whatever the mesh size; the first connection pays one lookup "
                 "round trip. Medians of %d round(s)." % a.repeat)
    with open(os.path.join(a.out, "ondemand.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("[ondemand] results in %s" % a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
