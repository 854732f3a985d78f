#!/usr/bin/python3
"""Outrigger demo: two pods on the pod lab, each with outrigger-init + outrigger as its
sidecar, talking Istio mTLS between the sidecars, and proof from both sidecars' /stats and
logs that they carried the client's calls and who each saw at the other end.

    sudo /usr/bin/python3 tests/lab/demo.py [--calls N] [--keep-logs] [--plaintext] [--xds]
    sudo /usr/bin/python3 tests/lab/demo.py --mesh-mixed [--keep-logs]

Builds: pod "server" running a tiny HTTP server as user nobody on :8080; pod "client" whose
app (user nobody) calls http://198.19.0.10/ N times. 198.19.0.10:80 is the VIP of Service
default/hello, which the lab does NOT NAT (its VIPs are unreachable routes in the node): the
client's sidecar is given the mesh as static resources (-c FILE: the Service, and the
server's Workload listing it with target port 8080) and resolves the VIP to the server pod
itself. Certificates: `outrigger ca init` mints a mesh root, `outrigger ca issue` a SPIFFE
certificate for each pod (spiffe://cluster.local/ns/default/sa/client and .../sa/server),
loaded with --cert-dir; the Workload is marked LEGACY_ISTIO_MTLS (what an Envoy sidecar
speaks), so the client's sidecar speaks Istio mTLS to the server's, which terminates it
(PERMISSIVE). Exits 0 only if every call answered, the client's outbound listener and the
server's inbound listener each counted exactly N connections (mTLS: N handshakes each way),
the client's log names the endpoint chosen, and each sidecar's close lines name the other's
SPIFFE ID. --plaintext: no certificates, plain TCP between the sidecars (the old demo).
--xds: the same mesh comes from a small local control plane instead (tests/lab/xds_server.py
serving the two resources over ADS, delta, inside the client pod on 127.0.0.1): the client's
-c FILE holds only proxy.discoveryAddress, and the demo also checks that the sidecar
acknowledged what the control plane sent. The lab (namespaces, processes) is always torn down.

--mesh-mixed: a three-pod mixed mesh (issue 11): pod "side" with an Outrigger sidecar (its
Workload says HBONE), pod "ambient" standing in for an ambient pod (nghttpx -s + tinyproxy on
15008 terminate HBONE for its app, tests/lab/hbone_peers.py; its Workload says HBONE) and pod
"plain" (no sidecar, no tunnel). Certificates from tests/lab/certs.py (the openssl CLI). Calls:
side -> ambient (HBONE), side -> plain (plaintext), ambient -> side (HBONE from the python3-h2
ztunnel stand-in), plain -> side (plaintext, PERMISSIVE). For each it prints the transport the
sidecar chose (its /stats: upstream_cx_hbone, upstream_cx_tls_handshake) and the identity seen
at the other end (nghttpx's log of our client certificate, the sidecar's close lines, the
source address the plain app saw). Exits 0 only if every call answered over the transport
expected and each identity is the one expected.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lab  # noqa: E402
import meshres  # noqa: E402

VIP, PORT, TARGET = "198.19.0.10", 80, 8080
SHOWN = ("downstream_cx_total", "downstream_cx_active", "downstream_cx_rx_bytes_total",
         "downstream_cx_tx_bytes_total", "upstream_cx_connect_fail")
SHOWN_MTLS = {"outbound": ("upstream_cx_tls_handshake", "upstream_cx_tls_resumed",
                           "upstream_cx_tls_handshake_fail"),
              "inbound": ("downstream_cx_mtls", "downstream_cx_tls_handshake_fail")}
TD = "cluster.local"
IDS = {"client": "spiffe://%s/ns/default/sa/client" % TD, "server": "spiffe://%s/ns/default/sa/server" % TD}


def say(msg=""):
    print(msg, flush=True)


def show(title, before, after, listener, mtls=False):
    say("  %s" % title)
    for name in SHOWN + (SHOWN_MTLS[listener] if mtls else ()):
        k = "listener.%s.%s" % (listener, name)
        a, b = after.get(k), before.get(k)
        if a is None:
            say("    %-48s (missing)" % k)
            continue
        say("    %-48s %6d   (%+d)" % (k + ":", a, a - (b or 0)))


def mint(L):
    """A mesh root and one certificate per pod, with `outrigger ca` (the development CA),
    readable by the sidecars' uid (1337) as Istio mounts them for the proxy."""
    d = os.path.join(L.dir, "ca")
    out = {}
    cmds = [[lab.proxy_bin(), "ca", "init", "--dir", d, "--trust-domain", TD]]
    for pod in ("client", "server"):
        out[pod] = os.path.join(L.dir, "certs-" + pod)
        cmds.append([lab.proxy_bin(), "ca", "issue", "--dir", d, "--spiffe", IDS[pod], "--out", out[pod]])
    for argv in cmds:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise lab.LabError("%s -> %d: %s" % (" ".join(argv), r.returncode, r.stderr))
        say("   $ outrigger %s" % " ".join(argv[1:]))
    for pod, path in out.items():
        os.chmod(path, 0o755)
        for f in os.listdir(path):
            os.chown(os.path.join(path, f), lab.PROXY_UID, lab.PROXY_UID)
    return out


def control_plane(L, pod, resources):
    """Start tests/lab/xds_server.py in `pod` (root, 127.0.0.1, a free port) serving resources;
    returns (its address, the path of its log)."""
    d = os.path.join(L.dir, "xds")
    os.makedirs(d)
    res, port_file, log = (os.path.join(d, n) for n in ("resources.json", "port", "xds-server.log"))
    with open(res, "w") as f:
        json.dump(meshres.config(resources), f, indent=1)
    with open(log, "wb") as out:
        p = pod.popen([lab.PYTHON, os.path.join(lab.HERE, "xds_server.py"), "--port", "0",
                       "--resources", res, "--port-file", port_file], user="root",
                      stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not os.path.exists(port_file):
        if p.poll() is not None or time.monotonic() > deadline:
            with open(log) as f:
                raise lab.LabError("the control plane did not start:\n" + f.read()[-3000:])
        time.sleep(0.05)
    with open(port_file) as f:
        return "http://127.0.0.1:%d" % int(f.read()), log


def peers_seen(log):
    """The SPIFFE IDs a sidecar's close lines name ("closed (...) peer spiffe://...")."""
    return re.findall(r"closed \(.*\) peer (spiffe://\S+)", log)


def main():
    ap = argparse.ArgumentParser(description="Outrigger two-pod demo on the pod lab")
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--keep-logs", action="store_true", help="keep the lab directory (logs) after teardown")
    ap.add_argument("--plaintext", action="store_true", help="no certificates: plain TCP between the sidecars")
    ap.add_argument("--xds", action="store_true",
                    help="the client sidecar gets the mesh from a local xDS control plane (tests/lab/xds_server.py)")
    ap.add_argument("--mesh-mixed", action="store_true",
                    help="three pods: an Outrigger sidecar, an ambient-style pod (HBONE) and a plain pod")
    a = ap.parse_args()
    mtls = not a.plaintext
    if os.geteuid() != 0:
        say("demo: needs root (it creates network namespaces); run it with sudo")
        return 77
    for b in (lab.init_bin(), lab.proxy_bin()):
        if not os.access(b, os.X_OK):
            say("demo: %s is missing: build first (./autogen.sh && ./configure && make)" % b)
            return 77

    if a.mesh_mixed:
        return mesh_mixed(a)
    ok = True
    with lab.Lab(prefix="ordemo", keep_dir=a.keep_logs) as L:
        say("== pod lab %s (node namespace %s)" % (L.id, L.node))
        client = L.add_pod("client")
        server = L.add_pod("server")
        say("   pod client  %-12s netns %s" % (client.ip4, client.netns))
        say("   pod server  %-12s netns %s" % (server.ip4, server.netns))
        server.app(["http", "--port", TARGET, "--name", "server"])
        key = meshres.key("hello")
        marks = {"serviceAccount": "server", "tunnelProtocol": "LEGACY_ISTIO_MTLS"} if mtls else {}
        resources = [
            meshres.service("hello", [VIP], [(PORT, TARGET)]),
            meshres.workload("Kubernetes//Pod/default/server", "server", [server.ip4],
                             {key: [(PORT, TARGET)]}, **marks),
        ]
        say("   service     %s %s:%d -> target port %d (no NAT in the node: the VIP routes nowhere)"
            % (key, VIP, PORT, TARGET))
        say("   workload    server %s, in %s%s" % (server.ip4, key,
                                                 ", service account server, Istio mTLS" if mtls else ""))
        certs = {}
        if mtls:
            say("== certificates from the development CA (outrigger ca)")
            certs = mint(L)

        def args(pod):
            return ["--cert-dir", certs[pod]] if mtls else []

        if a.xds:
            say("== control plane: tests/lab/xds_server.py in the client pod, serving the Service and")
            say("   the Workload over ADS (python3-grpcio, the real Envoy protos)")
            xds_addr, xds_log = control_plane(L, client, resources)
            say("   listening on %s (in pod client)" % xds_addr)
            ccfg = {"proxy": {"logLevel": "debug", "discoveryAddress": xds_addr}}
        else:
            ccfg = meshres.config(resources, proxy={"logLevel": "debug"})
        say("== sidecars: outrigger-init (root) + outrigger (uid 1337) in each pod;")
        say("   the client's gets the Service and the Workload %s%s"
            % ("over xDS (-c FILE: only proxy.discoveryAddress)" if a.xds else "as resources (-c FILE)",
               "; each loads its certificate (--cert-dir)" if mtls else ""))
        debug = meshres.config([], proxy={"logLevel": "debug"})
        # what the injector sets, for the node id the control plane sees
        penv = {"POD_NAME": "client", "POD_NAMESPACE": "default", "INSTANCE_IP": client.ip4}
        csc = client.start_sidecar(config=ccfg, proxy_args=args("client"), ready_timeout=20, env=penv)
        ssc = server.start_sidecar(config=debug if mtls else None, proxy_args=args("server"))
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
        show("client pod, outbound capture (:15001):", c0, c1, "outbound", mtls)
        show("server pod, inbound capture (:15006):", s0, s1, "inbound", mtls)
        clog, slog = csc.log(), ssc.log()
        seen_c, seen_s = peers_seen(clog), peers_seen(slog)
        if mtls:
            say("== who each sidecar saw at the other end (its close log lines, verified SPIFFE IDs)")
            say("   client sidecar -> its upstream: %s" % (", ".join(sorted(set(seen_c))) or "(none)"))
            say("   server sidecar <- its downstream: %s" % (", ".join(sorted(set(seen_s))) or "(none)"))
        say()
        checks = [
            ("every call answered (%d/%d)" % (answered, a.calls), answered == a.calls),
            ("client sidecar carried %d outbound connections (want %d)" % (dc, a.calls), dc == a.calls),
            ("server sidecar carried %d inbound connections (want %d)" % (ds, a.calls), ds == a.calls),
            ("the server app saw the inbound passthrough source 127.0.0.6",
             answered > 0 and "peer 127.0.0.6" in body),
            ("the client sidecar resolved %s to the server pod (its log: \"service %s port %d: "
             "endpoint %s:%d\")" % (VIP, key, PORT, server.ip4, TARGET),
             "service %s port %d: endpoint %s:%d" % (key, PORT, server.ip4, TARGET) in clog),
        ]
        if mtls:
            hs = c1.get("listener.outbound.upstream_cx_tls_handshake", 0) - c0.get("listener.outbound.upstream_cx_tls_handshake", 0)
            checks += [
                ("the client sidecar made %d Istio mTLS handshakes (want %d)" % (hs, a.calls), hs == a.calls),
                ("the client sidecar saw the server's identity %s on every call" % IDS["server"],
                 seen_c == [IDS["server"]] * a.calls),
                ("the server sidecar saw the client's identity %s on every call" % IDS["client"],
                 seen_s == [IDS["client"]] * a.calls),
            ]
        if a.xds:
            acks = c1.get("server.xds_acks", 0)
            say("== the control plane's view (%s)" % xds_log)
            with open(xds_log) as f:
                for line in f.read().splitlines()[:12]:
                    say("   " + line)
            checks += [("the client sidecar took the mesh from the control plane (xds connected, "
                        "%d responses ACKed, none NACKed)" % acks,
                        c1.get("server.xds_connected") == 1 and acks >= 1 and c1.get("server.xds_nacks", 1) == 0)]
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
    say("demo: %s" % ("PASS: both sidecars carried the connections%s" % (" over Istio mTLS" if mtls else "")
                      if ok else "FAIL"))
    return 0 if ok else 1


def transport(before, after):
    """The transport the sidecar chose for the outbound calls between two /stats snapshots."""
    def d(k):
        return after.get("listener.outbound." + k, 0) - before.get("listener.outbound." + k, 0)
    if d("upstream_cx_hbone"):
        return "HBONE"
    if d("upstream_cx_tls_handshake"):
        return "Istio mTLS"
    return "plaintext"


def mesh_mixed(a):
    import certs
    import hbone_peers
    ids = {p: certs.spiffe_id("default", p) for p in ("side", "ambient")}
    ok = True
    with lab.Lab(prefix="ordemo", keep_dir=a.keep_logs) as L:
        say("== pod lab %s: a mixed mesh of three pods" % L.id)
        side, amb, plain = L.add_pod("side"), L.add_pod("ambient"), L.add_pod("plain")
        say("   pod side     %-12s Outrigger sidecar (Workload: HBONE, as a sidecar with the tunnel label)" % side.ip4)
        say("   pod ambient  %-12s ambient stand-in: nghttpx -s --verify-client + tinyproxy on :15008" % amb.ip4)
        say("   pod plain    %-12s no sidecar, no tunnel" % plain.ip4)
        ca = certs.CA(os.path.join(L.dir, "ca"))
        cd = {p: ca.issue(os.path.join(L.dir, "certs-" + p), ids[p]) for p in ids}
        for root, dirs, files in os.walk(L.dir):
            os.chmod(root, 0o755)
        say("== certificates (openssl CLI, tests/lab/certs.py): %s" % ", ".join(ids.values()))
        for pod in (side, amb, plain):
            pod.app(["http", "--port", TARGET, "--name", pod.name])
        term = hbone_peers.NghttpxTerminator(amb, cd["ambient"], [TARGET])
        fps = {hbone_peers.cert_fingerprint(cd[p]): ids[p] for p in ids}

        def wl(pod, sa, tunnel):
            kw = {"serviceAccount": sa}
            if tunnel:
                kw["tunnelProtocol"] = tunnel
            return meshres.workload("Kubernetes//Pod/default/" + pod.name, pod.name, [pod.ip4], **kw)
        res = [wl(side, "side", "HBONE"), wl(amb, "ambient", "HBONE"), wl(plain, "plain", None),
               {"@type": "type.googleapis.com/istio.security.v1beta1.PeerAuthentication",
                "mtls": {"mode": "PERMISSIVE"}}]
        sc = side.start_sidecar(config=meshres.config(res, proxy={"logLevel": "debug"}),
                                proxy_args=["--cert-dir", cd["side"]], env={"POD_NAMESPACE": "default"})
        say("   side's sidecar ready (pid %d)" % sc.proc.pid)
        rows = []

        def row(call, want_t, got_t, want_id, got_id, answered):
            good = answered and got_t == want_t and got_id == want_id
            rows.append(good)
            say("   %-22s transport %-10s identity at the other end: %s   [%s]"
                % (call, got_t, got_id, "ok" if good else "FAIL (want %s, %s)" % (want_t, want_id)))

        say("== calls")
        s0 = sc.stats()
        code, body = side.curl("http://%s:%d/" % (amb.ip4, TARGET), user="nobody")
        s1 = sc.stats()
        acc = term.accesses()
        seen = fps.get(acc[-1].get("fp"), "(unknown certificate)") if acc else "(nothing in nghttpx's log)"
        row("side -> ambient", "HBONE", transport(s0, s1), ids["side"], seen, code == 200)
        code, body = side.curl("http://%s:%d/" % (plain.ip4, TARGET), user="nobody")
        s2 = sc.stats()
        m = re.search(r"peer (\S+)\)", body)
        row("side -> plain", "plaintext", transport(s1, s2), "(none) from " + side.ip4,
            "(none) from " + (m.group(1) if m else "?"), code == 200)
        # The outbound call to ambient closed with the same peer in its close line: count.
        lab.wait_for(lambda: sc.stats().get("listener.outbound.downstream_cx_active", 1) == 0,
                     timeout=5, what="the outbound calls closed")
        n0 = peers_seen(sc.log()).count(ids["ambient"])
        r = amb.run([lab.PYTHON, hbone_peers.HERE, "client", "--host", side.ip4, "--cert-dir", cd["ambient"],
                     "--authority", "%s:%d" % (side.ip4, TARGET), "--payload", "GET / HTTP/1.0\r\n\r\n", "--read-to-end",
                     "--timeout", "10"], check=False, timeout=30)
        out = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
        deadline = time.monotonic() + 3
        while peers_seen(sc.log()).count(ids["ambient"]) <= n0 and time.monotonic() < deadline:
            time.sleep(0.1)
        inbound = peers_seen(sc.log())[n0:] if peers_seen(sc.log()).count(ids["ambient"]) > n0 else []
        row("ambient -> side", "HBONE", "HBONE" if out.get("status") == 200 else "refused (%s)" % out.get("status"),
            ids["ambient"], ids["ambient"] if ids["ambient"] in inbound else "(no peer in the sidecar's log)",
            "hello from side" in out.get("reply", ""))
        say("   %-22s (the ztunnel stand-in saw the sidecar as %s%s)" % (
            "", out.get("peer_id"), "" if out.get("status") else "; " + str(out.get("error"))))
        code, body = plain.curl("http://%s:%d/" % (side.ip4, TARGET), user="nobody")
        row("plain -> side", "plaintext", "plaintext", "(none)", "(none)", code == 200)
        ok = all(rows)
        if not ok:
            say("\n== side's sidecar log\n" + sc.log()[-4000:])
            say("== nghttpx\n" + term.errors()[-2000:])
        if a.keep_logs:
            say("   logs kept in %s" % L.dir)
        say("== tearing the lab down")
    say("demo --mesh-mixed: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
