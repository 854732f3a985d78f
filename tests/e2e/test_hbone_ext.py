"""Issue 11, mixed deployments, the hbext part, end to end on the pod lab: plaintext from
ztunnel under PERMISSIVE / STRICT, and waypoints (mesh.useWaypoints).

Plaintext from ztunnel: when the WDS says NONE for our pod (an Outrigger sidecar that does not
advertise HBONE), an ambient pod's ztunnel sends plaintext TCP to podIP:port (reference
xds-hbone.md §3.6, "ztunnel -> sidecar pod"). The 15006 sniffing stage and PeerAuthentication
must treat it as Envoy sidecars do: PERMISSIVE passes it to the app, STRICT resets it and counts
it. The "ztunnel" is a lab pod holding the ambient source workload's IP (ztunnel spoofs the
source pod's address) that speaks plaintext, with curl and a raw socket.
"""
import json
import os
import subprocess

import pytest

import certs
import meshres
from lab import wait_for

PA = "type.googleapis.com/istio.security.v1beta1.PeerAuthentication"
NS = "shop"
SERVER_ID = certs.spiffe_id(NS, "server")


def pa(mode):
    return {"@type": PA, "mtls": {"mode": mode}}


class Mixed:
    def __init__(self, L):
        self.L = L
        self.ca = certs.CA(os.path.join(L.dir, "ca"))
        self.server_dir = os.path.join(L.dir, "server-certs")
        self.ca.issue(self.server_dir, SERVER_ID)
        for x in (L.dir, self.server_dir):
            os.chmod(x, 0o755)
        self.ztunnel = L.add_pod("ztunnel")
        self.server = L.add_pod("server")
        self.server.app(["http", "--port", 8080, "--name", "server"])

    def resources(self, mode):
        # Our own pod as the WDS sends it: tunnel protocol NONE (no HBONE advertised), so an
        # ambient source's ztunnel sends plaintext. The source: an ambient (HBONE) workload at
        # the "ztunnel" pod's address.
        return [pa(mode),
                meshres.workload("shop/server", "server", [self.server.ip4], namespace=NS,
                                 tunnelProtocol="NONE", serviceAccount="server"),
                meshres.workload("default/sleep", "sleep", [self.ztunnel.ip4],
                                 tunnelProtocol="HBONE", serviceAccount="sleep")]

    def start(self, mode):
        cfg = {"resources": self.resources(mode), "proxy": {"logLevel": "debug"}}
        env = {"POD_NAMESPACE": NS,
               "OUTRIGGER_POD_LABELS": os.path.join(self.L.dir, "no-such-labels-file")}
        self.sc = self.server.start_sidecar(config=cfg, proxy_args=("--cert-dir", self.server_dir), env=env)
        wait_for(lambda: self.sc.stats().get("server.cert_updates", 0) >= 1, timeout=10,
                 what="the sidecar's certificate loaded")
        return self.sc

    def stat(self, name):
        return self.sc.stats().get("listener.inbound." + name, 0)

    def plain(self):
        return self.ztunnel.curl("http://%s:8080/" % self.server.ip4)


@pytest.fixture
def mixed(pod_lab):
    return Mixed(pod_lab)


def test_plaintext_from_ztunnel_permissive_accepted(mixed):
    """PERMISSIVE: ztunnel's plaintext reaches the app, counted as plaintext, nothing refused."""
    m = mixed
    m.start("PERMISSIVE")
    code, body = m.plain()
    assert code == 200 and "hello from server" in body, (code, body)
    wait_for(lambda: m.stat("downstream_cx_plaintext") == 1, what="plaintext counted")
    assert m.stat("downstream_cx_plaintext_refused") == 0
    assert m.stat("downstream_cx_mtls") == 0


def test_plaintext_from_ztunnel_strict_refused(mixed):
    """STRICT: ztunnel's plaintext is reset before the app sees a byte, and counted; a second
    try the same; nothing is passed as plaintext."""
    m = mixed
    m.start("STRICT")
    for i in (1, 2):
        code, body = m.plain()
        assert code == 0 and "hello" not in body, (code, body)
        wait_for(lambda: m.stat("downstream_cx_plaintext_refused") == i, what="plaintext refused %d" % i)
    assert m.stat("downstream_cx_plaintext") == 0
    assert "STRICT" in m.sc.log()


# ------------------------------------------------------------------ waypoints (mesh.useWaypoints)

ID_SIDE = certs.spiffe_id("default", "side")
ID_WP = certs.spiffe_id("default", "waypoint")
ID_OTHER = certs.spiffe_id("default", "not-the-waypoint")
VIP, WP_VIP, PORT = "10.96.7.7", "10.96.7.8", 8082


class Waypointed:
    """A sidecar pod (ours), a destination pod (plaintext, its app answers "hello from dest")
    behind the Service reviews (VIP:8082), and a waypoint pod: the python3-h2 HBONE terminator
    (tests/lab/hbone_peers.py: TLS 1.3, client certificate required, one JSON line a stream with
    the client's SPIFFE ID and :authority) that accepts :authority VIP:8082 and connects there
    inside its own pod, where the VIP is on lo and an app answers "hello from waypoint"."""

    def __init__(self, L):
        self.L = L
        d = os.path.join(L.dir, "pki")
        ca = certs.CA(os.path.join(d, "ca"))
        self.certs = {n: ca.issue(os.path.join(d, n), i)
                      for n, i in (("side", ID_SIDE), ("wp", ID_WP), ("other", ID_OTHER))}
        for root, _, _ in os.walk(d):
            os.chmod(root, 0o755)
        os.chmod(L.dir, 0o755)
        self.side = L.add_pod("side")
        self.dest = L.add_pod("dest")
        self.wp = L.add_pod("wp")
        self.dest.app(["http", "--port", PORT, "--name", "dest"])
        self.wp.run(["ip", "addr", "add", VIP + "/32", "dev", "lo"])
        self.wp.app(["http", "--port", PORT, "--name", "waypoint"])
        self.log = None

    def terminator(self, cert):
        import hbone_peers
        import lab
        self.log = os.path.join(self.L.dir, "wp-terminator-%s.jsonl" % cert)
        open(self.log, "a").close()
        os.chmod(self.log, 0o666)
        p = self.wp.popen([lab.PYTHON, hbone_peers.HERE, "terminator", "--cert-dir", self.certs[cert],
                           "--port", "15008", "--log", self.log, "--pod-ip", self.wp.ip4, "--pod-ip", VIP,
                           "--max-seconds", "120"],
                          stdout=subprocess.PIPE, stderr=open(self.log + ".stderr", "wb"))
        line = lab.read_line(p.stdout, 10)
        assert line.startswith(b"READY"), line
        return p

    def streams(self):
        import hbone_peers
        return [r for r in hbone_peers.read_jsonl(self.log) if r.get("event") == "stream"]

    def resources(self, waypoint):
        wl = lambda pod, sa, **kw: meshres.workload("Kubernetes//Pod/default/" + pod.name, pod.name,
                                                    [pod.ip4], serviceAccount=sa, **kw)
        return [
            meshres.service("reviews", [VIP], [(PORT, PORT)], waypoint=waypoint),
            meshres.service("waypoint", [WP_VIP], [(15008, 15008)]),
            wl(self.dest, "dest", services={meshres.key("reviews"): [(PORT, PORT)]}),
            wl(self.wp, "waypoint", tunnelProtocol="HBONE",
               services={meshres.key("waypoint"): [(15008, 15008)]}),
            wl(self.side, "side", tunnelProtocol="HBONE"),
        ]

    def start(self, waypoint, use=True):
        cfg = {"resources": self.resources(waypoint), "proxy": {"logLevel": "debug"},
               "mesh": {"useWaypoints": use}}
        self.sc = self.side.start_sidecar(config=cfg, proxy_args=("--cert-dir", self.certs["side"]),
                                          env={"POD_NAMESPACE": "default"})
        wait_for(lambda: self.sc.stats().get("server.cert_updates", 0) >= 1, timeout=10,
                 what="the sidecar's certificate loaded")

    def stat(self, name):
        return self.sc.stats().get("listener.outbound." + name, 0)

    def call(self):
        return self.side.curl("http://%s:%d/" % (VIP, PORT), user="nobody")


BY_NAME = {"hostname": {"namespace": "default", "hostname": "waypoint.default.svc.cluster.local"},
           "hboneMtlsPort": 15008}


@pytest.fixture
def wpm(pod_lab):
    return Waypointed(pod_lab)


@pytest.mark.parametrize("how", ["hostname", "address"])
def test_waypoint_reached_over_hbone(wpm, how):
    """useWaypoints: a call to the service's VIP goes over HBONE to the waypoint pod's 15008
    (named by the waypoint Service's hostname, or by the waypoint pod's IP), :authority the
    original VIP:port, our SPIFFE ID presented; the destination pod is not called directly."""
    m = wpm
    m.terminator("wp")
    wp = BY_NAME if how == "hostname" else {"address": {"network": "", "address": meshres._b64(m.wp.ip4)}}
    m.start(wp)
    code, body = m.call()
    assert code == 200 and "hello from waypoint" in body, (code, body)
    recs = m.streams()
    assert recs and recs[-1]["authority"] == "%s:%d" % (VIP, PORT), recs
    assert recs[-1]["peer_id"] == ID_SIDE, recs
    assert m.stat("upstream_cx_waypoint") == 1
    assert m.stat("upstream_cx_hbone") == 1


def test_waypoint_identity_verified(wpm):
    """The waypoint pod presents a certificate of another identity than its workload's: the
    connection fails (never sent to it, nor around it to the destination)."""
    m = wpm
    m.terminator("other")
    m.start(BY_NAME)
    code, body = m.call()
    assert code == 0 and "hello" not in body, (code, body)
    wait_for(lambda: m.stat("upstream_cx_hbone_fail") >= 1, what="the HBONE connection failed")
    assert not m.streams()
    assert m.stat("upstream_cx_waypoint") == 1


def test_waypoint_off_by_default(wpm):
    """useWaypoints false (the default, as Istio sidecars): the destination pod directly."""
    m = wpm
    m.terminator("wp")
    m.start(BY_NAME, use=False)
    code, body = m.call()
    assert code == 200 and "hello from dest" in body, (code, body)
    assert m.stat("upstream_cx_waypoint") == 0 and not m.streams()


def test_waypoint_unknown_refused(wpm):
    """A waypoint the model does not know: refused and counted, never bypassed to the pod."""
    m = wpm
    m.start({"hostname": {"namespace": "default", "hostname": "gone.default.svc.cluster.local"}})
    code, body = m.call()
    assert code == 0 and "hello" not in body, (code, body)
    wait_for(lambda: m.stat("upstream_cx_waypoint_unknown") == 1, what="unknown waypoint counted")


# ------------------------------------------------------------------ PROXY protocol v2 toward the app

ID_AMB = certs.spiffe_id("default", "ambient")
PP_PORT, PP_TARGET = 15088, 8080

# An app that parses the PROXY v2 header as HAProxy's proxy-protocol.txt §2.2 lays it out (its
# own reading, no code of ours), answers one JSON line and closes.
PP_PARSER = r'''
import ipaddress, json, socket, struct, sys
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", int(sys.argv[1]))); ls.listen(16); ls.settimeout(60)
print("READY", flush=True)
while True:
    c, _ = ls.accept(); c.settimeout(10)
    def need(n, b=b""):
        while len(b) < n:
            d = c.recv(n - len(b))
            if not d: raise EOFError(len(b))
            b += d
        return b
    out = {}
    try:
        h = need(16)
        out["sig_ok"] = h[:12] == b"\r\n\r\n\x00\r\nQUIT\n"
        out["ver_cmd"], out["fam"] = h[12], h[13]
        body = need(struct.unpack("!H", h[14:16])[0])
        alen = {0x11: 12, 0x21: 36}[h[13]]
        al = alen // 2 - 2
        ip = ipaddress.ip_address
        out["src"] = "%s:%d" % (ip(body[:al]), struct.unpack("!H", body[2*al:2*al+2])[0])
        out["dst"] = "%s:%d" % (ip(body[al:2*al]), struct.unpack("!H", body[2*al+2:2*al+4])[0])
        t, tlvs = alen, {}
        while t < len(body):
            typ, ln = body[t], struct.unpack("!H", body[t+1:t+3])[0]
            assert t + 3 + ln <= len(body), "TLV overruns"
            tlvs["0x%02x" % typ] = body[t+3:t+3+ln].decode()
            t += 3 + ln
        out["tlvs"] = tlvs
        out["after"] = c.recv(64).decode("latin-1")
    except Exception as e:
        out["error"] = repr(e)
    c.sendall((json.dumps(out) + "\n").encode()); c.close()
'''


class Proxied:
    """"ztunnel" (the python3-h2 HBONE client, an ambient workload's certificate) -> our sidecar's
    15008 -> the local workload, whose applicationTunnel says PROXY on PP_PORT: the app there is
    HAProxy (accept-proxy) or the spec parser above."""

    def __init__(self, L):
        import hbone_peers
        import lab
        self.L, self.hp, self.PY = L, hbone_peers, lab.PYTHON
        d = os.path.join(L.dir, "pki")
        ca = certs.CA(os.path.join(d, "ca"))
        self.certs = {n: ca.issue(os.path.join(d, n), i) for n, i in (("side", ID_SIDE), ("ambient", ID_AMB))}
        for root, _, _ in os.walk(d):
            os.chmod(root, 0o755)
        os.chmod(L.dir, 0o755)
        self.side = L.add_pod("side")
        self.amb = L.add_pod("amb")

    def start(self, proxy=True):
        tun = {"applicationTunnel": {"protocol": "PROXY", "port": PP_PORT}} if proxy else {}
        res = [meshres.workload("Kubernetes//Pod/default/side", "side", [self.side.ip4], serviceAccount="side",
                                tunnelProtocol="HBONE", **tun),
               meshres.workload("Kubernetes//Pod/default/amb", "amb", [self.amb.ip4], serviceAccount="ambient",
                                tunnelProtocol="HBONE")]
        cfg = {"resources": res, "proxy": {"logLevel": "debug"}}
        self.sc = self.side.start_sidecar(config=cfg, proxy_args=("--cert-dir", self.certs["side"]),
                                          env={"POD_NAMESPACE": "default"})
        wait_for(lambda: self.side.run(["ss", "-Hltn", "sport = :15008"], check=False).stdout.strip(),
                 timeout=10, what="the sidecar listening on 15008")

    def listening(self, port):
        wait_for(lambda: self.side.run(["ss", "-Hltn", "sport = :%d" % port], check=False).stdout.strip(),
                 timeout=10, what="the app on %d" % port)

    def ztunnel(self, payload, port=PP_TARGET):
        argv = [self.PY, self.hp.HERE, "client", "--host", self.side.ip4, "--cert-dir", self.certs["ambient"],
                "--authority", "%s:%d" % (self.side.ip4, port), "--scenario", "probe", "--timeout", 20,
                "--payload", payload, "--read-to-end"]
        r = self.amb.run([str(a) for a in argv], check=False, timeout=60)
        lines = r.stdout.strip().splitlines()
        assert lines, r.stderr[-2000:]
        return json.loads(lines[-1])

    def stat(self, name):
        return self.sc.stats().get("listener.hbone." + name, 0)


@pytest.fixture
def ppm(pod_lab):
    return Proxied(pod_lab)


def test_proxy_v2_read_by_haproxy(ppm):
    """HAProxy (accept-proxy) as the app: the addresses it takes from our header are the
    ztunnel's (the HBONE client's IP) and the CONNECT's target (podIP:8080, not the tunnel
    port); the payload follows the header."""
    m = ppm
    cfg = os.path.join(m.L.dir, "haproxy-pp.cfg")
    with open(cfg, "w") as f:
        f.write("global\n  log stderr local0\ndefaults\n  mode http\n  timeout client 10s\n"
                "  timeout connect 5s\n  timeout server 5s\nfrontend pp\n  bind 0.0.0.0:%d accept-proxy\n"
                "  http-request return status 200 content-type text/plain lf-string \"%%[src] %%[dst] %%[dst_port]\"\n"
                % PP_PORT)
    os.chmod(cfg, 0o644)
    m.side.popen(["haproxy", "-db", "-q", "-f", cfg])
    m.listening(PP_PORT)
    m.start()
    r = m.ztunnel("GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    assert r.get("status") == 200, r
    assert r["reply"].endswith("%s %s %d" % (m.amb.ip4, m.side.ip4, PP_TARGET)), r
    assert m.stat("upstream_cx_proxy_protocol") == 1


def test_proxy_v2_tlv_identity_spec_parser(ppm):
    """A parser written from the spec as the app: signature, v2 PROXY (0x21), INET STREAM
    (0x11), src the ztunnel's IP, dst podIP:8080, TLV 0xD0 = the client's SPIFFE ID (the
    certificate it presented on 15008) and nothing else, then the payload."""
    m = ppm
    m.side.popen([m.PY, "-c", PP_PARSER, str(PP_PORT)], user="nobody")
    m.listening(PP_PORT)
    m.start()
    r = m.ztunnel("payload")
    assert r.get("status") == 200, r
    got = json.loads(r["reply"])
    assert got.get("sig_ok") and got["ver_cmd"] == 0x21 and got["fam"] == 0x11, got
    assert got["src"].startswith(m.amb.ip4 + ":") and got["dst"] == "%s:%d" % (m.side.ip4, PP_TARGET), got
    assert got["tlvs"] == {"0xd0": ID_AMB}, got
    assert got["after"] == "payload", got


def test_no_proxy_v2_without_application_tunnel(ppm):
    """No applicationTunnel: the app's first bytes are the client's (no header)."""
    m = ppm
    m.side.popen([m.PY, "-c", PP_PARSER, str(PP_TARGET)], user="nobody")
    m.listening(PP_TARGET)
    m.start(proxy=False)
    r = m.ztunnel("payload-without-header-padding")
    assert r.get("status") == 200, r
    got = json.loads(r["reply"])
    assert not got.get("sig_ok"), got
    assert m.stat("upstream_cx_proxy_protocol") == 0
