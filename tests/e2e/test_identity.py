"""Identity and certificates end-to-end (issue 9, the files source and the development CA):
the real binary in the pod lab serves the certificate of --cert-dir / OUTRIGGER_CERT_DIR
(/certs, the log line, the metrics), picks up replaced files without a restart, refuses bad
files (garbage, a mismatched key, expired, another mesh's root) with a log line and
server.cert_refused while the previous certificate serves on; `outrigger ca init|issue`
writes files that the openssl CLI verifies and the proxy accepts.

Certificates come from tests/lab/certs.py (the openssl CLI: an implementation independent
of ours) unless the test is about our own CA.
"""
import datetime
import os
import re
import shutil
import subprocess
import time

import pytest

import certs
from lab import wait_for

ID_WEB = "spiffe://cluster.local/ns/default/sa/web"
ID_WEB2 = "spiffe://cluster.local/ns/default/sa/web2"
FILES = ("cert-chain.pem", "key.pem", "root-cert.pem")
PROXY_UID = 1337


def openssl(*args, check=True):
    r = subprocess.run(["/usr/bin/openssl"] + list(args), capture_output=True, text=True,
                       timeout=30)
    if check and r.returncode != 0:
        raise AssertionError("openssl %s -> %d: %s" % (" ".join(args), r.returncode, r.stderr))
    return r


def serial_of(d):
    """The leaf's serial as the openssl CLI prints it (hex), as a number."""
    out = openssl("x509", "-in", os.path.join(d, "cert-chain.pem"), "-noout", "-serial").stdout
    return int(out.strip().split("=", 1)[1], 16)


def not_after_of(d):
    """The leaf's notAfter as the openssl CLI prints it, in seconds since the epoch."""
    out = openssl("x509", "-in", os.path.join(d, "cert-chain.pem"), "-noout", "-enddate").stdout
    t = datetime.datetime.strptime(out.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y GMT")
    return int(t.replace(tzinfo=datetime.timezone.utc).timestamp())


def install(src, dst, names=("key.pem", "cert-chain.pem", "root-cert.pem")):
    """Replace dst's files with src's, each by rename (as a careful writer does), key first."""
    os.makedirs(dst, exist_ok=True)
    for n in names:
        tmp = os.path.join(dst, "." + n + ".tmp")
        shutil.copyfile(os.path.join(src, n), tmp)
        os.chmod(tmp, 0o644)   # the proxy runs as 1337
        os.replace(tmp, os.path.join(dst, n))


def leaf_serial(sc):
    c = sc.certs()["certificates"]
    return int(c[0]["cert_chain"][0]["serial_number"], 16) if c else None


def start(pod, **kw):
    return pod.start_sidecar(run_init=False, **kw)


@pytest.fixture
def pki(pod_lab):
    """A mesh root and a directory of good files for ID_WEB, in the lab's directory."""
    class P:
        pass
    p = P()
    p.dir = pod_lab.dir
    p.ca = certs.CA(os.path.join(pod_lab.dir, "ca"))
    p.good = p.ca.issue(os.path.join(pod_lab.dir, "good"), ID_WEB)
    p.live = os.path.join(pod_lab.dir, "live")
    install(p.good, p.live)
    return p


def test_cert_dir_serves_the_certificate(pod_lab, outrigger_bin, pki):
    """--cert-dir: the certificate from openssl's CA is served from the first snapshot:
    /certs shows its serial (as openssl prints it), SAN, dates and the root; the start-up
    log names the source and the identity; the metrics count one update and its notAfter."""
    pod = pod_lab.add_pod("p")
    sc = start(pod, proxy_args=["--cert-dir", pki.live])
    c = sc.certs()
    assert c["source"] == "files " + pki.live
    (one,) = c["certificates"]
    assert one["identity"] == ID_WEB
    leaf = one["cert_chain"][0]
    assert int(leaf["serial_number"], 16) == serial_of(pki.live)
    assert re.fullmatch(r"[0-9a-f]+", leaf["serial_number"])
    assert leaf["subject_alt_names"] == [{"uri": ID_WEB}]
    assert leaf["path"] == os.path.join(pki.live, "cert-chain.pem")
    days = (not_after_of(pki.live) - int(time.time())) // 86400
    assert leaf["days_until_expiration"] in (str(days), str(days + 1))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", leaf["expiration_time"])
    assert len(one["ca_cert"]) == 1
    log = sc.log()
    assert "certificate source: files %s" % pki.live in log
    assert "certificate %s from files %s (serial %s" % (ID_WEB, pki.live, leaf["serial_number"]) in log
    s = sc.stats()
    assert s["server.cert_updates"] == 1
    assert s["server.cert_refused"] == 0
    assert s["server.cert_expiry_timestamp"] == not_after_of(pki.live)
    assert sc.config_dump()["certificateSource"] == "files " + pki.live


def test_rotation_without_restart(pod_lab, outrigger_bin, pki):
    """Files replaced while the proxy runs (key first, then the chain): /certs shows the new
    serial and identity without a restart, and the half-way state (new key, old chain) is no
    refusal."""
    pod = pod_lab.add_pod("p")
    sc = start(pod, proxy_args=["--cert-dir", pki.live])
    first = leaf_serial(sc)
    pid = sc.proc.pid
    nxt = pki.ca.issue(os.path.join(pki.dir, "next"), ID_WEB2)
    install(nxt, pki.live)
    want = serial_of(nxt)
    assert want != first
    wait_for(lambda: leaf_serial(sc) == want, timeout=15, what="the new serial in /certs")
    assert sc.certs()["certificates"][0]["identity"] == ID_WEB2
    assert sc.proc.pid == pid and sc.alive()
    s = sc.stats()
    assert s["server.cert_updates"] == 2
    assert s["server.cert_refused"] == 0
    assert "certificate %s from files %s (serial %x" % (ID_WEB2, pki.live, want) in sc.log()


def bad_garbage(pki, d):
    shutil.copytree(pki.good, d)
    with open(os.path.join(d, "cert-chain.pem"), "w") as f:
        f.write("this is not a certificate\n")
    return "certificate chain: no PEM certificate"


def bad_mismatched_key(pki, d):
    other = pki.ca.issue(os.path.join(pki.dir, "other-leaf"), ID_WEB)
    shutil.copytree(pki.good, d)
    shutil.copyfile(os.path.join(other, "key.pem"), os.path.join(d, "key.pem"))
    return "the key does not match the certificate"


def bad_expired(pki, d):
    pki.ca.issue(d, ID_WEB, days=-1)
    return "expired"


def bad_other_root(pki, d):
    other = certs.CA(os.path.join(pki.dir, "other-ca"), name="another mesh")
    other.issue(d, ID_WEB)
    shutil.copyfile(pki.ca.cert, os.path.join(d, "root-cert.pem"))
    return "does not chain to the roots"


def bad_not_yet_valid(pki, d):
    pki.ca.issue(d, ID_WEB, not_before="+1d")
    return "not valid yet"


def bad_no_spiffe(pki, d):
    pki.ca.issue(d, None, extra_sans=("DNS:web.default.svc",))
    return "no URI SAN"


@pytest.mark.parametrize("make_bad", [bad_garbage, bad_mismatched_key, bad_expired, bad_other_root,
                                      bad_not_yet_valid, bad_no_spiffe],
                         ids=lambda f: f.__name__[4:])
def test_bad_files_refused_and_the_previous_serves_on(pod_lab, outrigger_bin, pki, make_bad):
    """Bad replacement files are refused once they have settled: one clear log line with the
    reason, server.cert_refused counted once, and the previous certificate still in /certs.
    Good files afterwards are loaded again."""
    pod = pod_lab.add_pod("p")
    sc = start(pod, proxy_args=["--cert-dir", pki.live])
    first = leaf_serial(sc)
    bad = os.path.join(pki.dir, "bad")
    why = make_bad(pki, bad)
    install(bad, pki.live)
    wait_for(lambda: sc.stats()["server.cert_refused"] >= 1, timeout=15,
             what="server.cert_refused after bad files")
    lines = [l for l in sc.log().splitlines() if "certificate files in %s refused" % pki.live in l]
    assert len(lines) == 1, lines
    assert why in lines[0] and "the running certificate serves on" in lines[0], lines[0]
    assert leaf_serial(sc) == first
    s = sc.stats()
    assert s["server.cert_refused"] == 1
    assert s["server.cert_updates"] == 1
    # Good files again: loaded.
    nxt = pki.ca.issue(os.path.join(pki.dir, "again"), ID_WEB2)
    install(nxt, pki.live)
    want = serial_of(nxt)
    wait_for(lambda: leaf_serial(sc) == want, timeout=15, what="good files loaded after a refusal")
    assert sc.stats()["server.cert_refused"] == 1


def test_outrigger_cert_dir_env_and_flag_precedence(pod_lab, outrigger_bin, pki):
    """OUTRIGGER_CERT_DIR names the directory; --cert-dir wins over it; without either (and
    without /etc/certs) the source is none and /certs lists no certificate."""
    pod = pod_lab.add_pod("p")
    sc = start(pod, env={"OUTRIGGER_CERT_DIR": pki.live})
    assert sc.certs()["source"] == "files " + pki.live
    assert leaf_serial(sc) == serial_of(pki.live)
    assert sc.stop() == 0
    other = pki.ca.issue(os.path.join(pki.dir, "flag"), ID_WEB2)
    sc = start(pod, env={"OUTRIGGER_CERT_DIR": pki.live}, proxy_args=["--cert-dir", other])
    assert sc.certs()["source"] == "files " + other
    assert leaf_serial(sc) == serial_of(other)
    assert sc.stop() == 0
    if not all(os.path.exists(os.path.join("/etc/certs", n)) for n in FILES):
        env = {k: "" for k in ("OUTRIGGER_CERT_DIR", "CA_ADDR")}
        sc = start(pod, env=env)
        c = sc.certs()
        assert c["source"] == "none" and c["certificates"] == []
        assert "certificate source: none" in sc.log()


def test_missing_cert_dir_is_a_start_error(pod_lab, outrigger_bin):
    """A --cert-dir that does not exist stops the start with exit 2 and says which."""
    pod = pod_lab.add_pod("p")
    r = pod.run([outrigger_bin, "--cert-dir", "/nonexistent/certs"], check=False, timeout=20)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "certificate directory /nonexistent/certs: No such file or directory" in r.stdout + r.stderr


def test_dev_ca_files_pass_openssl_and_the_proxy(pod_lab, outrigger_bin):
    """outrigger ca init / issue: the root is self-signed CA:TRUE P-256 with a 0600 key; the
    leaf is as the Istio CA issues it (URI SAN only, empty subject, digitalSignature +
    keyEncipherment, serverAuth + clientAuth) and `openssl verify` accepts it against the
    root; the proxy serves it. ca init will not replace a root; bad arguments exit 2."""
    d = os.path.join(pod_lab.dir, "devca")
    out = os.path.join(pod_lab.dir, "devleaf")
    r = subprocess.run([outrigger_bin, "ca", "init", "--dir", d, "--trust-domain", "example.org",
                        "--days", "30"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert oct(os.stat(os.path.join(d, "root-key.pem")).st_mode & 0o777) == "0o600"
    root_txt = openssl("x509", "-in", os.path.join(d, "root-cert.pem"), "-noout", "-text").stdout
    assert "CA:TRUE" in root_txt and "prime256v1" in root_txt and "O = example.org" in root_txt
    assert "Certificate Sign" in root_txt
    r = subprocess.run([outrigger_bin, "ca", "issue", "--dir", d, "--spiffe",
                        "spiffe://example.org/ns/shop/sa/cart", "--out", out],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    openssl("verify", "-CAfile", os.path.join(out, "root-cert.pem"), os.path.join(out, "cert-chain.pem"))
    txt = openssl("x509", "-in", os.path.join(out, "cert-chain.pem"), "-noout", "-text").stdout
    assert "URI:spiffe://example.org/ns/shop/sa/cart" in txt
    assert re.search(r"Subject: *\n", txt), txt
    assert "Digital Signature, Key Encipherment" in txt
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in txt
    assert "CA:FALSE" in txt
    assert "DNS:" not in txt
    # The key is the certificate's.
    pub_c = openssl("x509", "-in", os.path.join(out, "cert-chain.pem"), "-noout", "-pubkey").stdout
    pub_k = openssl("pkey", "-in", os.path.join(out, "key.pem"), "-pubout").stdout
    assert pub_c == pub_k
    assert oct(os.stat(os.path.join(out, "key.pem")).st_mode & 0o777) == "0o600"
    # Refusals: an existing root, a bad SPIFFE ID, a bad --days, a missing --dir.
    for argv, rc in ((["init", "--dir", d], 1),
                     (["issue", "--dir", d, "--spiffe", "spiffe://example.org/x", "--out", out], 2),
                     (["init", "--dir", d + "2", "--days", "0"], 2),
                     (["issue", "--spiffe", "spiffe://example.org/ns/a/sa/b", "--out", out], 2),
                     (["frobnicate"], 2)):
        r = subprocess.run([outrigger_bin, "ca"] + argv, capture_output=True, text=True, timeout=30)
        assert r.returncode == rc, (argv, r.returncode, r.stderr)
        assert r.stderr.strip(), argv
    # The proxy (uid 1337) accepts them.
    os.chown(os.path.join(out, "key.pem"), PROXY_UID, PROXY_UID)
    pod = pod_lab.add_pod("p")
    sc = start(pod, proxy_args=["--cert-dir", out])
    c = sc.certs()["certificates"][0]
    assert c["identity"] == "spiffe://example.org/ns/shop/sa/cart"
    assert int(c["cert_chain"][0]["serial_number"], 16) == serial_of(out)
    # Its trust domain is not the configured one (cluster.local): served, with a warning;
    # with TRUST_DOMAIN set to it, no warning.
    warn = "is of trust domain example.org, not identity.trustDomain cluster.local"
    assert warn in sc.log()
    assert sc.stop() == 0
    sc = start(pod, proxy_args=["--cert-dir", out], env={"TRUST_DOMAIN": "example.org"})
    assert sc.certs()["certificates"][0]["identity"] == "spiffe://example.org/ns/shop/sa/cart"
    assert "is of trust domain" not in sc.log()
