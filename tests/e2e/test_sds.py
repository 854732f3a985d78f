"""The SDS certificate source end to end (issue 9): the real binary in the pod lab with
identity.sdsSocket, against tests/lab/sds_server.py (python3-grpcio, the REAL Envoy API protos
of @grpc/grpc-js-xds) serving "default" and "ROOTCA" as pilot-agent does, with certificates
from the openssl CLI (tests/lab/certs.py).

The certificate in use is read from the proxy's stats (server.cert_updates,
server.cert_expiry_timestamp) and its log line, whose serial is compared with what
`openssl x509 -serial` says of the file served.
"""
import json
import os
import subprocess
import time

import pytest

from lab import wait_for

import certs  # noqa: E402
import sds_server  # noqa: E402

ID = certs.spiffe_id("demo", "client")


@pytest.fixture
def sds(pod_lab):
    if sds_server.envoy_deps() is None:
        pytest.fail("the Envoy protos of @grpc/grpc-js-xds are missing: run packaging/install-deps.sh")
    d = os.path.join(pod_lab.dir, "sds")
    os.makedirs(d)
    os.chmod(d, 0o755)
    ca = certs.CA(os.path.join(d, "ca"))
    srv = None

    class Env:
        pass

    e = Env()
    e.dir, e.ca, e.sock = d, ca, os.path.join(d, "agent.sock")

    def leaf(name, **kw):
        out = os.path.join(d, name)
        ca.issue(out, kw.pop("spiffe", ID), **kw)
        for f in os.listdir(out):
            os.chmod(os.path.join(out, f), 0o644)
        os.chmod(out, 0o755)
        return out

    def server(cert_dir, form="inline_bytes"):
        nonlocal srv
        srv = sds_server.SdsServer(e.sock, cert_dir, form=form)
        srv.start()
        return srv

    e.leaf, e.server = leaf, server
    yield e
    if srv:
        srv.stop()


def serial(cert_dir):
    """The leaf's serial as openssl prints it (hex, upper case)."""
    out = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in",
                          os.path.join(cert_dir, "cert-chain.pem")],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1]


def start(pod_lab, e, **kw):
    pod = pod_lab.add_pod("client")
    env = {"POD_NAME": "client-1", "POD_NAMESPACE": "demo", "INSTANCE_IP": pod.ip}
    sc = pod.start_sidecar(config={"identity": {"sdsSocket": e.sock}}, env=env, **kw)
    return pod, sc


def wait_stat(sc, name, value, timeout=10):
    wait_for(lambda: sc.stats().get(name) == value, timeout=timeout, interval=0.1,
             what="%s == %s (now %s)" % (name, value, sc.stats().get(name)))


def certs_serial(sc):
    """The serial of the leaf new connections serve with, from /certs (Envoy's shape)."""
    code, body, _ = sc._get("http://127.0.0.1:15000/certs")
    assert code == 200, body
    d = json.loads(body)
    assert d["source"].startswith("sds unix:"), d
    if not d["certificates"]:
        return None
    c = d["certificates"][0]
    assert c["identity"] == ID
    return c["cert_chain"][0]["serial_number"].lower()


def served_line(sc, cert_dir):
    want = "serial %s" % serial(cert_dir)
    for line in sc.log().splitlines():
        if "certificate " + ID in line and "from sds unix:" in line and \
           want.lower() in line.lower():
            return line
    return None


@pytest.mark.parametrize("form", ["inline_bytes", "inline_string", "filename"])
def test_sds_certificate_then_rotation(pod_lab, outrigger_bin, init_bin, sds, form):
    """The first response's certificate serves (counted, logged with its serial; the request
    carried Envoy's node id and both names); a pushed rotation of "default" alone (as
    pilot-agent pushes it) replaces it without a restart; every response is ACKed with its
    version and nonce; the same secrets again are ACKed but publish nothing."""
    a = sds.leaf("a")
    srv = sds.server(a, form=form)
    pod, sc = start(pod_lab, sds)
    wait_stat(sc, "server.cert_updates", 1)
    assert served_line(sc, a), sc.log()[-3000:]
    assert certs_serial(sc) == serial(a).lower()
    first = srv.requests[0]
    assert first.node.id == "sidecar~%s~client-1.demo~demo.svc.cluster.local" % pod.ip
    assert list(first.resource_names) == ["default", "ROOTCA"]
    assert first.type_url == sds_server.SECRET_TYPE
    assert first.version_info == "" and first.response_nonce == ""
    wait_for(lambda: srv.acks() == [("1", "n1")], timeout=5, what="ACK of version 1")
    s = sc.stats()
    assert s["server.sds_updates"] == 1 and s["server.sds_rejected"] == 0
    assert s["server.sds_connected"] == 1

    b = sds.leaf("b")
    assert serial(b) != serial(a)
    srv.rotate(b, roots=False)
    wait_stat(sc, "server.cert_updates", 2)
    assert served_line(sc, b), sc.log()[-3000:]
    assert certs_serial(sc) == serial(b).lower()
    wait_for(lambda: ("2", "n2") in srv.acks(), timeout=5, what="ACK of version 2")
    assert not srv.nacks()

    srv.rotate(b)            # nothing changed
    wait_stat(sc, "server.sds_updates", 3)
    time.sleep(0.5)
    assert sc.stats()["server.cert_updates"] == 2
    assert sc.alive()


def test_sds_bad_secrets_are_nacked_and_the_running_one_serves(pod_lab, outrigger_bin, init_bin, sds):
    """Garbage bytes, garbage PEM, an expired leaf, a key that does not match, a leaf of another
    root: each response is NACKed (error_detail says why, version_info stays the last good
    one, the nonce is the response's), counted in sds_rejected and logged; the certificate in
    use does not change; a good rotation after them still applies on the same stream."""
    a = sds.leaf("a")
    srv = sds.server(a)
    _, sc = start(pod_lab, sds)
    wait_stat(sc, "server.cert_updates", 1)
    expiry = sc.stats()["server.cert_expiry_timestamp"]
    C = sds_server.classes()

    garbage = C["Secret"](name="default")
    garbage.tls_certificate.certificate_chain.inline_bytes = b"-----BEGIN CERTIFICATE-----\nnope\n"
    garbage.tls_certificate.private_key.inline_bytes = b"nope"
    expired = sds.leaf("expired", days=-1)
    other_key = sds.leaf("otherkey")
    mismatched_secret = sds_server.cert_secret(a)
    with open(os.path.join(other_key, "key.pem"), "rb") as f:
        mismatched_secret.tls_certificate.private_key.inline_bytes = f.read()
    other_ca = certs.CA(os.path.join(sds.dir, "otherca"))
    untrusted = os.path.join(sds.dir, "untrusted")
    other_ca.issue(untrusted, ID)

    cases = [
        ("raw garbage", lambda: srv.push_raw(b"\xff\xff\xff\xff\x0f"), "does not decode"),
        ("garbage PEM", lambda: srv.push_secrets([garbage]), "holds no PEM"),
        ("expired", lambda: srv.push_secrets([sds_server.cert_secret(expired)]), "expired"),
        ("key mismatch", lambda: srv.push_secrets([mismatched_secret]), "key does not match"),
        ("untrusted", lambda: srv.push_secrets([sds_server.cert_secret(untrusted)]), "does not chain"),
    ]
    checked = 0          # refusals by certbundle_from_pem: also in server.cert_refused
    for i, (what, push, why) in enumerate(cases, 1):
        push()
        wait_for(lambda: len(srv.nacks()) == i, timeout=5, what="NACK of %s" % what)
        nack = [r for r in srv.requests if r.HasField("error_detail")][-1]
        assert why.lower() in nack.error_detail.message.lower(), (what, nack.error_detail.message)
        assert nack.version_info == "1", (what, nack.version_info)
        assert nack.error_detail.code == 3
        if what != "raw garbage":
            assert nack.response_nonce == srv.sent[-1][0], what
        wait_stat(sc, "server.sds_rejected", i)
        s = sc.stats()
        assert s["server.cert_updates"] == 1, what
        assert s["server.cert_expiry_timestamp"] == expiry, what
        assert certs_serial(sc) == serial(a).lower(), what
        checked += what in ("expired", "key mismatch", "untrusted")
        assert s["server.cert_refused"] == checked, what
    log = sc.log()
    assert log.count("refused") >= len(cases), log[-4000:]
    assert "the running certificate serves on" in log

    b = sds.leaf("b")
    srv.rotate(b, roots=False)
    wait_stat(sc, "server.cert_updates", 2)
    assert served_line(sc, b)
    assert sc.alive() and sc.health() == 200


def test_sds_agent_vanishes_and_comes_back(pod_lab, outrigger_bin, init_bin, sds):
    """The agent goes away: the proxy logs the outage once, counts failed attempts, keeps its
    certificate and its readiness; when the agent is back on the same socket the proxy
    reconnects by itself (its first request carries the version it applied), and a rotation
    served then applies."""
    a = sds.leaf("a")
    srv = sds.server(a)
    _, sc = start(pod_lab, sds)
    wait_stat(sc, "server.cert_updates", 1)
    srv.stop()
    wait_stat(sc, "server.sds_connected", 0)
    wait_for(lambda: sc.stats()["server.sds_connect_fail"] >= 2, timeout=15, interval=0.2,
             what="reconnect attempts while the agent is away")
    assert sc.health() == 200
    assert sc.stats()["server.cert_updates"] == 1
    assert certs_serial(sc) == serial(a).lower()
    assert sc.log().count("stream ended") == 1, sc.log()[-3000:]

    b = sds.leaf("b")
    srv2 = sds.server(b)
    wait_stat(sc, "server.cert_updates", 2, timeout=30)
    assert served_line(sc, b)
    assert certs_serial(sc) == serial(b).lower()
    first = srv2.requests[0]
    assert first.version_info == "1", "the reconnect's first request names the version applied"
    assert first.node.id.startswith("sidecar~")
    assert sc.stats()["server.sds_connected"] == 1
    assert "connected again" in sc.log()
    assert sc.log().count("stream ended") == 1


def test_sds_agent_not_there_yet_at_start(pod_lab, outrigger_bin, init_bin, sds):
    """pilot-agent starts its SDS server after the proxy may: with no socket yet the proxy
    starts (plaintext only, no certificate), logs the outage once and retries with backoff;
    when the socket appears the certificate arrives without a restart."""
    a = sds.leaf("a")
    _, sc = start(pod_lab, sds, ready=False)
    wait_for(lambda: sc.stats()["server.sds_connect_fail"] >= 2, timeout=15, interval=0.2,
             what="retries while there is no agent")
    assert sc.stats()["server.cert_updates"] == 0
    assert sc.health() == 503, "not ready before the first certificate"
    assert certs_serial(sc) is None
    assert sc.log().count("stream ended") == 1, sc.log()[-3000:]
    assert "no certificate yet" in sc.log()
    sds.server(a)
    wait_stat(sc, "server.cert_updates", 1, timeout=30)
    assert certs_serial(sc) == serial(a).lower()
    assert sc.stats()["server.sds_connected"] == 1
    assert sc.health() == 200
