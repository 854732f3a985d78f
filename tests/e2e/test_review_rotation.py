"""Rotation under mTLS load, files source on both sides, STRICT server (the review of
issue 9): sequential connections through client sidecar -> Istio mTLS -> server sidecar,
while both certificates are re-issued about every 2.4 s each; no connection may fail."""
import json
import os
import subprocess
import time

import lab
from test_outbound_mtls import (ID_CLIENT, ID_SERVER, PORT, SVC, VIP, _pods, _sidecar,  # noqa: F401
                                meshres, pki)


def _rotate(ca, live, spiffe, stage):
    """A new key and certificate for spiffe into live, each file replaced by rename(2) (as
    a writer that swaps files one by one does: a moment with the new key and the old
    certificate)."""
    ca.issue(stage, spiffe)
    for n in ("key.pem", "cert-chain.pem", "root-cert.pem"):
        os.chmod(os.path.join(stage, n), 0o644)
        os.rename(os.path.join(stage, n), os.path.join(live, n))


def test_sidecar_to_sidecar_rotation_under_load(pod_lab, pki, outrigger_bin, init_bin):
    """Rotation under mTLS load: both sidecars' certificates are re-issued every second
    or so (files source) while sequential connections flow client sidecar -> Istio mTLS ->
    STRICT server sidecar -> echo: no connection fails, every rotation is picked up, and
    sessions made under one bundle are not resumed through the next (each side's contexts
    are new)."""
    import shutil
    client, server = _pods(pod_lab)
    server.app(["echo", "--port", 8080])
    res = [meshres.service("hello", [VIP], [(PORT, 8080)]),
           meshres.workload("Kubernetes//Pod/default/server", "server", [server.ip4], {SVC: [(PORT, 8080)]},
                            serviceAccount="server", tunnelProtocol="LEGACY_ISTIO_MTLS")]
    strict = {"@type": "type.googleapis.com/istio.security.v1beta1.PeerAuthentication",
              "mtls": {"mode": "STRICT"}}
    live = {}
    for who in ("client", "server"):
        live[who] = os.path.join(pki["dir"], "live-" + who)
        shutil.copytree(pki[who], live[who])
        os.chmod(live[who], 0o755)
    ssc = _sidecar(server, [strict], live["server"], args=("--concurrency", "2"))
    csc = _sidecar(client, res, live["client"], args=("--concurrency", "2"))
    before = {"c": csc.stats()["server.cert_updates"], "s": ssc.stats()["server.cert_updates"]}
    # Traffic for 14 s: batches of 20 sequential connections, one JSON line each.
    loop = ("end=$(($(date +%%s) + 14)); while [ $(date +%%s) -lt $end ]; do "
            "%s %s echo-client --host %s --port %d --count 20 --bytes 2000 --timeout 10; done"
            % (lab.PYTHON, pod_lab.apps, VIP, PORT))
    proc = client.popen(["sh", "-c", loop], user="nobody", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stage = os.path.join(pki["dir"], "stage")
    rotations = 0
    end = time.monotonic() + 12
    while time.monotonic() < end:
        _rotate(pki["ca"], live["server" if rotations % 2 else "client"],
                ID_SERVER if rotations % 2 else ID_CLIENT, stage)
        rotations += 1
        time.sleep(1.2)
    out, err = proc.communicate(timeout=60)
    ok = failed = 0
    errors = []
    for line in out.decode().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            ok += r["ok"]
            failed += r["failed"]
            errors += r["errors"]
    assert failed == 0, (errors[:5], err[-2000:])
    assert ok >= 100, (ok, err[-2000:])
    cst, sst = csc.stats(), ssc.stats()
    assert cst["server.cert_updates"] - before["c"] >= 3, (rotations, cst)
    assert sst["server.cert_updates"] - before["s"] >= 3, (rotations, sst)
    assert cst.get("server.cert_refused", 0) == 0 and sst.get("server.cert_refused", 0) == 0
    assert cst.get("listener.outbound.upstream_cx_tls_handshake_fail", 0) == 0, cst
    assert sst.get("listener.inbound.downstream_cx_tls_handshake_fail", 0) == 0, sst
    assert csc.alive() and ssc.alive()
