#!/usr/bin/python3
"""Outrigger demo: two pods on the pod lab, each with outrigger-init + outrigger as its
sidecar, and proof from both sidecars' /stats that they carried the client's calls.

    sudo /usr/bin/python3 tests/lab/demo.py [--calls N] [--keep-logs]

Builds: pod "server" running a tiny HTTP server as user nobody on :8080; pod "client" whose
app (user nobody) calls http://198.19.0.10/ N times. 198.19.0.10:80 is the VIP of Service
default/hello, which the lab does NOT NAT (its VIPs are unreachable routes in the node): the
client's sidecar is given the mesh as static resources (-c FILE: the Service, and the
server's Workload listing it with target port 8080) and resolves the VIP to the server pod
itself. Exits 0 only if every call answered, the client's outbound listener and the
server's inbound listener each counted exactly N connections, and the client's log names
the endpoint chosen. The lab (namespaces, processes) is always torn down.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lab  # noqa: E402
import meshres  # noqa: E402

VIP, PORT, TARGET = "198.19.0.10", 80, 8080
SHOWN = ("downstream_cx_total", "downstream_cx_active", "downstream_cx_rx_bytes_total",
         "downstream_cx_tx_bytes_total", "upstream_cx_connect_fail")


def say(msg=""):
    print(msg, flush=True)


def show(title, before, after, listener):
    say("  %s" % title)
    for name in SHOWN:
        k = "listener.%s.%s" % (listener, name)
        a, b = after.get(k), before.get(k)
        if a is None:
            say("    %-48s (missing)" % k)
            continue
        say("    %-48s %6d   (%+d)" % (k + ":", a, a - (b or 0)))


def main():
    ap = argparse.ArgumentParser(description="Outrigger two-pod demo on the pod lab")
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--keep-logs", action="store_true", help="keep the lab directory (logs) after teardown")
    a = ap.parse_args()
    if os.geteuid() != 0:
        say("demo: needs root (it creates network namespaces); run it with sudo")
        return 77
    for b in (lab.init_bin(), lab.proxy_bin()):
        if not os.access(b, os.X_OK):
            say("demo: %s is missing: build first (./autogen.sh && ./configure && make)" % b)
            return 77

    ok = True
    with lab.Lab(prefix="ordemo", keep_dir=a.keep_logs) as L:
        say("== pod lab %s (node namespace %s)" % (L.id, L.node))
        client = L.add_pod("client")
        server = L.add_pod("server")
        say("   pod client  %-12s netns %s" % (client.ip4, client.netns))
        say("   pod server  %-12s netns %s" % (server.ip4, server.netns))
        server.app(["http", "--port", TARGET, "--name", "server"])
        key = meshres.key("hello")
        resources = [
            meshres.service("hello", [VIP], [(PORT, TARGET)]),
            meshres.workload("Kubernetes//Pod/default/server", "server", [server.ip4],
                             {key: [(PORT, TARGET)]}),
        ]
        say("   service     %s %s:%d -> target port %d (no NAT in the node: the VIP routes nowhere)"
            % (key, VIP, PORT, TARGET))
        say("   workload    server %s, in %s" % (server.ip4, key))

        say("== sidecars: outrigger-init (root) + outrigger (uid 1337) in each pod;")
        say("   the client's gets the Service and the Workload as resources (-c FILE)")
        csc = client.start_sidecar(config=meshres.config(resources, proxy={"logLevel": "debug"}))
        ssc = server.start_sidecar()
        say("   client sidecar ready (pid %d), server sidecar ready (pid %d)" % (csc.proc.pid, ssc.proc.pid))
        c0, s0 = csc.stats(), ssc.stats()

        say("== client app (user nobody): %d x curl http://%s/" % (a.calls, VIP))
        answered = 0
        for i in range(a.calls):
            code, body = client.curl("http://%s/" % VIP, user="nobody")
            say("   call %d: HTTP %s  %s" % (i + 1, code or "---", body.strip()))
            answered += code == 200

        # Connections are counted when they close; give the proxies a moment.
        deadline = time.monotonic() + 5
        while True:
            c1, s1 = csc.stats(), ssc.stats()
            dc = c1.get("listener.outbound.downstream_cx_total", 0) - c0.get("listener.outbound.downstream_cx_total", 0)
            ds = s1.get("listener.inbound.downstream_cx_total", 0) - s0.get("listener.inbound.downstream_cx_total", 0)
            idle = (c1.get("listener.outbound.downstream_cx_active", 1) == 0
                    and s1.get("listener.inbound.downstream_cx_active", 1) == 0)
            if (dc >= a.calls and ds >= a.calls and idle) or time.monotonic() > deadline:
                break
            time.sleep(0.1)

        say("== proof, from each sidecar's admin /stats (127.0.0.1:15000 inside its pod)")
        show("client pod, outbound capture (:15001):", c0, c1, "outbound")
        show("server pod, inbound capture (:15006):", s0, s1, "inbound")
        say()
        checks = [
            ("every call answered (%d/%d)" % (answered, a.calls), answered == a.calls),
            ("client sidecar carried %d outbound connections (want %d)" % (dc, a.calls), dc == a.calls),
            ("server sidecar carried %d inbound connections (want %d)" % (ds, a.calls), ds == a.calls),
            ("the server app saw the inbound passthrough source 127.0.0.6",
             answered > 0 and "peer 127.0.0.6" in body),
            ("the client sidecar resolved %s to the server pod (its log: \"service %s port %d: "
             "endpoint %s:%d\")" % (VIP, key, PORT, server.ip4, TARGET),
             "service %s port %d: endpoint %s:%d" % (key, PORT, server.ip4, TARGET) in csc.log()),
        ]
        for what, good in checks:
            say("   [%s] %s" % ("ok" if good else "FAIL", what))
            ok = ok and good
        if not ok:
            say("\n== sidecar logs")
            for sc, name in ((csc, "client"), (ssc, "server")):
                say("--- %s sidecar\n%s" % (name, sc.log()[-3000:]))
        if a.keep_logs:
            say("   logs kept in %s" % L.dir)
        say("== tearing the lab down")
    say("demo: %s" % ("PASS: both sidecars carried the connections" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
