"""L4 authorization end-to-end (issue 12, "Authorization" and its test items), written apart
from the implementation: istio.security.Authorization resources (proto3 JSON, as istiod sends
them to ztunnel) in the server sidecar's "resources", the server pod's own Workload naming the
policies it binds (authorizationPolicies), and real peers with development-CA identities:

    openssl s_client (client pod, mesh cert, ALPN istio) -> server pod :8080 --> 15006
    python3-h2 CONNECT (client pod, mesh cert)            -> server pod :15008 --> app :8080

Expected (ztunnel semantics): DENY policies first, then ALLOW; no ALLOW policy -> allow; ALLOW
policies none of which match -> deny. 15006 denied: closed with no app bytes and
listener.inbound.downstream_cx_authz_denied; HBONE denied: :status 401 and
listener.hbone.hbone_rq_401; per-policy authz_policy_allow / authz_policy_deny in /stats.
"""
import json
import os
import signal
import subprocess
import time

import pytest

import certs
import meshres
from lab import PYTHON, read_line, wait_for

AUTHZ = "type.googleapis.com/istio.security.Authorization"
PA = "type.googleapis.com/istio.security.v1beta1.PeerAuthentication"
NS = "shop"
SERVER_ID = certs.spiffe_id(NS, "server")
CLIENT_ID = certs.spiffe_id("default", "client")      # ns default, sa client
HERE = os.path.dirname(os.path.abspath(__file__))
H2CLIENT = os.path.join(HERE, "test_hbone_server.py")
H2HOLD = os.path.join(HERE, "h2hold.py")
HTTP_REQ = "GET / HTTP/1.0\r\nHost: x\r\n\r\n"
APP_PORT = 8080


def authz(name, action="ALLOW", rules=None, scope="WORKLOAD_SELECTOR", namespace=NS, dry_run=False):
    """One policy; rules: list of rules, each a list of match dicts (proto3 JSON)."""
    r = {"@type": AUTHZ, "name": name, "namespace": namespace, "scope": scope, "action": action,
         "groups": [{"rules": [{"matches": m if isinstance(m, list) else [m]} for m in rule]}
                    for rule in (rules or [])]}
    if dry_run:
        r["dryRun"] = True
    return r


def one(**match):
    """rules for a policy with one group, one rule, one match."""
    return [[match]]


def addr(ip, length):
    return {"address": meshres._b64(ip), "length": length}


class Mesh:
    def __init__(self, L):
        self.L = L
        d = L.dir
        self.ca = certs.CA(os.path.join(d, "ca"))
        self.server_dir = os.path.join(d, "server-certs")
        self.ca.issue(self.server_dir, SERVER_ID)
        self.client_dir = os.path.join(d, "client-certs")
        self.ca.issue(self.client_dir, CLIENT_ID)
        for x in (d, self.server_dir, self.client_dir):
            os.chmod(x, 0o755)
        self.client = L.add_pod("client")
        self.server = L.add_pod("server")
        self.server.app(["http", "--port", APP_PORT, "--name", "server"])
        self.server.app(["http", "--port", 8081, "--name", "server-8081"])

    def workload(self, bound, **wl_extra):
        return meshres.workload("Kubernetes//Pod/shop/server", "server", [self.server.ip4],
                                namespace=NS, serviceAccount="server",
                                authorizationPolicies=list(bound), **wl_extra)

    def config(self, policies, bound=None, extra_resources=(), extra=None, wl_extra=None):
        if bound is None:
            bound = ["%s/%s" % (p["namespace"], p["name"]) for p in policies
                     if p.get("scope", "WORKLOAD_SELECTOR") == "WORKLOAD_SELECTOR"]
        cfg = {"resources": [self.workload(bound, **(wl_extra or {}))] + list(policies) +
               list(extra_resources),
               "proxy": {"logLevel": "debug"}}
        cfg.update(extra or {})
        return cfg

    def start(self, policies, **kw):
        cfg = self.config(policies, **kw)
        self.sc = self.server.start_sidecar(config=cfg, proxy_args=("--cert-dir", self.server_dir),
                                            env={"POD_NAMESPACE": NS})
        wait_for(lambda: self.sc.stats().get("server.cert_updates", 0) >= 1, timeout=10,
                 what="the sidecar's certificate loaded")
        return self.sc

    def reload(self, policies, **kw):
        before = self.sc.stats().get("server.config_reload_success", 0)
        fails = self.sc.stats().get("server.config_reload_failure", 0)
        with open(self.sc.config_path, "w") as f:
            json.dump(self.config(policies, **kw), f)
        self.sc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: (self.sc.stats().get("server.config_reload_success", 0) > before or
                          self.sc.stats().get("server.config_reload_failure", 0) > fails),
                 timeout=10, what="the reload done")

    def stat(self, name):
        return self.sc.stats().get(name, 0)

    def policy_count(self, kind, policy):
        """authz_policy_allow / authz_policy_deny for a policy name, however the stat is keyed."""
        return sum(v for k, v in self.sc.stats().items() if kind in k and policy in k)

    # --- the two inbound paths ---
    def mtls(self, port=APP_PORT):
        """Istio mTLS to 15006 (captured): True when the app answered."""
        argv = ["timeout", "10", "openssl", "s_client", "-quiet", "-connect",
                "%s:%d" % (self.server.ip4, port), "-alpn", "istio",
                "-cert", os.path.join(self.client_dir, "cert-chain.pem"),
                "-key", os.path.join(self.client_dir, "key.pem"),
                "-CAfile", os.path.join(self.client_dir, "root-cert.pem")]
        r = self.client.run(argv, check=False, timeout=15, input=HTTP_REQ)
        return "hello from server" in r.stdout

    def plain(self, port=APP_PORT):
        code, body = self.client.curl("http://%s:%d/" % (self.server.ip4, port))
        return code == 200

    def hbone(self, port=APP_PORT):
        """A CONNECT on 15008: the :status (None when none came)."""
        argv = ["/usr/bin/python3", H2CLIENT, "client", "--host", self.server.ip4,
                "--authority", "%s:%d" % (self.server.ip4, port),
                "--ca", os.path.join(self.server_dir, "root-cert.pem"),
                "--certs", self.client_dir, "--send", "x"]
        r = self.client.run(argv, check=False, timeout=40)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1]).get("status")

    def hold(self, ports, hold=30):
        """HBONE streams held open on one connection (h2hold.py), one per port in ports:
        (the process, {"0": status, ...})."""
        argv = [PYTHON, H2HOLD, "--host", self.server.ip4, "--hold", hold,
                "--ca", os.path.join(self.server_dir, "root-cert.pem"), "--certs", self.client_dir]
        for port in ports:
            argv += ["--authority", "%s:%d" % (self.server.ip4, port)]
        p = self.client.popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = read_line(p.stdout, 15)
        if not line:
            p.kill()
            raise AssertionError("h2hold: no answer: %r" % p.communicate()[1][-2000:])
        return p, json.loads(line)["status"]

    @staticmethod
    def held(p, timeout=20):
        """The end of a hold(): {"ended": {"0": "reset" | ...}, "eof", "goaway"}."""
        out, _ = p.communicate(timeout=timeout)
        return json.loads(out.decode().strip().splitlines()[-1])


@pytest.fixture
def mesh(pod_lab):
    return Mesh(pod_lab)


def check(m, path, allowed, policy=None, kind=None):
    """Connect on path ("mtls" / "hbone") and check the outcome and its counters."""
    if path == "mtls":
        d0 = m.stat("listener.inbound.downstream_cx_authz_denied")
        got = m.mtls()
        assert got == allowed, "15006: expected %s" % ("allowed" if allowed else "denied")
        if not allowed:
            wait_for(lambda: m.stat("listener.inbound.downstream_cx_authz_denied") == d0 + 1,
                     timeout=5, what="downstream_cx_authz_denied counted")
    else:
        d0 = m.stat("listener.hbone.hbone_rq_401")
        st = m.hbone()
        assert st == (200 if allowed else 401), st
        if not allowed:
            assert m.stat("listener.hbone.hbone_rq_401") == d0 + 1
    if policy and kind:
        wait_for(lambda: m.policy_count(kind, policy) >= 1, timeout=5,
                 what="%s counted for %s" % (kind, policy))


PATHS = ["mtls", "hbone"]

# (match, does it match the client: ns default / sa client / ip client pod -> server:8080)
def match_cases(m):
    c, s = m.client.ip4, m.server.ip4
    return {
        "principals": ({"principals": [{"exact": "cluster.local/ns/default/sa/client"}]},
                       {"principals": [{"exact": "cluster.local/ns/default/sa/other"}]}),
        "principals_prefix": ({"principals": [{"prefix": "cluster.local/ns/default/"}]},
                              {"principals": [{"prefix": "cluster.local/ns/x/"}]}),
        "notPrincipals": ({"notPrincipals": [{"exact": "cluster.local/ns/x/sa/y"}]},
                          {"notPrincipals": [{"exact": "cluster.local/ns/default/sa/client"}]}),
        "namespaces": ({"namespaces": [{"exact": "default"}]}, {"namespaces": [{"exact": "x"}]}),
        "notNamespaces": ({"notNamespaces": [{"exact": "x"}]}, {"notNamespaces": [{"exact": "default"}]}),
        "serviceAccounts": ({"serviceAccounts": [{"namespace": "default", "serviceAccount": "client"}]},
                            {"serviceAccounts": [{"namespace": "default", "serviceAccount": "y"}]}),
        "sourceIps": ({"sourceIps": [addr(c, 32)]}, {"sourceIps": [addr("203.0.113.0", 24)]}),
        "sourceIps_cidr": ({"sourceIps": [addr(c.rsplit(".", 1)[0] + ".0", 24)]},
                           {"sourceIps": [addr("10.255.255.0", 24)]}),
        "notSourceIps": ({"notSourceIps": [addr("203.0.113.0", 24)]}, {"notSourceIps": [addr(c, 32)]}),
        "destinationIps": ({"destinationIps": [addr(s, 32)]}, {"destinationIps": [addr("203.0.113.9", 32)]}),
        "destinationPorts": ({"destinationPorts": [APP_PORT]}, {"destinationPorts": [9999]}),
        "notDestinationPorts": ({"notDestinationPorts": [9999]}, {"notDestinationPorts": [APP_PORT]}),
        "presence": ({"principals": [{"presence": {}}]}, {"notPrincipals": [{"presence": {}}]}),
    }


MATCH_KINDS = ["principals", "principals_prefix", "notPrincipals", "namespaces", "notNamespaces",
               "serviceAccounts", "sourceIps", "sourceIps_cidr", "notSourceIps", "destinationIps",
               "destinationPorts", "notDestinationPorts", "presence"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", MATCH_KINDS)
def test_match_kind_allow_and_deny(mesh, kind, path):
    """Each match kind, both ways: ALLOW matching -> allowed; ALLOW not matching -> denied;
    DENY matching -> denied; DENY not matching -> allowed (one sidecar, reloaded)."""
    m = mesh
    yes, no = match_cases(m)[kind]
    m.start([authz("allow-yes", "ALLOW", one(**yes))])
    check(m, path, True, "allow-yes", "authz_policy_allow")
    m.reload([authz("allow-no", "ALLOW", one(**no))])
    check(m, path, False)
    m.reload([authz("deny-yes", "DENY", one(**yes))])
    check(m, path, False, "deny-yes", "authz_policy_deny")
    m.reload([authz("deny-no", "DENY", one(**no))])
    check(m, path, True)


@pytest.mark.parametrize("path", PATHS)
def test_no_policy_allows_and_deny_wins(mesh, path):
    m = mesh
    m.start([])
    check(m, path, True)
    allow = authz("allow-all-principals", "ALLOW", one(principals=[{"presence": {}}]))
    deny = authz("deny-client", "DENY", one(principals=[{"exact": "cluster.local/ns/default/sa/client"}]))
    m.reload([allow, deny])
    check(m, path, False, "deny-client", "authz_policy_deny")
    # An ALLOW with no rules matches nothing: deny.
    m.reload([authz("allow-nothing", "ALLOW", [])])
    check(m, path, False)


@pytest.mark.parametrize("path", PATHS)
def test_rule_semantics(mesh, path):
    """ztunnel's order: groups OR'ed; the rules of a group AND'ed; the matches of a rule OR'ed;
    within one match the values of a kind OR'ed."""
    m = mesh
    ok = {"namespaces": [{"exact": "default"}]}
    bad = {"namespaces": [{"exact": "x"}]}
    m.start([authz("and", "ALLOW", [[ok, bad]])])          # one group, two rules: AND
    check(m, path, False)
    m.reload([authz("or", "ALLOW", [[bad], [ok]])])       # two groups: OR
    check(m, path, True)
    m.reload([authz("matches", "ALLOW", [[[bad, ok]]])])  # one rule, two matches: OR
    check(m, path, True)
    m.reload([authz("values", "ALLOW", one(namespaces=[{"exact": "x"}, {"exact": "default"}]))])
    check(m, path, True)


@pytest.mark.parametrize("path", PATHS)
def test_dry_run_never_enforces(mesh, path):
    m = mesh
    m.start([authz("deny-dry", "DENY", one(principals=[{"presence": {}}]), dry_run=True)])
    check(m, path, True)
    m.reload([authz("allow-dry", "ALLOW", one(namespaces=[{"exact": "x"}]), dry_run=True)])
    check(m, path, True)


@pytest.mark.parametrize("path", PATHS)
def test_scopes(mesh, path):
    """GLOBAL (istio-system) applies to every workload, NAMESPACE to the workload's namespace
    only, WORKLOAD_SELECTOR only when the workload names the policy."""
    m = mesh
    deny = one(principals=[{"presence": {}}])
    m.start([authz("g", "DENY", deny, scope="GLOBAL", namespace="istio-system")], bound=[])
    check(m, path, False)
    m.reload([authz("n", "DENY", deny, scope="NAMESPACE", namespace=NS)], bound=[])
    check(m, path, False)
    m.reload([authz("n", "DENY", deny, scope="NAMESPACE", namespace="elsewhere")], bound=[])
    check(m, path, True)
    m.reload([authz("w", "DENY", deny)], bound=[])         # not bound by the workload
    check(m, path, True)
    m.reload([authz("w", "DENY", deny)], bound=["shop/w"])
    check(m, path, False)
    # /config_dump shows the policy and the workload it binds.
    dumped = {p["name"]: p for p in m.sc.config_dump()["authorization"]}
    assert dumped["shop/w"]["action"] == "DENY", dumped
    assert dumped["shop/w"]["workloads"] == ["Kubernetes//Pod/shop/server"], dumped


def strict_converted():
    return authz("istio_converted_static_strict", "DENY", one(notPrincipals=[{"presence": {}}]),
                 scope="GLOBAL", namespace="istio-system")


def test_peer_authentication_strict_equivalence(mesh):
    """istiod's conversion of STRICT behaves as the PeerAuthentication resource: plaintext
    refused, mTLS (15006 and HBONE) passes; the converted port exception lets plaintext on 8081."""
    m = mesh
    pa = {"@type": PA, "mtls": {"mode": "STRICT"}}
    m.start([], extra_resources=[pa])
    ref = (m.plain(), m.mtls(), m.hbone())
    m.reload([strict_converted()])
    assert (m.plain(), m.mtls(), m.hbone()) == ref == (False, True, 200)
    # Port-level exception: DENY unless mTLS, except 8081 (converted_peer_authentication_<name>).
    exc = authz("converted_peer_authentication_server", "DENY",
                [[{"notPrincipals": [{"presence": {}}], "notDestinationPorts": [8081]}]])
    m.reload([exc], bound=["shop/converted_peer_authentication_server"])
    assert not m.plain(APP_PORT)
    assert m.plain(8081)
    assert m.mtls()


@pytest.mark.parametrize("close", [None, False])
def test_policy_change_applies_and_closes(mesh, close):
    """A new policy applies to new connections at once; an open connection it denies is closed
    (authorization.closeDeniedConnections, default true) or stays with false."""
    m = mesh
    extra = None if close is None else {"authorization": {"closeDeniedConnections": close}}
    m.start([], extra=extra)
    # A long-lived plaintext connection through 15006 (PERMISSIVE): socat keeps it open.
    p = m.client.popen(["socat", "-", "TCP:%s:%d" % (m.server.ip4, APP_PORT)],
                       stdin=__import__("subprocess").PIPE)
    # Its first bytes end the sniffing: the connection is authorized and forwarding.
    p.stdin.write(b"GET / HTTP/1.1\r\n")  # headers not ended: the app waits
    p.stdin.flush()
    wait_for(lambda: m.stat("listener.inbound.downstream_cx_active") >= 1, timeout=5,
             what="the connection open")
    deny = authz("deny-src", "DENY", one(sourceIps=[addr(m.client.ip4, 32)]), scope="NAMESPACE")
    m.reload([deny], extra=extra)
    assert not m.plain()
    if close is None:
        wait_for(lambda: p.poll() is not None or m.stat("listener.inbound.downstream_cx_active") == 0,
                 timeout=10, what="the open connection closed by the new policy")
    else:
        import time
        time.sleep(2)
        assert m.stat("listener.inbound.downstream_cx_active") >= 1
    p.kill()


BAD = {
    "unknown_field": lambda m: dict(authz("bad-unknown", "DENY", one(principals=[{"presence": {}}])),
                                    frobnicate=1),
    "unknown_match_field": lambda m: authz("bad-match", "DENY", one(sourcePods=[{"exact": "x"}])),
    "cidr_5_bytes": lambda m: authz("bad-cidr5", "DENY",
                                    one(sourceIps=[{"address": "AQIDBAU=", "length": 8}])),
    "cidr_prefix_33": lambda m: authz("bad-prefix", "DENY", one(sourceIps=[addr("10.0.0.0", 33)])),
    "principal_empty": lambda m: authz("bad-princ-empty", "DENY", one(principals=[{"exact": ""}])),
    "principal_space": lambda m: authz("bad-princ-space", "DENY", one(principals=[{"exact": "a b"}])),
    "stringmatch_empty": lambda m: authz("bad-sm", "DENY", one(principals=[{}])),
    # Review finding 4: an action or scope no schema has (AUDIT, 2, is ours; 3 is no one's).
    "action_unknown": lambda m: dict(authz("bad-action", "DENY", one(principals=[{"presence": {}}])),
                                     action=3),
    "scope_unknown": lambda m: dict(authz("bad-scope", "DENY", one(principals=[{"presence": {}}])),
                                    scope=3),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_policy_refused_by_name_old_state_stays(mesh, case):
    """A bad policy is refused by name and the previous state (an ALLOW that denies the client)
    stays: never allow-all."""
    m = mesh
    keep = authz("keep-deny", "ALLOW", one(namespaces=[{"exact": "x"}]))
    m.start([keep])
    check(m, "hbone", False)
    bad = BAD[case](m)
    m.reload([keep, bad])
    # A file's resources are refused by their JSON path (resources[2]: after the workload and
    # keep); by xDS, by name in the NACK.
    wait_for(lambda: "resource refused: resources[2]" in m.sc.log(), timeout=5,
             what="the refusal naming %s (resources[2])" % bad["name"])
    check(m, "hbone", False)
    check(m, "mtls", False)


def test_recheck_judges_the_authorized_hbone_target(mesh):
    """Review finding 2: an HBONE stream to a workload whose applicationTunnel moves the app to
    another port (8081) was judged on the CONNECT's target (8080), but a policy change re-judged
    it on the swapped port: an ALLOW of port 8080 then closed it although nothing it matches
    changed. The recheck must judge what was judged: kept open by an unrelated change, closed
    by one that denies it."""
    m = mesh
    tun = {"applicationTunnel": {"port": 8081}}
    allow = authz("allow-8080", "ALLOW", one(destinationPorts=[APP_PORT]))
    m.start([allow], wl_extra=tun)
    p, status = m.hold([APP_PORT])
    assert status == {"0": 200}, status
    other = authz("deny-other", "DENY", one(principals=[{"exact": "cluster.local/ns/x/sa/y"}]))
    m.reload([allow, other], wl_extra=tun)
    time.sleep(1.5)
    assert m.stat("listener.hbone.downstream_cx_authz_closed") == 0
    assert p.poll() is None, "the stream was closed by a change that does not deny it"
    m.reload([authz("allow-9999", "ALLOW", one(destinationPorts=[9999]))], wl_extra=tun)
    end = m.held(p)
    assert end["ended"] == {"0": "reset"}, end
    assert m.stat("listener.hbone.downstream_cx_authz_closed") == 1


# An app that never completes a connection: a listener whose accept queue (backlog 0) is
# filled at once by two connections of its own, so the kernel drops every later SYN and a
# connect to it stays in progress until proxy.connectTimeout.
STUCK_APP = r'''
import socket, sys, time
port = int(sys.argv[1])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(0)
fill = []
for _ in range(2):
    c = socket.socket(); c.setblocking(False); c.connect_ex(("127.0.0.1", port)); fill.append(c)
time.sleep(0.3)
print("READY", flush=True)
time.sleep(120)
'''
STUCK_PORT = 8082


@pytest.mark.parametrize("path", PATHS)
def test_recheck_closes_connections_still_connecting(mesh, path):
    """Review finding 3: a connection already authorized but still connecting to the app was
    skipped by the policy-change recheck (only forwarding ones were re-judged), so a policy that
    now denies it let it through once the app answered. It is closed at the change: 15006 reset,
    HBONE answered 401 (not the 503 of the connect timeout, 30 s later)."""
    m = mesh
    app = m.server.popen([PYTHON, "-c", STUCK_APP, str(STUCK_PORT)], stdout=subprocess.PIPE)
    assert read_line(app.stdout, 10).startswith(b"READY")
    extra = {"proxy": {"logLevel": "debug", "connectTimeout": "30s"}}
    m.start([], extra=extra)
    lst = "listener.inbound." if path == "mtls" else "listener.hbone."
    if path == "mtls":
        p = m.client.popen(["socat", "-", "TCP:%s:%d" % (m.server.ip4, STUCK_PORT)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        p.stdin.write(b"GET / HTTP/1.1\r\n")   # ends the sniffing: authorized, then connecting
        p.stdin.flush()
    else:
        argv = [PYTHON, H2HOLD, "--host", m.server.ip4, "--hold", 15,
                "--ca", os.path.join(m.server_dir, "root-cert.pem"), "--certs", m.client_dir,
                "--authority", "%s:%d" % (m.server.ip4, STUCK_PORT)]
        p = m.client.popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: "to %s:%d" % (m.server.ip4, STUCK_PORT) in m.sc.log(), timeout=10,
             what="the app connect under way")
    assert m.stat(lst + "downstream_cx_active") == 1
    t0 = time.monotonic()
    m.reload([authz("deny-src", "DENY", one(sourceIps=[addr(m.client.ip4, 32)]), scope="NAMESPACE")],
             extra=extra)
    wait_for(lambda: m.stat(lst + "downstream_cx_authz_closed") == 1, timeout=10,
             what="the connecting connection closed by the new policy")
    if path == "hbone":
        out = p.communicate(timeout=20)[0].decode().strip().splitlines()
        assert json.loads(out[0])["status"] == {"0": 401}, out
        assert m.stat("listener.hbone.hbone_rq_401") == 1
    else:
        p.communicate(timeout=10)
    assert time.monotonic() - t0 < 10
    assert m.stat(lst + "upstream_cx_connect_timeout") == 0
    app.kill()


def test_recheck_two_streams_of_one_hbone_connection(mesh):
    """Review finding 8: the recheck walks the worker's tunnels and aborts the denied ones; two
    HBONE streams of one connection are two tunnels on that list, and aborting the first must
    not free the second under the walk (the walk keeps its cursor where tunnel_done can move it).
    Both are reset, counted, the sidecar lives (ASan build), and the connection itself stays."""
    m = mesh
    m.start([])
    p, status = m.hold([APP_PORT, APP_PORT, 8081])
    assert status == {"0": 200, "1": 200, "2": 200}, status
    assert m.stat("listener.hbone.downstream_cx_active") == 3
    # Denies the streams to 8080, not the one to 8081.
    m.reload([authz("deny-8080", "DENY", one(destinationPorts=[APP_PORT]), scope="NAMESPACE")])
    wait_for(lambda: m.stat("listener.hbone.downstream_cx_authz_closed") == 2, timeout=10,
             what="both streams to 8080 closed")
    time.sleep(0.5)
    assert m.stat("listener.hbone.downstream_cx_active") == 1
    assert m.stat("listener.hbone.hbone_cx_active") == 1, "the HBONE connection stays"
    m.reload([authz("deny-all", "DENY", one(destinationPorts=[APP_PORT, 8081]), scope="NAMESPACE")])
    end = m.held(p)
    assert end["ended"] == {"0": "reset", "1": "reset", "2": "reset"}, end
    assert not end["eof"], end
    assert m.stat("listener.hbone.downstream_cx_authz_closed") == 3
    assert m.hbone() == 401   # and the sidecar still answers


@pytest.mark.parametrize("path", PATHS)
def test_audit_counts_and_never_decides(mesh, path):
    """AUDIT (our extension; istiod never sends it to ztunnel): a matching AUDIT policy is counted
    (authz_policy_allow of its name in /stats) and decides nothing: alone it allows, beside an
    ALLOW that matches nothing the connection is still denied, beside a matching DENY denied."""
    m = mesh
    audit = authz("audit-all", "AUDIT", one(principals=[{"presence": {}}]))
    m.start([audit])
    check(m, path, True, "audit-all", "authz_policy_allow")
    n = m.policy_count("authz_policy_allow", "shop/audit-all")
    assert n >= 1
    assert m.policy_count("authz_policy_deny", "shop/audit-all") == 0
    m.reload([audit, authz("allow-nothing", "ALLOW", one(namespaces=[{"exact": "x"}]))])
    check(m, path, False)
    wait_for(lambda: m.policy_count("authz_policy_allow", "shop/audit-all") == n + 1, timeout=5,
             what="the AUDIT policy counted again")
    m.reload([audit, authz("deny-all", "DENY", one(principals=[{"presence": {}}]))])
    check(m, path, False, "deny-all", "authz_policy_deny")


@pytest.mark.parametrize("path", PATHS)
def test_no_local_workload_fails_closed(mesh, path):
    """Review finding 1: with no WDS Workload for the server pod's address, only the GLOBAL
    policies used to apply (fail-open). ztunnel refuses such a connection outright; we deny it
    while an enforcing NAMESPACE or WORKLOAD_SELECTOR policy exists (it could be the pod's),
    counted in downstream_cx_authz_no_workload, and judge it by the GLOBAL policies alone
    otherwise (a sidecar given no workloads keeps working)."""
    m = mesh
    lst = "listener.inbound." if path == "mtls" else "listener.hbone."
    other = authz("deny-other", "DENY", one(principals=[{"exact": "cluster.local/ns/x/sa/y"}]),
                  scope="NAMESPACE")
    cfg = {"resources": [other], "proxy": {"logLevel": "debug"}}
    m.sc = m.server.start_sidecar(config=cfg, proxy_args=("--cert-dir", m.server_dir),
                                  env={"POD_NAMESPACE": NS})
    wait_for(lambda: m.sc.stats().get("server.cert_updates", 0) >= 1, timeout=10,
             what="the sidecar's certificate loaded")
    check(m, path, False)
    assert m.stat(lst + "downstream_cx_authz_no_workload") == 1
    # Only a GLOBAL policy (not matching): judged by it, allowed.
    before = m.stat("server.config_reload_success")
    g = authz("g-other", "DENY", one(principals=[{"exact": "cluster.local/ns/x/sa/y"}]),
              scope="GLOBAL", namespace="istio-system")
    with open(m.sc.config_path, "w") as f:
        json.dump({"resources": [g], "proxy": {"logLevel": "debug"}}, f)
    m.sc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: m.stat("server.config_reload_success") > before, timeout=10, what="the reload")
    check(m, path, True)
    assert m.stat(lst + "downstream_cx_authz_no_workload") == 1


def test_connection_judged_after_a_change_uses_the_new_policies(mesh):
    """Review finding 3, its second half: a connection accepted before a policy change but not
    judged yet (PERMISSIVE: waiting for its first bytes to tell TLS from plaintext) is judged
    under the policies in force when it is judged, not those it was accepted under."""
    m = mesh
    m.start([])
    p = m.client.popen(["socat", "-", "TCP:%s:%d" % (m.server.ip4, APP_PORT)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    wait_for(lambda: m.stat("listener.inbound.downstream_cx_active") == 1, timeout=5,
             what="the connection accepted")
    m.reload([authz("deny-src", "DENY", one(sourceIps=[addr(m.client.ip4, 32)]), scope="NAMESPACE")])
    assert m.stat("listener.inbound.downstream_cx_authz_closed") == 0   # not judged yet
    p.stdin.write(HTTP_REQ.encode())
    p.stdin.flush()
    out, _ = p.communicate(timeout=10)
    assert b"hello from server" not in out
    assert m.stat("listener.inbound.downstream_cx_authz_denied") == 1
