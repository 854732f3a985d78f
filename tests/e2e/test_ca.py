"""The Istio CA client end to end (issue 9, "the Istio CA"): a sidecar whose
identity.caAddress is a test CA on a real gRPC implementation
(tests/lab/istio_ca.py, python3-grpcio) in the same pod, over TLS with the
CA's root file and a token file. It gets its certificate with the right CSR
and headers, rotates every few seconds with short-lived certificates while
traffic flows, and survives a CA that refuses, answers garbage or hangs:
logged, counted, the old certificate serving on.

    app(client pod) -> VIP -> client outrigger :15001 -> server pod -> echo
    client outrigger --gRPC/TLS--> istio_ca.py 127.0.0.1:<port> (client pod)
"""
import json
import os
import time

import pytest

import lab
from lab import wait_for

VIP = "198.19.0.10"
SPIFFE = "spiffe://cluster.local/ns/default/sa/app"
TOKEN = "tok-%d" % os.getpid()


class CA:
    def __init__(self, pod, d, plaintext=False, cluster_id="Kubernetes"):
        self.pod, self.dir = pod, d
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o755)
        argv = [lab.PYTHON, os.path.join(lab.HERE, "istio_ca.py"), "--dir", d, "--listen", "127.0.0.1:0",
                "--token", TOKEN, "--cluster-id", cluster_id]
        if plaintext:
            argv.append("--plaintext")
        self.log = open(os.path.join(pod.lab.dir, "istio-ca.log"), "wb")
        self.proc = pod.popen(argv, user="root", stdout=self.log, stderr=self.log)
        wait_for(lambda: os.path.exists(os.path.join(d, "port")) or self.proc.poll() is not None,
                 timeout=30, what="the test CA listening")
        assert self.proc.poll() is None, open(self.log.name).read()
        with open(os.path.join(d, "port")) as f:
            self.port = int(f.read())
        self.root = os.path.join(d, "root-cert.pem")
        os.chmod(self.root, 0o644)

    def set(self, **ctl):
        with open(os.path.join(self.dir, "control.json.tmp"), "w") as f:
            json.dump(ctl, f)
        os.rename(os.path.join(self.dir, "control.json.tmp"), os.path.join(self.dir, "control.json"))

    def requests(self):
        try:
            with open(os.path.join(self.dir, "requests.jsonl")) as f:
                return [json.loads(line) for line in f if line.strip()]
        except OSError:
            return []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def ca_lab(pod_lab, outrigger_bin, init_bin, monkeypatch):
    """Pods client (with the CA) and server (echo behind VIP:80); the client sidecar is
    started by the test (start(...)) with the CA's address, root and token."""
    monkeypatch.setenv("POD_NAMESPACE", "default")
    monkeypatch.setenv("SERVICE_ACCOUNT", "app")
    L = pod_lab
    client = L.add_pod("client")
    server = L.add_pod("server")
    server.app(["echo", "--port", 8080])
    L.add_service(VIP, 80, server, 8080)
    cas = []

    class Ctx:
        pass
    ctx = Ctx()
    ctx.lab, ctx.client = L, client

    def make_ca(**kw):
        ca = CA(client, os.path.join(L.dir, "ca%d" % len(cas)), **kw)
        cas.append(ca)
        return ca
    ctx.make_ca = make_ca
    tok = os.path.join(L.dir, "istio-token")
    with open(tok, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(tok, 0o644)
    ctx.token_file = tok

    def start(ca, ttl="86400s", address=None, env=None):
        cfg = {"identity": {"caAddress": address or "127.0.0.1:%d" % ca.port, "caRootCert": ca.root,
                            "tokenFile": tok, "clusterId": "Kubernetes", "certTTL": ttl}}
        return client.start_sidecar(config=cfg, env=env)
    ctx.start = start
    yield ctx
    for ca in cas:
        ca.stop()


def wait_stat(sc, name, pred, timeout, what):
    wait_for(lambda: pred(sc.stats().get(name, 0)), timeout=timeout, interval=0.2, what=what)


def test_first_certificate_csr_and_headers(ca_lab):
    """The sidecar gets its certificate from the CA: one request with the Bearer token and
    clusterid headers, a CSR with only the critical SPIFFE URI SAN, an empty subject and
    an ECDSA P-256 key, validity_duration from identity.certTTL; the certificate is
    published (server.cert_updates) and logged with its identity."""
    ca = ca_lab.make_ca()
    sc = ca_lab.start(ca, ttl="7200s")
    wait_stat(sc, "server.cert_updates", lambda v: v >= 1, 20, "the first certificate")
    st = sc.stats()
    assert st["server.ca_requests"] >= 1 and st["server.ca_failures"] == 0, st
    assert st["server.cert_expiry_timestamp"] > time.time() + 7000, st
    reqs = ca.requests()
    assert reqs, "the CA recorded no request"
    r = reqs[0]
    assert r["metadata"]["authorization"] == "Bearer " + TOKEN, r
    assert r["metadata"]["clusterid"] == "Kubernetes", r
    assert r["validity_duration"] == 7200, r
    csr = r["csr"]
    assert csr["signature_valid"] and csr["uris"] == [SPIFFE] and csr["dns"] == [], csr
    assert csr["san_critical"] is True and csr["subject"] == "" and csr["n_extensions"] == 1, csr
    assert csr["key"] == "_EllipticCurvePublicKey secp256r1" or csr["key"].endswith("secp256r1"), csr
    assert csr["hash"] == "sha256", csr
    log = sc.log()
    assert "certificate %s from istio-ca 127.0.0.1:%d" % (SPIFFE, ca.port) in log, log[-3000:]
    # /certs names the CA as the source and shows the certificate's SPIFFE ID.
    certs = json.dumps(sc.certs())
    assert SPIFFE in certs and "istio-ca 127.0.0.1:%d" % ca.port in certs, certs[:2000]


def test_rotation_under_traffic(ca_lab):
    """Certificates of 4 s rotate at half life (about every 2 s) while connections flow
    through the sidecar: at least 4 new certificates in 12 s, no failed connection, and
    each rotation is a new key (a new CSR)."""
    ca = ca_lab.make_ca()
    ca.set(mode="ok", ttl=4)
    sc = ca_lab.start(ca)
    wait_stat(sc, "server.cert_updates", lambda v: v >= 1, 20, "the first certificate")
    before = sc.stats()["server.cert_updates"]
    ok = failed = 0
    end = time.monotonic() + 12
    while time.monotonic() < end:
        r, out = ca_lab.client.client(["echo-client", "--host", VIP, "--port", 80, "--count", 20,
                                       "--timeout", 10])
        assert out is not None, r.stderr
        ok += out["ok"]
        failed += out["failed"]
        assert out["failed"] == 0, out["errors"][:5]
    st = sc.stats()
    assert st["server.cert_updates"] - before >= 4, st
    assert st["server.ca_failures"] == 0, st
    assert ok >= 40 and failed == 0
    keys = [r["csr"]["key_sha256"] for r in ca.requests()]
    assert len(keys) >= 5 and len(set(keys)) == len(keys), "a key was reused: %s" % keys
    assert sc.alive()


@pytest.mark.parametrize("mode,expect_log", [
    ("refuse", "UNAUTHENTICATED: request authenticate failure"),
    ("garbage", "the CA answered garbage"),
    ("empty", "an empty cert_chain"),
    ("bad-chain", "the CA's certificate is refused"),
])
def test_bad_ca_keeps_old_certificate(ca_lab, mode, expect_log):
    """A CA that refuses, answers garbage, an empty chain or a chain that does not verify, at
    rotation time: each failure is logged and counted, retried with backoff (more
    requests follow, spaced out), the certificate in use stays (same expiry), the proxy
    keeps serving; once the CA is good again the next retry gets a new certificate."""
    ca = ca_lab.make_ca()
    ca.set(mode="ok", ttl=6)
    sc = ca_lab.start(ca)
    wait_stat(sc, "server.cert_updates", lambda v: v >= 1, 20, "the first certificate")
    ca.set(mode=mode, ttl=6)
    expiry = sc.stats()["server.cert_expiry_timestamp"]
    updates = sc.stats()["server.cert_updates"]
    wait_stat(sc, "server.ca_failures", lambda v: v >= 2, 20, "two failed attempts")
    st = sc.stats()
    assert st["server.cert_updates"] == updates and st["server.cert_expiry_timestamp"] == expiry, st
    assert expect_log in sc.log(), sc.log()[-3000:]
    assert "retrying in" in sc.log()
    r, out = ca_lab.client.client(["echo-client", "--host", VIP, "--port", 80, "--count", 3, "--timeout", 10])
    assert out and out["ok"] == 3, out
    ca.set(mode="ok", ttl=3600)
    wait_stat(sc, "server.cert_updates", lambda v: v > updates, 20, "a certificate after the CA recovered")
    assert sc.stats()["server.cert_expiry_timestamp"] > expiry
    assert sc.alive()


def test_new_root_from_the_ca_is_trusted(ca_lab):
    """A chain from a new root with that root last (a root rotation) is accepted, as
    pilot-agent trusts the root an authenticated CA sends: the TLS channel to the CA was
    verified with the root file."""
    ca = ca_lab.make_ca()
    sc = ca_lab.start(ca, ttl="7200s")
    wait_stat(sc, "server.cert_updates", lambda v: v >= 1, 20, "the first certificate")
    ca.set(mode="new-root", ttl=6)
    sc.stop()
    sc = ca_lab.start(ca)
    wait_stat(sc, "server.cert_updates", lambda v: v >= 1, 20, "a certificate from the new root")
    assert sc.stats()["server.ca_failures"] == 0


def test_hanging_ca_hits_the_deadline(ca_lab):
    """A CA that never answers: the call ends at its deadline (DEADLINE_EXCEEDED, logged
    and counted), the proxy stays healthy and keeps its certificate."""
    ca = ca_lab.make_ca()
    ca.set(mode="ok", ttl=6)
    sc = ca_lab.start(ca)
    wait_stat(sc, "server.cert_updates", lambda v: v >= 1, 20, "the first certificate")
    ca.set(mode="hang")
    updates = sc.stats()["server.cert_updates"]
    wait_stat(sc, "server.ca_failures", lambda v: v >= 1, 30, "the deadline")
    assert "DEADLINE_EXCEEDED" in sc.log(), sc.log()[-3000:]
    assert sc.stats()["server.cert_updates"] == updates
    assert sc.health() == 200
    ca.set(mode="ok", ttl=3600)
    wait_stat(sc, "server.cert_updates", lambda v: v > updates, 30, "a certificate after the hang")


def test_bad_token_and_unreachable_ca(ca_lab):
    """A token the CA does not accept is refused (UNAUTHENTICATED) and retried; the token
    file is re-read at each attempt, so a rotated token is picked up. A CA address where
    nothing listens fails UNAVAILABLE, counted, without harm."""
    ca = ca_lab.make_ca()
    with open(ca_lab.token_file, "w") as f:
        f.write("not-the-token\n")
    sc = ca_lab.start(ca)
    wait_stat(sc, "server.ca_failures", lambda v: v >= 1, 20, "a refused token")
    assert "UNAUTHENTICATED" in sc.log()
    assert sc.stats()["server.cert_updates"] == 0
    with open(ca_lab.token_file, "w") as f:
        f.write(TOKEN + "\n")
    wait_stat(sc, "server.cert_updates", lambda v: v >= 1, 20, "the certificate with the rotated token")
    assert any(r.get("refused") for r in ca.requests())
    sc.stop()
    sc2 = ca_lab.start(ca, address="127.0.0.1:1")
    wait_stat(sc2, "server.ca_failures", lambda v: v >= 2, 20, "connect failures")
    assert "UNAVAILABLE" in sc2.log()
    assert sc2.health() == 200


def test_server_name_checked(ca_lab):
    """The CA's certificate must carry the name pilot-agent would check: ISTIOD_SAN when
    set (the test CA's has istiod.istio-system.svc), else the address's host (127.0.0.1:
    an IP SAN). A name it does not carry fails the TLS handshake: no certificate."""
    ca = ca_lab.make_ca()
    sc = ca_lab.start(ca, env={"ISTIOD_SAN": "istiod.istio-system.svc"})
    wait_stat(sc, "server.cert_updates", lambda v: v >= 1, 20, "a certificate with ISTIOD_SAN")
    assert "server name istiod.istio-system.svc" in sc.log()
    sc.stop()
    sc = ca_lab.start(ca, env={"ISTIOD_SAN": "istiod.other-ns.svc"})
    wait_stat(sc, "server.ca_failures", lambda v: v >= 2, 20, "refused server names")
    assert sc.stats()["server.cert_updates"] == 0
    assert "UNAVAILABLE: TLS handshake" in sc.log(), sc.log()[-2000:]


def test_plaintext_ca_for_tests(ca_lab):
    """caAddress http://host:port (tests only) speaks h2c to a plaintext CA, and says so."""
    ca = ca_lab.make_ca(plaintext=True)
    sc = ca_lab.start(ca, address="http://127.0.0.1:%d" % ca.port)
    wait_stat(sc, "server.cert_updates", lambda v: v >= 1, 20, "a certificate over h2c")
    assert "PLAINTEXT" in sc.log()
