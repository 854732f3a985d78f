"""End-to-end tests of outrigger-init on the pod lab, with real traffic.

Instead of the proxy, a small capture helper (HELPER below, written into the lab's
directory at run time) listens where the proxy would: it answers every connection
redirected to 15001/15006 with one line naming the listener and the connection's
original destination (SO_ORIGINAL_DST), answers UDP on 15053, and in TPROXY mode relays
to the app from the client's own address (IP_TRANSPARENT + SO_MARK 1337, as Envoy's
original_src does). Apps answer with "APP port=<p> peer=<ip>", so a test can tell a
captured connection from one that went straight through.

Run as root: /usr/bin/python3 -m pytest tests/e2e/test_init.py
"""
import os
import re
import subprocess
import time

import pytest

import lab

PY = lab.PYTHON
CAPTURE_UID = 1337
DEFAULT = list(lab.DEFAULT_INIT_ARGS)

HELPER = r'''
import argparse, select, socket, struct, sys, threading

SO_ORIGINAL_DST = 80
IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75
SO_MARK = 36


def orig_dst(s):
    if s.family == socket.AF_INET:
        raw = s.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack("!H", raw[2:4])[0]
    raw = s.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
    return socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack("!H", raw[2:4])[0]


def listeners(port, kind=socket.SOCK_STREAM, transparent=False):
    out = []
    # UDP answers must leave from the address the query was redirected to (loopback,
    # like istio-agent's DNS proxy) so that conntrack can undo the REDIRECT.
    hosts = (("0.0.0.0", "::") if kind == socket.SOCK_STREAM else ("127.0.0.1", "::1"))
    for fam, host in ((socket.AF_INET, hosts[0]), (socket.AF_INET6, hosts[1])):
        try:
            s = socket.socket(fam, kind)
        except OSError:
            continue
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if transparent:
            if fam == socket.AF_INET:
                s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            else:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        try:
            s.bind((host, port))
        except OSError:
            s.close()
            continue
        if kind == socket.SOCK_STREAM:
            s.listen(128)
        out.append(s)
    return out


def relay(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def tproxy_conn(c):
    local, peer = c.getsockname(), c.getpeername()
    c.sendall(("TPROXY orig=%s:%d peer=%s\n" % (local[0], local[1], peer[0])).encode())
    u = socket.socket(c.family, socket.SOCK_STREAM)
    if c.family == socket.AF_INET:
        u.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    else:
        u.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
    u.setsockopt(socket.SOL_SOCKET, SO_MARK, 1337)
    u.bind((peer[0], 0))
    u.connect(local[:2])
    threading.Thread(target=relay, args=(c, u), daemon=True).start()
    relay(u, c)


def serve(args):
    socks = {}
    for p in args.tcp:
        for s in listeners(p):
            socks[s] = ("tcp", p)
    for p in args.udp:
        for s in listeners(p, socket.SOCK_DGRAM):
            socks[s] = ("udp", p)
    for p in args.tproxy:
        for s in listeners(p, transparent=True):
            socks[s] = ("tproxy", p)
    for p in args.app:
        for s in listeners(p):
            socks[s] = ("app", p)
    print("READY", flush=True)
    while True:
        r, _, _ = select.select(list(socks), [], [], 1)
        for s in r:
            kind, port = socks[s]
            if kind == "udp":
                data, addr = s.recvfrom(2048)
                s.sendto(b"DNS port=%d " % port + data, addr)
                continue
            c, peer = s.accept()
            if kind == "tproxy":
                threading.Thread(target=tproxy_conn, args=(c,), daemon=True).start()
                continue
            if kind == "app":
                msg = "APP port=%d peer=%s\n" % (port, peer[0])
            else:
                try:
                    ip, op = orig_dst(c)
                    if ":" in ip:
                        ip = "[%s]" % ip
                    msg = "CAPTURED port=%d orig=%s:%d peer=%s\n" % (port, ip, op, peer[0])
                except OSError as e:
                    msg = "CAPTURED port=%d orig=? (%s)\n" % (port, e)
            try:
                c.sendall(msg.encode())
            except OSError:
                pass
            c.close()


def connect(args):
    fam = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(args.timeout)
    try:
        s.connect((args.host, args.port))
        data = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            data += d
        print(data.decode().strip().replace("\n", " | "))
    except OSError as e:
        print("ERROR %s" % type(e).__name__)


def udp(args):
    fam = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(args.timeout)
    try:
        s.connect((args.host, args.port))
        s.send(b"query")
        print(s.recv(2048).decode())
    except OSError as e:
        print("ERROR %s" % type(e).__name__)


ap = argparse.ArgumentParser()
sub = ap.add_subparsers(dest="cmd")
sv = sub.add_parser("serve")
for k in ("tcp", "udp", "tproxy", "app"):
    sv.add_argument("--" + k, type=int, action="append", default=[])
for name in ("connect", "udp"):
    c = sub.add_parser(name)
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--timeout", type=float, default=3)
a = ap.parse_args()
{"serve": serve, "connect": connect, "udp": udp}[a.cmd](a)
'''


# ---------------------------------------------------------------- helpers

@pytest.fixture
def L(pod_lab, init_bin):
    path = os.path.join(pod_lab.dir, "init_helper.py")
    with open(path, "w") as f:
        f.write(HELPER)
    os.chmod(path, 0o644)
    pod_lab.helper = path
    pod_lab.init = init_bin
    return pod_lab


def init(L, pod, args, check=True, user=None, env=None, timeout=60):
    """Run outrigger-init in the pod; returns the CompletedProcess."""
    e = dict(os.environ)
    e.update(env or {})
    r = pod.run([L.init] + list(args), user=user, check=False, env=e, timeout=timeout)
    with open(os.path.join(L.dir, "%s-init.log" % pod.name), "a") as f:
        f.write("$ outrigger-init %r -> %d\n%s%s\n" % (args, r.returncode, r.stdout, r.stderr))
    if check:
        assert r.returncode == 0, "outrigger-init %r -> %d\n%s" % (args, r.returncode, r.stderr)
    return r


def serve(L, pod, user=CAPTURE_UID, **ports):
    """Start the helper's listeners in the pod (tcp=[...], udp=[...], tproxy=[...], app=[...])."""
    argv = [PY, L.helper, "serve"]
    for kind, plist in ports.items():
        for p in plist:
            argv += ["--" + kind, str(p)]
    p = pod.popen(argv, user=user, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = lab.read_line(p.stdout, 10)
    assert line.startswith(b"READY"), line
    return p


def capture_proxy(L, pod):
    """A stand-in for the proxy: uid 1337, outbound 15001 and inbound 15006."""
    return serve(L, pod, tcp=[15001, 15006])


def connect(L, pod, host, port, user="nobody", timeout=3):
    r = pod.run([PY, L.helper, "connect", host, str(port), "--timeout", str(timeout)],
                user=user, check=False, timeout=timeout + 10)
    return r.stdout.strip()


def udp(L, pod, host, port, user="nobody", timeout=2):
    r = pod.run([PY, L.helper, "udp", host, str(port), "--timeout", str(timeout)],
                user=user, check=False, timeout=timeout + 10)
    return r.stdout.strip()


def save(pod, v6=False):
    return pod.run(["ip6tables-save" if v6 else "iptables-save"]).stdout


def norm(dump):
    """iptables-save text without comments and counters; tables holding nothing but
    built-in chains with an ACCEPT policy (what an empty table looks like) left out."""
    tables, cur = {}, None
    for line in dump.splitlines():
        if not line.strip() or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            cur = line
            tables[cur] = []
            continue
        tables[cur].append(re.sub(r" ?\[\d+:\d+\]", "", line).strip())
    return {t: lines for t, lines in tables.items()
            if any(not (x.startswith(":") and x.endswith(" ACCEPT")) for x in lines)}


def istio_chains(pod, v6=False):
    return sorted(set(re.findall(r"^:(ISTIO_\w+)", save(pod, v6), re.M)))


# ---------------------------------------------------------------- REDIRECT

def test_redirect_ipv4(L):
    """Default istio-init flags: outbound to a pod and to a VIP reach 15001 with the
    original destination; inbound reaches 15006; the -d ports (15021) are not captured."""
    client, server = L.add_pod("client"), L.add_pod("server")
    serve(L, server, user="nobody", app=[8080, 15021])
    L.add_service("198.19.0.10", 80, server, 8080)
    init(L, client, DEFAULT)
    init(L, server, DEFAULT)
    capture_proxy(L, client)
    capture_proxy(L, server)

    # REDIRECT of a local connection: destination 127.0.0.1:15001, source unchanged
    assert connect(L, client, server.ip4, 8080) == \
        "CAPTURED port=15001 orig=%s:8080 peer=%s" % (server.ip4, client.ip4)
    assert connect(L, client, "198.19.0.10", 80) == \
        "CAPTURED port=15001 orig=198.19.0.10:80 peer=%s" % client.ip4
    # the proxy's own traffic (uid 1337) is never captured: it reaches the server pod,
    # whose inbound capture answers
    assert connect(L, client, server.ip4, 8080, user=CAPTURE_UID) == \
        "CAPTURED port=15006 orig=%s:8080 peer=%s" % (server.ip4, client.ip4)
    # -d 15090,15021,15020: straight to the app
    assert connect(L, client, server.ip4, 15021, user=CAPTURE_UID) == \
        "APP port=15021 peer=%s" % client.ip4
    # localhost is never captured
    serve(L, client, user="nobody", app=[9000])
    assert connect(L, client, "127.0.0.1", 9000) == "APP port=9000 peer=127.0.0.1"


def test_redirect_ipv6_only_pod(L):
    """A pod whose only address is IPv6: ip6tables rules, ::6 on lo, v6 traffic captured."""
    client = L.add_pod("client", ipv4=False, ipv6=True)
    server = L.add_pod("server", ipv4=False, ipv6=True)
    serve(L, server, user="nobody", app=[8080])
    r = init(L, client, DEFAULT)
    assert "ENABLE_INBOUND_IPV6=true" in r.stderr
    assert "ISTIO_OUTPUT" in save(client, v6=True)
    assert "::6/128" in client.run(["ip", "-6", "addr", "show", "dev", "lo"]).stdout
    capture_proxy(L, client)
    assert connect(L, client, server.ip6, 8080) == \
        "CAPTURED port=15001 orig=[%s]:8080 peer=%s" % (server.ip6, client.ip6)
    assert connect(L, client, server.ip6, 8080, user=CAPTURE_UID) == \
        "APP port=8080 peer=%s" % client.ip6


def test_dual_stack(L):
    """Dual-stack pod: the first address (IPv4) decides, so no IPv6 rules unless
    --dual-stack; with it, both families are captured."""
    client = L.add_pod("client", ipv6=True)
    server = L.add_pod("server", ipv6=True)
    serve(L, server, user="nobody", app=[8080])
    r = init(L, client, DEFAULT)
    assert "ENABLE_INBOUND_IPV6=false" in r.stderr
    assert istio_chains(client, v6=True) == []
    capture_proxy(L, client)
    assert connect(L, client, server.ip6, 8080) == "APP port=8080 peer=%s" % client.ip6
    init(L, client, DEFAULT + ["--cleanup-only"])

    r = init(L, client, DEFAULT + ["--dual-stack"])
    assert "ENABLE_INBOUND_IPV6=true" in r.stderr
    assert connect(L, client, server.ip4, 8080).startswith("CAPTURED port=15001 orig=%s:8080" % server.ip4)
    assert connect(L, client, server.ip6, 8080).startswith("CAPTURED port=15001 orig=[%s]:8080" % server.ip6)
    # ISTIO_DUAL_STACK (env alias) does the same
    init(L, client, DEFAULT + ["--cleanup-only"])
    r = init(L, client, DEFAULT, env={"ISTIO_DUAL_STACK": "true"})
    assert "ENABLE_INBOUND_IPV6=true" in r.stderr


# ---------------------------------------------------------------- TPROXY

def test_tproxy_preserves_client_ip(L):
    """TPROXY inbound: the capture listener sees the original destination as its local
    address and relays from the client's own IP; the app sees the client's IP."""
    client, server = L.add_pod("client"), L.add_pod("server")
    serve(L, server, user="nobody", app=[8080, 9090])
    init(L, server, ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY",
                     "-i", "*", "-x", "", "-b", "8080"])
    rules = server.run(["ip", "rule", "list"]).stdout
    assert "fwmark 0x539 lookup 133" in rules
    assert "local default dev lo" in server.run(["ip", "route", "show", "table", "133"]).stdout
    serve(L, server, user=None, tproxy=[15006])  # root: IP_TRANSPARENT
    out = connect(L, client, server.ip4, 8080)
    assert out == "TPROXY orig=%s:8080 peer=%s | APP port=8080 peer=%s" % (
        server.ip4, client.ip4, client.ip4)
    # a port not in -b is not intercepted
    assert connect(L, client, server.ip4, 9090) == "APP port=9090 peer=%s" % client.ip4
    # cleanup removes the policy routing too
    init(L, server, ["-m", "TPROXY", "--cleanup-only"])
    assert "lookup 133" not in server.run(["ip", "rule", "list"]).stdout
    assert istio_chains(server) == []


# ---------------------------------------------------------------- DNS

def test_dns_capture(L, tmp_path):
    """--redirect-dns: UDP and TCP port 53 to resolv.conf's servers go to 15053 (with the
    conntrack zones making the answer come back); other servers only with
    --capture-all-dns."""
    client = L.add_pod("client")
    resolv = os.path.join(L.dir, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("search example.svc\nnameserver 198.18.99.53\noptions ndots:5\n")
    env = {"OUTRIGGER_INIT_RESOLV_CONF": resolv}
    init(L, client, DEFAULT + ["--redirect-dns"], env=env)
    assert "ISTIO_OUTPUT_DNS" in client.run(["iptables-save", "-t", "raw"]).stdout
    serve(L, client, udp=[15053], tcp=[15001, 15006, 15053])
    assert udp(L, client, "198.18.99.53", 53) == "DNS port=15053 query"
    assert connect(L, client, "198.18.99.53", 53) == \
        "CAPTURED port=15053 orig=198.18.99.53:53 peer=%s" % client.ip4
    # not a resolv.conf server: not captured (and nothing answers there)
    assert udp(L, client, "198.18.99.54", 53).startswith("ERROR")

    init(L, client, DEFAULT + ["--redirect-dns", "--cleanup-only"], env=env)
    assert istio_chains(client) == []
    init(L, client, DEFAULT, env={"ISTIO_META_DNS_CAPTURE": "true", "CAPTURE_ALL_DNS": "true"})
    assert udp(L, client, "198.18.99.54", 53) == "DNS port=15053 query"
    assert udp(L, client, "198.18.99.53", 53) == "DNS port=15053 query"


def test_dns_proxy_own_queries(L):
    """The proxy's own DNS queries are never redirected to the agent, with only the
    uid/gid RETURNs of ISTIO_OUTPUT doing it (Istio >= 1.25 has no UDP RETURN per
    proxy uid/gid in ISTIO_OUTPUT_DNS).  A local resolver (dnsmasq-like, on
    127.0.0.1:53) listed in resolv.conf: the app's query goes to the agent, the
    agent's (uid 1337) reaches the resolver."""
    client = L.add_pod("client")
    resolv = os.path.join(L.dir, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver 127.0.0.1\n")
    init(L, client, DEFAULT + ["--redirect-dns"], env={"OUTRIGGER_INIT_RESOLV_CONF": resolv})
    nat = client.run(["iptables-save", "-t", "nat"]).stdout
    chain = [l for l in nat.splitlines() if l.startswith("-A ISTIO_OUTPUT_DNS ")]
    assert len(chain) == 2 and all("-j REDIRECT --to-ports 15053" in l for l in chain), chain
    serve(L, client, user=None, udp=[53])      # the resolver (root: port 53)
    serve(L, client, udp=[15053])              # the agent, uid 1337
    assert udp(L, client, "127.0.0.1", 53) == "DNS port=15053 query"
    assert udp(L, client, "127.0.0.1", 53, user=CAPTURE_UID) == "DNS port=53 query"
    assert udp(L, client, "127.0.0.1", 53, user=(4242, CAPTURE_UID)) == "DNS port=53 query"


# ---------------------------------------------------------------- exclusions

def test_exclusions_bypass(L):
    """-x CIDRs, -o ports, -q ports and an inbound -b list, with real connections."""
    client, server = L.add_pod("client"), L.add_pod("server")
    serve(L, server, user="nobody", app=[8080, 9090])
    L.add_service("198.19.0.10", 80, server, 8080)
    capture_proxy(L, client)
    direct8080 = "APP port=8080 peer=%s" % client.ip4

    # -x: the server's address goes straight through, the VIP is still captured
    init(L, client, ["-i", "*", "-x", server.ip4 + "/32"])
    assert connect(L, client, server.ip4, 8080) == direct8080
    assert connect(L, client, "198.19.0.10", 80).startswith("CAPTURED port=15001 orig=198.19.0.10:80")
    init(L, client, ["-i", "*", "-x", server.ip4 + "/32", "--cleanup-only"])

    # -o: port 8080 never captured, 9090 is
    init(L, client, ["-i", "*", "-o", "8080"])
    assert connect(L, client, server.ip4, 8080) == direct8080
    assert connect(L, client, server.ip4, 9090).startswith("CAPTURED port=15001")
    init(L, client, ["-i", "*", "-o", "8080", "--cleanup-only"])

    # -i CIDR list: only those destinations
    init(L, client, ["-i", "198.19.0.0/16"])
    assert connect(L, client, server.ip4, 8080) == direct8080
    assert connect(L, client, "198.19.0.10", 80).startswith("CAPTURED port=15001")
    init(L, client, ["-i", "198.19.0.0/16", "--cleanup-only"])

    # -q without -i: only that port, whatever the destination
    init(L, client, ["-q", "9090"])
    assert connect(L, client, server.ip4, 9090).startswith("CAPTURED port=15001 orig=%s:9090" % server.ip4)
    assert connect(L, client, server.ip4, 8080) == direct8080
    init(L, client, ["-q", "9090", "--cleanup-only"])

    # inbound -b list on the server: 8080 captured, 9090 not
    init(L, server, ["-b", "8080"])
    capture_proxy(L, server)
    assert connect(L, client, server.ip4, 8080).startswith("CAPTURED port=15006 orig=%s:8080" % server.ip4)
    assert connect(L, client, server.ip4, 9090) == "APP port=9090 peer=%s" % client.ip4


def test_exclude_interface(L):
    """-c: traffic through that NIC is captured in neither direction."""
    client, server = L.add_pod("client"), L.add_pod("server")
    serve(L, server, user="nobody", app=[8080])
    init(L, client, DEFAULT + ["-c", "eth0"])
    capture_proxy(L, client)
    assert connect(L, client, server.ip4, 8080) == "APP port=8080 peer=%s" % client.ip4


# ---------------------------------------------------------------- cleanup, idempotency

def test_cleanup_restores_and_apply_is_idempotent(L):
    """--cleanup-only puts iptables-save (both families) back as it was; a second
    identical apply changes nothing; a different one needs --reconcile."""
    pod = L.add_pod("pod", ipv4=True, ipv6=True)
    # rules that belong to someone else and must survive
    pod.run(["iptables", "-t", "nat", "-A", "OUTPUT", "-d", "198.18.200.1/32", "-j", "RETURN"])
    pod.run(["iptables", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "1", "-j", "ACCEPT"])
    pod.run(["ip6tables", "-t", "nat", "-A", "OUTPUT", "-d", "fd00:198:18::200/128", "-j", "RETURN"])
    before4, before6 = norm(save(pod)), norm(save(pod, v6=True))
    rules_before = pod.run(["ip", "rule", "list"]).stdout
    args = DEFAULT + ["--dual-stack", "--redirect-dns", "--capture-all-dns", "--drop-invalid",
                      "-c", "eth9", "-k", "eth8", "-o", "3306", "-q", "9000",
                      "-x", "10.0.0.0/8,fd00:1::/64"]
    for extra in ([], ["-m", "TPROXY"]):
        init(L, pod, args + extra)
        first4, first6 = norm(save(pod)), norm(save(pod, v6=True))
        assert first4 != before4 and first6 != before6
        r = init(L, pod, args + extra)
        assert "already installed and identical" in r.stderr
        assert norm(save(pod)) == first4 and norm(save(pod, v6=True)) == first6
        init(L, pod, args + extra + ["--cleanup-only"])
        assert norm(save(pod)) == before4
        assert norm(save(pod, v6=True)) == before6
        assert pod.run(["ip", "rule", "list"]).stdout == rules_before

    # different flags over installed rules: refused without --reconcile (nothing
    # changed), replaced with it; and a cleanup with other flags still removes ours
    init(L, pod, DEFAULT)
    installed = norm(save(pod))
    r = init(L, pod, ["-i", "*"], check=False)
    assert r.returncode == 1 and "--reconcile" in r.stderr
    assert norm(save(pod)) == installed
    init(L, pod, ["-i", "*", "--reconcile"])
    fresh = norm(save(pod))
    assert "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT" not in "\n".join(fresh["*nat"])
    init(L, pod, ["--cleanup-only"])
    assert istio_chains(pod) == [] and istio_chains(pod, v6=True) == []
    assert norm(save(pod))["*nat"] == before4["*nat"]


def test_failed_ipv6_apply_leaves_nothing(L):
    """When ip6tables-restore fails after IPv4 was applied, IPv4 is removed again."""
    pod = L.add_pod("pod", ipv6=True)
    fake = os.path.join(L.dir, "fakebin")
    os.makedirs(fake, exist_ok=True)
    for name in ("ip6tables-nft-restore", "ip6tables-restore"):
        with open(os.path.join(fake, name), "w") as f:
            f.write("#!/bin/sh\ncat >/dev/null\necho 'fake ip6tables-restore failure' >&2\nexit 1\n")
        os.chmod(os.path.join(fake, name), 0o755)
    r = init(L, pod, DEFAULT + ["--dual-stack"], check=False,
             env={"PATH": fake + ":" + os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")})
    assert r.returncode == 1
    assert "fake ip6tables-restore failure" in r.stderr
    assert istio_chains(pod) == [] and istio_chains(pod, v6=True) == []


# ---------------------------------------------------------------- backends

def test_native_nftables(L):
    """--native-nftables: one inet transaction; traffic captured; re-apply is stable;
    cleanup deletes the tables."""
    client, server = L.add_pod("client"), L.add_pod("server")
    serve(L, server, user="nobody", app=[8080])
    init(L, client, DEFAULT + ["--native-nftables"])
    ruleset = client.run(["nft", "list", "ruleset"]).stdout
    assert "table inet istio-proxy-nat" in ruleset
    assert istio_chains(client) == []  # nothing in the iptables tables
    capture_proxy(L, client)
    assert connect(L, client, server.ip4, 8080) == \
        "CAPTURED port=15001 orig=%s:8080 peer=%s" % (server.ip4, client.ip4)
    strip = lambda s: re.sub(r"counter packets \d+ bytes \d+", "counter", s)  # noqa: E731
    init(L, client, DEFAULT + ["--native-nftables"])
    assert strip(client.run(["nft", "list", "ruleset"]).stdout) == strip(
        client.run(["nft", "list", "ruleset"]).stdout)
    assert strip(client.run(["nft", "list", "ruleset"]).stdout).count("istio-output") == \
        strip(ruleset).count("istio-output")
    init(L, client, ["--native-nftables", "--cleanup-only"])
    assert "istio-proxy" not in client.run(["nft", "list", "ruleset"]).stdout


def test_legacy_binary(L):
    """--force-iptables-binary legacy programs iptables-legacy; detection picks legacy
    by itself when legacy already holds rules."""
    client, server = L.add_pod("client"), L.add_pod("server")
    serve(L, server, user="nobody", app=[8080])
    init(L, client, DEFAULT + ["--force-iptables-binary", "legacy"])
    assert "ISTIO_OUTPUT" in client.run(["iptables-legacy-save"]).stdout
    capture_proxy(L, client)
    assert connect(L, client, server.ip4, 8080).startswith("CAPTURED port=15001")
    init(L, client, ["--force-iptables-binary=legacy", "--cleanup-only"])
    assert "ISTIO" not in client.run(["iptables-legacy-save"]).stdout

    client.run(["iptables-legacy", "-t", "filter", "-A", "INPUT", "-p", "tcp", "--dport", "1",
                "-j", "ACCEPT"])
    r = init(L, client, DEFAULT)
    assert "using iptables-legacy" in r.stderr
    assert "ISTIO_OUTPUT" in client.run(["iptables-legacy-save"]).stdout


# ---------------------------------------------------------------- validation

def test_run_validation(L):
    """--run-validation as uid 1337 passes with the rules, exits 126 without them."""
    with_rules, without = L.add_pod("ok"), L.add_pod("bare")
    init(L, with_rules, DEFAULT)
    r = init(L, with_rules, ["--run-validation", "--skip-rule-apply"], user=CAPTURE_UID)
    assert "validation passed" in r.stderr
    t0 = time.monotonic()
    r = init(L, without, ["--run-validation", "--skip-rule-apply", "--probe-timeout", "2s"],
             user=CAPTURE_UID, check=False)
    assert r.returncode == 126, r.stderr
    assert "validation failed" in r.stderr
    assert 1.5 < time.monotonic() - t0 < 15
    # apply then validate in one run (root applies; root is not redirected: 126)
    r = init(L, without, DEFAULT + ["--run-validation", "--probe-timeout", "1500ms"], check=False)
    assert r.returncode == 126


def test_run_validation_ipv6(L):
    pod = L.add_pod("pod", ipv4=False, ipv6=True)
    init(L, pod, DEFAULT)
    r = init(L, pod, ["--run-validation", "--skip-rule-apply"], user=CAPTURE_UID)
    assert "[::6]" in r.stderr and "validation passed" in r.stderr


# ---------------------------------------------------------------- CLI

def test_invalid_input_touches_nothing(L):
    """Bad values: exit 2, the flag and the value named, no rule installed."""
    pod = L.add_pod("pod")
    cases = [
        (["-p", "0"], "-p/--envoy-port", '"0"'),
        (["-i", "10.0.0.0"], "-i/--istio-service-cidr", '"10.0.0.0"'),
        (["-x", "*"], "-x/--istio-service-exclude-cidr", '"*"'),
        (["-m", "tproxy"], "-m/--istio-inbound-interception-mode", '"tproxy"'),
        (["-u", "istio"], "-u/--proxy-uid", '"istio"'),
        (["--probe-timeout=5"], "--probe-timeout", '"5"'),
        (["--bogus"], "unknown flag", "bogus"),
    ]
    for args, flag, value in cases:
        r = init(L, pod, DEFAULT + args, check=False)
        assert r.returncode == 2, (args, r.stderr)
        assert flag in r.stderr and value in r.stderr, (args, r.stderr)
    r = init(L, pod, ["-i", "*"], check=False, env={"INBOUND_CAPTURE_PORT": "x"})
    assert r.returncode == 2 and "INBOUND_CAPTURE_PORT" in r.stderr
    assert istio_chains(pod) == []


def test_dry_run_prints_both_families(L, repo):
    pod = L.add_pod("pod", ipv4=False, ipv6=True)
    r = init(L, pod, DEFAULT + ["--dry-run"])
    v4, sep, v6 = r.stdout.partition("# ip6tables-restore\n")
    assert sep and "-s 127.0.0.6/32" in v4 and "-s ::6/128" in v6
    with open(os.path.join(repo, "tests", "unit", "golden", "istio-init-default.golden")) as f:
        assert v4 == f.read()
    assert istio_chains(pod) == [] and istio_chains(pod, v6=True) == []
    r = init(L, pod, ["--help"])
    assert "--istio-service-cidr" in r.stdout and "ISTIO_OUTBOUND_OWNER_GROUPS" in r.stdout


# ---------------------------------------------------------------- CNI-style invocation

def test_network_namespace_flag(L):
    """--network-namespace (how istio-cni runs the tool from outside the pod): the rules land
    in the named namespace only, and --cleanup-only there removes them. Run from a second pod,
    so that a failure to enter the namespace could only touch that throwaway pod, never the
    host."""
    outer, target = L.add_pod("outer"), L.add_pod("target")
    path = "/run/netns/%s" % target.netns
    init(L, outer, ["--network-namespace", path, "--cni-mode"] + DEFAULT)
    assert "ISTIO_OUTPUT" in istio_chains(target)
    assert istio_chains(outer) == []
    init(L, outer, ["--network-namespace", path, "--cleanup-only"])
    assert istio_chains(target) == []
    r = init(L, outer, ["--network-namespace", "/run/netns/does-not-exist"] + DEFAULT, check=False)
    assert r.returncode != 0 and "does-not-exist" in r.stderr
    assert istio_chains(outer) == []
